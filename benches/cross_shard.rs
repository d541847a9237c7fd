//! A cross-shard request round trip over the channel mesh: two glommio executors joined by a
//! full `MeshBuilder::<ShardMessage, _>` of the broker's real frame type
//! (`chronik::runtime::frame`) and channel capacity. Shard 0 (the criterion thread) sends
//! `ShardRequest::Raft` with no messages, the way `ShardContext::call` does (send on the mesh,
//! await the oneshot reply); shard 1 serves the way `serve_mesh`/`execute_for_peer` do (one
//! task per message, reply on the oneshot) but answers `ShardReply::Stepped` at once instead
//! of running `ops::execute`. Measured per request: one at a time (round-trip latency), and
//! with 32 in flight (throughput of the mesh and the two wake-ups per request).
//! Not included: routing, the work a request does on its owner shard, and core pinning
//! (both executors are `Placement::Unbound`; the broker pins each shard to a core).
//! Run: `cargo bench --bench cross_shard`.

use std::time::{Duration, Instant};

use chronik::runtime::frame::{ShardMessage, ShardReply, ShardRequest};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::channel::oneshot;
use futures::StreamExt;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::{ExecutorJoinHandle, LocalExecutor, LocalExecutorBuilder, Placement};

/// As `CROSS_SHARD_CHANNEL_CAPACITY` in src/runtime/mod.rs (private there).
const CROSS_SHARD_CHANNEL_CAPACITY: usize = 1024;
const SHARDS: usize = 2;
const CALLER: usize = 0;
const OWNER: usize = 1;
const IN_FLIGHT_MAX: usize = 32;

type Mesh = MeshBuilder<ShardMessage, Full>;

/// Shard 1: `serve_mesh`, one receiving task per peer that spawns a task per message. Returns
/// once every peer closed its senders.
async fn serve(mesh: Mesh) {
    let (_senders, mut receivers) = mesh.join().await.expect("shard 1 joins the mesh");
    assert_eq!(receivers.peer_id(), OWNER);
    let streams = receivers.streams();
    assert_eq!(streams.len(), SHARDS - 1);
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|(_peer, receiver)| {
            glommio::spawn_local(async move {
                while let Some(message) = receiver.recv().await {
                    glommio::spawn_local(answer(message)).detach();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
}

/// `execute_for_peer` with the cheapest answer in place of `ops::execute`.
async fn answer(message: ShardMessage) {
    let ShardMessage { request, reply } = message;
    let ShardRequest::Raft(messages) = request else {
        panic!("the benchmark sends only empty Raft requests");
    };
    assert!(messages.is_empty());
    let _ = reply.send(ShardReply::Stepped);
}

/// `ShardContext::call` to another shard: send on the mesh (waits while the channel is
/// full), then await the reply.
async fn call(senders: &Senders<ShardMessage>, target: usize) {
    let (reply, receiver) = oneshot::channel();
    let request = ShardRequest::Raft(Vec::new());
    let sent = senders
        .send_to(target, ShardMessage { request, reply })
        .await;
    assert!(sent.is_ok(), "the mesh is open");
    let answer = receiver.await.expect("shard 1 answers");
    assert!(matches!(answer, ShardReply::Stepped));
}

/// Shard 0 runs on the benchmark's own thread (criterion calls in between its runs), shard 1
/// on a thread of its own.
struct ShardPair {
    executor: LocalExecutor,
    senders: Senders<ShardMessage>,
    receivers: Receivers<ShardMessage>,
    owner: ExecutorJoinHandle<()>,
}

impl ShardPair {
    fn start() -> ShardPair {
        let mesh = Mesh::full(SHARDS, CROSS_SHARD_CHANNEL_CAPACITY);
        // Made first, so its executor id is lower: the mesh numbers peers by executor id.
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .name("shard-0")
            .make()
            .expect("shard 0's executor");
        let owner_mesh = mesh.clone();
        let owner = LocalExecutorBuilder::new(Placement::Unbound)
            .name("shard-1")
            .spawn(move || serve(owner_mesh))
            .expect("shard 1's executor");
        let (senders, receivers) = executor.run(mesh.join()).expect("shard 0 joins the mesh");
        assert_eq!(senders.peer_id(), CALLER);
        ShardPair {
            executor,
            senders,
            receivers,
            owner,
        }
    }

    /// Sends `requests` requests to shard 1, at most `in_flight_max` at a time; the time
    /// until the last answer.
    fn timed(&self, requests: u64, in_flight_max: usize) -> Duration {
        assert!(in_flight_max >= 1);
        assert!(in_flight_max <= CROSS_SHARD_CHANNEL_CAPACITY);
        self.executor.run(async {
            let started = Instant::now();
            let answered = futures::stream::iter(0..requests)
                .map(|_| call(&self.senders, OWNER))
                .buffer_unordered(in_flight_max)
                .fold(0u64, |count, ()| async move { count + 1 })
                .await;
            let elapsed = started.elapsed();
            assert_eq!(answered, requests);
            elapsed
        })
    }

    /// Closes the mesh (shard 1's receiving task ends) and joins shard 1's thread.
    fn stop(self) {
        let ShardPair {
            executor,
            senders,
            receivers,
            owner,
        } = self;
        executor.run(async move {
            senders.close();
            drop(senders);
            drop(receivers);
        });
        owner.join().expect("shard 1 stops cleanly");
    }
}

fn round_trip(c: &mut Criterion) {
    let pair = ShardPair::start();
    let mut group = c.benchmark_group("cross_shard");
    group.throughput(Throughput::Elements(1));
    for in_flight_max in [1usize, IN_FLIGHT_MAX] {
        let id = BenchmarkId::new("round_trip_in_flight", in_flight_max);
        group.bench_function(id, |b| {
            b.iter_custom(|requests| pair.timed(requests, in_flight_max))
        });
    }
    group.finish();
    pair.stop();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = round_trip
}
criterion_main!(benches);
