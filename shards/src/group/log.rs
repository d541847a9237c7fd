//! `GroupLog`: one Raft group's log as Raft sees it, implementing `raft::Storage` over the
//! shard WAL. Owned by the shard that owns the group.
//!
//! Every entry keeps its WAL location and the first bytes of its data (its "head"); the data
//! itself stays in memory only until applied and while the group's cache budget allows.
//! Entries whose data was evicted are read back from the WAL by the fetch path; Raft itself
//! only reads unapplied entries (and, once followers exist, recent ones), which are cached.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::chunked::ChunkedDeque;
use crate::wal::recovery::{RecoveredGroup, ENTRY_HEAD_BYTES};
use crate::wal::WalLocation;

#[derive(Debug, Clone)]
pub struct LogEntry {
    pub term: u64,
    pub entry_type: EntryType,
    pub location: WalLocation,
    pub data: Option<Bytes>,
    pub data_len: u32,
    pub head: Bytes,
}

pub struct GroupLog {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot_index: u64,
    snapshot_term: u64,
    snapshot_state: Bytes,
    /// Entries `snapshot_index + 1 ..= last_index`, in order.
    entries: ChunkedDeque<LogEntry>,
    applied: u64,
    /// Applied entries whose data is still cached, oldest first, from `cache_from`.
    cache_from: u64,
    cached_bytes: usize,
    /// The most this group caches: shared by the shard's partition groups, which it lowers
    /// as groups are added so that all of them together stay within the shard's budget.
    cache_bytes_max: Rc<Cell<usize>>,
    /// Whether applied entries keep their data at all (within `cache_bytes_max`). Off for a
    /// partition nobody reads: its batches go as soon as they are applied, so the memory
    /// that takes each new batch is memory freed a moment ago, still in the CPU cache (a
    /// produce-only shard cycling a full cache through memory did ~15% less per core). A
    /// `Cell`, so a read (which holds the log shared) turns it back on at once.
    caching: Cell<bool>,
    /// The lowest index Raft asked for whose data is no longer in memory (a lagging
    /// follower's); the shard reads it back from the WAL into `refilled`.
    wanted: Cell<Option<u64>>,
    /// Entries read back for a lagging follower, apart from the cache so its eviction order
    /// stays simple; bounded by one refill's worth (each refill replaces the previous one).
    refilled: BTreeMap<u64, Bytes>,
}

fn entry_type_from_byte(b: u8) -> EntryType {
    match b {
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => EntryType::EntryNormal,
    }
}

pub fn entry_type_byte(t: EntryType) -> u8 {
    match t {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

impl GroupLog {
    /// A log restored from what the WAL recovered (or empty for a new group), with `voters`
    /// as its configuration.
    pub fn recovered(
        recovered: RecoveredGroup,
        voters: Vec<u64>,
        cache_bytes_max: Rc<Cell<usize>>,
    ) -> Self {
        let mut hard_state = HardState::default();
        hard_state.term = recovered.hard_state.term;
        hard_state.vote = recovered.hard_state.vote;
        hard_state.commit = recovered.hard_state.commit;
        let conf_state = ConfState {
            voters,
            ..ConfState::default()
        };
        let entries: ChunkedDeque<LogEntry> = recovered
            .entries
            .into_iter()
            .map(|e| LogEntry {
                term: e.term,
                entry_type: entry_type_from_byte(e.entry_type),
                location: e.location,
                data: e.data,
                data_len: e.data_len,
                head: e.head,
            })
            .collect();
        let snapshot_index = recovered.snapshot.index;
        let last_index = snapshot_index + entries.len() as u64;
        // The commit index can trail what is persisted, never lead it by more than the log.
        hard_state.commit = hard_state.commit.clamp(snapshot_index, last_index);
        let applied = hard_state.commit;
        let mut log = Self {
            hard_state,
            conf_state,
            snapshot_index,
            snapshot_term: recovered.snapshot.term,
            snapshot_state: recovered.snapshot.state,
            entries,
            applied,
            cache_from: applied + 1,
            cached_bytes: 0,
            cache_bytes_max,
            caching: Cell::new(true),
            wanted: Cell::new(None),
            refilled: BTreeMap::new(),
        };
        log.cached_bytes = log
            .entries
            .iter()
            .filter_map(|e| e.data.as_ref())
            .map(Bytes::len)
            .sum();
        log
    }

    pub fn first_index(&self) -> u64 {
        self.snapshot_index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.snapshot_index + self.entries.len() as u64
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    pub fn snapshot_state(&self) -> &Bytes {
        &self.snapshot_state
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn entry(&self, index: u64) -> Option<&LogEntry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    pub fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// Entries from `from` on, in order (the indexes of the state machine's rebuild).
    pub fn entries_from(&self, from: u64) -> impl Iterator<Item = (u64, &LogEntry)> {
        let skip = from.saturating_sub(self.snapshot_index + 1) as usize;
        let base = self.snapshot_index + 1;
        self.entries
            .iter_from(skip)
            .enumerate()
            .map(move |(i, e)| (base + (skip + i) as u64, e))
    }

    /// Adds persisted entries, replacing any conflicting suffix (Raft log truncation).
    /// Returns the index from which entries were replaced, if any were.
    pub fn append(&mut self, entries: &[Entry], locations: &[WalLocation]) -> Option<u64> {
        assert_eq!(entries.len(), locations.len());
        let first = entries.first()?;
        assert!(
            first.index > self.snapshot_index,
            "append below the snapshot"
        );
        assert!(first.index <= self.last_index() + 1, "append leaves a gap");
        let truncated = (first.index <= self.last_index()).then_some(first.index);
        if truncated.is_some() {
            self.refilled.clear();
            let keep = (first.index - self.snapshot_index - 1) as usize;
            let cached_bytes = &mut self.cached_bytes;
            self.entries.truncate_with(keep, |removed| {
                *cached_bytes -= removed.data.as_ref().map_or(0, Bytes::len);
            });
        }
        for (entry, location) in entries.iter().zip(locations) {
            assert_eq!(entry.index, self.last_index() + 1, "entries are contiguous");
            let data = entry.data.clone();
            self.cached_bytes += data.len();
            self.entries.push_back(LogEntry {
                term: entry.term,
                entry_type: entry.get_entry_type(),
                location: *location,
                data_len: data.len() as u32,
                // A copy, not a slice: a slice would pin the whole entry's buffer in memory
                // for as long as the entry is in the log, long after its data was evicted.
                head: Bytes::copy_from_slice(&data[..data.len().min(ENTRY_HEAD_BYTES)]),
                data: Some(data),
            });
        }
        truncated
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        assert!(
            hard_state.term >= self.hard_state.term,
            "term never goes back"
        );
        self.hard_state = hard_state;
    }

    pub fn set_commit(&mut self, commit: u64) {
        assert!(commit <= self.last_index());
        self.hard_state.commit = self.hard_state.commit.max(commit);
    }

    /// Marks entries up to `index` applied; their data may now be evicted from memory.
    pub fn set_applied(&mut self, index: u64) {
        assert!(index <= self.last_index(), "applied past the log");
        self.applied = self.applied.max(index);
        self.evict_cache();
    }

    /// Turns caching of applied entries on or off (see `caching`); off evicts them now.
    pub fn set_caching(&mut self, caching: bool) {
        if self.caching.get() != caching {
            self.caching.set(caching);
            self.evict_cache();
        }
    }

    /// Bytes of entry data held in memory (cached or not yet applied).
    pub fn cached_bytes(&self) -> usize {
        self.cached_bytes
    }

    /// A read: applied entries keep their data from now on (nothing to evict for that).
    pub fn keep_caching(&self) {
        self.caching.set(true);
    }

    /// Evicts applied entries, oldest first, until the cache is within its budget.
    pub fn evict_cache(&mut self) {
        self.cache_from = self.cache_from.max(self.first_index());
        let cache_bytes_max = if self.caching.get() {
            self.cache_bytes_max.get()
        } else {
            0
        };
        while self.cached_bytes > cache_bytes_max && self.cache_from <= self.applied {
            let position = (self.cache_from - self.snapshot_index - 1) as usize;
            if let Some(entry) = self.entries.get_mut(position) {
                self.cached_bytes -= entry.data.take().map_or(0, |d| d.len());
            }
            self.cache_from += 1;
        }
    }

    /// Drops entries up to `index` (retention or snapshot), remembering the state at that point.
    pub fn compact(&mut self, index: u64, state: Bytes) {
        assert!(index <= self.applied, "only applied entries are compacted");
        if index <= self.snapshot_index {
            return;
        }
        let term = self.term_of(index).expect("compaction point is in the log");
        let count = (index - self.snapshot_index) as usize;
        let cached_bytes = &mut self.cached_bytes;
        self.entries.drain_front_with(count, |removed| {
            *cached_bytes -= removed.data.as_ref().map_or(0, Bytes::len);
        });
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.snapshot_state = state;
        self.refilled = self.refilled.split_off(&(index + 1));
        assert_eq!(self.first_index(), index + 1);
    }

    /// Replaces the whole log with a leader's snapshot at `index` (this replica was behind
    /// the leader's compaction point).
    pub fn install_snapshot(&mut self, index: u64, term: u64, state: Bytes) {
        self.entries.clear();
        self.refilled.clear();
        self.cached_bytes = 0;
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.snapshot_state = state;
        self.hard_state.commit = self.hard_state.commit.max(index);
        self.applied = index;
        self.cache_from = index + 1;
    }

    /// The lowest index Raft wanted but memory did not hold, once.
    pub fn take_wanted(&self) -> Option<u64> {
        self.wanted.take()
    }

    /// Entries read back from the WAL for a lagging follower.
    pub fn refill(&mut self, entries: Vec<(u64, Bytes)>) {
        self.refilled.clear();
        for (index, data) in entries {
            if self.entry(index).is_some() {
                self.refilled.insert(index, data);
            }
        }
    }

    pub fn snapshot_term(&self) -> u64 {
        self.snapshot_term
    }

    fn build_entry(&self, index: u64) -> raft::Result<Entry> {
        let stored = self
            .entry(index)
            .ok_or(raft::Error::Store(StorageError::Unavailable))?;
        let data = stored
            .data
            .clone()
            .or_else(|| self.refilled.get(&index).cloned())
            .ok_or(raft::Error::Store(StorageError::LogTemporarilyUnavailable))?;
        let mut entry = Entry::default();
        entry.set_entry_type(stored.entry_type);
        entry.term = stored.term;
        entry.index = index;
        entry.data = data;
        Ok(entry)
    }
}

impl raft::Storage for GroupLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snapshot_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut entries = match (low..high)
            .map(|i| self.build_entry(i))
            .collect::<raft::Result<Vec<_>>>()
        {
            Ok(entries) => entries,
            // Only sending to a follower may wait for data (Raft retries it later); anything
            // else reads unapplied entries, which are always in memory.
            Err(error) if context.can_async() => {
                let wanted = self.wanted.get().map_or(low, |w| w.min(low));
                self.wanted.set(Some(wanted));
                return Err(error);
            }
            Err(_) => return Err(raft::Error::Store(StorageError::Unavailable)),
        };
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index < self.snapshot_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(index)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(GroupLog::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(GroupLog::last_index(self))
    }

    /// The compaction point as a snapshot for a follower behind it: the state machine's state
    /// there (a partition's log start offset; the controller's whole metadata).
    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index == 0 {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snapshot = Snapshot {
            data: self.snapshot_state.clone(),
            ..Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = self.snapshot_index;
        metadata.term = self.snapshot_term;
        metadata.set_conf_state(self.conf_state.clone());
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, data: &Bytes) -> Entry {
        Entry {
            index,
            term: 1,
            data: data.clone(),
            ..Entry::default()
        }
    }

    #[test]
    fn evicted_entries_release_their_buffers() {
        let budget = Rc::new(Cell::new(4096));
        let mut log = GroupLog::recovered(RecoveredGroup::default(), vec![1], budget.clone());
        let buffers: Vec<Bytes> = (0..8).map(|i| Bytes::from(vec![i as u8; 1024])).collect();
        let location = WalLocation {
            segment: 0,
            position: 0,
            record_bytes: 1024,
        };
        for (i, data) in buffers.iter().enumerate() {
            log.append(&[entry(i as u64 + 1, data)], &[location]);
        }
        log.set_commit(8);
        log.set_applied(8);
        // Four entries fit the 4 KiB cache; the oldest four gave their data up, and nothing
        // of the log (their heads included) still holds those buffers.
        for (i, data) in buffers.into_iter().enumerate() {
            let index = i as u64 + 1;
            assert_eq!(&log.entry(index).expect("in the log").head[..], &data[..96]);
            assert_eq!(data.is_unique(), index <= 4, "entry {index}");
        }
        // A smaller share (more groups on the shard) takes effect at the next eviction.
        budget.set(1024);
        log.evict_cache();
        assert!(log.entry(7).expect("in the log").data.is_none());
        assert!(log.entry(8).expect("in the log").data.is_some());
    }

    #[test]
    fn a_log_not_caching_keeps_no_applied_data() {
        let budget = Rc::new(Cell::new(1 << 20));
        let mut log = GroupLog::recovered(RecoveredGroup::default(), vec![1], budget);
        let location = WalLocation {
            segment: 0,
            position: 0,
            record_bytes: 1024,
        };
        let data = Bytes::from(vec![7u8; 1024]);
        for index in 1..=4 {
            log.append(&[entry(index, &data)], &[location]);
        }
        log.set_commit(2);
        log.set_applied(2);
        assert!(log.entry(1).expect("in the log").data.is_some(), "cached");
        // Off: the applied entries give their data up at once, unapplied ones keep it.
        log.set_caching(false);
        assert!(log.entry(1).expect("in the log").data.is_none());
        assert!(log.entry(2).expect("in the log").data.is_none());
        assert!(log.entry(3).expect("in the log").data.is_some());
        log.set_commit(3);
        log.set_applied(3);
        assert!(log.entry(3).expect("in the log").data.is_none());
        // On again: what is applied from now on stays within the budget.
        log.set_caching(true);
        log.set_commit(4);
        log.set_applied(4);
        assert!(log.entry(4).expect("in the log").data.is_some());
    }
}
