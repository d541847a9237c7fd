//! Transactions as a partition sees them, a pure function of its log like the offsets: a
//! transactional batch opens its producer's transaction at its base offset; a control batch
//! (the coordinator's commit or abort marker) closes it. The last stable offset (LSO) is the
//! first offset of the oldest open transaction, or the high watermark: read_committed
//! consumers read up to it, and get the aborted transactions of what they read, so they can
//! drop those records themselves (as Kafka's consumers do).

use std::collections::{BTreeMap, VecDeque};

use super::batch::{read_varint, BatchHeader, BATCH_HEADER_BYTES};

/// What a control batch says (its record's key: version, type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

/// Bound on remembered aborted transactions per partition; the oldest are forgotten (their
/// records are long below any consumer's position in practice).
pub const ABORTED_TXNS_MAX: usize = 10_000;
/// Bound on open transactions per partition (one per producer id at most).
pub const OPEN_TXNS_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The offset of the abort marker.
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default)]
pub struct TxnIndex {
    /// Producer id -> (first offset, producer epoch) of its open transaction.
    open: BTreeMap<i64, (i64, i16)>,
    aborted: VecDeque<AbortedTxn>,
}

/// The marker of a control batch, read from its first record's key. `bytes` is the batch (or
/// at least its first ~75 bytes). None: not a control batch, or not one we can read.
pub fn marker_of(header: &BatchHeader, bytes: &[u8]) -> Option<Marker> {
    if !header.is_control() || header.compression() != 0 {
        return None;
    }
    let mut at = BATCH_HEADER_BYTES;
    // Record: length, attributes (1 byte), timestamp delta, offset delta, key length, key.
    let (_, n) = read_varint(bytes.get(at..)?)?;
    at += n + 1;
    for _ in 0..2 {
        let (_, n) = read_varint(bytes.get(at..)?)?;
        at += n;
    }
    let (key_length, n) = read_varint(bytes.get(at..)?)?;
    at += n;
    if key_length < 4 {
        return None;
    }
    let key = bytes.get(at..at + 4)?;
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(Marker::Abort),
        1 => Some(Marker::Commit),
        _ => None,
    }
}

impl TxnIndex {
    /// Indexes a batch appended at `base_offset` (`head` holds at least its first bytes).
    pub fn on_batch(&mut self, header: &BatchHeader, head: &[u8], base_offset: i64) {
        if header.producer_id < 0 {
            return;
        }
        if header.is_control() {
            // A marker of an older epoch than the open transaction's is a stale retry: the
            // transaction it ended is gone; the open one is another.
            let stale = self
                .open
                .get(&header.producer_id)
                .is_some_and(|&(_, epoch)| header.producer_epoch < epoch);
            if stale {
                return;
            }
            let first = self
                .open
                .remove(&header.producer_id)
                .map(|(first, _)| first);
            if let (Some(Marker::Abort), Some(first_offset)) = (marker_of(header, head), first) {
                self.aborted.push_back(AbortedTxn {
                    producer_id: header.producer_id,
                    first_offset,
                    last_offset: base_offset,
                });
                if self.aborted.len() > ABORTED_TXNS_MAX {
                    self.aborted.pop_front();
                }
            }
            return;
        }
        if header.is_transactional() && self.open.len() < OPEN_TXNS_MAX {
            self.open
                .entry(header.producer_id)
                .or_insert((base_offset, header.producer_epoch));
        }
    }

    /// The first offset a read_committed consumer may not read yet.
    pub fn last_stable_offset(&self, log_start_offset: i64, high_watermark: i64) -> i64 {
        let oldest_open = self
            .open
            .values()
            .map(|&(first, _)| first)
            .min()
            .unwrap_or(i64::MAX);
        high_watermark.min(oldest_open).max(log_start_offset)
    }

    /// Aborted transactions with records in `[from, to)`: (producer id, first offset).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        self.aborted
            .iter()
            .filter(|t| t.last_offset >= from && t.first_offset < to)
            .map(|t| (t.producer_id, t.first_offset))
            .collect()
    }

    /// Forgets aborted transactions wholly below the log start (retention removed them).
    pub fn forget_before(&mut self, log_start_offset: i64) {
        while self
            .aborted
            .front()
            .is_some_and(|t| t.last_offset < log_start_offset)
        {
            self.aborted.pop_front();
        }
    }

    /// Producers with an open transaction: (producer id, first offset).
    pub fn open_transactions(&self) -> Vec<(i64, i64)> {
        self.open
            .iter()
            .map(|(&p, &(first, _))| (p, first))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, attributes: i16) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes,
            last_offset_delta: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: 0,
            base_sequence: 0,
            record_count: 1,
        }
    }

    /// A control batch's bytes as the coordinator writes them (header zeroed but for the
    /// record's key).
    fn control_bytes(kind: i16) -> Vec<u8> {
        let mut bytes = vec![0u8; BATCH_HEADER_BYTES];
        // length 12, attributes 0, timestamp delta 0, offset delta 0, key length 4 (zigzag 8)
        bytes.extend([24, 0, 0, 0, 8, 0, 0]);
        bytes.extend(kind.to_be_bytes());
        bytes
    }

    #[test]
    fn open_transactions_hold_the_stable_offset_and_aborts_are_indexed() {
        let mut index = TxnIndex::default();
        let data = header(7, 0x10);
        let control = header(7, 0x30);
        index.on_batch(&header(-1, 0), &[], 0);
        index.on_batch(&data, &[], 1);
        index.on_batch(&data, &[], 2);
        assert_eq!(index.last_stable_offset(0, 3), 1);
        index.on_batch(&control, &control_bytes(0), 3);
        assert_eq!(index.last_stable_offset(0, 4), 4);
        assert_eq!(index.aborted_between(0, 4), vec![(7, 1)]);
        assert_eq!(index.aborted_between(4, 10), vec![]);
        index.on_batch(&data, &[], 4);
        index.on_batch(&control, &control_bytes(1), 5);
        assert_eq!(index.aborted_between(4, 10), vec![], "committed");
        assert_eq!(index.last_stable_offset(0, 6), 6);
        index.forget_before(4);
        assert_eq!(index.aborted_between(0, 10), vec![]);
        // A late marker of an older epoch does not close the next transaction.
        let mut bumped = header(7, 0x10);
        bumped.producer_epoch = 1;
        index.on_batch(&bumped, &[], 6);
        index.on_batch(&control, &control_bytes(1), 7);
        assert_eq!(index.last_stable_offset(0, 8), 6, "still open");
    }

    #[test]
    fn markers_are_read_from_the_record_key() {
        let control = header(7, 0x30);
        assert_eq!(marker_of(&control, &control_bytes(0)), Some(Marker::Abort));
        assert_eq!(marker_of(&control, &control_bytes(1)), Some(Marker::Commit));
        assert_eq!(marker_of(&header(7, 0x10), &control_bytes(1)), None);
        assert_eq!(
            marker_of(&control, &control_bytes(1)[..69]),
            None,
            "cut short"
        );
    }
}
