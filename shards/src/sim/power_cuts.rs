//! The shard under simulated power cuts, from a seed: the workload runs, the power goes at a
//! random disk operation (inside a group commit, a segment roll, a checkpoint, a reclaim) or
//! early in recovery, unsynced writes land whole, not at all or torn, and the shard recovers
//! from what the disk kept; see `workload` for what is checked. `CHRONIK_SEED=<n>` replays
//! one seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::workload::*;
use super::SimDisk;
use crate::runtime::tests::for_each_seed;

async fn run_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let disk = SimDisk::default();
    let mut model = Model::with_partitions(&mut rng);
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
        disk.crash_after(rng.random_range(0..250));
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
    // What two commits in flight can do happened (not checked when replaying one seed).
    if std::env::var("CHRONIK_SEED").is_err() {
        for (what, count) in [
            ("a pass begun beside another", &PASSES_BEGUN_BESIDE_ANOTHER),
            ("a later commit landed first", &LATER_COMMITS_LANDED_FIRST),
            (
                "a pass ended before the next one's commit landed",
                &PASSES_ENDED_BEFORE_THE_NEXT_LANDED,
            ),
        ] {
            let count = count.load(std::sync::atomic::Ordering::Relaxed);
            eprintln!("{what}: {count} times");
            assert!(count > 0, "never: {what}");
        }
    }
}
