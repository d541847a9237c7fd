//! Deterministic simulation: the shard pump on a simulated disk, driven step by step from a
//! seed. No timers and no real I/O, so a failing seed replays exactly.

pub mod disk;

pub use disk::SimDisk;

use crate::runtime::shard::ShardRef;
use crate::wal::{Disk, WalError};

/// Runs one pump pass to the end: Readies, group commit, Raft told what is durable. An error
/// means the disk failed (on a `SimDisk`: the power was cut) and the shard must be dropped.
pub async fn run_pass<D: Disk>(shard: &ShardRef<D>) -> Result<(), WalError> {
    let mut pass = shard.borrow_mut().begin_pass();
    let done = match pass.flush.take() {
        Some(job) => Some(job.run().await?),
        None => None,
    };
    shard.borrow_mut().end_pass(pass, done);
    Ok(())
}

#[cfg(test)]
mod damage;
#[cfg(test)]
mod power_cuts;
#[cfg(test)]
mod workload;
