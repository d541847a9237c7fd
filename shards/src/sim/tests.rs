//! The shard pump under simulated power cuts, from a seed: random proposals, passes, ticks
//! and retention; the power goes at a random disk operation (inside a group commit, a
//! segment roll, a checkpoint, a reclaim, or recovery itself), unsynced writes land whole,
//! not at all or torn; then the shard recovers from what the disk kept. Every acknowledged
//! batch must be back at its offset, intact, unless retention legitimately removed it.
//! `CHRONIK_SEED=<n>` replays one seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{run_pass, SimDisk};
use crate::partition::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::runtime::shard::{CommitReceiver, Shard, ShardConfig, ShardRef};
use crate::runtime::tests::{batch, for_each_seed, install_one_partition};
use crate::wal::WalConfig;

const GROUP: u64 = 3;
const LIVES: usize = 6;
const STEPS_PER_LIFE: usize = 300;
const SEGMENT_BYTES: u64 = 64 << 10;
/// Keeps retention busy (so segments roll, checkpoint and go) but never near the newest data.
const RETENTION_BYTES: i64 = 96 << 10;

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

struct Life {
    shard: ShardRef<SimDisk>,
    pending: Vec<(i64, Vec<u8>, CommitReceiver)>,
}

/// Opens the shard and brings its partition back as leader; `None` if the power went.
async fn open(disk: &SimDisk) -> Option<Life> {
    let (shard, _doorbell) = Shard::open_on(disk.clone(), config()).await.ok()?;
    install_one_partition(&shard, GROUP, RETENTION_BYTES);
    for _ in 0..100 {
        // A failed reclaim only logs, so the disk itself says whether the power went.
        if disk.has_crashed() {
            return None;
        }
        if shard.borrow().groups_catching_up() == 0 {
            return Some(Life {
                shard,
                pending: Vec::new(),
            });
        }
        run_pass(&shard).await.ok()?;
    }
    panic!("a lone voter did not lead again within 100 passes");
}

/// Every acknowledged batch at or after the log start is back, intact, at its offset.
async fn check_recovered(shard: &ShardRef<SimDisk>, acknowledged: &[(i64, Vec<u8>)], at: &str) {
    let Some(newest) = acknowledged.iter().map(|(o, _)| *o).max() else {
        return;
    };
    let (log_start, high_watermark) = {
        let state = shard.borrow();
        let offsets = state.offsets(GROUP).expect("offsets");
        (offsets.log_start_offset(), offsets.high_watermark())
    };
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
            .plan_read(GROUP, *offset, 1, true)
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

/// One random action. Returns false once the power is gone.
async fn step(life: &mut Life, rng: &mut StdRng, clock_ms: &mut i64) -> bool {
    match rng.random_range(0..10) {
        0..5 => {
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
                    .propose_batch(GROUP, &data, &header, true);
                let (offset, receiver) = proposed.expect("the leader accepts");
                life.pending
                    .push((offset, payload, receiver.expect("waits")));
            }
            true
        }
        5..8 => run_pass(&life.shard).await.is_ok(),
        8 => {
            life.shard.borrow_mut().tick();
            true
        }
        _ => {
            *clock_ms += 1000;
            life.shard.borrow_mut().apply_retention(*clock_ms);
            true
        }
    }
}

async fn run_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let disk = SimDisk::default();
    let mut clock_ms = 1_000_000;
    let mut acknowledged: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut power_cuts = 0;
    for life_number in 0..LIVES {
        let at = format!("seed {seed} life {life_number}");
        // Now and then the power goes again during recovery itself.
        if rng.random_bool(0.15) {
            disk.crash_after(rng.random_range(0..6));
        }
        let Some(mut life) = open(&disk).await else {
            assert!(
                disk.has_crashed(),
                "{at}: recovery failed without a power cut"
            );
            disk.restart(&mut rng);
            power_cuts += 1;
            continue;
        };
        check_recovered(&life.shard, &acknowledged, &at).await;
        disk.crash_after(rng.random_range(0..300));
        for _ in 0..STEPS_PER_LIFE {
            let powered = step(&mut life, &mut rng, &mut clock_ms).await;
            let mut still_pending = Vec::new();
            for (offset, payload, mut receiver) in life.pending.drain(..) {
                match receiver.try_recv() {
                    Ok(Some(Ok(_))) => acknowledged.push((offset, payload)),
                    Ok(None) => still_pending.push((offset, payload, receiver)),
                    // Refused or dropped: never acknowledged, may or may not be stored.
                    Ok(Some(Err(_))) | Err(_) => {}
                }
            }
            life.pending = still_pending;
            if !powered || disk.has_crashed() {
                break;
            }
        }
        power_cuts += usize::from(disk.has_crashed());
        drop(life);
        disk.restart(&mut rng);
    }
    let at = format!("seed {seed} final");
    if let Some(life) = open(&disk).await {
        check_recovered(&life.shard, &acknowledged, &at).await;
    }
    assert!(power_cuts > 0, "{at}: no power cut happened");
}

#[test]
fn acknowledged_batches_survive_simulated_power_cuts() {
    for_each_seed(1..=100, |seed| async move { run_seed(seed).await });
}
