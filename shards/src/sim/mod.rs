//! Deterministic simulation: the shard pump on a simulated disk, driven step by step from a
//! seed. No timers and no real I/O, so a failing seed replays exactly.

pub mod disk;

pub use disk::SimDisk;

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::Rng;

use crate::runtime::shard::{Pass, ShardRef};
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

/// The pump's passes in flight in a simulation, oldest first (two at most), driven one move
/// at a time so that other steps land between the moves, as proposals, packets and ticks do
/// while the real pump awaits the disk. The disk completes a commit at once, so running a
/// commit is its landing; landing the newer first and then cutting the power leaves it
/// durable and the older not.
#[derive(Default)]
pub struct SimPump {
    in_flight: VecDeque<PassInFlight>,
    /// A segment preparation taken and not run yet: it runs beside the next commit to land
    /// (one that rolls into its segment waits for it, as in the pump).
    preparation: Option<PrepareJob<SimDisk>>,
}

struct PassInFlight {
    pass: Pass<SimDisk>,
    commit: Option<FlushJob<SimDisk>>,
    done: Option<Option<FlushDone<SimDisk>>>,
    /// Whatever the caller attached when the pass began (tombstones it carries).
    carried: Vec<u64>,
}

/// What one `SimPump::step` did.
pub enum PumpMove {
    /// Began a pass; `beside_another` if one was in flight already.
    Began {
        beside_another: bool,
    },
    /// Landed a commit; `newer_first` if the older one had not landed yet.
    Landed {
        newer_first: bool,
    },
    /// Ended the oldest pass (Raft learned what it made durable); `next_pending` if the next
    /// pass's commit had not landed yet. `carried` is what `begin` attached to it.
    Ended {
        next_pending: bool,
        carried: Vec<u64>,
    },
    Idle,
}

impl SimPump {
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// One move, picked by `rng` among those the pump may make: begin a pass (when none is in
    /// flight or the shard allows one beside it; `carried` is attached to it), land a commit
    /// (the newer one now and then, unless it must follow the older), or end the oldest pass
    /// whose commit landed. An error is the power cut.
    pub async fn step(
        &mut self,
        shard: &ShardRef<SimDisk>,
        rng: &mut StdRng,
        carried: impl FnOnce() -> Vec<u64>,
    ) -> Result<PumpMove, WalError> {
        let may_begin = self.in_flight.is_empty() || shard.borrow().may_begin_pass();
        let oldest_landed = self.in_flight.front().is_some_and(|p| p.commit.is_none());
        let newer_may_land = self.in_flight.len() == 2
            && self.in_flight[1]
                .commit
                .as_ref()
                .is_some_and(|job| !job.must_follow_previous());
        let oldest_pending = self.in_flight.front().is_some_and(|p| p.commit.is_some());
        let landing = if newer_may_land && (!oldest_pending || rng.random_bool(0.4)) {
            Some(1)
        } else {
            oldest_pending.then_some(0)
        };
        Ok(match rng.random_range(0..3) {
            0 if may_begin => self.begin(shard, carried()),
            1 if oldest_landed => self.end_oldest(shard),
            _ => match landing {
                Some(pick) => self.land(pick).await?,
                None if oldest_landed => self.end_oldest(shard),
                None if may_begin => self.begin(shard, carried()),
                None => PumpMove::Idle,
            },
        })
    }

    /// Lands and ends every pass in flight, in order.
    pub async fn drain(&mut self, shard: &ShardRef<SimDisk>) -> Result<Vec<u64>, WalError> {
        let mut carried = Vec::new();
        while !self.in_flight.is_empty() {
            if self.in_flight[0].commit.is_some() {
                self.land(0).await?;
            }
            if let PumpMove::Ended { carried: more, .. } = self.end_oldest(shard) {
                carried.extend(more);
            }
        }
        Ok(carried)
    }

    fn begin(&mut self, shard: &ShardRef<SimDisk>, carried: Vec<u64>) -> PumpMove {
        let beside_another = !self.in_flight.is_empty();
        // The next segment is prepared beside the commits, as the real pump does it (taken
        // first, so this pass's commit may roll into a segment still being prepared).
        if self.preparation.is_none() {
            self.preparation = shard.borrow_mut().take_segment_preparation();
        }
        let mut pass = shard.borrow_mut().begin_pass();
        let commit = pass.flush.take();
        let done = commit.is_none().then_some(None);
        self.in_flight.push_back(PassInFlight {
            pass,
            commit,
            done,
            carried,
        });
        PumpMove::Began { beside_another }
    }

    async fn land(&mut self, pick: usize) -> Result<PumpMove, WalError> {
        let job = self.in_flight[pick]
            .commit
            .take()
            .expect("a commit to land");
        let newer_first = pick == 1 && self.in_flight[0].commit.is_some();
        let preparation = self.preparation.take();
        let (done, ()) = futures::join!(job.run(), async {
            if let Some(job) = preparation {
                job.run().await;
            }
        });
        self.in_flight[pick].done = Some(Some(done?));
        Ok(PumpMove::Landed { newer_first })
    }

    fn end_oldest(&mut self, shard: &ShardRef<SimDisk>) -> PumpMove {
        let oldest = self.in_flight.pop_front().expect("a pass in flight");
        let done = oldest.done.expect("its commit landed");
        let next_pending = self.in_flight.front().is_some_and(|p| p.commit.is_some());
        shard.borrow_mut().end_pass(oldest.pass, done);
        PumpMove::Ended {
            next_pending,
            carried: oldest.carried,
        }
    }
}
