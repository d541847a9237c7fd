//! A Raft group as the shard drives it: the raft-rs `RawNode` over a `GroupLog`, its state
//! machine (a Kafka partition's offsets, or a state machine supplied by the broker such as the
//! cluster metadata), and the requests waiting on it. Owned by one shard.

mod chunked;
pub mod config;
pub mod log;
pub mod raft_log_bridge;

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::channel::oneshot;
use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::{RawNode, StateRole};

use crate::error::ShardError;
use crate::partition::batch::BatchHeader;
use crate::partition::offsets::{BatchMeta, PartitionOffsets, RetentionLimits, SnapshotOffsets};
use crate::partition::producer_state::{ProducerState, SequenceCheck};
use crate::partition::transactions::TxnIndex;
use log::GroupLog;

/// A replicated state machine other than a Kafka partition (the controller's metadata).
pub trait StateMachine {
    /// Applies one committed entry's data.
    fn apply(&mut self, index: u64, data: &[u8]);
    /// The whole state, for checkpoints; `restore` takes it back.
    fn snapshot(&self) -> Vec<u8>;
    fn restore(&mut self, state: &[u8]);
}

// Nearly every group is a partition; boxing its state would cost an indirection on the hot
// path to save bytes on the one controller group.
#[allow(clippy::large_enum_variant)]
pub enum Machine {
    Partition {
        offsets: PartitionOffsets,
        retention: RetentionLimits,
        producers: ProducerState,
        transactions: TxnIndex,
        /// The committed cleaning entries still in the log, decoded: a rebuild of the
        /// offsets (after a truncation) needs them, and their data may be evicted by then.
        cleanings: BTreeMap<u64, Cleaning>,
    },
    Custom(Box<dyn StateMachine>),
}

/// Reply to a proposal: the Raft index it committed at, or why it did not.
pub type ProposalReply = oneshot::Sender<Result<u64, ShardError>>;

struct Waiter {
    term: u64,
    reply: ProposalReply,
    /// acks=1: answered once this leader's own write is durable, not on commit.
    leader_durable: bool,
}

/// When a proposal is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckWhen {
    /// acks=0: never.
    Never,
    /// acks=1: once the leader's own group commit made it durable.
    LeaderDurable,
    /// acks=all: once a quorum holds it (committed).
    Committed,
}

pub struct RaftGroup {
    pub id: u64,
    pub node: RawNode<GroupLog>,
    pub machine: Machine,
    waiters: BTreeMap<u64, Waiter>,
    waiters_max: usize,
    fetch_waiters: Vec<oneshot::Sender<()>>,
    fetch_waiters_max: usize,
    /// Base offset for the next proposed batch: the log end plus batches proposed but not yet
    /// persisted. Reset whenever leadership changes.
    next_offset_proposed: i64,
    proposed_term: u64,
    /// Producer state including this leader's proposals not yet persisted.
    proposed_producers: ProducerState,
    /// The replica that should lead when it can (the first of the partition's replicas).
    pub preferred_leader: u64,
    /// Not ticked: nothing happens in the group and every replica holds everything, so no
    /// heartbeats and no election timers run (see `Shard::tick_all`). Any message or
    /// proposal wakes it; so does the node's failure detector when a peer goes away.
    pub quiesced: bool,
    /// Ticks since the group last did anything but heartbeats.
    pub idle_ticks: u32,
    /// Ticks since anyone last read this partition or waited on it (`note_read`); see
    /// `Shard::tick_all`, which stops caching the entries of a partition nobody reads.
    pub ticks_since_read: std::cell::Cell<u32>,
    /// Ticks a leader has had a follower waiting on a snapshot (see `retry_lost_snapshots`).
    snapshot_wait_ticks: u32,
}

impl RaftGroup {
    pub fn new(
        id: u64,
        node: RawNode<GroupLog>,
        machine: Machine,
        waiters_max: usize,
        fetch_waiters_max: usize,
    ) -> Self {
        let mut group = Self {
            id,
            node,
            machine,
            waiters: BTreeMap::new(),
            waiters_max,
            fetch_waiters: Vec::new(),
            fetch_waiters_max,
            next_offset_proposed: 0,
            proposed_term: 0,
            proposed_producers: ProducerState::default(),
            preferred_leader: 0,
            quiesced: false,
            idle_ticks: 0,
            ticks_since_read: std::cell::Cell::new(0),
            snapshot_wait_ticks: 0,
        };
        group.rebuild_machine();
        group
    }

    /// Replays the recovered log into the state machine: offsets are a fold over the log.
    fn rebuild_machine(&mut self) {
        let log = self.node.store();
        let commit = log.hard_state().commit;
        match &mut self.machine {
            Machine::Partition {
                offsets,
                producers,
                transactions,
                cleanings,
                ..
            } => {
                *offsets =
                    PartitionOffsets::after_snapshot(SnapshotOffsets::decode(log.snapshot_state()));
                *producers = ProducerState::default();
                *transactions = TxnIndex::default();
                cleanings.retain(|&index, _| index > log.snapshot_index() && index <= commit);
                let mut floors = Vec::new();
                for (index, entry) in log.entries_from(log.first_index()) {
                    if let Some(floor) = decode_delete_before(&entry.head) {
                        floors.push((index, floor));
                    }
                    if index <= commit && is_cleaning(&entry.head) {
                        remember_cleaning(self.id, cleanings, index, entry);
                    }
                    if let Some(base_offset) = offsets.on_append(index, &entry.head, entry.data_len)
                    {
                        if let Ok(header) = BatchHeader::parse(&entry.head) {
                            producers.record(&header, base_offset, index);
                            transactions.on_batch(&header, &entry.head, base_offset);
                        }
                    }
                }
                offsets.on_commit(commit);
                for (_, floor) in floors.into_iter().filter(|&(index, _)| index <= commit) {
                    offsets.delete_before(floor);
                }
                for (&index, cleaning) in cleanings.iter() {
                    cleaning.apply(index, offsets);
                }
            }
            Machine::Custom(machine) => {
                if !log.snapshot_state().is_empty() {
                    machine.restore(log.snapshot_state());
                }
                for (index, entry) in log.entries_from(log.first_index()) {
                    if index > commit {
                        break;
                    }
                    let data = entry
                        .data
                        .as_ref()
                        .expect("metadata entries stay cached until a checkpoint");
                    if entry.entry_type == EntryType::EntryNormal && !data.is_empty() {
                        machine.apply(index, data);
                    }
                }
            }
        }
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// Whether this replica may answer reads (high watermark, fetches) now: it leads and has
    /// applied every entry of earlier terms. A new leader's commit index (recovered lazily
    /// after a restart, or learned from peers) may trail what was acknowledged under an
    /// earlier term until then. Terms only grow along the log, so it is enough that the first
    /// unapplied entry, if any, is of the current term (true at once for a new, empty group).
    pub fn serves_reads(&self) -> bool {
        let log = self.node.store();
        let applied = log.applied();
        self.is_leader()
            && (applied == log.last_index() || log.term_of(applied + 1) == Some(self.term()))
    }

    /// raft-rs pauses a follower it sent a snapshot to until the application reports how
    /// the sending went, or the follower answers. A snapshot lost on the way (a dropped link,
    /// a follower that crashed before installing it) would pause it forever: after
    /// `SNAPSHOT_RETRY_TICKS` without an answer, report it failed, so Raft probes again and
    /// sends a fresh one (ours are small: a log start offset, or the controller's metadata).
    /// Returns whether anything was reported.
    pub fn retry_lost_snapshots(&mut self) -> bool {
        let waiting: Vec<u64> = self
            .node
            .raft
            .prs()
            .iter()
            .filter(|(_, p)| p.state == raft::ProgressState::Snapshot)
            .map(|(&id, _)| id)
            .collect();
        if waiting.is_empty() || !self.is_leader() {
            self.snapshot_wait_ticks = 0;
            return false;
        }
        self.snapshot_wait_ticks += 1;
        if self.snapshot_wait_ticks < SNAPSHOT_RETRY_TICKS {
            return false;
        }
        self.snapshot_wait_ticks = 0;
        for id in waiting {
            self.node.report_snapshot(id, raft::SnapshotStatus::Failure);
        }
        true
    }

    /// Back to ticking (something happened, or may have: a peer went away).
    pub fn wake(&mut self) {
        self.quiesced = false;
        self.idle_ticks = 0;
    }

    /// A leader may let the group go quiet once the whole log is committed, applied and held
    /// by every follower heard from lately, and nothing waits on it.
    pub fn can_quiesce(&self) -> bool {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader || raft.lead_transferee.is_some() {
            return false;
        }
        let last = raft.raft_log.last_index();
        raft.raft_log.committed == last
            && self.node.store().applied() == last
            && self.waiters.is_empty()
            && raft
                .prs()
                .iter()
                .all(|(&id, p)| id == raft.id || (p.matched == last && p.recent_active))
    }

    pub fn leader_id(&self) -> Option<u64> {
        let leader = self.node.raft.leader_id;
        (leader != raft::INVALID_ID).then_some(leader)
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    pub fn offsets(&self) -> Option<&PartitionOffsets> {
        match &self.machine {
            Machine::Partition { offsets, .. } => Some(offsets),
            Machine::Custom(_) => None,
        }
    }

    pub fn producers(&self) -> Option<&ProducerState> {
        match &self.machine {
            Machine::Partition { producers, .. } => Some(producers),
            Machine::Custom(_) => None,
        }
    }

    pub fn transactions(&self) -> Option<&TxnIndex> {
        match &self.machine {
            Machine::Partition { transactions, .. } => Some(transactions),
            Machine::Custom(_) => None,
        }
    }

    fn not_leader(&self) -> ShardError {
        ShardError::NotLeader {
            group_id: self.id,
            leader: self.leader_id(),
        }
    }

    /// Proposes `data`; the reply comes when it commits. Returns the index it will occupy.
    pub fn propose(
        &mut self,
        data: Vec<u8>,
        reply: Option<ProposalReply>,
    ) -> Result<u64, ShardError> {
        self.propose_acked(data.into(), reply, false)
    }

    /// `propose`, answered on this leader's durable write instead of on commit when
    /// `leader_durable` is set (acks=1).
    pub fn propose_acked(
        &mut self,
        data: Bytes,
        reply: Option<ProposalReply>,
        leader_durable: bool,
    ) -> Result<u64, ShardError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        if reply.is_some() && self.waiters.len() >= self.waiters_max {
            return Err(ShardError::Overloaded(self.id));
        }
        self.wake();
        let before = self.node.raft.raft_log.last_index();
        // What `RawNode::propose` does, with the data as it is: that takes a `Vec`, which
        // would copy a batch that already sits in shared bytes.
        let entry = Entry {
            data,
            ..Default::default()
        };
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgPropose);
        message.from = self.node.raft.id;
        message.set_entries(vec![entry].into());
        self.node
            .raft
            .step(message)
            .map_err(|_| ShardError::ProposalDropped)?;
        let index = self.node.raft.raft_log.last_index();
        if index != before + 1 {
            return Err(ShardError::ProposalDropped);
        }
        if let Some(reply) = reply {
            self.waiters.insert(
                index,
                Waiter {
                    term: self.term(),
                    reply,
                    leader_durable,
                },
            );
        }
        Ok(index)
    }

    /// The base offset the next batch proposed now will get.
    pub fn next_batch_offset(&mut self) -> i64 {
        let term = self.term();
        if term != self.proposed_term {
            // Leadership changed: everything this leader has is in its persisted log, plus
            // what it proposed itself this term (tracked from here on).
            self.proposed_term = term;
            self.next_offset_proposed = self.offsets().map_or(0, |o| o.log_end_offset());
            if let Machine::Partition { producers, .. } = &self.machine {
                self.proposed_producers = producers.clone();
            }
        }
        self.next_offset_proposed
    }

    /// Idempotence check of a batch this leader is about to propose (call after
    /// `next_batch_offset`, which syncs the proposed state with leadership).
    pub fn check_sequence(&self, header: &BatchHeader) -> SequenceCheck {
        self.proposed_producers.check(header)
    }

    pub fn note_batch_proposed(&mut self, header: &BatchHeader, base_offset: i64, raft_index: u64) {
        self.next_offset_proposed += header.offset_count();
        self.proposed_producers
            .record(header, base_offset, raft_index);
    }

    /// Starts over from a leader's snapshot: the log becomes empty after `index`, and the
    /// state machine is what the snapshot holds (a partition: its log start offset).
    pub fn install_snapshot(&mut self, index: u64, term: u64, state: Bytes) {
        self.node.mut_store().install_snapshot(index, term, state);
        self.proposed_term = 0;
        self.rebuild_machine();
    }

    /// Indexes entries that were just persisted.
    pub fn on_persisted(&mut self, entries: &[Entry], truncated_from: Option<u64>) {
        if truncated_from.is_some() {
            // Raft replaced part of the log: rebuild offsets and producer state from it.
            self.proposed_term = 0;
            self.rebuild_machine();
            return;
        }
        if let Machine::Partition {
            offsets,
            producers,
            transactions,
            ..
        } = &mut self.machine
        {
            for entry in entries {
                let data_len = entry.data.len() as u32;
                if let Some(base_offset) = offsets.on_append(entry.index, &entry.data, data_len) {
                    if let Ok(header) = BatchHeader::parse(&entry.data) {
                        // The leader answered the producer with the offset it patched in; the
                        // log's fold must agree, or a client holds a wrong offset.
                        assert_eq!(
                            header.base_offset, base_offset,
                            "proposed and persisted offsets agree"
                        );
                        producers.record(&header, base_offset, entry.index);
                        transactions.on_batch(&header, &entry.data, base_offset);
                    }
                }
            }
        }
    }

    /// Applies committed entries and answers the proposals waiting on them.
    pub fn apply_committed(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|e| e.index) else {
            return;
        };
        for entry in &entries {
            if let Machine::Custom(machine) = &mut self.machine {
                if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
                    machine.apply(entry.index, &entry.data);
                }
            }
            if let Some(waiter) = self.waiters.remove(&entry.index) {
                let outcome = if waiter.term == entry.term {
                    Ok(entry.index)
                } else {
                    Err(ShardError::OutcomeUnknown(
                        "another leader's entry took its place",
                    ))
                };
                let _ = waiter.reply.send(outcome);
            }
        }
        // Waiters below the applied index belong to entries that were replaced.
        let stale: Vec<u64> = self.waiters.range(..=last).map(|(&i, _)| i).collect();
        for index in stale {
            if let Some(waiter) = self.waiters.remove(&index) {
                let _ = waiter
                    .reply
                    .send(Err(ShardError::OutcomeUnknown("entry was replaced")));
            }
        }
        self.node.mut_store().set_applied(last);
        if let Machine::Partition {
            offsets, cleanings, ..
        } = &mut self.machine
        {
            let before = offsets.high_watermark();
            offsets.on_commit(last);
            for floor in entries.iter().filter_map(|e| decode_delete_before(&e.data)) {
                offsets.delete_before(floor);
            }
            for entry in entries.iter().filter(|e| is_cleaning(&e.data)) {
                if let Some(cleaning) = Cleaning::decode(entry.index, &entry.data) {
                    cleaning.apply(entry.index, offsets);
                    cleanings.insert(entry.index, cleaning);
                }
            }
            if offsets.high_watermark() > before {
                self.wake_fetchers();
            }
        }
    }

    /// This leader's group commit made its entries up to `index` durable: acks=1 proposals
    /// among them are answered now (they may still be lost if this leader fails before a
    /// quorum holds them, as in Kafka).
    pub fn answer_leader_durable(&mut self, index: u64) {
        if !self.is_leader() {
            return;
        }
        let term = self.term();
        let durable: Vec<u64> = self
            .waiters
            .range(..=index)
            .filter(|(_, w)| w.leader_durable && w.term == term)
            .map(|(&i, _)| i)
            .collect();
        for index in durable {
            if let Some(waiter) = self.waiters.remove(&index) {
                let _ = waiter.reply.send(Ok(index));
            }
        }
    }

    /// This replica no longer leads: nothing it proposed can be answered by it any more
    /// (a later leader may still commit the entries, or replace them), so the producers
    /// waiting on it hear NOT_LEADER_OR_FOLLOWER now and retry at the new leader, instead of
    /// waiting for an index this replica's log may never reach.
    pub fn fail_waiters_if_not_leader(&mut self) {
        if self.is_leader() || self.waiters.is_empty() {
            return;
        }
        let leader = self.leader_id();
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            let _ = waiter.reply.send(Err(ShardError::NotLeader {
                group_id: self.id,
                leader,
            }));
        }
    }

    /// Someone reads this partition (a fetch, the cleaner, a coordinator loading it): its
    /// applied entries stay cached, at once and until `entry_cache_unread_ticks` pass
    /// without another read.
    pub fn note_read(&self) {
        self.ticks_since_read.set(0);
        self.node.store().keep_caching();
    }

    /// Whether a long-poll fetch waits on this group (it counts as a reader while it waits).
    pub fn has_fetch_waiters(&self) -> bool {
        self.fetch_waiters.iter().any(|w| !w.is_canceled())
    }

    /// Registers a long-poll fetch to be woken when the high watermark moves.
    pub fn add_fetch_waiter(&mut self) -> Result<oneshot::Receiver<()>, ShardError> {
        self.note_read();
        self.fetch_waiters.retain(|w| !w.is_canceled());
        if self.fetch_waiters.len() >= self.fetch_waiters_max {
            return Err(ShardError::Overloaded(self.id));
        }
        let (sender, receiver) = oneshot::channel();
        self.fetch_waiters.push(sender);
        Ok(receiver)
    }

    pub fn wake_fetchers(&mut self) {
        for waiter in self.fetch_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    /// Fails everything waiting on the group; it is being removed.
    pub fn close(&mut self) {
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            let _ = waiter.reply.send(Err(ShardError::GroupRemoved));
        }
        self.wake_fetchers();
    }

    /// The state to store with a compaction point at the group's current snapshot index.
    pub fn snapshot_state(&self) -> Bytes {
        match &self.machine {
            Machine::Partition { .. } => self.node.store().snapshot_state().clone(),
            Machine::Custom(machine) => Bytes::from(machine.snapshot()),
        }
    }
}

/// Ticks a follower may take to answer a snapshot before it is sent again.
const SNAPSHOT_RETRY_TICKS: u32 = 2 * config::ELECTION_TICKS as u32;

/// A partition entry that is not a record batch (too short to parse as one, so it occupies no
/// offsets): DeleteRecords' new log start, applied when committed.
const DELETE_BEFORE_TAG: &[u8] = b"chronik:delete-before:";

pub fn encode_delete_before(offset: i64) -> Vec<u8> {
    let mut data = DELETE_BEFORE_TAG.to_vec();
    data.extend_from_slice(&offset.to_be_bytes());
    data
}

fn decode_delete_before(data: &[u8]) -> Option<i64> {
    let raw = data.strip_prefix(DELETE_BEFORE_TAG)?;
    Some(i64::from_be_bytes(raw.try_into().ok()?))
}

/// A partition entry written by log compaction: the batches in `from..to` give way to the
/// ones it carries (the same records less those compaction dropped, at their original
/// offsets). Tag (16 bytes), a version byte of 0 (where a batch has its magic byte, so the
/// entry never parses as a batch), `from` and `to` (big-endian), then the batches.
const CLEANING_TAG: &[u8; 16] = b"chronik:cleaned:";
const CLEANING_HEADER_BYTES: usize = 16 + 1 + 8 + 8;

pub fn is_cleaning(data: &[u8]) -> bool {
    data.starts_with(CLEANING_TAG)
}

/// A cleaning entry's data: `batches` are whole Kafka batches, concatenated, each carrying
/// its real base offset.
pub fn encode_cleaning(from: i64, to: i64, batches: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(CLEANING_HEADER_BYTES + batches.len());
    data.extend_from_slice(CLEANING_TAG);
    data.push(0);
    data.extend_from_slice(&from.to_be_bytes());
    data.extend_from_slice(&to.to_be_bytes());
    data.extend_from_slice(batches);
    data
}

/// Decodes a committed cleaning entry met while the log is replayed, unless already known.
fn remember_cleaning(
    group_id: u64,
    cleanings: &mut BTreeMap<u64, Cleaning>,
    index: u64,
    entry: &log::LogEntry,
) {
    if cleanings.contains_key(&index) {
        return;
    }
    match entry
        .data
        .as_deref()
        .and_then(|data| Cleaning::decode(index, data))
    {
        Some(cleaning) => {
            cleanings.insert(index, cleaning);
        }
        None => tracing::error!(
            group_id,
            index,
            "a cleaning entry's data is missing: its batches are not served"
        ),
    }
}

/// A decoded cleaning entry.
#[derive(Debug, Clone)]
pub struct Cleaning {
    from: i64,
    to: i64,
    kept: Vec<BatchMeta>,
}

impl Cleaning {
    /// The entry at `raft_index` with `data`; None for data that is not a well-formed
    /// cleaning entry (it is then ignored, which keeps the batches it would have replaced).
    pub fn decode(raft_index: u64, data: &[u8]) -> Option<Self> {
        let rest = data.strip_prefix(CLEANING_TAG.as_slice())?;
        let (&version, rest) = rest.split_first()?;
        if version != 0 || rest.len() < 16 {
            return None;
        }
        let from = i64::from_be_bytes(rest[..8].try_into().ok()?);
        let to = i64::from_be_bytes(rest[8..16].try_into().ok()?);
        let mut kept = Vec::new();
        let mut at = CLEANING_HEADER_BYTES;
        while at < data.len() {
            let header = BatchHeader::parse(&data[at..]).ok()?;
            let bytes = usize::try_from(header.batch_length).ok()?
                + crate::partition::batch::LOG_OVERHEAD_BYTES;
            if header.magic != 2 || at + bytes > data.len() {
                return None;
            }
            kept.push(BatchMeta {
                raft_index,
                base_offset: header.base_offset,
                next_offset: header.base_offset + i64::from(header.last_offset_delta) + 1,
                max_timestamp: header.max_timestamp,
                bytes: bytes as u32,
                leader_epoch: header.partition_leader_epoch,
                data_skip: at as u32,
            });
            at += bytes;
        }
        Some(Self { from, to, kept })
    }

    fn apply(&self, raft_index: u64, offsets: &mut PartitionOffsets) {
        if !offsets.replace_cleaned(raft_index, self.from, self.to, &self.kept) {
            tracing::warn!(
                raft_index,
                from = self.from,
                to = self.to,
                "a cleaning entry no longer fits the log; skipped"
            );
        }
    }
}
