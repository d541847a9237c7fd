//! Deterministic simulation: the shard pump on a simulated disk, driven step by step from a
//! seed. No timers and no real I/O, so a failing seed replays exactly.

pub mod disk;

pub use disk::SimDisk;

use rand::rngs::StdRng;
use rand::Rng;

use crate::runtime::shard::ShardRef;
use crate::wal::{Disk, FlushDone, FlushJob, PrepareJob, WalError};

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

/// What one group commit returned (`None`: the pass had none).
pub type CommitOutcome<D> = Result<Option<FlushDone<D>>, WalError>;

/// Runs two passes' commits and a segment preparation as the pump would: the second beside
/// the first unless it must follow it. The simulated disk completes each at once, so which
/// runs first (picked by `rng`) is which lands first; a power cut between them leaves the
/// second durable and the first not.
pub async fn run_commits_in_any_order<D: Disk>(
    first: Option<FlushJob<D>>,
    second: Option<FlushJob<D>>,
    preparation: Option<PrepareJob<D>>,
    rng: &mut StdRng,
) -> (CommitOutcome<D>, CommitOutcome<D>) {
    let second_follows = second.as_ref().is_some_and(FlushJob::must_follow_previous);
    let run_first = run_commit(first);
    let run_second = run_commit(second);
    let run_preparation = async {
        if let Some(job) = preparation {
            job.run().await;
        }
    };
    match rng.random_range(0..3) {
        _ if second_follows => {
            let ((), first) = futures::join!(run_preparation, run_first);
            (first, run_second.await)
        }
        0 => {
            let (second, first, ()) = futures::join!(run_second, run_first, run_preparation);
            (first, second)
        }
        1 => {
            let ((), first, second) = futures::join!(run_preparation, run_first, run_second);
            (first, second)
        }
        _ => {
            let (first, second, ()) = futures::join!(run_first, run_second, run_preparation);
            (first, second)
        }
    }
}

async fn run_commit<D: Disk>(job: Option<FlushJob<D>>) -> CommitOutcome<D> {
    match job {
        Some(job) => job.run().await.map(Some),
        None => Ok(None),
    }
}
