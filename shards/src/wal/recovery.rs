//! Pure recovery: folds the valid records of every segment, oldest first, into each group's
//! durable Raft state. No I/O here, so it runs the same under the simulator.

use std::collections::BTreeMap;

use bytes::Bytes;
use thiserror::Error;

use super::record::{read_u64, RecordKind, RecordRef};
use super::WalLocation;

pub const ENTRY_HEADER_BYTES: usize = 17;
pub const HARD_STATE_BYTES: usize = 24;
pub const SNAPSHOT_HEADER_BYTES: usize = 16;
/// Enough for a batch header and the key of a control batch's record (its marker type).
pub const ENTRY_HEAD_BYTES: usize = 96;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecoveryError {
    #[error("group {group_id}: record of kind {kind:?} has a malformed payload")]
    MalformedPayload { group_id: u64, kind: RecordKind },
    #[error("group {group_id}: log starts at index {first} but the snapshot ends at {snapshot}")]
    MissingEntries {
        group_id: u64,
        first: u64,
        snapshot: u64,
    },
}

/// Raft hard state as written to the WAL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardStateRecord {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

impl From<&raft::eraftpb::HardState> for HardStateRecord {
    fn from(hs: &raft::eraftpb::HardState) -> Self {
        Self {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
        }
    }
}

impl HardStateRecord {
    pub fn encode(&self) -> [u8; HARD_STATE_BYTES] {
        let mut out = [0u8; HARD_STATE_BYTES];
        out[0..8].copy_from_slice(&self.term.to_le_bytes());
        out[8..16].copy_from_slice(&self.vote.to_le_bytes());
        out[16..24].copy_from_slice(&self.commit.to_le_bytes());
        out
    }

    fn decode(payload: &[u8]) -> Option<Self> {
        (payload.len() == HARD_STATE_BYTES).then(|| Self {
            term: read_u64(payload, 0),
            vote: read_u64(payload, 8),
            commit: read_u64(payload, 16),
        })
    }
}

/// The fixed part of an Entry record's payload; the entry data follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    pub term: u64,
    pub index: u64,
    pub entry_type: u8,
}

impl EntryHeader {
    pub fn encode(&self) -> [u8; ENTRY_HEADER_BYTES] {
        let mut out = [0u8; ENTRY_HEADER_BYTES];
        out[0..8].copy_from_slice(&self.term.to_le_bytes());
        out[8..16].copy_from_slice(&self.index.to_le_bytes());
        out[16] = self.entry_type;
        out
    }

    pub fn decode(payload: &[u8]) -> Option<(Self, &[u8])> {
        if payload.len() < ENTRY_HEADER_BYTES {
            return None;
        }
        let header = Self {
            term: read_u64(payload, 0),
            index: read_u64(payload, 8),
            entry_type: payload[16],
        };
        Some((header, &payload[ENTRY_HEADER_BYTES..]))
    }
}

/// Compaction point of a group: everything at or below `index` is gone from the log, and
/// `state` is the state machine's snapshot at that point.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub index: u64,
    pub term: u64,
    pub state: Bytes,
}

impl SnapshotRecord {
    pub fn encode_header(&self) -> [u8; SNAPSHOT_HEADER_BYTES] {
        let mut out = [0u8; SNAPSHOT_HEADER_BYTES];
        out[0..8].copy_from_slice(&self.index.to_le_bytes());
        out[8..16].copy_from_slice(&self.term.to_le_bytes());
        out
    }

    fn decode(payload: &[u8]) -> Option<Self> {
        (payload.len() >= SNAPSHOT_HEADER_BYTES).then(|| Self {
            index: read_u64(payload, 0),
            term: read_u64(payload, 8),
            state: Bytes::copy_from_slice(&payload[SNAPSHOT_HEADER_BYTES..]),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredEntry {
    pub term: u64,
    pub index: u64,
    pub entry_type: u8,
    pub location: WalLocation,
    /// Entry data, kept only while it may still be unapplied; otherwise read back on demand.
    pub data: Option<Bytes>,
    pub data_len: u32,
    /// The first `ENTRY_HEAD_BYTES` of the data, always kept: enough for a state machine to
    /// index the entry (a Kafka batch header is 61 bytes) without reading it back.
    pub head: Bytes,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveredGroup {
    pub hard_state: HardStateRecord,
    pub snapshot: SnapshotRecord,
    /// Contiguous entries after `snapshot.index` once `finish` has run.
    pub entries: Vec<RecoveredEntry>,
    pub removed: bool,
}

/// Accumulates records in log order.
#[derive(Debug, Default)]
pub struct Recovery {
    groups: BTreeMap<u64, RecoveredGroup>,
    /// Per segment, per group: the highest entry index the segment holds (retention input).
    pub segment_entry_max: BTreeMap<u64, BTreeMap<u64, u64>>,
}

fn malformed(record: &RecordRef<'_>) -> RecoveryError {
    RecoveryError::MalformedPayload {
        group_id: record.group_id,
        kind: record.kind,
    }
}

impl Recovery {
    pub fn apply(
        &mut self,
        segment: u64,
        position: u64,
        record: RecordRef<'_>,
    ) -> Result<(), RecoveryError> {
        let malformed = malformed(&record);
        let group = match record.kind {
            // The WAL's own: `Wal::open_on` checks the segment marks.
            RecordKind::SegmentStart | RecordKind::SegmentEnd | RecordKind::Padding => {
                return Ok(())
            }
            RecordKind::Entry => return self.apply_entry(segment, position, record),
            _ => self.groups.entry(record.group_id).or_default(),
        };
        match record.kind {
            RecordKind::HardState => {
                group.hard_state = HardStateRecord::decode(record.payload).ok_or(malformed)?;
            }
            RecordKind::Snapshot => {
                let snapshot = SnapshotRecord::decode(record.payload).ok_or(malformed)?;
                if snapshot.index >= group.snapshot.index {
                    let covered = group.entries.partition_point(|e| e.index <= snapshot.index);
                    group.entries.drain(..covered);
                    group.snapshot = snapshot;
                }
            }
            RecordKind::SnapshotInstalled => {
                let snapshot = SnapshotRecord::decode(record.payload).ok_or(malformed)?;
                group.entries.clear();
                group.hard_state.commit = group.hard_state.commit.max(snapshot.index);
                group.snapshot = snapshot;
            }
            RecordKind::GroupRemoved => {
                *group = RecoveredGroup {
                    removed: true,
                    ..RecoveredGroup::default()
                };
            }
            RecordKind::Entry
            | RecordKind::SegmentStart
            | RecordKind::SegmentEnd
            | RecordKind::Padding => unreachable!("returned above"),
        }
        Ok(())
    }

    fn apply_entry(
        &mut self,
        segment: u64,
        position: u64,
        record: RecordRef<'_>,
    ) -> Result<(), RecoveryError> {
        let group = self.groups.entry(record.group_id).or_default();
        let (header, data) = EntryHeader::decode(record.payload).ok_or(malformed(&record))?;
        if header.index <= group.snapshot.index {
            return Ok(());
        }
        // A later record for an index replaces it and everything after it (Raft log
        // truncation). A gap means older segments were reclaimed: the snapshot that covers
        // the gap comes later in the log and `finish` checks it. Entries are contiguous and
        // ascending: cut by position, not by a scan (a scan per record made recovery
        // quadratic in the entries of a group).
        let keep = group.entries.partition_point(|e| e.index < header.index);
        group.entries.truncate(keep);
        if group
            .entries
            .last()
            .is_some_and(|last| last.index + 1 != header.index)
        {
            group.entries.clear();
        }
        let record_bytes = super::record::encoded_len(record.payload.len()) as u32;
        group.entries.push(RecoveredEntry {
            term: header.term,
            index: header.index,
            entry_type: header.entry_type,
            location: WalLocation {
                segment,
                position,
                record_bytes,
            },
            data: Some(Bytes::copy_from_slice(data)),
            data_len: data.len() as u32,
            head: Bytes::copy_from_slice(&data[..data.len().min(ENTRY_HEAD_BYTES)]),
        });
        let max = self.segment_entry_max.entry(segment).or_default();
        let slot = max.entry(record.group_id).or_default();
        *slot = (*slot).max(header.index);
        Ok(())
    }

    /// Drops entry data that is committed, so memory holds only what Raft may still apply.
    pub fn release_committed_data(&mut self) {
        for group in self.groups.values_mut() {
            let commit = group.hard_state.commit;
            let committed = group.entries.partition_point(|e| e.index <= commit);
            // Released entries form a prefix: walk back only over those still holding data.
            for entry in group.entries[..committed].iter_mut().rev() {
                if entry.data.take().is_none() {
                    break;
                }
            }
        }
    }

    pub fn finish(mut self) -> Result<RecoveredLog, RecoveryError> {
        self.release_committed_data();
        for (&group_id, group) in &mut self.groups {
            group.entries.retain(|e| e.index > group.snapshot.index);
            if let Some(first) = group.entries.first() {
                if first.index != group.snapshot.index + 1 {
                    return Err(RecoveryError::MissingEntries {
                        group_id,
                        first: first.index,
                        snapshot: group.snapshot.index,
                    });
                }
            }
            for pair in group.entries.windows(2) {
                assert_eq!(
                    pair[0].index + 1,
                    pair[1].index,
                    "recovered entries are contiguous"
                );
            }
        }
        Ok(RecoveredLog {
            groups: self.groups,
            segment_entry_max: self.segment_entry_max,
        })
    }
}

/// Everything recovery learned from a shard's WAL.
#[derive(Debug, Default)]
pub struct RecoveredLog {
    pub groups: BTreeMap<u64, RecoveredGroup>,
    pub segment_entry_max: BTreeMap<u64, BTreeMap<u64, u64>>,
}

#[cfg(test)]
mod tests {
    use super::super::record::{self, RecordKind};
    use super::*;

    fn entry(log: &mut Vec<u8>, group: u64, term: u64, index: u64) {
        let header = EntryHeader {
            term,
            index,
            entry_type: 0,
        };
        record::encode(
            log,
            1,
            group,
            RecordKind::Entry,
            &[&header.encode(), b"data"],
        );
    }

    fn recover(log: &[u8]) -> Result<RecoveredLog, RecoveryError> {
        let mut recovery = Recovery::default();
        for (position, rec) in record::scan(log, 1).records {
            recovery.apply(1, position as u64, rec)?;
        }
        recovery.finish()
    }

    #[test]
    fn later_entries_truncate_conflicting_suffix() {
        let mut log = Vec::new();
        for index in 1..=5 {
            entry(&mut log, 9, 1, index);
        }
        entry(&mut log, 9, 2, 3);
        let hs = HardStateRecord {
            term: 2,
            vote: 1,
            commit: 3,
        };
        record::encode(&mut log, 1, 9, RecordKind::HardState, &[&hs.encode()]);
        let recovered = recover(&log).expect("recovers");
        let group = &recovered.groups[&9];
        let terms: Vec<(u64, u64)> = group.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(terms, vec![(1, 1), (2, 1), (3, 2)]);
        assert_eq!(group.hard_state, hs);
        assert!(
            group.entries.iter().all(|e| e.data.is_none()),
            "committed data released"
        );
    }

    #[test]
    fn snapshot_covers_gap_from_reclaimed_segments() {
        let mut log = Vec::new();
        entry(&mut log, 4, 1, 10);
        entry(&mut log, 4, 1, 11);
        let snap = SnapshotRecord {
            index: 10,
            term: 1,
            state: Bytes::new(),
        };
        record::encode(
            &mut log,
            1,
            4,
            RecordKind::Snapshot,
            &[&snap.encode_header()],
        );
        let recovered = recover(&log).expect("recovers");
        assert_eq!(recovered.groups[&4].entries.len(), 1);
        assert_eq!(recovered.groups[&4].entries[0].index, 11);
    }

    #[test]
    fn gap_without_snapshot_is_an_error() {
        let mut log = Vec::new();
        entry(&mut log, 4, 1, 7);
        assert!(matches!(
            recover(&log),
            Err(RecoveryError::MissingEntries { .. })
        ));
    }
}
