//! Idempotent-producer state of one partition: per producer id, its epoch and the sequence
//! ranges of its last few batches. Like the offsets, it is a pure function of the log (every
//! batch header carries producer id, epoch and base sequence), so recovery rebuilds it.
//!
//! The leader checks a new batch against the log's state plus the batches it has proposed
//! but not yet persisted (`Proposed`), so pipelined requests are checked in order.

use std::collections::{BTreeMap, VecDeque};

use super::batch::BatchHeader;

/// Kafka keeps the last five batches per producer for duplicate detection.
pub const BATCHES_PER_PRODUCER_MAX: usize = 5;
/// Bound on tracked producers per partition; the least recently written ones are forgotten.
pub const PRODUCERS_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceRange {
    pub base_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub raft_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<SequenceRange>,
    last_write_index: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Accept,
    /// The same batch was written before at this offset and Raft index.
    Duplicate(SequenceRange),
    OutOfOrder {
        expected: i32,
        got: i32,
    },
    /// The batch's epoch is older than the producer's current one (a zombie).
    FencedEpoch {
        current: i16,
        got: i16,
    },
}

#[derive(Debug, Clone, Default)]
pub struct ProducerState {
    producers: BTreeMap<i64, ProducerEntry>,
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

fn last_sequence(header: &BatchHeader) -> i32 {
    let span = header.last_offset_delta;
    ((header.base_sequence as i64 + span as i64) % (i32::MAX as i64 + 1)) as i32
}

impl ProducerState {
    pub fn check(&self, header: &BatchHeader) -> SequenceCheck {
        if header.producer_id < 0 {
            return SequenceCheck::Accept;
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            // Unknown producer (new, or its batches aged out of the log): accept.
            return SequenceCheck::Accept;
        };
        if header.producer_epoch < entry.epoch {
            return SequenceCheck::FencedEpoch {
                current: entry.epoch,
                got: header.producer_epoch,
            };
        }
        if header.producer_epoch > entry.epoch {
            return match header.base_sequence {
                0 => SequenceCheck::Accept,
                got => SequenceCheck::OutOfOrder { expected: 0, got },
            };
        }
        let last = last_sequence(header);
        if let Some(previous) = entry
            .batches
            .iter()
            .find(|b| b.base_sequence == header.base_sequence && b.last_sequence == last)
        {
            return SequenceCheck::Duplicate(*previous);
        }
        let expected = entry
            .batches
            .back()
            .map_or(header.base_sequence, |b| next_sequence(b.last_sequence));
        if header.base_sequence == expected {
            SequenceCheck::Accept
        } else {
            SequenceCheck::OutOfOrder {
                expected,
                got: header.base_sequence,
            }
        }
    }

    /// Every tracked producer: (producer id, epoch, last sequence written, -1 if none).
    pub fn describe(&self) -> Vec<(i64, i16, i32)> {
        self.producers
            .iter()
            .map(|(&id, entry)| {
                let last = entry.batches.back().map_or(-1, |b| b.last_sequence);
                (id, entry.epoch, last)
            })
            .collect()
    }

    /// Records a batch written at `base_offset` / `raft_index`.
    pub fn record(&mut self, header: &BatchHeader, base_offset: i64, raft_index: u64) {
        if header.producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if header.is_control() || header.base_sequence < 0 {
            // A transaction marker or a coordinator's record carries the producer's epoch (a
            // bumped one fences it) but no sequence: the producer's next batch continues its
            // own numbering.
            entry.last_write_index = raft_index;
            return;
        }
        entry.batches.push_back(SequenceRange {
            base_sequence: header.base_sequence,
            last_sequence: last_sequence(header),
            base_offset,
            raft_index,
        });
        entry.last_write_index = raft_index;
        while entry.batches.len() > BATCHES_PER_PRODUCER_MAX {
            entry.batches.pop_front();
        }
        if self.producers.len() > PRODUCERS_MAX {
            let oldest = self
                .producers
                .iter()
                .min_by_key(|(_, e)| e.last_write_index)
                .map(|(&id, _)| id);
            if let Some(id) = oldest {
                self.producers.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: records,
        }
    }

    #[test]
    fn sequences_duplicates_and_fencing() {
        let mut state = ProducerState::default();
        let first = header(7, 0, 0, 3);
        assert_eq!(state.check(&first), SequenceCheck::Accept);
        state.record(&first, 100, 1);
        assert!(matches!(state.check(&first), SequenceCheck::Duplicate(r) if r.base_offset == 100));
        assert_eq!(
            state.check(&header(7, 0, 5, 1)),
            SequenceCheck::OutOfOrder {
                expected: 3,
                got: 5
            }
        );
        let second = header(7, 0, 3, 2);
        assert_eq!(state.check(&second), SequenceCheck::Accept);
        state.record(&second, 103, 2);
        assert_eq!(
            state.check(&header(7, 1, 4, 1)),
            SequenceCheck::OutOfOrder {
                expected: 0,
                got: 4
            }
        );
        let bumped = header(7, 1, 0, 1);
        assert_eq!(state.check(&bumped), SequenceCheck::Accept);
        state.record(&bumped, 105, 3);
        assert_eq!(
            state.check(&header(7, 0, 5, 1)),
            SequenceCheck::FencedEpoch { current: 1, got: 0 }
        );
        assert_eq!(state.check(&header(-1, -1, -1, 1)), SequenceCheck::Accept);
    }
}
