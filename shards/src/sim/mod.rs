//! Deterministic simulation: the shard pump on a simulated disk, driven step by step from a
//! seed. No timers and no real I/O, so a failing seed replays exactly.

pub mod disk;

pub use disk::SimDisk;

use crate::runtime::shard::ShardRef;
use crate::wal::{Disk, WalError};

/// Runs one pump pass to the end: Readies, group commit, Raft told what is durable. An error
/// means the disk failed (on a `SimDisk`: the power was cut) and the shard must be dropped.
pub async fn run_pass<D: Disk>(shard: &ShardRef<D>) -> Result<(), WalError> {
    // The next segment is prepared beside the commit, as the real pump does it (taken first,
    // so this pass's commit may roll into a segment still being prepared).
    let preparation = shard.borrow_mut().take_segment_preparation();
    let mut pass = shard.borrow_mut().begin_pass();
    let flush = pass.flush.take();
    let (done, ()) = futures::join!(
        async {
            match flush {
                Some(job) => job.run().await.map(Some),
                None => Ok(None),
            }
        },
        async {
            if let Some(job) = preparation {
                job.run().await;
            }
        }
    );
    let done = done?;
    shard.borrow_mut().end_pass(pass, done);
    // Entries a lagging follower needs that memory no longer holds (the real pump reads them
    // in the background; here, in line, so the run stays deterministic).
    let refills = shard.borrow_mut().take_refills();
    for refill in refills {
        crate::runtime::shard::run_refill(shard.clone(), refill).await;
    }
    Ok(())
}

#[cfg(test)]
mod cluster;
#[cfg(test)]
mod damage;
#[cfg(test)]
mod power_cuts;
#[cfg(test)]
mod workload;
