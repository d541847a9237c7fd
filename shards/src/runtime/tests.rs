//! Crash durability of the shard pump, seeded: propose batches, "crash" at a random moment
//! (the pump task is dropped, whatever it was doing), recover from the same directory, and
//! check that every acknowledged batch is back at its acknowledged offset, and that offsets
//! stay contiguous. `CHRONIK_SEED=<n>` replays one seed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use glommio::LocalExecutorBuilder;
use rand::{Rng, SeedableRng};

use super::shard::{run_pump, AckWhen, GroupSpec, Shard, ShardConfig, ShardRef};
use crate::partition::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::partition::offsets::RetentionLimits;
use crate::wal::{Disk, WalConfig};

const GROUP: u64 = 7;

fn config(dir: &std::path::Path) -> ShardConfig {
    ShardConfig {
        shard_id: 0,
        replica_id: 1,
        wal: WalConfig {
            dir: dir.join("wal"),
            segment_bytes_max: 1 << 20,
            overlap_min_bytes: crate::wal::OVERLAP_MIN_BYTES_DEFAULT,
        },
        tick_interval_ms: 10,
        entry_cache_bytes_max: 64 << 10,
        entry_cache_shard_bytes_max: 64 << 20,
        entry_cache_unread_ticks: 10,
        proposal_waiters_max: 10_000,
        fetch_waiters_max: 100,
        uncommitted_bytes_max: 64 << 20,
        deterministic_elections: false,
    }
}

/// A record batch header with one record's worth of offsets and `payload` after it.
pub(crate) fn batch(payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; BATCH_HEADER_BYTES];
    let length = (BATCH_HEADER_BYTES + payload.len() - 12) as i32;
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    bytes[16] = 2;
    bytes[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    bytes[57..61].copy_from_slice(&1i32.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

async fn start(dir: &std::path::Path) -> (ShardRef, glommio::Task<()>, Rc<Cell<bool>>) {
    let (shard, doorbell) = Shard::open(config(dir)).await.expect("shard opens");
    let stop = Rc::new(Cell::new(false));
    let pump = glommio::spawn_local(run_pump(shard.clone(), doorbell, stop.clone()));
    install_partitions(&shard, &[(GROUP, -1)]);
    (shard, pump, stop)
}

/// Adds the metadata's partitions, `(group id, retention bytes)` with -1 for "forever", and
/// lets the shard drop recovered groups nobody claimed.
pub(crate) fn install_partitions<D: Disk>(shard: &ShardRef<D>, partitions: &[(u64, i64)]) {
    for &(group_id, retention_bytes) in partitions {
        let retention = RetentionLimits {
            retention_ms: -1,
            retention_bytes,
        };
        let spec = GroupSpec::Partition {
            group_id,
            retention,
        };
        shard.borrow_mut().add_group(spec).expect("group");
    }
    shard.borrow_mut().finish_group_install();
}

/// Opens a file of the temp dir with O_DIRECT first, as the broker does at start: glommio
/// probes that disk's polled I/O on the first open and reads fail without it (STACK.md).
async fn probe_io(dir: &std::path::Path) {
    let probe = dir.join("probe");
    std::fs::write(&probe, vec![1u8; 4096]).expect("probe");
    glommio::io::DmaFile::open(&probe)
        .await
        .expect("probe opens")
        .close()
        .await
        .expect("closes");
}

async fn wait_until_caught_up(shard: &ShardRef) {
    for _ in 0..1000 {
        if shard.borrow().is_caught_up_leader(GROUP) {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    panic!("the lone voter did not become a caught-up leader within 5 s");
}

async fn read_back(shard: &ShardRef, offset: i64) -> Vec<u8> {
    let plan = shard
        .borrow()
        .plan_read(GROUP, offset, 1, true)
        .expect("readable");
    let piece = plan
        .pieces
        .into_iter()
        .next()
        .expect("a batch at the acknowledged offset");
    piece.load().await.expect("loads").to_vec()
}

// A seed's run reads as one scenario, top to bottom.
#[allow(clippy::too_many_lines)]
async fn run_seed(seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let temp = tempfile::tempdir().expect("tempdir");
    probe_io(temp.path()).await;

    let mut acknowledged: Vec<(i64, Vec<u8>)> = Vec::new();
    for life in 0..3 {
        let (shard, pump, _stop) = start(temp.path()).await;
        // The commit index is written lazily, so a restarted group knows its last acknowledged
        // batches are committed only once it has led and committed an entry of its own term.
        wait_until_caught_up(&shard).await;
        let high_watermark = shard
            .borrow()
            .offsets(GROUP)
            .expect("offsets")
            .high_watermark();
        assert!(
            high_watermark >= acknowledged.iter().map(|(o, _)| o + 1).max().unwrap_or(0),
            "seed {seed} life {life}: the high watermark covers every acknowledged batch"
        );
        // Everything acknowledged in earlier lives is still there, at its offset.
        for (offset, payload) in &acknowledged {
            let stored = read_back(&shard, *offset).await;
            assert_eq!(
                &stored[BATCH_HEADER_BYTES..],
                payload.as_slice(),
                "seed {seed} life {life} offset {offset}"
            );
            assert_eq!(
                BatchHeader::parse(&stored).expect("header").base_offset,
                *offset,
                "seed {seed}"
            );
        }
        let mut pending = Vec::new();
        let proposals = rng.random_range(1..200);
        for i in 0..proposals {
            let payload: Vec<u8> = (0..rng.random_range(1..3000))
                .map(|_| rng.random())
                .collect();
            let data = batch(&payload);
            let header = BatchHeader::parse(&data).expect("header");
            let proposed =
                shard
                    .borrow_mut()
                    .propose_batch(GROUP, &data, &header, AckWhen::Committed);
            let (offset, receiver) = proposed.expect("leader accepts");
            pending.push((offset, payload, receiver.expect("waits")));
            if i % rng.random_range(1..20) == 0 {
                glommio::timer::sleep(Duration::from_micros(rng.random_range(0..3000))).await;
            }
        }
        glommio::timer::sleep(Duration::from_micros(rng.random_range(0..5000))).await;
        // Crash: drop the pump task wherever it is (a write may be in flight); only what was
        // acknowledged must survive.
        drop(pump);
        for (offset, payload, mut receiver) in pending {
            if matches!(receiver.try_recv(), Ok(Some(Ok(_)))) {
                acknowledged.push((offset, payload));
            }
        }
        let offsets = shard
            .borrow()
            .offsets(GROUP)
            .map(|o| (o.log_start_offset(), o.high_watermark()))
            .expect("offsets");
        assert!(
            offsets.1 >= acknowledged.iter().map(|(o, _)| o + 1).max().unwrap_or(0),
            "seed {seed}"
        );
        drop(shard);
        // Let a write the crash left in flight land (or not) before the next life reads. In a
        // real crash the kernel settles it before the process is gone; here the reactor lives
        // on, and nothing can await the dropped operation, so wait generously. (The simulation
        // in `crate::sim` covers crash points exhaustively without this; this test keeps the
        // real O_DIRECT path honest.)
        glommio::timer::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        !acknowledged.is_empty(),
        "seed {seed}: the test acknowledged something"
    );
}

#[test]
fn acknowledged_batches_survive_crashes() {
    for_each_seed(1..=6, |seed| async move { run_seed(seed).await });
}

/// Runs `run` for every seed of `seeds` (or only `CHRONIK_SEED`), each on a fresh executor,
/// and names the seed that failed.
pub(crate) fn for_each_seed<F, Fut>(seeds: std::ops::RangeInclusive<u64>, run: F)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let replay = std::env::var("CHRONIK_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    // `CHRONIK_SEEDS=<n>` runs seeds 1..=n instead (longer runs by hand).
    let last = std::env::var("CHRONIK_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(*seeds.end());
    let seeds = *seeds.start()..=last;
    let seeds: Vec<u64> = replay.map_or_else(|| seeds.collect(), |seed| vec![seed]);
    for seed in seeds {
        let run = run.clone();
        LocalExecutorBuilder::default()
            .spawn(move || run(seed))
            .expect("executor")
            .join()
            .unwrap_or_else(|_| panic!("seed {seed} failed; replay with CHRONIK_SEED={seed}"));
    }
}

/// Proposes `count` small batches and waits until they are committed and applied.
async fn produce_committed(shard: &ShardRef, count: usize) {
    let mut receivers = Vec::new();
    for _ in 0..count {
        let data = batch(&[5u8; 1000]);
        let header = BatchHeader::parse(&data).expect("header");
        let (_, receiver) = shard
            .borrow_mut()
            .propose_batch(GROUP, &data, &header, AckWhen::Committed)
            .expect("leader accepts");
        receivers.push(receiver.expect("waits"));
    }
    for receiver in receivers {
        receiver.await.expect("answered").expect("committed");
    }
}

/// Keeps the partition busy (one batch every 10 ms, so it never goes quiet and ticks on)
/// for `how_long`.
async fn produce_for(shard: &ShardRef, how_long: Duration) {
    let until = std::time::Instant::now() + how_long;
    while std::time::Instant::now() < until {
        produce_committed(shard, 1).await;
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// A lone replica's partition caches its applied batches only while someone reads it: a read
/// or a waiting long-poll fetch keeps (or turns back on) the cache, and
/// `entry_cache_unread_ticks` ticks without one (10 ticks of 10 ms here) drop it, through the
/// real pump and ticks. (A quiet group does not tick; the writes keep this one busy.)
#[test]
fn an_unread_partition_stops_caching_and_a_read_turns_it_back_on() {
    for_each_seed(1..=1, |_| async move {
        let temp = tempfile::tempdir().expect("tempdir");
        probe_io(temp.path()).await;
        let (shard, _pump, _stop) = start(temp.path()).await;
        wait_until_caught_up(&shard).await;
        let cached = |shard: &ShardRef| shard.borrow().cached_entry_bytes(GROUP).expect("group");
        let busy = Duration::from_millis(300);

        produce_for(&shard, busy).await;
        produce_committed(&shard, 3).await;
        assert_eq!(cached(&shard), 0, "unread: applied batches are not kept");

        // A long-poll fetch waiting on the partition counts as a reader while it waits.
        let waiter = shard.borrow_mut().fetch_waiter(GROUP).expect("waiter");
        produce_committed(&shard, 3).await;
        assert!(cached(&shard) >= 3000, "a waiting fetch keeps the cache");
        drop(waiter);

        produce_for(&shard, busy).await;
        produce_committed(&shard, 1).await;
        assert_eq!(
            cached(&shard),
            0,
            "unread again: the cache is dropped at a tick"
        );

        // A read turns caching back on at once.
        let _ = read_back(&shard, 0).await;
        produce_committed(&shard, 2).await;
        assert!(cached(&shard) >= 2000, "read: new batches are kept");
    });
}
