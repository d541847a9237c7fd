//! The shard pump under simulated power cuts, from a seed. Several partitions share the WAL,
//! each with its own retention; the workload proposes batches, runs passes, ticks, applies
//! retention, and now and then deletes a partition and creates another (as topics come and
//! go). The power goes at a random disk operation (inside a group commit, a segment roll, a
//! checkpoint, a reclaim, or recovery itself); unsynced writes land whole, not at all or torn;
//! then the shard recovers from what the disk kept. After every restart:
//! - every acknowledged batch of a live partition is back at its offset, intact, unless its
//!   partition's retention removed it (and retention never takes the newest one);
//! - a partition whose deletion reached the disk does not come back;
//! - a custom state machine (the controller's path: replayed from memory, compacted into a
//!   snapshot at every checkpoint) holds every acknowledged command, once, in order.
//!
//! `CHRONIK_SEED=<n>` replays one seed.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{run_pass, SimDisk};
use crate::group::StateMachine;
use crate::partition::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::runtime::shard::{CommitReceiver, GroupSpec, Shard, ShardConfig, ShardRef};
use crate::runtime::tests::{batch, for_each_seed, install_partitions};
use crate::wal::WalConfig;

const LIVES: usize = 6;
const STEPS_PER_LIFE: usize = 400;
const PARTITIONS: usize = 3;
const SEGMENT_BYTES: u64 = 64 << 10;
/// Retention of a new partition, picked at random: forever (pins segments), or by size.
const RETENTION_CHOICES: [i64; 3] = [-1, 64 << 10, 160 << 10];
/// The custom state machine's group (partitions count up from 1).
const LEDGER_GROUP: u64 = 1 << 40;

/// Remembers every command it applied, like the controller's metadata does.
struct Ledger {
    applied: Rc<RefCell<Vec<Vec<u8>>>>,
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

fn config() -> ShardConfig {
    ShardConfig {
        shard_id: 0,
        replica_id: 1,
        wal: WalConfig {
            dir: "/sim/wal".into(),
            segment_bytes_max: SEGMENT_BYTES,
        },
        tick_interval_ms: 10,
        entry_cache_bytes_max: 32 << 10,
        proposal_waiters_max: 10_000,
        fetch_waiters_max: 10,
        uncommitted_bytes_max: 16 << 20,
    }
}

/// What the (simulated) controller and the producers know, across lives.
#[derive(Default)]
struct Model {
    /// Live partitions: group id -> (retention bytes, acknowledged (offset, payload)).
    partitions: BTreeMap<u64, (i64, Vec<(i64, Vec<u8>)>)>,
    next_group_id: u64,
    /// Deleted, with the tombstone not yet known to be durable.
    removing: Vec<u64>,
    /// Deleted, with the tombstone durable: must never be recovered again.
    removed: BTreeSet<u64>,
    /// Commands the ledger acknowledged, in order.
    commands: Vec<Vec<u8>>,
    commands_proposed: u64,
}

impl Model {
    fn create_partition(&mut self, rng: &mut StdRng) -> u64 {
        self.next_group_id += 1;
        let retention = RETENTION_CHOICES[rng.random_range(0..RETENTION_CHOICES.len())];
        self.partitions
            .insert(self.next_group_id, (retention, Vec::new()));
        self.next_group_id
    }

    fn install_list(&self) -> Vec<(u64, i64)> {
        self.partitions
            .iter()
            .map(|(&group, (retention, _))| (group, *retention))
            .collect()
    }
}

struct Life {
    shard: ShardRef<SimDisk>,
    /// (group, offset, payload, commit receiver) of proposals not answered yet.
    pending: Vec<(u64, i64, Vec<u8>, CommitReceiver)>,
    ledger: Rc<RefCell<Vec<Vec<u8>>>>,
    pending_commands: Vec<(Vec<u8>, CommitReceiver)>,
}

/// Opens the shard and brings its partitions back as leaders; `None` if the power went.
async fn open(disk: &SimDisk, model: &Model, at: &str) -> Option<Life> {
    let (shard, _doorbell) = Shard::open_on(disk.clone(), config()).await.ok()?;
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
    // Until a partition has applied an entry of its new term, its high watermark may trail
    // what was acknowledged before the crash: no client may read it.
    for &group in model.partitions.keys() {
        let refused = shard.borrow().read_offsets(group).is_err();
        assert!(
            refused,
            "{at}: group {group} served reads before leading again"
        );
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
            });
        }
        run_pass(&shard).await.ok()?;
    }
    panic!("{at}: lone voters did not lead again within 100 passes");
}

/// Every acknowledged batch of `group` at or after its log start is back, intact.
async fn check_partition(
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
    for (offset, payload) in acknowledged.iter().filter(|(o, _)| *o >= log_start) {
        let plan = shard
            .borrow()
            .plan_read(group, *offset, 1, true)
            .unwrap_or_else(|e| panic!("{at}: offset {offset} unreadable: {e}"));
        let piece = plan.pieces.into_iter().next();
        let piece = piece.unwrap_or_else(|| panic!("{at}: no batch at offset {offset}"));
        let stored = piece.load().await.expect("loads");
        let header = BatchHeader::parse(&stored).expect("header");
        assert_eq!(header.base_offset, *offset, "{at}");
        assert_eq!(
            &stored[BATCH_HEADER_BYTES..],
            payload.as_slice(),
            "{at}: offset {offset}"
        );
    }
}

fn propose(life: &mut Life, model: &Model, rng: &mut StdRng) {
    let groups: Vec<u64> = model.partitions.keys().copied().collect();
    let group = groups[rng.random_range(0..groups.len())];
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
            .propose_batch(group, &data, &header, true);
        let (offset, receiver) = proposed.expect("the leader accepts");
        life.pending
            .push((group, offset, payload, receiver.expect("waits")));
    }
}

/// Deletes a random partition (its topic went) and creates a new one in its place.
fn replace_partition(life: &mut Life, model: &mut Model, rng: &mut StdRng) {
    let groups: Vec<u64> = model.partitions.keys().copied().collect();
    let doomed = groups[rng.random_range(0..groups.len())];
    model.partitions.remove(&doomed);
    life.shard.borrow_mut().remove_group(doomed);
    model.removing.push(doomed);
    let created = model.create_partition(rng);
    install_partitions(&life.shard, &[(created, model.partitions[&created].0)]);
}

/// One random action. Returns false once the power is gone.
async fn step(life: &mut Life, model: &mut Model, rng: &mut StdRng, clock_ms: &mut i64) -> bool {
    if rng.random_range(0..100) < 32 {
        return pass(life, model, rng, clock_ms).await;
    }
    serve(life, model, rng, clock_ms);
    true
}

/// One pump pass. While its group commit is in flight the shard keeps serving, as the real
/// pump's does while it awaits the disk: a few random actions land between `begin_pass` and
/// the end of the commit.
async fn pass(life: &mut Life, model: &mut Model, rng: &mut StdRng, clock_ms: &mut i64) -> bool {
    let mut pass = life.shard.borrow_mut().begin_pass();
    // This commit carries the tombstones appended so far, not those appended during it.
    let carried: Vec<u64> = model.removing.drain(..).collect();
    for _ in 0..rng.random_range(0..3) {
        serve(life, model, rng, clock_ms);
    }
    let done = match pass.flush.take() {
        Some(job) => match job.run().await {
            Ok(done) => Some(done),
            Err(_) => return false,
        },
        None => None,
    };
    life.shard.borrow_mut().end_pass(pass, done);
    model.removed.extend(carried);
    true
}

/// Anything but a pass: a proposal, a tick, a command, retention, a topic replaced.
fn serve(life: &mut Life, model: &mut Model, rng: &mut StdRng, clock_ms: &mut i64) {
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
fn collect_acknowledgements(life: &mut Life, model: &mut Model) {
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

async fn check_all(life: &Life, model: &Model, at: &str) {
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

async fn run_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let disk = SimDisk::default();
    let mut model = Model::default();
    for _ in 0..PARTITIONS {
        model.create_partition(&mut rng);
    }
    let mut clock_ms = 1_000_000;
    let mut power_cuts = 0;
    for life_number in 0..LIVES {
        let at = format!("seed {seed} life {life_number}");
        // Now and then the power goes again during recovery itself.
        if rng.random_bool(0.15) {
            disk.crash_after(rng.random_range(0..12));
        }
        let Some(mut life) = open(&disk, &model, &at).await else {
            assert!(
                disk.has_crashed(),
                "{at}: recovery failed without a power cut"
            );
            disk.restart(&mut rng);
            power_cuts += 1;
            continue;
        };
        check_all(&life, &model, &at).await;
        disk.crash_after(rng.random_range(0..400));
        for _ in 0..STEPS_PER_LIFE {
            let powered = step(&mut life, &mut model, &mut rng, &mut clock_ms).await;
            collect_acknowledgements(&mut life, &mut model);
            if !powered || disk.has_crashed() {
                break;
            }
        }
        power_cuts += usize::from(disk.has_crashed());
        drop(life);
        disk.restart(&mut rng);
    }
    let at = format!("seed {seed} final");
    if let Some(life) = open(&disk, &model, &at).await {
        check_all(&life, &model, &at).await;
    }
    assert!(power_cuts > 0, "{at}: no power cut happened");
}

#[test]
fn acknowledged_batches_survive_simulated_power_cuts() {
    for_each_seed(1..=100, |seed| async move { run_seed(seed).await });
}

/// A history written cleanly, then the disk damaged (flipped bits, zeroed or garbage blocks,
/// cut files) anywhere, in any segment. Recovery must either refuse with an error or come up
/// and serve what it has; reading every partition back must never panic, and whatever is
/// served passed its CRCs.
async fn run_damaged_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let disk = SimDisk::default();
    let mut model = Model::default();
    for _ in 0..PARTITIONS {
        model.create_partition(&mut rng);
    }
    let mut clock_ms = 1_000_000;
    let mut life = open(&disk, &model, &format!("seed {seed} clean"))
        .await
        .expect("a clean disk opens");
    for _ in 0..STEPS_PER_LIFE {
        step(&mut life, &mut model, &mut rng, &mut clock_ms).await;
        collect_acknowledgements(&mut life, &mut model);
    }
    drop(life);
    disk.restart(&mut rng);
    for _ in 0..rng.random_range(1..4) {
        disk.damage(&mut rng);
    }
    let Ok((shard, _doorbell)) = Shard::open_on(disk.clone(), config()).await else {
        return; // refused, with an error: fine
    };
    if Shard::preload_recovered_data(&shard, LEDGER_GROUP)
        .await
        .is_err()
    {
        return;
    }
    let ledger = Box::new(Ledger {
        applied: Rc::new(RefCell::new(Vec::new())),
    });
    let spec = GroupSpec::Custom {
        group_id: LEDGER_GROUP,
        machine: ledger,
    };
    let mut groups = vec![LEDGER_GROUP];
    if shard.borrow_mut().add_group(spec).is_err() {
        groups.clear();
    }
    for (group, retention_bytes) in model.install_list() {
        let spec = GroupSpec::Partition {
            group_id: group,
            retention: crate::partition::offsets::RetentionLimits {
                retention_ms: -1,
                retention_bytes,
            },
        };
        if shard.borrow_mut().add_group(spec).is_ok() {
            groups.push(group);
        }
    }
    shard.borrow_mut().finish_group_install();
    for _ in 0..20 {
        if run_pass(&shard).await.is_err() {
            return;
        }
    }
    for &group in groups.iter().filter(|&&g| g != LEDGER_GROUP) {
        let Ok((start, end)) = shard
            .borrow()
            .read_offsets(group)
            .map(|o| (o.log_start_offset(), o.high_watermark()))
        else {
            continue;
        };
        let mut offset = start;
        while offset < end {
            let plan = shard.borrow().plan_read(group, offset, 1 << 20, true);
            let Ok(plan) = plan else { break };
            if plan.pieces.is_empty() {
                break;
            }
            for piece in plan.pieces {
                match piece.load().await {
                    Ok(batch) => {
                        let header = BatchHeader::parse(&batch).expect("served batches parse");
                        offset = header.base_offset + header.offset_count();
                    }
                    Err(_) => offset += 1,
                }
            }
        }
    }
}

#[test]
fn a_damaged_disk_is_refused_or_served_never_a_panic() {
    for_each_seed(1..=200, |seed| async move { run_damaged_seed(seed).await });
}
