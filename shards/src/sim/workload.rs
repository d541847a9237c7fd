//! The simulation's workload and its model of what must survive: several partitions sharing
//! the WAL, each with its own retention, and a custom state machine (the controller's path:
//! replayed from memory, compacted into a snapshot at every checkpoint). Steps propose
//! batches and commands, run passes (with other steps landing while a group commit is in
//! flight), tick, apply retention, and now and then replace a partition (as topics come and
//! go). The checks after a restart:
//! - every acknowledged batch of a live partition is back at its offset, intact, unless its
//!   partition's retention removed it (and retention never takes the newest one);
//! - a partition whose deletion reached the disk does not come back;
//! - no partition serves a high watermark below an acknowledged batch, even right after a
//!   restart, before it leads again;
//! - the state machine holds every acknowledged command, once, in order.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use rand::rngs::StdRng;
use rand::Rng;

use super::{run_pass, PumpMove, SimDisk, SimPump};
use crate::group::StateMachine;
use crate::partition::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::runtime::shard::{
    load_pieces, AckWhen, CommitReceiver, GroupSpec, Shard, ShardConfig, ShardRef,
};
use crate::runtime::tests::{batch, install_partitions};
use crate::wal::WalConfig;

pub(super) const LIVES: usize = 6;
pub(super) const STEPS_PER_LIFE: usize = 400;
pub(super) const PARTITIONS: usize = 3;
pub(super) const SEGMENT_BYTES: u64 = 64 << 10;
/// Retention of a new partition, picked at random: forever (pins segments), or by size.
pub(super) const RETENTION_CHOICES: [i64; 3] = [-1, 64 << 10, 160 << 10];
/// The custom state machine's group (partitions count up from 1).
pub(super) const LEDGER_GROUP: u64 = 1 << 40;

/// Remembers every command it applied, like the controller's metadata does.
pub(super) struct Ledger {
    pub(super) applied: Rc<RefCell<Vec<Vec<u8>>>>,
}

impl StateMachine for Ledger {
    fn apply(&mut self, _index: u64, data: &[u8]) {
        self.applied.borrow_mut().push(data.to_vec());
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut state = Vec::new();
        for command in self.applied.borrow().iter() {
            state.extend_from_slice(&(command.len() as u32).to_le_bytes());
            state.extend_from_slice(command);
        }
        state
    }

    fn restore(&mut self, mut state: &[u8]) {
        let mut applied = self.applied.borrow_mut();
        applied.clear();
        while let Some((length, rest)) = state.split_first_chunk::<4>() {
            let length = u32::from_le_bytes(*length) as usize;
            applied.push(rest[..length].to_vec());
            state = &rest[length..];
        }
    }
}

pub(super) fn config() -> ShardConfig {
    config_overlapping_at(crate::wal::OVERLAP_MIN_BYTES_DEFAULT)
}

/// `config` with commits of `overlap_min_bytes` or more padded to a block, so the next may
/// run beside them (the default never pads in segments this small).
pub(super) fn config_overlapping_at(overlap_min_bytes: usize) -> ShardConfig {
    ShardConfig {
        shard_id: 0,
        replica_id: 1,
        wal: WalConfig {
            dir: "/sim/wal".into(),
            segment_bytes_max: SEGMENT_BYTES,
            overlap_min_bytes,
        },
        tick_interval_ms: 10,
        entry_cache_bytes_max: 32 << 10,
        entry_cache_shard_bytes_max: 64 << 20,
        entry_cache_unread_ticks: 10,
        proposal_waiters_max: 10_000,
        fetch_waiters_max: 10,
        uncommitted_bytes_max: 16 << 20,
        deterministic_elections: true,
    }
}

/// Acknowledged batches of a partition: (offset, payload).
pub(super) type AcknowledgedBatches = Vec<(i64, Vec<u8>)>;

/// What the (simulated) controller and the producers know, across lives.
#[derive(Default)]
pub(super) struct Model {
    /// Live partitions: group id -> (retention bytes, acknowledged (offset, payload)).
    pub(super) partitions: BTreeMap<u64, (i64, AcknowledgedBatches)>,
    pub(super) next_group_id: u64,
    /// Deleted, with the tombstone not yet known to be durable.
    pub(super) removing: Vec<u64>,
    /// Deleted, with the tombstone durable: must never be recovered again.
    pub(super) removed: BTreeSet<u64>,
    /// Commands the ledger acknowledged, in order.
    pub(super) commands: Vec<Vec<u8>>,
    pub(super) commands_proposed: u64,
    /// The shard's `WalConfig::overlap_min_bytes` in this run: small in half the seeds, so
    /// two group commits are often in flight at once there.
    pub(super) overlap_min_bytes: usize,
}

impl Model {
    /// The starting cluster: `PARTITIONS` partitions with random retention.
    pub(super) fn with_partitions(rng: &mut StdRng) -> Model {
        let overlap_min_bytes = if rng.random_bool(0.5) {
            4096
        } else {
            crate::wal::OVERLAP_MIN_BYTES_DEFAULT
        };
        let mut model = Model {
            overlap_min_bytes,
            ..Model::default()
        };
        for _ in 0..PARTITIONS {
            model.create_partition(rng);
        }
        model
    }

    pub(super) fn create_partition(&mut self, rng: &mut StdRng) -> u64 {
        self.next_group_id += 1;
        let retention = RETENTION_CHOICES[rng.random_range(0..RETENTION_CHOICES.len())];
        self.partitions
            .insert(self.next_group_id, (retention, Vec::new()));
        self.next_group_id
    }

    pub(super) fn install_list(&self) -> Vec<(u64, i64)> {
        self.partitions
            .iter()
            .map(|(&group, (retention, _))| (group, *retention))
            .collect()
    }
}

pub(super) struct Life {
    pub(super) shard: ShardRef<SimDisk>,
    /// (group, offset, payload, commit receiver) of proposals not answered yet.
    pub(super) pending: Vec<(u64, i64, Vec<u8>, CommitReceiver)>,
    pub(super) ledger: Rc<RefCell<Vec<Vec<u8>>>>,
    pub(super) pending_commands: Vec<(Vec<u8>, CommitReceiver)>,
    /// Passes begun and not ended, as the real pump keeps them.
    pub(super) pump: SimPump,
}

/// How often the simulated pump did what only two commits in flight can do (all seeds of
/// a run together; the test asserts each happened).
pub(super) static PASSES_BEGUN_BESIDE_ANOTHER: AtomicUsize = AtomicUsize::new(0);
pub(super) static LATER_COMMITS_LANDED_FIRST: AtomicUsize = AtomicUsize::new(0);
pub(super) static PASSES_ENDED_BEFORE_THE_NEXT_LANDED: AtomicUsize = AtomicUsize::new(0);

/// Opens the shard and brings its partitions back as leaders; `None` if the power went.
pub(super) async fn open(disk: &SimDisk, model: &Model, at: &str) -> Option<Life> {
    let config = config_overlapping_at(model.overlap_min_bytes);
    let (shard, _doorbell) = Shard::open_on(disk.clone(), config).await.ok()?;
    let recovered: BTreeSet<u64> = shard.borrow().recovered_group_ids().into_iter().collect();
    let resurrected: Vec<_> = recovered.intersection(&model.removed).collect();
    assert!(
        resurrected.is_empty(),
        "{at}: deleted groups came back: {resurrected:?}"
    );
    Shard::preload_recovered_data(&shard, LEDGER_GROUP)
        .await
        .ok()?;
    let ledger = Rc::new(RefCell::new(Vec::new()));
    let machine = Box::new(Ledger {
        applied: ledger.clone(),
    });
    let spec = GroupSpec::Custom {
        group_id: LEDGER_GROUP,
        machine,
    };
    shard.borrow_mut().add_group(spec).expect("ledger group");
    install_partitions(&shard, &model.install_list());
    // Until a partition has applied every entry of earlier terms, its high watermark may
    // trail what was acknowledged before the crash: whatever it serves must not.
    for (&group, (_, acknowledged)) in &model.partitions {
        let newest = acknowledged.iter().map(|(o, _)| *o).max().unwrap_or(-1);
        if let Ok(offsets) = shard.borrow().read_offsets(group) {
            let high_watermark = offsets.high_watermark();
            assert!(
                high_watermark > newest,
                "{at}: group {group} served high watermark {high_watermark} below {newest}"
            );
        }
    }
    for _ in 0..100 {
        // A failed reclaim only logs, so the disk itself says whether the power went.
        if disk.has_crashed() {
            return None;
        }
        if shard.borrow().groups_catching_up() == 0 {
            return Some(Life {
                shard,
                pending: Vec::new(),
                ledger,
                pending_commands: Vec::new(),
                pump: SimPump::default(),
            });
        }
        run_pass(&shard).await.ok()?;
    }
    panic!("{at}: lone voters did not lead again within 100 passes");
}

/// Every acknowledged batch of `group` at or after its log start is back, intact.
pub(super) async fn check_partition(
    shard: &ShardRef<SimDisk>,
    group: u64,
    acknowledged: &[(i64, Vec<u8>)],
    at: &str,
) {
    let Some(newest) = acknowledged.iter().map(|(o, _)| *o).max() else {
        return;
    };
    let (log_start, high_watermark) = {
        let state = shard.borrow();
        let offsets = state.offsets(group).expect("offsets");
        (offsets.log_start_offset(), offsets.high_watermark())
    };
    let at = format!("{at} group {group}");
    assert!(
        high_watermark > newest,
        "{at}: high watermark {high_watermark}, acknowledged {newest}"
    );
    assert!(
        log_start <= newest,
        "{at}: retention took the newest acknowledged batch"
    );
    // One read of everything from the log start, as a consumer catching up would do: cached
    // batches and runs of records read from disk together.
    let plan = shard
        .borrow()
        .plan_read(group, log_start, usize::MAX, true)
        .unwrap_or_else(|e| panic!("{at}: unreadable from {log_start}: {e}"));
    let stored: BTreeMap<i64, Bytes> = load_pieces(plan.pieces)
        .await
        .expect("loads")
        .into_iter()
        .map(|batch| {
            (
                BatchHeader::parse(&batch).expect("header").base_offset,
                batch,
            )
        })
        .collect();
    for (offset, payload) in acknowledged.iter().filter(|(o, _)| *o >= log_start) {
        let batch = stored
            .get(offset)
            .unwrap_or_else(|| panic!("{at}: no batch at offset {offset}"));
        assert_eq!(
            &batch[BATCH_HEADER_BYTES..],
            payload.as_slice(),
            "{at}: offset {offset}"
        );
    }
}

pub(super) fn propose(life: &mut Life, model: &Model, rng: &mut StdRng) {
    let groups: Vec<u64> = model.partitions.keys().copied().collect();
    let group = groups[rng.random_range(0..groups.len())];
    // acks=all (answered once applied) or acks=1 (once durable on the leader).
    let ack = if rng.random_bool(0.5) {
        AckWhen::Committed
    } else {
        AckWhen::LeaderDurable
    };
    for _ in 0..rng.random_range(1..5) {
        let size = if rng.random_bool(0.05) {
            rng.random_range(8_000..20_000)
        } else {
            rng.random_range(1..3_000)
        };
        let payload: Vec<u8> = (0..size).map(|_| rng.random()).collect();
        let data = batch(&payload);
        let header = BatchHeader::parse(&data).expect("header");
        let proposed = life
            .shard
            .borrow_mut()
            .propose_batch(group, &data, &header, ack);
        let (offset, receiver) = proposed.expect("the leader accepts");
        life.pending
            .push((group, offset, payload, receiver.expect("waits")));
    }
}

/// Deletes a random partition (its topic went) and creates a new one in its place.
pub(super) fn replace_partition(life: &mut Life, model: &mut Model, rng: &mut StdRng) {
    let groups: Vec<u64> = model.partitions.keys().copied().collect();
    let doomed = groups[rng.random_range(0..groups.len())];
    model.partitions.remove(&doomed);
    life.shard.borrow_mut().remove_group(doomed);
    model.removing.push(doomed);
    let created = model.create_partition(rng);
    install_partitions(&life.shard, &[(created, model.partitions[&created].0)]);
}

/// One random action. Returns false once the power is gone.
pub(super) async fn step(
    life: &mut Life,
    model: &mut Model,
    rng: &mut StdRng,
    clock_ms: &mut i64,
) -> bool {
    // Pump moves are small (begin, land or end one pass): about half the steps.
    if rng.random_range(0..100) < 50 {
        return pass(life, model, rng, clock_ms).await;
    }
    serve(life, model, rng, clock_ms);
    true
}

/// One move of the simulated pump (see `SimPump::step`): begin a pass, land a commit, or end
/// the oldest pass. A pass carries the tombstones appended before it began; they are durable
/// once it ends.
pub(super) async fn pass(
    life: &mut Life,
    model: &mut Model,
    rng: &mut StdRng,
    clock_ms: &mut i64,
) -> bool {
    let removing = &mut model.removing;
    let Ok(made) = life
        .pump
        .step(&life.shard, rng, || std::mem::take(removing))
        .await
    else {
        return false;
    };
    match made {
        PumpMove::Began {
            beside_another: true,
        } => {
            PASSES_BEGUN_BESIDE_ANOTHER.fetch_add(1, Ordering::Relaxed);
        }
        PumpMove::Landed { newer_first: true } => {
            LATER_COMMITS_LANDED_FIRST.fetch_add(1, Ordering::Relaxed);
        }
        PumpMove::Ended {
            next_pending,
            carried,
        } => {
            if next_pending {
                PASSES_ENDED_BEFORE_THE_NEXT_LANDED.fetch_add(1, Ordering::Relaxed);
            }
            model.removed.extend(carried);
            // As the pump does: a roll makes retention due.
            if life.shard.borrow().retention_due_after_roll() {
                life.shard.borrow_mut().apply_retention(*clock_ms);
            }
        }
        _ => {}
    }
    true
}

/// Anything but a pass: a proposal, a tick, a command, retention, a topic replaced.
pub(super) fn serve(life: &mut Life, model: &mut Model, rng: &mut StdRng, clock_ms: &mut i64) {
    match rng.random_range(0..68) {
        0..48 => propose(life, model, rng),
        48..53 => life.shard.borrow_mut().tick(),
        53..58 => {
            model.commands_proposed += 1;
            let command = format!("command {}", model.commands_proposed).into_bytes();
            let proposed = life
                .shard
                .borrow_mut()
                .propose(LEDGER_GROUP, command.clone());
            let receiver = proposed.expect("the ledger's leader accepts");
            life.pending_commands.push((command, receiver));
        }
        58..66 => {
            *clock_ms += 1000;
            life.shard.borrow_mut().apply_retention(*clock_ms);
        }
        _ => replace_partition(life, model, rng),
    }
}

/// Moves answered proposals of live partitions into the model's acknowledged lists.
pub(super) fn collect_acknowledgements(life: &mut Life, model: &mut Model) {
    let mut still_pending = Vec::new();
    for (group, offset, payload, mut receiver) in life.pending.drain(..) {
        match receiver.try_recv() {
            Ok(Some(Ok(_))) => {
                if let Some((_, acknowledged)) = model.partitions.get_mut(&group) {
                    acknowledged.push((offset, payload));
                }
            }
            Ok(None) => still_pending.push((group, offset, payload, receiver)),
            // Refused or dropped: never acknowledged, may or may not be stored.
            Ok(Some(Err(_))) | Err(_) => {}
        }
    }
    life.pending = still_pending;
    let mut still_pending = Vec::new();
    for (command, mut receiver) in life.pending_commands.drain(..) {
        match receiver.try_recv() {
            Ok(Some(Ok(_))) => model.commands.push(command),
            Ok(None) => still_pending.push((command, receiver)),
            Ok(Some(Err(_))) | Err(_) => {}
        }
    }
    life.pending_commands = still_pending;
}

pub(super) async fn check_all(life: &Life, model: &Model, at: &str) {
    for (&group, (_, acknowledged)) in &model.partitions {
        check_partition(&life.shard, group, acknowledged, at).await;
    }
    // Every acknowledged command was applied once, in order (unacknowledged ones may be
    // there too: their outcome was unknown).
    let applied = life.ledger.borrow();
    let unique: BTreeSet<&Vec<u8>> = applied.iter().collect();
    assert_eq!(
        unique.len(),
        applied.len(),
        "{at}: a command was applied twice"
    );
    let mut rest = applied.iter();
    for command in &model.commands {
        let found = rest.any(|c| c == command);
        let command = String::from_utf8_lossy(command);
        assert!(
            found,
            "{at}: acknowledged {command} is missing or out of order"
        );
    }
}
