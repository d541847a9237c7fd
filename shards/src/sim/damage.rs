//! A damaged disk, from a seed: see `run_damaged_seed`. `CHRONIK_SEED=<n>` replays one seed.

use std::cell::RefCell;
use std::rc::Rc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::workload::*;
use super::{run_pass, SimDisk};
use crate::partition::batch::BatchHeader;
use crate::runtime::shard::{GroupSpec, Shard};
use crate::runtime::tests::for_each_seed;

/// A history written cleanly, then the disk damaged (flipped bits, zeroed or garbage blocks,
/// cut files) anywhere, in any segment. Recovery must either refuse with an error or come up
/// and serve what it has; reading every partition back must never panic, and whatever is
/// served passed its CRCs.
#[allow(clippy::too_many_lines)]
async fn run_damaged_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let disk = SimDisk::default();
    let mut model = Model::with_partitions(&mut rng);
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
