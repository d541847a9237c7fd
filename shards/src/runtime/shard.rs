//! The shard: one per core, owning a WAL and the Raft groups placed on it. Everything here
//! runs on that core's glommio executor; state is `Rc<RefCell<Shard>>` and no borrow is ever
//! held across an `.await`.
//!
//! The pump (`run_pump`) is the only writer to the WAL:
//! ```text
//!   wait (doorbell | tick) -> tick groups -> Ready of every dirty group -> WAL append
//!   -> one group commit (one O_DSYNC write) -> advance every group -> apply -> answer waiters
//! ```
//! While a group commit is in flight, proposals keep arriving and queue in Raft; the next
//! pass carries all of them. Once `WalConfig::overlap_min_bytes` have queued behind a large
//! commit, the next pass starts beside it (two commits in flight, see `may_begin_pass`);
//! passes end in the order they began, so Raft learns what is durable in order.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::timer::Timer;
use raft::eraftpb::{Entry, Message, MessageType, Snapshot};
use raft::{RawNode, StateRole};

use crate::error::ShardError;
use crate::group::log::{entry_type_byte, GroupLog};
pub use crate::group::AckWhen;
use crate::group::{config::raft_config, Machine, RaftGroup, StateMachine};
use crate::partition::batch::{self, BatchHeader};
use crate::partition::offsets::{BatchMeta, PartitionOffsets, RetentionLimits};
use crate::partition::owned_batch::OwnedBatch;
use crate::partition::producer_state::SequenceCheck;
use crate::partition::transactions::TxnIndex;
use crate::wal::disk::DmaDisk;
use crate::wal::record::RecordKind;
use crate::wal::recovery::{
    EntryHeader, HardStateRecord, RecoveredGroup, SnapshotRecord, ENTRY_HEADER_BYTES,
};
use crate::wal::{
    read_run, Disk, FlushDone, FlushJob, PrepareJob, RecordReader, Wal, WalConfig, WalError,
};

#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub shard_id: usize,
    /// This node's id in every Raft group.
    pub replica_id: u64,
    pub wal: WalConfig,
    pub tick_interval_ms: u64,
    /// The most one partition caches of its recent entries...
    pub entry_cache_bytes_max: usize,
    /// ...and all of the shard's partitions together: each gets an equal share of this, up
    /// to `entry_cache_bytes_max`, so memory stays bounded however many partitions there are.
    pub entry_cache_shard_bytes_max: usize,
    /// Ticks without a read after which a partition with one replica stops caching its
    /// applied entries (0: always cache). A read, or a long-poll fetch waiting on it, turns
    /// caching back on at once; a consumer that comes back later reads from the WAL, as after
    /// any eviction. Replicated partitions always cache: their followers read the entries.
    /// A quiet group does not tick, so its caching stays as it was until it wakes.
    pub entry_cache_unread_ticks: u32,
    pub proposal_waiters_max: usize,
    pub fetch_waiters_max: usize,
    pub uncommitted_bytes_max: u64,
    /// The simulation: raft-rs draws election timeouts from an unseeded random source, so a
    /// simulated run fixes them (each node's ticks come from the seed anyway) to replay
    /// exactly.
    pub deterministic_elections: bool,
}

pub enum GroupSpec {
    Partition {
        group_id: u64,
        retention: RetentionLimits,
    },
    Custom {
        group_id: u64,
        machine: Box<dyn StateMachine>,
    },
}

impl GroupSpec {
    pub fn group_id(&self) -> u64 {
        match self {
            GroupSpec::Partition { group_id, .. } | GroupSpec::Custom { group_id, .. } => *group_id,
        }
    }
}

pub type ShardRef<D = DmaDisk> = Rc<RefCell<Shard<D>>>;

/// How long a stopping pump keeps flushing before it gives up (everything acknowledged is
/// already durable; this only bounds shutdown).
const PUMP_DRAIN_MAX: Duration = Duration::from_secs(5);

/// Resolves with the Raft index once the proposal commits.
pub type CommitReceiver = oneshot::Receiver<Result<u64, ShardError>>;

/// A Ready handed to Raft with `advance_append_async`, to be confirmed after the group commit.
struct PendingPersist {
    group_id: u64,
    number: u64,
    /// Votes and append responses: sent only once the group commit made their promise true.
    messages: Vec<Message>,
    /// A snapshot installed by this Ready: Raft may count it applied only once it is durable.
    snapshot_index: Option<u64>,
    /// The last entry this Ready writes (acks=1 proposals up to it are answered when durable).
    last_entry: Option<u64>,
}

/// Raft messages of one group to a peer replica (the `to` field names the replica).
pub type Outgoing = (u64, Message);

/// Where a shard's outgoing Raft messages go (the node's peer transport). Called inside the
/// pump's pass, with the shard borrowed: it must only queue, never call back into the shard.
pub type MessageSink = Box<dyn FnMut(Vec<Outgoing>)>;

/// Entries of a group to read back from the WAL for a lagging follower (their data was
/// evicted from memory); see `Shard::take_refills`.
pub struct Refill<D: Disk = DmaDisk> {
    pub group_id: u64,
    pub readers: Vec<(u64, RecordReader<D>)>,
}

/// The most one refill reads back, so catching up a follower is done in bounded steps.
const REFILL_BYTES_MAX: usize = 8 << 20;

/// Ticks of nothing but heartbeats before a leader lets its group go quiet: long enough for
/// two heartbeat rounds to carry the final commit index to every follower.
const QUIESCE_AFTER_TICKS: u32 = 2 * crate::group::config::HEARTBEAT_TICKS as u32 + 2;
/// Ticks after which the preferred leader of a group without a leader campaigns.
const PREFERRED_CAMPAIGN_TICKS: usize = 3;
/// The context of the heartbeat that tells followers their group went quiet.
pub const QUIESCE_CONTEXT: &[u8] = b"chronik-quiesce";

/// What one replica knows of a group now (Metadata, leadership moves).
#[derive(Debug, Clone)]
pub struct GroupStatus {
    pub leader: Option<u64>,
    pub term: u64,
    /// Replicas the leader sees replicating and recently heard from, itself included; only
    /// known on the leader (empty elsewhere).
    pub in_sync: Vec<u64>,
    pub voters: Vec<u64>,
}

/// One pass of the pump between `begin_pass` and `end_pass`: the group commit to run (if
/// anything was appended) and the Readies it makes durable.
pub struct Pass<D: Disk = DmaDisk> {
    number: u64,
    pending: Vec<PendingPersist>,
    /// Compaction points this pass's commit writes; durable once it completes.
    compactions: Vec<(u64, u64)>,
    installs_snapshot: bool,
    pub flush: Option<FlushJob<D>>,
}

pub struct Shard<D: Disk = DmaDisk> {
    config: ShardConfig,
    wal: Wal<D>,
    groups: BTreeMap<u64, RaftGroup>,
    /// Recovered state of groups the metadata has not claimed yet.
    recovered: BTreeMap<u64, RecoveredGroup>,
    dirty: BTreeSet<u64>,
    /// Removed groups whose entries may still sit in a kept segment: each checkpoint restates
    /// their tombstone.
    removed: BTreeSet<u64>,
    /// Groups whose commit index moved (LightReady) since their hard state was last written.
    /// Written with the next group commit that happens anyway: Raft recovers the commit index
    /// by itself, so this only bounds the work of a restart.
    commit_unpersisted: BTreeSet<u64>,
    /// Per group: the compaction point that is durable in the WAL (retention input).
    durable_compacted: BTreeMap<u64, u64>,
    /// Passes begun and not ended (at most two; ended in the order begun).
    passes_in_flight: usize,
    /// Numbers of the next pass to begin and of the next to end.
    next_pass_begun: u64,
    next_pass_ended: u64,
    /// Passes in flight that install a leader's snapshot: nothing overlaps them (Raft may
    /// count the snapshot applied only once it is durable, see `collect_ready`).
    snapshot_passes_in_flight: usize,
    /// Bytes proposed or replicated to this shard since the last pass began: what the next
    /// pass would commit, roughly (when to start it beside one in flight).
    unflushed_bytes: usize,
    pending_compactions: Vec<(u64, u64)>,
    /// The WAL's tail segment at the last retention pass: a roll since then makes one due,
    /// so segments are freed (and their files kept for reuse) as fast as they fill, not only
    /// at the periodic check.
    retention_seen_tail: u64,
    groups_installed: bool,
    /// Shutting down: new proposals are refused with NotLeader (retriable).
    refusing_proposals: bool,
    doorbell: LocalSender<()>,
    logger: slog::Logger,
    /// Raft messages produced by the last steps, handed to `message_sink` by the pass.
    outbox: Vec<Outgoing>,
    message_sink: Option<MessageSink>,
    /// Groups with a refill being read (one at a time per group).
    refilling: BTreeSet<u64>,
    refusing_leadership: bool,
    /// Each partition group's cache budget (see `ShardConfig::entry_cache_shard_bytes_max`),
    /// shared with their logs.
    partition_cache_share: Rc<Cell<usize>>,
    /// The share when every partition group last evicted down to it: a share that fell
    /// below half of this makes them all evict at once (idle groups evict nothing by
    /// themselves), so the shard holds at most twice its budget.
    partition_cache_swept: usize,
    /// Groups of `groups` that are not partitions (the controller, coordinators).
    custom_groups: usize,
}

/// See `Shard::cleaning_bounds`: the cleaner replaces the batches in `from..to` (it reads
/// from `log_start_offset`; batches wholly below it are gone for clients already).
#[derive(Debug, Clone, Copy)]
pub struct CleaningBounds {
    pub from: i64,
    pub log_start_offset: i64,
    pub to: i64,
    pub cleaned_bytes: u64,
    pub dirty_bytes: u64,
}

/// What a fetch reads from one partition: cached batches and WAL reads, in offset order.
pub struct ReadPlan<D: Disk = DmaDisk> {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub last_stable_offset: i64,
    /// read_committed: the aborted transactions with records in what the plan reads
    /// (producer id, first offset), for the consumer to drop.
    pub aborted: Vec<(i64, i64)>,
    pub pieces: Vec<ReadPiece<D>>,
}

pub enum ReadPiece<D: Disk = DmaDisk> {
    Cached {
        base_offset: i64,
        batch: Bytes,
    },
    Disk {
        base_offset: i64,
        reader: RecordReader<D>,
        /// Where the batch sits in the entry's data: all of it, except for the batches of a
        /// cleaning entry (several pieces then share one entry, read once).
        skip: u32,
        bytes: u32,
    },
}

impl<D: Disk> ReadPlan<D> {
    /// The bytes its batches add up to, once loaded.
    pub fn bytes(&self) -> usize {
        self.pieces
            .iter()
            .map(|piece| match piece {
                ReadPiece::Cached { batch, .. } => batch.len(),
                ReadPiece::Disk { bytes, .. } => *bytes as usize,
            })
            .sum()
    }

    /// The bytes of its batches that are read from the WAL (not in the entry cache).
    pub fn disk_bytes(&self) -> usize {
        self.pieces
            .iter()
            .map(|piece| match piece {
                ReadPiece::Cached { .. } => 0,
                ReadPiece::Disk { bytes, .. } => *bytes as usize,
            })
            .sum()
    }
}

impl<D: Disk> ReadPiece<D> {
    pub fn is_from_disk(&self) -> bool {
        matches!(self, ReadPiece::Disk { .. })
    }

    /// The batch bytes with the base offset the log assigned.
    pub async fn load(self) -> Result<Bytes, ShardError> {
        let mut batches = load_pieces(vec![self]).await?;
        Ok(batches.pop().expect("one piece, one batch"))
    }
}

/// How many reads one partition's fetch keeps in flight. Batches of different partitions
/// interleave in the WAL, so a partition's batches are often separate reads; one at a time
/// left the disk idle between them.
const READS_IN_FLIGHT: usize = 16;

/// One step of loading a read plan: batches already in memory, or one I/O of nearby records
/// and the batches wanted from it as (base offset, which record of the run, span in its
/// data).
enum ReadStep<D: Disk> {
    Cached(Vec<(i64, Bytes)>),
    Run {
        readers: Vec<RecordReader<D>>,
        wanted: Vec<(i64, usize, u32, u32)>,
    },
}

/// Loads a read plan's pieces in order. Runs of records that sit close together in one WAL
/// segment are read with one I/O each, so a consumer catching up over many small batches
/// costs a few large reads, not one read per batch; up to `READS_IN_FLIGHT` run at once.
pub async fn load_pieces<D: Disk>(pieces: Vec<ReadPiece<D>>) -> Result<Vec<Bytes>, ShardError> {
    use futures::{StreamExt, TryStreamExt};
    let loaded: Vec<Vec<Bytes>> = futures::stream::iter(read_steps(pieces))
        .map(load_step)
        .buffered(READS_IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(loaded.into_iter().flatten().collect())
}

/// Groups pieces into steps: neighbouring cached batches together, and disk pieces into runs.
fn read_steps<D: Disk>(pieces: Vec<ReadPiece<D>>) -> Vec<ReadStep<D>> {
    let mut steps = Vec::new();
    let mut pieces = pieces.into_iter().peekable();
    while let Some(piece) = pieces.next() {
        let (base_offset, reader, skip, bytes) = match piece {
            ReadPiece::Cached { base_offset, batch } => {
                match steps.last_mut() {
                    Some(ReadStep::Cached(batches)) => batches.push((base_offset, batch)),
                    _ => steps.push(ReadStep::Cached(vec![(base_offset, batch)])),
                }
                continue;
            }
            ReadPiece::Disk {
                base_offset,
                reader,
                skip,
                bytes,
            } => (base_offset, reader, skip, bytes),
        };
        let run_start = reader.position();
        let mut wanted = vec![(base_offset, 0usize, skip, bytes)];
        let mut run = vec![reader];
        let joins_run = |run: &[RecordReader<D>], piece: &ReadPiece<D>| match piece {
            ReadPiece::Disk { reader: next, .. } => run.last().is_some_and(|last| {
                last.location() == next.location() || last.can_extend_run(run_start, next)
            }),
            ReadPiece::Cached { .. } => false,
        };
        while let Some(ReadPiece::Disk {
            base_offset,
            reader,
            skip,
            bytes,
        }) = pieces.next_if(|piece| joins_run(&run, piece))
        {
            let last = run.last().expect("a run has a record");
            if last.location() != reader.location() {
                run.push(reader);
            }
            wanted.push((base_offset, run.len() - 1, skip, bytes));
        }
        steps.push(ReadStep::Run {
            readers: run,
            wanted,
        });
    }
    steps
}

async fn load_step<D: Disk>(step: ReadStep<D>) -> Result<Vec<Bytes>, ShardError> {
    let (readers, wanted) = match step {
        ReadStep::Cached(batches) => {
            return batches
                .into_iter()
                .map(|(base_offset, batch)| with_base_offset(base_offset, batch))
                .collect();
        }
        ReadStep::Run { readers, wanted } => (readers, wanted),
    };
    let payloads = read_run(readers).await?;
    wanted
        .into_iter()
        .map(|(base_offset, record, skip, bytes)| {
            let start = ENTRY_HEADER_BYTES + skip as usize;
            let batch = payloads[record]
                .get(start..start + bytes as usize)
                .map(|_| payloads[record].slice(start..start + bytes as usize))
                .ok_or(ShardError::OutcomeUnknown("a batch lies outside its entry"))?;
            with_base_offset(base_offset, batch)
        })
        .collect()
}

/// A stored batch as served: the base offset the log assigned patched in (the leader patched
/// it before storing, so this copies only for batches stored otherwise).
fn with_base_offset(base_offset: i64, batch: Bytes) -> Result<Bytes, ShardError> {
    let header = BatchHeader::parse(&batch)
        .map_err(|_| ShardError::OutcomeUnknown("stored batch lost its header"))?;
    if header.base_offset == base_offset {
        return Ok(batch);
    }
    let mut patched = batch.to_vec();
    batch::patch(&mut patched, base_offset, header.partition_leader_epoch);
    Ok(Bytes::from(patched))
}

impl Shard<DmaDisk> {
    /// Opens the shard's WAL on real files; see `open_on`.
    pub async fn open(config: ShardConfig) -> Result<(ShardRef, LocalReceiver<()>), ShardError> {
        Shard::open_on(DmaDisk, config).await
    }
}

impl<D: Disk> Shard<D> {
    /// Opens the shard's WAL. Groups come to life with `add_group` once metadata names them.
    pub async fn open_on(
        disk: D,
        config: ShardConfig,
    ) -> Result<(ShardRef<D>, LocalReceiver<()>), ShardError> {
        let (wal, recovered) = Wal::open_on(disk, config.wal.clone()).await?;
        let (doorbell, doorbell_rx) = local_channel::new_bounded(1);
        let logger = slog::Logger::root(
            crate::group::raft_log_bridge::TracingDrain,
            slog::o!("shard" => config.shard_id),
        );
        let removed: BTreeSet<u64> = recovered
            .groups
            .iter()
            .filter(|(_, g)| g.removed)
            .map(|(&id, _)| id)
            .collect();
        let recovered_groups: BTreeMap<u64, RecoveredGroup> = recovered
            .groups
            .into_iter()
            .filter(|(_, g)| !g.removed)
            .collect();
        tracing::info!(
            shard = config.shard_id,
            groups = recovered_groups.len(),
            segments = wal.segment_count(),
            "wal recovered"
        );
        let entry_cache_bytes_max = config.entry_cache_bytes_max;
        let shard = Shard {
            config,
            wal,
            groups: BTreeMap::new(),
            recovered: recovered_groups,
            dirty: BTreeSet::new(),
            commit_unpersisted: BTreeSet::new(),
            // Groups whose tombstone is already durable pin nothing; every other group's
            // entries pin their segments until a durable compaction point says otherwise.
            durable_compacted: removed
                .iter()
                .map(|&group_id| (group_id, u64::MAX))
                .collect(),
            removed,
            passes_in_flight: 0,
            next_pass_begun: 0,
            next_pass_ended: 0,
            snapshot_passes_in_flight: 0,
            unflushed_bytes: 0,
            pending_compactions: Vec::new(),
            retention_seen_tail: 0,
            groups_installed: false,
            refusing_proposals: false,
            doorbell,
            logger,
            outbox: Vec::new(),
            message_sink: None,
            refilling: BTreeSet::new(),
            refusing_leadership: false,
            partition_cache_share: Rc::new(Cell::new(entry_cache_bytes_max)),
            partition_cache_swept: entry_cache_bytes_max,
            custom_groups: 0,
        };
        let shard = Rc::new(RefCell::new(shard));
        // A partition's offsets need the batches listed in its cleaning entries (few, and
        // small next to what they replaced) before it comes to life.
        let group_ids = shard.borrow().recovered_group_ids();
        for group_id in group_ids {
            Self::preload_recovered_where(&shard, group_id, crate::group::is_cleaning).await?;
        }
        Ok((shard, doorbell_rx))
    }

    /// Groups recovered from the WAL that no metadata has claimed yet.
    pub fn recovered_group_ids(&self) -> Vec<u64> {
        self.recovered.keys().copied().collect()
    }

    pub fn shard_id(&self) -> usize {
        self.config.shard_id
    }

    fn ring(&self) {
        // With a pass in flight the pump looks for work when it ends anyway; it only needs
        // waking for a pass it may start beside it.
        if self.passes_in_flight > 0 && !self.overlap_due() {
            return;
        }
        // A full doorbell already means "work pending".
        let _ = self.doorbell.try_send(());
    }

    /// Counts bytes that the next pass will commit (see `may_begin_pass`).
    fn note_unflushed(&mut self, bytes: usize) {
        self.unflushed_bytes = self.unflushed_bytes.saturating_add(bytes);
    }

    /// Enough has queued behind the one pass in flight to start the next beside it.
    ///
    /// Not when a pass merely ended with another in flight, though only a pass applies what
    /// it made durable (answering acks=all): such passes would commit the little that came
    /// meanwhile, and measured 14% less throughput with higher latency than waiting for the
    /// pass in flight or for enough to queue (BENCHMARKS.md, 2026-11-27 midday).
    fn overlap_due(&self) -> bool {
        self.passes_in_flight == 1
            && self.snapshot_passes_in_flight == 0
            && self.unflushed_bytes >= self.config.wal.overlap_min_bytes
            && self.wal.flush_may_start()
    }

    /// Whether the pump may begin a pass now: work is waiting and no pass is in flight, or
    /// one is and a pass beside it is due (see `overlap_due`).
    pub fn may_begin_pass(&self) -> bool {
        self.has_work() && (self.passes_in_flight == 0 || self.overlap_due())
    }

    pub fn has_group(&self, group_id: u64) -> bool {
        self.groups.contains_key(&group_id)
    }

    pub fn group_ids(&self) -> Vec<u64> {
        self.groups.keys().copied().collect()
    }

    /// Sends this shard's outgoing Raft messages to `sink` from now on (without one, they are
    /// dropped: a lone voter has none).
    pub fn set_message_sink(&mut self, sink: MessageSink) {
        self.message_sink = Some(sink);
    }

    fn flush_outbox(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let messages = std::mem::take(&mut self.outbox);
        if let Some(sink) = self.message_sink.as_mut() {
            sink(messages);
        }
    }

    /// Brings a group to life with this replica as its only voter; see `add_group_with_voters`.
    pub fn add_group(&mut self, spec: GroupSpec) -> Result<(), ShardError> {
        let voters = vec![self.config.replica_id];
        self.add_group_with_voters(spec, voters)
    }

    /// Brings a group to life from its recovered state (or empty) with `voters` (replica ids,
    /// this replica among them, the preferred leader first). Every replica is created with
    /// the same voters from the same metadata, so no configuration change is needed. A lone
    /// voter leads at once; the preferred leader of a new group campaigns at once, so a new
    /// partition has a leader without waiting for an election timeout.
    pub fn add_group_with_voters(
        &mut self,
        spec: GroupSpec,
        voters: Vec<u64>,
    ) -> Result<(), ShardError> {
        let group_id = spec.group_id();
        if self.groups.contains_key(&group_id) {
            return Ok(());
        }
        if !voters.contains(&self.config.replica_id) {
            return Err(ShardError::OutcomeUnknown("this replica is not a voter"));
        }
        let recovered = self.recovered.remove(&group_id).unwrap_or_default();
        self.durable_compacted
            .insert(group_id, recovered.snapshot.index);
        let preferred = voters.first() == Some(&self.config.replica_id);
        // A custom state machine replays its entries from memory (its log is compacted at
        // every checkpoint instead), so its entries are never evicted.
        let cache_bytes_max = match spec {
            GroupSpec::Partition { .. } => self.partition_cache_share.clone(),
            GroupSpec::Custom { .. } => Rc::new(Cell::new(usize::MAX)),
        };
        let log = GroupLog::recovered(recovered, voters.clone(), cache_bytes_max);
        let applied = log.hard_state().commit;
        let raft_config = raft_config(
            self.config.replica_id,
            applied,
            self.config.uncommitted_bytes_max,
            self.config.deterministic_elections,
        )
        .map_err(|_| ShardError::OutcomeUnknown("invalid raft config"))?;
        let node = RawNode::new(
            &raft_config,
            log,
            &self.logger.new(slog::o!("group" => group_id)),
        )
        .map_err(|_| ShardError::OutcomeUnknown("raft refused the recovered log"))?;
        let machine = match spec {
            GroupSpec::Partition { retention, .. } => Machine::Partition {
                offsets: PartitionOffsets::starting_at(0),
                retention,
                producers: Default::default(),
                transactions: Default::default(),
                cleanings: Default::default(),
            },
            GroupSpec::Custom { machine, .. } => Machine::Custom(machine),
        };
        let mut group = RaftGroup::new(
            group_id,
            node,
            machine,
            self.config.proposal_waiters_max,
            self.config.fetch_waiters_max,
        );
        group.preferred_leader = voters[0];
        let fresh = group.node.raft.term == 0 && group.node.store().last_index() == 0;
        if voters.len() == 1 || (preferred && fresh) {
            // A lone voter needs no election timeout: it wins at once.
            let _ = group.node.campaign();
        }
        if group.offsets().is_none() {
            self.custom_groups += 1;
        }
        let replaced = self.groups.insert(group_id, group);
        assert!(replaced.is_none(), "a group is added once");
        self.share_partition_cache();
        self.dirty.insert(group_id);
        self.ring();
        Ok(())
    }

    /// Divides the shard's cache budget among its partition groups (after one was added or
    /// removed).
    fn share_partition_cache(&mut self) {
        let partitions = self.groups.len() - self.custom_groups;
        let share = (self.config.entry_cache_shard_bytes_max / partitions.max(1))
            .min(self.config.entry_cache_bytes_max);
        self.partition_cache_share.set(share);
        if share >= self.partition_cache_swept / 2 {
            self.partition_cache_swept = self.partition_cache_swept.max(share);
            return;
        }
        for group in self.groups.values_mut() {
            if group.offsets().is_some() {
                group.node.mut_store().evict_cache();
            }
        }
        self.partition_cache_swept = share;
    }

    /// Reads back the data of recovered entries that recovery did not keep in memory, for a
    /// group whose state machine replays entries (the controller). Start-up only.
    pub async fn preload_recovered_data(
        shard: &ShardRef<D>,
        group_id: u64,
    ) -> Result<(), ShardError> {
        Self::preload_recovered_where(shard, group_id, |_| true).await
    }

    /// `preload_recovered_data` for the entries whose head `wanted` picks.
    async fn preload_recovered_where(
        shard: &ShardRef<D>,
        group_id: u64,
        wanted: impl Fn(&[u8]) -> bool,
    ) -> Result<(), ShardError> {
        let readers = {
            let state = shard.borrow();
            let Some(recovered) = state.recovered.get(&group_id) else {
                return Ok(());
            };
            recovered
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.data.is_none() && wanted(&e.head))
                .map(|(position, e)| Ok((position, state.wal.reader(e.location)?)))
                .collect::<Result<Vec<_>, ShardError>>()?
        };
        for (position, reader) in readers {
            let payload = reader.read_payload().await?;
            let data = payload.slice(ENTRY_HEADER_BYTES..);
            let mut state = shard.borrow_mut();
            if let Some(entry) = state
                .recovered
                .get_mut(&group_id)
                .and_then(|g| g.entries.get_mut(position))
            {
                entry.data = Some(data);
            }
        }
        Ok(())
    }

    pub fn set_retention(&mut self, group_id: u64, limits: RetentionLimits) {
        if let Some(RaftGroup {
            machine: Machine::Partition { retention, .. },
            ..
        }) = self.groups.get_mut(&group_id)
        {
            *retention = limits;
        }
    }

    /// Removes a group (its topic was deleted): waiters fail, and its log no longer pins WAL
    /// segments once the removal record is durable.
    pub fn remove_group(&mut self, group_id: u64) {
        if let Some(mut group) = self.groups.remove(&group_id) {
            group.close();
            if group.offsets().is_none() {
                self.custom_groups -= 1;
            }
            self.share_partition_cache();
        }
        let recovered_snapshot = self
            .recovered
            .remove(&group_id)
            .map_or(0, |g| g.snapshot.index);
        self.dirty.remove(&group_id);
        self.removed.insert(group_id);
        // Until the tombstone is durable, the group's entries still pin their segments.
        self.durable_compacted
            .entry(group_id)
            .or_insert(recovered_snapshot);
        self.wal.append(group_id, RecordKind::GroupRemoved, &[]);
        self.pending_compactions.push((group_id, u64::MAX));
        self.ring();
    }

    /// Called once every group the metadata assigns here was added: recovered groups nobody
    /// claimed belong to deleted topics.
    pub fn finish_group_install(&mut self) {
        let unclaimed: Vec<u64> = self.recovered.keys().copied().collect();
        for group_id in unclaimed {
            tracing::info!(
                shard = self.config.shard_id,
                group_id,
                "dropping recovered group of a deleted topic"
            );
            self.remove_group(group_id);
        }
        self.groups_installed = true;
    }

    /// The metadata has been applied once: from now on unneeded segments may be reclaimed
    /// (groups recovered but unclaimed keep theirs until the metadata shows them deleted).
    pub fn mark_groups_installed(&mut self) {
        self.groups_installed = true;
    }

    /// Shutting down: this replica must not become a leader again (a transfer request from a
    /// peer restoring preferred leaders is ignored).
    pub fn refuse_leadership(&mut self) {
        self.refusing_leadership = true;
    }

    pub fn refuse_proposals(&mut self) {
        self.refusing_proposals = true;
    }

    /// Wakes every parked long-poll fetch (shutdown: they answer with what they have).
    pub fn wake_all_fetches(&mut self) {
        for group in self.groups.values_mut() {
            group.wake_fetchers();
        }
    }

    fn group_mut(&mut self, group_id: u64) -> Result<&mut RaftGroup, ShardError> {
        if self.refusing_proposals {
            return Err(ShardError::NotLeader {
                group_id,
                leader: None,
            });
        }
        self.groups
            .get_mut(&group_id)
            .ok_or(ShardError::UnknownGroup(group_id))
    }

    /// Bytes of a group's entries held in memory (tests and metrics).
    pub fn cached_entry_bytes(&self, group_id: u64) -> Result<usize, ShardError> {
        Ok(self.group(group_id)?.node.store().cached_bytes())
    }

    fn group(&self, group_id: u64) -> Result<&RaftGroup, ShardError> {
        self.groups
            .get(&group_id)
            .ok_or(ShardError::UnknownGroup(group_id))
    }

    /// Proposes arbitrary data to a group (the controller's commands).
    pub fn propose(&mut self, group_id: u64, data: Vec<u8>) -> Result<CommitReceiver, ShardError> {
        let (reply, receiver) = oneshot::channel();
        let bytes = data.len();
        self.group_mut(group_id)?.propose(data, Some(reply))?;
        self.dirty.insert(group_id);
        self.note_unflushed(bytes);
        self.ring();
        Ok(receiver)
    }

    /// Whether every batch this leader proposed to the partition is committed (nothing in
    /// flight): a coordinator rewrites its state only then.
    pub fn nothing_in_flight(&mut self, group_id: u64) -> Result<bool, ShardError> {
        let high_watermark = self.read_offsets(group_id)?.high_watermark();
        Ok(self.group_mut(group_id)?.next_batch_offset() == high_watermark)
    }

    /// DeleteRecords on the leader: proposes a new log start (`-1`: the high watermark) that
    /// every replica applies once committed. Returns the target and, unless nothing is to
    /// delete, a receiver that resolves at commit.
    pub fn propose_delete_before(
        &mut self,
        group_id: u64,
        offset: i64,
    ) -> Result<(i64, Option<CommitReceiver>), ShardError> {
        let offsets = self.read_offsets(group_id)?;
        let (start, high_watermark) = (offsets.log_start_offset(), offsets.high_watermark());
        let target = if offset == -1 { high_watermark } else { offset };
        if target < 0 || target > high_watermark {
            return Err(ShardError::OffsetOutOfRange {
                offset,
                log_start_offset: start,
                high_watermark,
            });
        }
        if target <= start {
            return Ok((start, None));
        }
        let receiver = self.propose(group_id, crate::group::encode_delete_before(target))?;
        Ok((target, Some(receiver)))
    }

    /// What the log cleaner needs to plan a pass over a partition this shard leads: the
    /// committed batches below the last stable offset whose records are all at or before
    /// `newest_timestamp` (min.compaction.lag.ms), and how much of the partition is clean.
    /// None when there is nothing to clean.
    pub fn cleaning_bounds(
        &self,
        group_id: u64,
        newest_timestamp: i64,
    ) -> Result<Option<CleaningBounds>, ShardError> {
        let last_stable_offset = self.last_stable_offset(group_id)?;
        let offsets = self.read_offsets(group_id)?;
        let log_start_offset = offsets.log_start_offset();
        let Some(from) = offsets.first_batch_offset() else {
            return Ok(None);
        };
        let to = offsets
            .committed_up_to(log_start_offset, last_stable_offset)
            .take_while(|b| b.max_timestamp <= newest_timestamp)
            .last()
            .map(|b| b.next_offset);
        let (cleaned_bytes, dirty_bytes) = offsets.cleaned_and_dirty_bytes();
        Ok(to.map(|to| CleaningBounds {
            from: from.min(log_start_offset),
            log_start_offset,
            to,
            cleaned_bytes,
            dirty_bytes,
        }))
    }

    /// The aborted transactions with records in `from..to`: (producer id, first offset).
    pub fn aborted_transactions(
        &self,
        group_id: u64,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, i64)>, ShardError> {
        Ok(self
            .group(group_id)?
            .transactions()
            .map(|t| t.aborted_between(from, to))
            .unwrap_or_default())
    }

    /// Proposes a validated record batch to a partition. Returns its base offset and, unless
    /// `wait` is false (acks=0), a receiver that resolves once the batch is committed.
    pub fn propose_batch(
        &mut self,
        group_id: u64,
        batch: &[u8],
        header: &BatchHeader,
        ack: AckWhen,
    ) -> Result<(i64, Option<CommitReceiver>), ShardError> {
        let batch = OwnedBatch::copy_of(batch);
        self.propose_batch_from(group_id, batch, header, ack, true)
    }

    /// `propose_batch` of a batch whose bytes the shard may patch and keep as they are (a
    /// produce request's, cut from its body): no copy on the way into the log.
    pub fn propose_owned_batch(
        &mut self,
        group_id: u64,
        batch: OwnedBatch,
        header: &BatchHeader,
        ack: AckWhen,
    ) -> Result<(i64, Option<CommitReceiver>), ShardError> {
        self.propose_batch_from(group_id, batch, header, ack, true)
    }

    /// `propose_batch` for the broker's own writes (coordinator records, transaction
    /// markers): they carry a producer id but no sequence, so no sequence check applies.
    pub fn propose_internal_batch(
        &mut self,
        group_id: u64,
        batch: &[u8],
        header: &BatchHeader,
        ack: AckWhen,
    ) -> Result<(i64, Option<CommitReceiver>), ShardError> {
        let batch = OwnedBatch::copy_of(batch);
        self.propose_batch_from(group_id, batch, header, ack, false)
    }

    fn propose_batch_from(
        &mut self,
        group_id: u64,
        mut batch: OwnedBatch,
        header: &BatchHeader,
        ack: AckWhen,
        check_sequence: bool,
    ) -> Result<(i64, Option<CommitReceiver>), ShardError> {
        let record_bytes_max = self.wal.config().record_bytes_max() - ENTRY_HEADER_BYTES - 64;
        if batch.len() > record_bytes_max {
            return Err(ShardError::RecordTooLarge(batch.len()));
        }
        let group = self.group_mut(group_id)?;
        if !group.is_leader() {
            return Err(ShardError::NotLeader {
                group_id,
                leader: group.leader_id(),
            });
        }
        let base_offset = group.next_batch_offset();
        let check = if check_sequence {
            group.check_sequence(header)
        } else {
            SequenceCheck::Accept
        };
        match check {
            SequenceCheck::Accept => {}
            SequenceCheck::Duplicate(previous) => {
                // A retry of a batch already written: answer with its offset once committed.
                let committed = group
                    .offsets()
                    .is_some_and(|o| previous.base_offset < o.high_watermark());
                return if committed {
                    Ok((previous.base_offset, None))
                } else {
                    Err(ShardError::OutcomeUnknown(
                        "the original of this retried batch is not committed yet",
                    ))
                };
            }
            SequenceCheck::OutOfOrder { expected, got } => {
                return Err(ShardError::OutOfOrderSequence { expected, got })
            }
            SequenceCheck::FencedEpoch { current, got } => {
                return Err(ShardError::ProducerFenced { current, got })
            }
        }
        batch::patch(&mut batch, base_offset, group.term() as i32);
        let data = batch.freeze();
        let bytes = data.len();
        let (reply, receiver) = if ack == AckWhen::Never {
            (None, None)
        } else {
            let (reply, receiver) = oneshot::channel();
            (Some(reply), Some(receiver))
        };
        let raft_index = group.propose_acked(data, reply, ack == AckWhen::LeaderDurable)?;
        group.note_batch_proposed(header, base_offset, raft_index);
        self.dirty.insert(group_id);
        self.note_unflushed(bytes);
        self.ring();
        Ok((base_offset, receiver))
    }

    pub fn offsets(&self, group_id: u64) -> Result<&PartitionOffsets, ShardError> {
        self.group(group_id)?
            .offsets()
            .ok_or(ShardError::UnknownGroup(group_id))
    }

    /// The offsets a client may be told (ListOffsets, Fetch): only from a leader that has
    /// applied an entry of its term, else NotLeader (retriable), so no client ever sees a
    /// high watermark below one it saw before.
    pub fn read_offsets(&self, group_id: u64) -> Result<&PartitionOffsets, ShardError> {
        let group = self.group(group_id)?;
        if !group.serves_reads() {
            return Err(ShardError::NotLeader {
                group_id,
                leader: group.leader_id(),
            });
        }
        group.offsets().ok_or(ShardError::UnknownGroup(group_id))
    }

    pub fn leader_of(&self, group_id: u64) -> Option<u64> {
        self.groups.get(&group_id).and_then(RaftGroup::leader_id)
    }

    /// True once the group leads and has applied everything it had at start.
    pub fn is_caught_up_leader(&self, group_id: u64) -> bool {
        self.groups.get(&group_id).is_some_and(|g| {
            g.is_leader() && g.node.store().applied() >= g.node.raft.raft_log.last_index()
        })
    }

    /// Lone-voter groups that cannot serve reads yet (see `read_offsets`). They lead again on
    /// their own within a pass or two; a replicated group's leadership depends on its peers,
    /// so it does not count.
    pub fn groups_catching_up(&self) -> usize {
        self.groups
            .values()
            .filter(|g| g.node.raft.prs().is_singleton() && !g.serves_reads())
            .count()
    }

    /// OffsetForLeaderEpoch on the leader: `(epoch, end offset)`, see
    /// `PartitionOffsets::end_offset_for_epoch`.
    pub fn epoch_end_offset(&self, group_id: u64, epoch: i32) -> Result<(i32, i64), ShardError> {
        let offsets = self.read_offsets(group_id)?;
        let current = self.leader_epoch(group_id)?;
        Ok(offsets.end_offset_for_epoch(epoch, current))
    }

    pub fn leader_epoch(&self, group_id: u64) -> Result<i32, ShardError> {
        Ok(self.group(group_id)?.term() as i32)
    }

    /// Plans a read of committed batches from `offset`, up to `max_bytes` (the first batch is
    /// always whole, as Kafka requires, when `first_whole` is set).
    pub fn plan_read(
        &self,
        group_id: u64,
        offset: i64,
        max_bytes: usize,
        first_whole: bool,
    ) -> Result<ReadPlan<D>, ShardError> {
        self.plan_read_from(group_id, offset, max_bytes, first_whole, false)
    }

    /// `plan_read`, where `from_follower` lets a follower answer from what it has applied:
    /// committed entries only, so its high watermark trails the leader's but never passes
    /// the commit index.
    pub fn plan_read_from(
        &self,
        group_id: u64,
        offset: i64,
        max_bytes: usize,
        first_whole: bool,
        from_follower: bool,
    ) -> Result<ReadPlan<D>, ShardError> {
        self.plan_read_isolated(
            group_id,
            offset,
            max_bytes,
            first_whole,
            from_follower,
            false,
        )
    }

    /// `plan_read_from`; with `read_committed`, only up to the last stable offset, and with
    /// the aborted transactions of what it reads.
    pub fn plan_read_isolated(
        &self,
        group_id: u64,
        offset: i64,
        max_bytes: usize,
        first_whole: bool,
        from_follower: bool,
        read_committed: bool,
    ) -> Result<ReadPlan<D>, ShardError> {
        let group = self.group(group_id)?;
        group.note_read();
        let follower_read = from_follower
            && !group.is_leader()
            && group.leader_id().is_some()
            && group.offsets().is_some();
        let offsets = if follower_read {
            group.offsets().ok_or(ShardError::UnknownGroup(group_id))?
        } else {
            self.read_offsets(group_id)?
        };
        let (log_start_offset, high_watermark) =
            (offsets.log_start_offset(), offsets.high_watermark());
        if offset < log_start_offset || offset > offsets.log_end_offset() {
            return Err(ShardError::OffsetOutOfRange {
                offset,
                log_start_offset,
                high_watermark,
            });
        }
        let transactions = group.transactions();
        let last_stable_offset = transactions.map_or(high_watermark, |t| {
            t.last_stable_offset(log_start_offset, high_watermark)
        });
        let limit = if read_committed {
            last_stable_offset
        } else {
            high_watermark
        };
        let mut pieces = Vec::new();
        let mut bytes = 0usize;
        let mut end = offset;
        for meta in offsets.committed_up_to(offset, limit) {
            let size = meta.bytes as usize;
            if bytes + size > max_bytes && !(pieces.is_empty() && first_whole) {
                break;
            }
            pieces.push(self.piece(group, meta)?);
            bytes += size;
            end = meta.next_offset;
        }
        let aborted = match transactions {
            Some(t) if read_committed && end > offset => t.aborted_between(offset, end),
            _ => Vec::new(),
        };
        Ok(ReadPlan {
            high_watermark,
            log_start_offset,
            last_stable_offset,
            aborted,
            pieces,
        })
    }

    /// The last stable offset of a partition this shard leads.
    pub fn last_stable_offset(&self, group_id: u64) -> Result<i64, ShardError> {
        let offsets = self.read_offsets(group_id)?;
        let (start, high_watermark) = (offsets.log_start_offset(), offsets.high_watermark());
        Ok(self
            .group(group_id)?
            .transactions()
            .map_or(high_watermark, |t| {
                t.last_stable_offset(start, high_watermark)
            }))
    }

    /// The producers a partition this shard leads knows (DescribeProducers): (producer id,
    /// epoch, last sequence, first offset of its open transaction or -1).
    pub fn describe_producers(
        &self,
        group_id: u64,
    ) -> Result<Vec<(i64, i16, i32, i64)>, ShardError> {
        self.read_offsets(group_id)?;
        let group = self.group(group_id)?;
        let open: BTreeMap<i64, i64> = group
            .transactions()
            .map(TxnIndex::open_transactions)
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(group
            .producers()
            .map(|p| p.describe())
            .unwrap_or_default()
            .into_iter()
            .map(|(id, epoch, last)| (id, epoch, last, open.get(&id).copied().unwrap_or(-1)))
            .collect())
    }

    /// Bytes each partition holds here (DescribeLogDirs); None for a group not here.
    pub fn partition_sizes(&self, group_ids: &[u64]) -> Vec<Option<u64>> {
        group_ids
            .iter()
            .map(|&id| self.groups.get(&id)?.offsets().map(|o| o.retained_bytes()))
            .collect()
    }

    fn piece(&self, group: &RaftGroup, meta: &BatchMeta) -> Result<ReadPiece<D>, ShardError> {
        let entry = group
            .node
            .store()
            .entry(meta.raft_index)
            .ok_or(ShardError::OutcomeUnknown("index and log disagree"))?;
        let span = meta.data_skip as usize..(meta.data_skip + meta.bytes) as usize;
        Ok(match &entry.data {
            Some(data) => ReadPiece::Cached {
                base_offset: meta.base_offset,
                batch: data
                    .get(span.clone())
                    .map(|_| data.slice(span))
                    .ok_or(ShardError::OutcomeUnknown("a batch lies outside its entry"))?,
            },
            None => ReadPiece::Disk {
                base_offset: meta.base_offset,
                reader: self.wal.reader(entry.location)?,
                skip: meta.data_skip,
                bytes: meta.bytes,
            },
        })
    }

    pub fn fetch_waiter(&mut self, group_id: u64) -> Result<oneshot::Receiver<()>, ShardError> {
        self.group_mut(group_id)?.add_fetch_waiter()
    }

    // ---- the pump's steps ----

    /// Ticks every group that is not quiet. A leader whose group has had nothing to do for
    /// `QUIESCE_AFTER_TICKS` (so heartbeats carried the final commit index) and can quiesce
    /// stops ticking and tells its followers with a last heartbeat marked `QUIESCE_CONTEXT`;
    /// they stop their election timers. Thousands of idle partitions then cost nothing.
    fn tick_all(&mut self) {
        let unread_ticks_max = self.config.entry_cache_unread_ticks;
        for (&group_id, group) in &mut self.groups {
            if group.quiesced {
                continue;
            }
            if group.node.tick() | group.retry_lost_snapshots() {
                self.dirty.insert(group_id);
            }
            if matches!(group.machine, Machine::Partition { .. }) {
                if group.has_fetch_waiters() {
                    group.note_read();
                }
                let unread = group.ticks_since_read.get().saturating_add(1);
                group.ticks_since_read.set(unread);
                let replicated = !group.node.raft.prs().is_singleton();
                group
                    .node
                    .mut_store()
                    .set_caching(replicated || unread_ticks_max == 0 || unread <= unread_ticks_max);
            }
            // A leaderless group's preferred leader does not wait out a whole election
            // timeout (its first campaign may have reached peers before they had the group).
            let raft = &group.node.raft;
            if raft.state != StateRole::Leader
                && raft.leader_id == raft::INVALID_ID
                && group.preferred_leader == raft.id
                && raft.election_elapsed == PREFERRED_CAMPAIGN_TICKS
                && !self.refusing_leadership
            {
                let _ = group.node.campaign();
                self.dirty.insert(group_id);
            }
            group.idle_ticks = group.idle_ticks.saturating_add(1);
            if group.idle_ticks < QUIESCE_AFTER_TICKS || !group.can_quiesce() {
                continue;
            }
            group.quiesced = true;
            let raft = &group.node.raft;
            for (&to, _) in raft.prs().iter().filter(|(&id, _)| id != raft.id) {
                let mut notice = Message {
                    to,
                    from: raft.id,
                    term: raft.term,
                    commit: raft.raft_log.committed,
                    context: Bytes::from_static(QUIESCE_CONTEXT),
                    ..Message::default()
                };
                notice.set_msg_type(MessageType::MsgHeartbeat);
                self.outbox.push((group_id, notice));
            }
        }
    }

    /// One Ready pass: for every dirty group, apply what Raft says is committed (answering
    /// its proposals), queue new entries and term/vote changes for the WAL, and hand the
    /// entries to the group's log at once (raft-rs reads them from `Storage` from
    /// `advance_append_async` on). They are durable, and Raft learns so through
    /// `on_persist_ready`, only after the group commit (`finish_persist`).
    fn collect_ready(&mut self) -> Vec<PendingPersist> {
        let mut pending = Vec::new();
        for group_id in std::mem::take(&mut self.dirty) {
            let Some(group) = self.groups.get_mut(&group_id) else {
                continue;
            };
            if !group.node.has_ready() {
                continue;
            }
            let mut ready = group.node.ready();
            if !ready.entries().is_empty() || !ready.committed_entries().is_empty() {
                group.wake();
            }
            // A leader's appends go out now, in parallel with its own group commit.
            self.outbox
                .extend(ready.take_messages().into_iter().map(|m| (group_id, m)));
            let mut snapshot_index = None;
            if !ready.snapshot().is_empty() {
                // A snapshot from the leader replaces this replica's log (it is behind the
                // leader's compaction point); recorded before anything of the same Ready.
                let index = install_snapshot(&mut self.wal, group, ready.snapshot());
                self.pending_compactions.push((group_id, index));
                snapshot_index = Some(index);
            }
            // A new term or vote is written before the entries of that term.
            if let Some(hard_state) = ready.hs() {
                let lazy = queue_hard_state(&mut self.wal, group, hard_state);
                if lazy {
                    self.commit_unpersisted.insert(group_id);
                }
            }
            let committed = ready.take_committed_entries();
            let entries = ready.take_entries();
            let last_entry = entries.last().map(|e| e.index);
            append_entries(&mut self.wal, group, &entries);
            // Votes and append responses wait for the group commit (persisted messages).
            let messages = ready.take_persisted_messages();
            let number = ready.number();
            group.node.advance_append_async(ready);
            group.apply_committed(committed);
            if snapshot_index.is_none() {
                group.node.advance_apply();
            }
            group.fail_waiters_if_not_leader();
            pending.push(PendingPersist {
                group_id,
                number,
                messages,
                snapshot_index,
                last_entry,
            });
        }
        if self.wal.has_pending() {
            for group_id in std::mem::take(&mut self.commit_unpersisted) {
                let Some(group) = self.groups.get(&group_id) else {
                    continue;
                };
                let record = HardStateRecord::from(group.node.store().hard_state());
                self.wal
                    .append(group_id, RecordKind::HardState, &[&record.encode()]);
            }
        }
        pending
    }

    /// Writes every group's hard state and compaction point into the new segment, so older
    /// segments hold nothing that is not also here (besides entries, which pin segments).
    fn checkpoint(&mut self) {
        let started_in = self.wal.tail_segment();
        for (&group_id, group) in &mut self.groups {
            if let Machine::Custom(_) = group.machine {
                let applied = group.node.store().applied();
                let state = group.snapshot_state();
                group.node.mut_store().compact(applied, state);
            }
            let log = group.node.store();
            let hard_state = HardStateRecord::from(log.hard_state());
            let snapshot = SnapshotRecord {
                index: log.snapshot_index(),
                term: log.snapshot_term(),
                state: log.snapshot_state().clone(),
            };
            if let Some(index) = append_group_state(&mut self.wal, group_id, &hard_state, &snapshot)
            {
                self.pending_compactions.push((group_id, index));
            }
        }
        // Groups recovered but not yet claimed by metadata keep their state too.
        for (&group_id, recovered) in &self.recovered {
            append_group_state(
                &mut self.wal,
                group_id,
                &recovered.hard_state,
                &recovered.snapshot,
            );
        }
        // Tombstones of removed groups stay until no segment holds their entries, so an old
        // segment kept alive by another group cannot bring a deleted topic back.
        for &group_id in &self.removed {
            self.wal.append(group_id, RecordKind::GroupRemoved, &[]);
        }
        self.wal.note_checkpoint_written(started_in);
    }

    /// After the group commit: tell Raft what is durable. Groups with newly committed entries
    /// get them in the next pass.
    fn finish_persist(&mut self, pending: Vec<PendingPersist>) {
        for PendingPersist {
            group_id,
            number,
            messages,
            snapshot_index,
            last_entry,
        } in pending
        {
            let Some(group) = self.groups.get_mut(&group_id) else {
                continue;
            };
            self.outbox
                .extend(messages.into_iter().map(|m| (group_id, m)));
            group.node.on_persist_ready(number);
            if let Some(index) = last_entry {
                group.answer_leader_durable(index);
            }
            if let Some(index) = snapshot_index {
                group.node.advance_apply_to(index);
            }
            if group.node.has_ready() {
                self.dirty.insert(group_id);
            }
        }
    }

    /// Applies each partition's retention; batches gone (expired, or replaced by a cleaning
    /// entry) become a compaction point.
    pub fn apply_retention(&mut self, now_ms: i64) {
        self.retention_seen_tail = self.wal.tail_segment();
        for (&group_id, group) in &mut self.groups {
            let applied = group.node.store().applied();
            let snapshot_index = group.node.store().snapshot_index();
            let Machine::Partition {
                offsets,
                retention,
                transactions,
                cleanings,
                ..
            } = &mut group.machine
            else {
                continue;
            };
            if offsets.expire(*retention, now_ms, applied) {
                transactions.forget_before(offsets.log_start_offset());
            }
            let Some((index, snapshot_offsets)) = offsets.take_compaction_point(applied) else {
                continue;
            };
            if index <= snapshot_index {
                continue;
            }
            cleanings.retain(|&cleaning_index, _| cleaning_index > index);
            let state = Bytes::from(snapshot_offsets.encode());
            group.node.mut_store().compact(index, state.clone());
            let snapshot = SnapshotRecord {
                index,
                term: group.node.store().snapshot_term(),
                state,
            };
            self.wal.append(
                group_id,
                RecordKind::Snapshot,
                &[&snapshot.encode_header(), &snapshot.state],
            );
            self.pending_compactions.push((group_id, index));
        }
        if self.wal.has_pending() {
            self.ring();
        }
    }

    /// Whether the WAL rolled into a new segment since the last retention pass (the pump
    /// then runs one).
    pub fn retention_due_after_roll(&self) -> bool {
        self.wal.tail_segment() != self.retention_seen_tail
    }

    /// Deletes WAL segments no group needs any more.
    fn reclaim_segments(&mut self) -> Result<(), ShardError> {
        if !self.groups_installed {
            return Ok(());
        }
        let durable = &self.durable_compacted;
        let reclaimable = self
            .wal
            .reclaimable_segments(|group_id| durable.get(&group_id).copied().unwrap_or(0));
        if !reclaimable.is_empty() {
            tracing::info!(
                shard = self.config.shard_id,
                ?reclaimable,
                "retention: removing wal segments"
            );
            self.wal.remove_segments(&reclaimable)?;
            let wal = &self.wal;
            self.removed
                .retain(|&group_id| wal.holds_entries_of(group_id));
        }
        Ok(())
    }

    pub fn wal_segment_count(&self) -> usize {
        self.wal.segment_count()
    }

    /// Whether a pass would do anything (dirty groups or records waiting for the WAL).
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty() || self.wal.has_pending() || !self.outbox.is_empty()
    }

    /// Starts one pump pass: Readies of every dirty group, the checkpoints a roll owes, and
    /// the group commit covering all of it. Run `pass.flush` (if any), then `end_pass`.
    pub fn begin_pass(&mut self) -> Pass<D> {
        assert!(
            self.passes_in_flight == 0 || self.overlap_due(),
            "a pass begins beside another only when it may"
        );
        let pending = self.collect_ready();
        // Every roll owes a checkpoint before older segments may go; a checkpoint that
        // itself spills over owes another (bounded: a checkpoint is far below a segment).
        for _ in 0..3 {
            if !self.wal.checkpoint_owed() {
                break;
            }
            self.checkpoint();
        }
        let compactions = std::mem::take(&mut self.pending_compactions);
        self.flush_outbox();
        let installs_snapshot = pending.iter().any(|p| p.snapshot_index.is_some());
        let number = self.next_pass_begun;
        self.next_pass_begun += 1;
        self.passes_in_flight += 1;
        self.snapshot_passes_in_flight += usize::from(installs_snapshot);
        self.unflushed_bytes = 0;
        Pass {
            number,
            pending,
            compactions,
            installs_snapshot,
            flush: self.wal.take_flush_job(),
        }
    }

    /// Finishes a pass whose group commit (if it had one) completed with `done`: Raft learns
    /// what is durable, compaction points count, and segments nobody needs go.
    pub fn end_pass(&mut self, pass: Pass<D>, done: Option<FlushDone<D>>) {
        assert!(pass.flush.is_none(), "the pass's group commit was run");
        assert_eq!(
            pass.number, self.next_pass_ended,
            "passes end in the order begun"
        );
        self.next_pass_ended += 1;
        self.passes_in_flight -= 1;
        self.snapshot_passes_in_flight -= usize::from(pass.installs_snapshot);
        if let Some(done) = done {
            self.wal.complete_flush(done);
        }
        for (group_id, index) in pass.compactions {
            let slot = self.durable_compacted.entry(group_id).or_default();
            *slot = (*slot).max(index);
        }
        self.finish_persist(pass.pending);
        self.flush_outbox();
        if let Err(error) = self.reclaim_segments() {
            tracing::warn!(%error, "retention could not remove a segment");
        }
    }

    /// The next WAL segment's preparation, when it is due (see `Wal::take_prepare_job`): run
    /// it beside the pump's passes.
    pub fn take_segment_preparation(&mut self) -> Option<PrepareJob<D>> {
        self.wal.take_prepare_job()
    }

    /// Ticks every group once (the pump does this every `tick_interval_ms`).
    pub fn tick(&mut self) {
        self.tick_all();
    }

    // ---- replication ----

    /// Hands a peer's Raft message to its group. Messages for groups this shard does not
    /// hold (not created yet, or deleted) are dropped: Raft resends what matters.
    pub fn step(&mut self, group_id: u64, message: Message) {
        let Some(group) = self.groups.get_mut(&group_id) else {
            return;
        };
        if !group.node.raft.prs().conf().voters().contains(message.from) {
            return;
        }
        let kind = message.get_msg_type();
        if self.refusing_leadership && kind == MessageType::MsgTimeoutNow {
            return;
        }
        let raft = &group.node.raft;
        let from_leader = message.from == raft.leader_id;
        let quiet_context = message.context.as_ref() == QUIESCE_CONTEXT;
        let quiesce_notice = kind == MessageType::MsgHeartbeat
            && quiet_context
            && from_leader
            && message.term == raft.term;
        // A message of an older term changes nothing (Raft answers or drops it): it must not
        // wake a quiet group, or a late heartbeat of a deposed leader would start its timers.
        let stale = message.term < raft.term;
        let poke = match kind {
            _ if stale || quiesce_notice => None,
            // Answers to the quiet heartbeat: nothing happened. Any other answer means a
            // follower is awake (see `poke_leader`): the leader resumes heartbeats.
            MessageType::MsgHeartbeatResponse => {
                if !quiet_context {
                    group.quiesced = false;
                }
                None
            }
            // The leader is heartbeating again.
            MessageType::MsgHeartbeat => {
                group.quiesced = false;
                None
            }
            _ => {
                let quiet_follower = group.quiesced && !group.is_leader();
                group.wake();
                (quiet_follower && !from_leader).then(|| poke_leader(group))
            }
        };
        self.outbox.extend(poke.flatten().map(|m| (group_id, m)));
        let appended: usize = if kind == MessageType::MsgAppend {
            message.entries.iter().map(|e| e.data.len()).sum()
        } else {
            0
        };
        let stepped = group.node.step(message).is_ok();
        if quiesce_notice {
            group.quiesced = true;
        }
        if stepped {
            self.dirty.insert(group_id);
            self.note_unflushed(appended);
            self.ring();
        }
    }

    /// A peer node stopped answering: every group it is a voter of ticks again, so its
    /// elections (or, on its leader, check-quorum and the ISR) run as usual.
    /// Steps the Raft messages a peer sent for groups of this shard, in order.
    pub fn step_all(&mut self, messages: Vec<(u64, Message)>) {
        for (group_id, message) in messages {
            self.step(group_id, message);
        }
    }

    pub fn wake_groups_with(&mut self, node: u64) -> usize {
        let mut woken = 0;
        for (&group_id, group) in &mut self.groups {
            if group.quiesced && group.node.raft.prs().conf().voters().contains(node) {
                group.wake();
                // A follower whose leader is alive wakes it too, so both tick together.
                if group.node.raft.leader_id != node {
                    self.outbox
                        .extend(poke_leader(group).map(|m| (group_id, m)));
                }
                self.dirty.insert(group_id);
                woken += 1;
            }
        }
        if woken > 0 {
            self.ring();
        }
        woken
    }

    /// A peer node is gone for certain (its peer port refuses connections): for every group
    /// it led, the first other voter by id starts an election at once, without waiting for
    /// its election timer (as in a leadership transfer), so a crashed leader's partitions
    /// move in milliseconds. Safety does not depend on it: votes still need a current log.
    pub fn campaign_for_lost_leader(&mut self, lost: u64) -> usize {
        let me = self.config.replica_id;
        let mut started = 0;
        for (&group_id, group) in &mut self.groups {
            let raft = &group.node.raft;
            let successor = raft
                .prs()
                .conf()
                .voters()
                .ids()
                .iter()
                .filter(|&id| id != lost)
                .min();
            if raft.leader_id != lost || successor != Some(me) || self.refusing_leadership {
                continue;
            }
            let mut timeout_now = Message {
                to: me,
                from: lost,
                term: raft.term,
                ..Message::default()
            };
            timeout_now.set_msg_type(MessageType::MsgTimeoutNow);
            group.wake();
            if group.node.step(timeout_now).is_ok() {
                self.dirty.insert(group_id);
                started += 1;
            }
        }
        if started > 0 {
            self.ring();
        }
        started
    }

    pub fn group_status(&self, group_id: u64) -> Option<GroupStatus> {
        let group = self.groups.get(&group_id)?;
        let raft = &group.node.raft;
        let voters: Vec<u64> = raft.prs().conf().voters().ids().iter().collect();
        let in_sync = if raft.state == StateRole::Leader {
            let me = raft.id;
            voters
                .iter()
                .copied()
                .filter(|&id| {
                    id == me
                        || raft.prs().get(id).is_some_and(|p| {
                            p.recent_active && p.state == raft::ProgressState::Replicate
                        })
                })
                .collect()
        } else {
            Vec::new()
        };
        Some(GroupStatus {
            leader: group.leader_id(),
            term: group.term(),
            in_sync,
            voters,
        })
    }

    /// (groups, quiet groups, groups led here, highest term): a summary for the logs.
    pub fn group_summary(&self) -> (usize, usize, usize, u64) {
        let quiet = self.groups.values().filter(|g| g.quiesced).count();
        let led = self.groups.values().filter(|g| g.is_leader()).count();
        let term = self.groups.values().map(RaftGroup::term).max().unwrap_or(0);
        (self.groups.len(), quiet, led, term)
    }

    /// (last index, its term, commit, applied) of a group's log, for diagnostics.
    pub fn debug_log_state(&self, group_id: u64) -> Option<(u64, Option<u64>, u64, u64)> {
        let log = self.groups.get(&group_id)?.node.store();
        let last = log.last_index();
        Some((
            last,
            log.term_of(last),
            log.hard_state().commit,
            log.applied(),
        ))
    }

    /// Groups this replica leads.
    pub fn led_groups(&self) -> Vec<u64> {
        self.groups
            .iter()
            .filter(|(_, g)| g.is_leader())
            .map(|(&id, _)| id)
            .collect()
    }

    /// Asks Raft to hand leadership of `group_id` to `to` if `to` holds the whole log (the
    /// transfer completes once `to` wins its election). Returns whether a transfer started.
    pub fn transfer_leader(&mut self, group_id: u64, to: u64) -> bool {
        let Some(group) = self.groups.get_mut(&group_id) else {
            return false;
        };
        let raft = &group.node.raft;
        let last_index = raft.raft_log.last_index();
        let caught_up = raft.state == StateRole::Leader
            && to != raft.id
            && raft
                .prs()
                .get(to)
                .is_some_and(|p| p.matched == last_index && p.recent_active);
        if !caught_up {
            return false;
        }
        group.wake();
        group.node.transfer_leader(to);
        self.dirty.insert(group_id);
        self.ring();
        true
    }

    /// A follower of `group_id` that holds the leader's whole log and was heard from lately.
    pub fn caught_up_follower(&self, group_id: u64) -> Option<u64> {
        let group = self.groups.get(&group_id)?;
        let raft = &group.node.raft;
        if raft.state != StateRole::Leader {
            return None;
        }
        let last_index = raft.raft_log.last_index();
        raft.prs()
            .iter()
            .filter(|(&id, p)| id != raft.id && p.matched == last_index && p.recent_active)
            .map(|(&id, _)| id)
            .min()
    }

    /// Gives groups back to their preferred leader (the first voter) where this replica leads
    /// in its place and the preferred one is caught up: after a node returns, leadership
    /// becomes balanced again. At most `limit` transfers per call, so it happens gradually.
    pub fn restore_preferred_leaders(&mut self, limit: usize) -> usize {
        let candidates: Vec<(u64, u64)> = self
            .groups
            .iter()
            .filter(|(_, g)| g.is_leader())
            .filter(|(_, g)| g.preferred_leader != g.node.raft.id)
            .map(|(&id, g)| (id, g.preferred_leader))
            .collect();
        let mut started = 0;
        for (group_id, preferred) in candidates {
            if started >= limit {
                break;
            }
            if self.transfer_leader(group_id, preferred) {
                started += 1;
            }
        }
        started
    }

    /// Entries whose data a lagging follower needs but memory no longer holds: the pump reads
    /// them back from the WAL (`refill`) and Raft sends them on its next try.
    pub fn take_refills(&mut self) -> Vec<Refill<D>> {
        let mut refills = Vec::new();
        for (&group_id, group) in &mut self.groups {
            let Some(from) = group.node.mut_store().take_wanted() else {
                continue;
            };
            if !self.refilling.insert(group_id) {
                continue;
            }
            let log = group.node.store();
            let mut readers = Vec::new();
            let mut bytes = 0usize;
            for (index, entry) in log.entries_from(from) {
                if entry.data.is_some() || bytes > REFILL_BYTES_MAX {
                    break;
                }
                let Ok(reader) = self.wal.reader(entry.location) else {
                    break;
                };
                bytes += entry.location.record_bytes as usize;
                readers.push((index, reader));
            }
            if readers.is_empty() {
                self.refilling.remove(&group_id);
            } else {
                refills.push(Refill { group_id, readers });
            }
        }
        refills
    }

    /// Puts entries read back by a refill where Raft can read them.
    pub fn refill(&mut self, group_id: u64, entries: Vec<(u64, Bytes)>) {
        self.refilling.remove(&group_id);
        if let Some(group) = self.groups.get_mut(&group_id) {
            group.node.mut_store().refill(entries);
            self.dirty.insert(group_id);
            self.ring();
        }
    }
}

/// A follower that wakes while its leader may be quiet tells the leader with a plain
/// heartbeat response (harmless to Raft); the leader then resumes heartbeats, so the
/// follower's election timer does not run out under a live leader.
fn poke_leader(group: &RaftGroup) -> Option<Message> {
    let raft = &group.node.raft;
    if raft.leader_id == raft::INVALID_ID || raft.leader_id == raft.id {
        return None;
    }
    let mut poke = Message {
        to: raft.leader_id,
        from: raft.id,
        term: raft.term,
        ..Message::default()
    };
    poke.set_msg_type(MessageType::MsgHeartbeatResponse);
    Some(poke)
}

/// Queues a Ready's entries for the WAL and hands them to the group's log (Raft reads them
/// from there at once; they are durable after the group commit).
fn append_entries<D: Disk>(wal: &mut Wal<D>, group: &mut RaftGroup, entries: &[Entry]) {
    let mut locations = Vec::with_capacity(entries.len());
    for entry in entries {
        let header = EntryHeader {
            term: entry.term,
            index: entry.index,
            entry_type: entry_type_byte(entry.get_entry_type()),
        };
        let (location, _) = wal.append(
            group.id,
            RecordKind::Entry,
            &[&header.encode(), &entry.data],
        );
        wal.note_entry(location, group.id, entry.index);
        locations.push(location);
    }
    let truncated = group.node.mut_store().append(entries, &locations);
    group.on_persisted(entries, truncated);
}

/// Queues a group's new hard state for the WAL when its term or vote changed (they must be
/// durable before this replica acts on them) and records it in the log. Returns true when
/// only the commit index moved: that may be written lazily (see `commit_unpersisted`).
fn queue_hard_state<D: Disk>(
    wal: &mut Wal<D>,
    group: &mut RaftGroup,
    hard_state: &raft::eraftpb::HardState,
) -> bool {
    let stored = group.node.store().hard_state();
    let vote_or_term_changed = hard_state.term != stored.term || hard_state.vote != stored.vote;
    if vote_or_term_changed {
        let record = HardStateRecord::from(hard_state);
        wal.append(group.id, RecordKind::HardState, &[&record.encode()]);
    }
    group.node.mut_store().set_hard_state(hard_state.clone());
    !vote_or_term_changed
}

/// Replaces a follower's log with the leader's snapshot: recorded in the WAL first (recovery
/// drops every entry before it), then the log and the state machine start from it.
fn install_snapshot<D: Disk>(wal: &mut Wal<D>, group: &mut RaftGroup, snapshot: &Snapshot) -> u64 {
    let metadata = snapshot.get_metadata();
    tracing::info!(
        group = group.id,
        index = metadata.index,
        "installing the leader's snapshot (this replica was behind its compaction point)"
    );
    let record = SnapshotRecord {
        index: metadata.index,
        term: metadata.term,
        state: snapshot.data.clone(),
    };
    wal.append(
        group.id,
        RecordKind::SnapshotInstalled,
        &[&record.encode_header(), &record.state],
    );
    group.install_snapshot(metadata.index, metadata.term, snapshot.data.clone());
    metadata.index
}

/// Appends a group's hard state and, when it has one, its compaction point. Returns the
/// compaction index written.
fn append_group_state<D: Disk>(
    wal: &mut Wal<D>,
    group_id: u64,
    hard_state: &HardStateRecord,
    snapshot: &SnapshotRecord,
) -> Option<u64> {
    wal.append(group_id, RecordKind::HardState, &[&hard_state.encode()]);
    if snapshot.index == 0 {
        return None;
    }
    wal.append(
        group_id,
        RecordKind::Snapshot,
        &[&snapshot.encode_header(), &snapshot.state],
    );
    Some(snapshot.index)
}

/// A pass the pump began, and where its group commit stands.
struct PassInFlight<D: Disk> {
    pass: Pass<D>,
    commit: Option<CommitRun<D>>,
}

enum CommitRun<D: Disk> {
    /// Starts once the commit before it completed (see `FlushJob::must_follow_previous`).
    Waiting(FlushJob<D>),
    Running(glommio::Task<Result<FlushDone<D>, WalError>>),
}

impl<D: Disk> CommitRun<D> {
    fn start(job: FlushJob<D>) -> Self {
        CommitRun::Running(glommio::spawn_local(timed_group_commit(job)))
    }

    /// Running: a waiting commit starts (the one before it completed).
    fn started(self) -> Self {
        match self {
            CommitRun::Waiting(job) => Self::start(job),
            running @ CommitRun::Running(_) => running,
        }
    }
}

/// Drives the shard until `stop` resolves and everything queued is durable. Up to two
/// passes are in flight (see `Shard::may_begin_pass`); they end in the order they began.
pub async fn run_pump<D: Disk>(
    shard: ShardRef<D>,
    doorbell: LocalReceiver<()>,
    stop: Rc<std::cell::Cell<bool>>,
) {
    let tick = Duration::from_millis(shard.borrow().config.tick_interval_ms);
    let mut next_tick = Instant::now() + tick;
    let mut stop_seen: Option<Instant> = None;
    let mut in_flight: VecDeque<PassInFlight<D>> = VecDeque::with_capacity(2);
    loop {
        let now = Instant::now();
        // Never with a commit in flight: dropping its task would cancel the write.
        if stop.get()
            && stop_seen.get_or_insert(now).elapsed() > PUMP_DRAIN_MAX
            && in_flight.is_empty()
        {
            tracing::warn!("pump still busy at shutdown; stopping anyway");
            return;
        }
        if now >= next_tick {
            shard.borrow_mut().tick_all();
            next_tick = now + tick;
        }
        let preparation = shard.borrow_mut().take_segment_preparation();
        if let Some(job) = preparation {
            glommio::spawn_local(job.run()).detach();
        }
        if shard.borrow().may_begin_pass() {
            let mut pass = shard.borrow_mut().begin_pass();
            let commit = pass.flush.take().map(|job| {
                if job.must_follow_previous() {
                    CommitRun::Waiting(job)
                } else {
                    CommitRun::start(job)
                }
            });
            in_flight.push_back(PassInFlight { pass, commit });
            continue;
        }
        let Some(oldest) = in_flight.front_mut() else {
            if stop.get() {
                return;
            }
            let wait = next_tick
                .saturating_duration_since(Instant::now())
                .min(tick);
            let ring = std::pin::pin!(doorbell.recv());
            let timer = std::pin::pin!(Timer::new(wait));
            futures::future::select(ring, timer).await;
            continue;
        };
        let done = match &mut oldest.commit {
            None => None,
            Some(CommitRun::Running(task)) => {
                // Also wakes for a pass to start beside this one. No timer: the tick waits for
                // the commit (or the next wake), as it always did; arming a timer each time
                // costs more than it brings.
                let ring = std::pin::pin!(doorbell.recv());
                match futures::future::select(task, ring).await {
                    futures::future::Either::Left((result, _)) => Some(result),
                    futures::future::Either::Right(_) => continue,
                }
            }
            Some(CommitRun::Waiting(_)) => unreachable!("the oldest commit follows none"),
        };
        end_oldest_pass(&shard, &mut in_flight, done);
    }
}

/// Ends the oldest pass, whose commit (if it had one) completed with `done`, and starts the
/// commit that waited for it.
fn end_oldest_pass<D: Disk>(
    shard: &ShardRef<D>,
    in_flight: &mut VecDeque<PassInFlight<D>>,
    done: Option<Result<FlushDone<D>, WalError>>,
) {
    let oldest = in_flight.pop_front().expect("the oldest pass is there");
    let done = match done.transpose() {
        Ok(done) => done,
        Err(error) => {
            // fsync failures cannot be retried safely (the page state is unknown): stop the
            // process rather than acknowledge anything else.
            tracing::error!(%error, "wal group commit failed; stopping");
            std::process::exit(74);
        }
    };
    if let Some(next) = in_flight.front_mut() {
        next.commit = next.commit.take().map(CommitRun::started);
    }
    shard.borrow_mut().end_pass(oldest.pass, done);
    if shard.borrow().retention_due_after_roll() {
        shard.borrow_mut().apply_retention(wall_clock_ms());
    }
    let refills = shard.borrow_mut().take_refills();
    for refill in refills {
        glommio::spawn_local(run_refill(shard.clone(), refill)).detach();
    }
}

/// A group commit slower than this is logged at debug level (every produce waiting on it
/// waits as long; `RUST_LOG=chronik_shards::runtime=debug` shows where a latency tail
/// comes from), one slower than `VERY_SLOW_GROUP_COMMIT` as a warning (a stalling disk),
/// every other one at trace level (commit sizes and times under a given load).
const SLOW_GROUP_COMMIT: Duration = Duration::from_millis(5);
const VERY_SLOW_GROUP_COMMIT: Duration = Duration::from_millis(500);

async fn timed_group_commit<D: Disk>(job: FlushJob<D>) -> Result<FlushDone<D>, WalError> {
    let (started, bytes) = (Instant::now(), job.bytes());
    let result = job.run().await;
    let elapsed = started.elapsed();
    let elapsed_us = elapsed.as_micros() as u64;
    if elapsed > VERY_SLOW_GROUP_COMMIT {
        tracing::warn!(elapsed_us, bytes, "wal: group commit took over 500 ms");
    } else if elapsed > SLOW_GROUP_COMMIT {
        tracing::debug!(elapsed_us, bytes, "wal: slow group commit");
    } else {
        tracing::trace!(elapsed_us, bytes, "wal: group commit");
    }
    result
}

/// Milliseconds since the Unix epoch (record timestamps are on this clock: time retention).
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// Reads a refill's entries back from the WAL (runs of nearby records with one I/O each) and
/// hands them to the group. On a read error the group simply asks again later.
pub async fn run_refill<D: Disk>(shard: ShardRef<D>, refill: Refill<D>) {
    let Refill { group_id, readers } = refill;
    let mut entries = Vec::with_capacity(readers.len());
    let mut readers = readers.into_iter().peekable();
    while let Some((index, reader)) = readers.next() {
        let run_start = reader.position();
        let mut indexes = vec![index];
        let mut run = vec![reader];
        while let Some((index, reader)) = readers.next_if(|(_, next)| {
            run.last()
                .is_some_and(|last| last.can_extend_run(run_start, next))
        }) {
            indexes.push(index);
            run.push(reader);
        }
        match read_run(run).await {
            Ok(payloads) => entries.extend(
                indexes
                    .into_iter()
                    .zip(payloads)
                    .map(|(index, payload)| (index, payload.slice(ENTRY_HEADER_BYTES..))),
            ),
            Err(error) => {
                tracing::warn!(group_id, %error, "cannot read entries back for a follower");
                break;
            }
        }
    }
    shard.borrow_mut().refill(group_id, entries);
}
