//! A partition's Kafka offsets as a pure function of its Raft log: every entry that carries a
//! record batch occupies the next `lastOffsetDelta + 1` offsets; entries without a batch (a new
//! leader's empty entry) occupy none. Replaying the same log gives the same offsets.
//!
//! Owned by the shard that owns the partition.

use std::collections::VecDeque;

use super::batch::BatchHeader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub raft_index: u64,
    pub base_offset: i64,
    /// One past the batch's last offset.
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub bytes: u32,
    /// The leader epoch (Raft term) the batch was appended in.
    pub leader_epoch: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionLimits {
    pub retention_ms: i64,
    pub retention_bytes: i64,
}

#[derive(Debug, Default)]
pub struct PartitionOffsets {
    batches: VecDeque<BatchMeta>,
    log_start_offset: i64,
    /// The floor a committed DeleteRecords set: offsets below it are gone for clients at once
    /// (it may fall inside a batch, as Kafka's log start offset may); the batches wholly
    /// below it go at the next retention pass.
    delete_before: i64,
    high_watermark: i64,
    /// Sum of `bytes` over `batches`.
    retained_bytes: u64,
}

impl PartitionOffsets {
    /// Offsets for a log whose entries at or below the snapshot are gone; the next offset after
    /// the snapshot is `start_offset`.
    pub fn starting_at(start_offset: i64) -> Self {
        assert!(start_offset >= 0);
        Self {
            log_start_offset: start_offset,
            high_watermark: start_offset,
            ..Self::default()
        }
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.max(self.delete_before)
    }

    /// Applies a committed DeleteRecords up to `offset` (never beyond the high watermark,
    /// never backwards).
    pub fn delete_before(&mut self, offset: i64) {
        self.delete_before = self.delete_before.max(offset.min(self.high_watermark));
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The next offset to assign: one past the last persisted batch.
    pub fn log_end_offset(&self) -> i64 {
        self.batches
            .back()
            .map_or(self.log_start_offset, |b| b.next_offset)
    }

    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes
    }

    /// Indexes a persisted entry. `head` is the first bytes of its data; an entry whose data
    /// is not a batch occupies no offsets. Returns the base offset the batch got.
    pub fn on_append(&mut self, raft_index: u64, head: &[u8], data_len: u32) -> Option<i64> {
        if let Some(last) = self.batches.back() {
            assert!(
                raft_index > last.raft_index,
                "appends are in Raft index order"
            );
        }
        let header = BatchHeader::parse(head).ok()?;
        let base_offset = self.log_end_offset();
        self.batches.push_back(BatchMeta {
            raft_index,
            base_offset,
            next_offset: base_offset + header.offset_count(),
            max_timestamp: header.max_timestamp,
            bytes: data_len,
            leader_epoch: header.partition_leader_epoch,
        });
        self.retained_bytes += u64::from(data_len);
        Some(base_offset)
    }

    /// Kafka's OffsetForLeaderEpoch over this log (its `LeaderEpochFileCache::endOffsetFor`):
    /// the largest epoch at or below `epoch` that appended a batch (or `epoch` itself when it
    /// is older than every batch kept), and where the next epoch starts: the first batch of
    /// a later epoch, or the log end. The current epoch ends at the log end; an epoch above
    /// it is unknown: (-1, -1). A consumer compares this with its position to detect that
    /// the log it read from was truncated.
    pub fn end_offset_for_epoch(&self, epoch: i32, current_epoch: i32) -> (i32, i64) {
        if epoch < 0 || epoch > current_epoch {
            return (-1, -1);
        }
        if epoch == current_epoch {
            return (epoch, self.log_end_offset());
        }
        let next_start = self
            .batches
            .iter()
            .find(|b| b.leader_epoch > epoch)
            .map_or(self.log_end_offset(), |b| b.base_offset);
        let floor = self
            .batches
            .iter()
            .rev()
            .find(|b| b.leader_epoch <= epoch)
            .map_or(epoch, |b| b.leader_epoch);
        (floor, next_start)
    }

    /// Forgets entries from `raft_index` on (Raft replaced them).
    pub fn on_truncate(&mut self, raft_index: u64) {
        while self
            .batches
            .back()
            .is_some_and(|b| b.raft_index >= raft_index)
        {
            let removed = self.batches.pop_back().expect("checked non-empty");
            assert!(
                removed.base_offset >= self.high_watermark,
                "committed batches are never truncated"
            );
            self.retained_bytes -= u64::from(removed.bytes);
        }
    }

    /// Advances the high watermark to cover every batch at or below `commit_index`.
    pub fn on_commit(&mut self, commit_index: u64) {
        let committed = self
            .batches
            .partition_point(|b| b.raft_index <= commit_index);
        let high_watermark = match committed {
            0 => self.log_start_offset,
            n => self.batches[n - 1].next_offset,
        };
        if high_watermark > self.high_watermark {
            self.high_watermark = high_watermark;
        }
        assert!(self.high_watermark <= self.log_end_offset());
    }

    /// Position of the batch that holds `offset`.
    fn position_of(&self, offset: i64) -> Option<usize> {
        let position = self.batches.partition_point(|b| b.next_offset <= offset);
        self.batches
            .get(position)
            .filter(|b| b.base_offset <= offset)
            .map(|_| position)
    }

    /// Committed batches from the one holding `offset`, in order.
    pub fn committed_from(&self, offset: i64) -> impl Iterator<Item = &BatchMeta> {
        let position = self.position_of(offset).unwrap_or(self.batches.len());
        let high_watermark = self.high_watermark;
        self.batches
            .range(position..)
            .take_while(move |b| b.next_offset <= high_watermark)
    }

    /// Batches from the one holding `offset` that end at or below `limit` (the last stable
    /// offset of a read_committed fetch), in order.
    pub fn committed_up_to(&self, offset: i64, limit: i64) -> impl Iterator<Item = &BatchMeta> {
        let limit = limit.min(self.high_watermark);
        self.committed_from(offset)
            .take_while(move |b| b.next_offset <= limit)
    }

    /// The first committed batch whose max timestamp is at or after `timestamp`.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Option<BatchMeta> {
        self.batches
            .iter()
            .take_while(|b| b.next_offset <= self.high_watermark)
            .find(|b| b.max_timestamp >= timestamp && b.next_offset > self.log_start_offset)
            .copied()
    }

    /// The batch with the largest timestamp (ListOffsets -3); on a tie the earliest, as Kafka.
    pub fn max_timestamp_batch(&self) -> Option<BatchMeta> {
        self.batches
            .iter()
            .take_while(|b| b.next_offset <= self.high_watermark)
            .max_by_key(|b| (b.max_timestamp, std::cmp::Reverse(b.base_offset)))
            .copied()
    }

    /// Applies retention to committed batches up to `applied_index`. Returns the Raft index to
    /// compact to and the new log start offset, if anything expired.
    pub fn expire(
        &mut self,
        limits: RetentionLimits,
        now_ms: i64,
        applied_index: u64,
    ) -> Option<(u64, i64)> {
        let mut expired = None;
        while let Some(first) = self.batches.front().copied() {
            let committed =
                first.next_offset <= self.high_watermark && first.raft_index <= applied_index;
            let too_old = limits.retention_ms >= 0
                && first.max_timestamp < now_ms.saturating_sub(limits.retention_ms);
            let too_big = limits.retention_bytes >= 0
                && self.retained_bytes.saturating_sub(u64::from(first.bytes))
                    >= limits.retention_bytes as u64
                && self.retained_bytes > limits.retention_bytes as u64;
            let deleted = first.next_offset <= self.delete_before;
            if !committed || !(too_old || too_big || deleted) {
                break;
            }
            self.batches.pop_front();
            self.retained_bytes -= u64::from(first.bytes);
            self.log_start_offset = first.next_offset;
            expired = Some(first.raft_index);
        }
        expired.map(|index| (index, self.log_start_offset))
    }

    /// Whether `expire` would remove something now for a DeleteRecords floor.
    pub fn has_deleted_batches(&self) -> bool {
        self.batches
            .front()
            .is_some_and(|b| b.next_offset <= self.delete_before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(records: i32, max_timestamp: i64) -> Vec<u8> {
        let mut h = vec![0u8; 61];
        h[16] = 2;
        h[23..27].copy_from_slice(&(records - 1).to_be_bytes());
        h[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
        h[57..61].copy_from_slice(&records.to_be_bytes());
        h
    }

    fn head_in_epoch(records: i32, epoch: i32) -> Vec<u8> {
        let mut h = head(records, 0);
        h[12..16].copy_from_slice(&epoch.to_be_bytes());
        h
    }

    #[test]
    fn epochs_end_where_the_next_one_starts() {
        let mut offsets = PartitionOffsets::starting_at(0);
        offsets.on_append(1, &head_in_epoch(2, 3), 100); // offsets 0-1, epoch 3
        offsets.on_append(2, &head_in_epoch(3, 3), 100); // 2-4, epoch 3
        offsets.on_append(3, &head_in_epoch(1, 5), 100); // 5, epoch 5
        let current = 7;
        assert_eq!(offsets.end_offset_for_epoch(3, current), (3, 5));
        assert_eq!(
            offsets.end_offset_for_epoch(4, current),
            (3, 5),
            "no batch in epoch 4"
        );
        assert_eq!(offsets.end_offset_for_epoch(5, current), (5, 6));
        assert_eq!(offsets.end_offset_for_epoch(6, current), (5, 6));
        assert_eq!(
            offsets.end_offset_for_epoch(7, current),
            (7, 6),
            "current: log end"
        );
        assert_eq!(
            offsets.end_offset_for_epoch(1, current),
            (1, 0),
            "older than the log"
        );
        assert_eq!(
            offsets.end_offset_for_epoch(8, current),
            (-1, -1),
            "unknown epoch"
        );
    }

    #[test]
    fn offsets_fold_over_the_log() {
        let mut offsets = PartitionOffsets::starting_at(0);
        assert_eq!(
            offsets.on_append(1, &[], 0),
            None,
            "empty leader entry has no offsets"
        );
        assert_eq!(offsets.on_append(2, &head(3, 10), 100), Some(0));
        assert_eq!(offsets.on_append(3, &head(2, 20), 100), Some(3));
        assert_eq!(offsets.log_end_offset(), 5);
        assert_eq!(offsets.high_watermark(), 0);
        offsets.on_commit(2);
        assert_eq!(offsets.high_watermark(), 3);
        offsets.on_truncate(3);
        assert_eq!(offsets.log_end_offset(), 3);
        assert_eq!(offsets.on_append(3, &head(1, 30), 100), Some(3));
        offsets.on_commit(3);
        let bases: Vec<i64> = offsets.committed_from(1).map(|b| b.base_offset).collect();
        assert_eq!(bases, vec![0, 3]);
        assert_eq!(
            offsets.offset_for_timestamp(15).map(|b| b.base_offset),
            Some(3)
        );
    }

    #[test]
    fn retention_by_bytes_and_time() {
        let mut offsets = PartitionOffsets::starting_at(0);
        for i in 0..10 {
            offsets.on_append(i + 1, &head(1, i as i64 * 1000), 100);
        }
        offsets.on_commit(10);
        let limits = RetentionLimits {
            retention_ms: -1,
            retention_bytes: 500,
        };
        assert_eq!(offsets.expire(limits, 0, 10), Some((5, 5)));
        assert_eq!(offsets.retained_bytes(), 500);
        let limits = RetentionLimits {
            retention_ms: 2500,
            retention_bytes: -1,
        };
        assert_eq!(offsets.expire(limits, 9000, 10), Some((7, 7)));
        assert_eq!(offsets.log_start_offset(), 7);
        assert_eq!(offsets.committed_from(7).count(), 3);
    }

    #[test]
    fn max_timestamp_ties_go_to_the_earliest_batch() {
        let mut offsets = PartitionOffsets::starting_at(0);
        offsets.on_append(1, &head(1, 50), 100);
        offsets.on_append(2, &head(1, 70), 100);
        offsets.on_append(3, &head(1, 70), 100);
        offsets.on_commit(3);
        let found = offsets.max_timestamp_batch().map(|b| b.base_offset);
        assert_eq!(found, Some(1));
    }
}
