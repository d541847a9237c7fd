//! CPU cost of the produce path inside a shard, with the disk taken out: propose record
//! batches to a partition's Raft group, run the pump's pass (Ready, WAL framing, group commit
//! on the in-memory `SimDisk`, apply, acknowledge). What is left is the broker's own work per
//! batch, the part a faster disk cannot hide. Run: `cargo bench --bench pump`.

use std::time::Duration;

use chronik_shards::partition::batch::BatchHeader;
use chronik_shards::partition::offsets::RetentionLimits;
use chronik_shards::runtime::shard::{AckWhen, GroupSpec, Shard, ShardConfig, ShardRef};
use chronik_shards::sim::{run_pass, SimDisk};
use chronik_shards::wal::WalConfig;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::executor::block_on;

const GROUP: u64 = 1;
const BATCH_PAYLOAD_BYTES: usize = 1024;

fn kafka_batch(payload_bytes: usize) -> Vec<u8> {
    let mut batch = vec![0u8; 61 + payload_bytes];
    let length = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    batch[16] = 2;
    batch[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // no producer id
    batch[57..61].copy_from_slice(&1i32.to_be_bytes());
    batch
}

/// A shard on an in-memory disk with one partition that keeps only its newest 8 MiB, so the
/// benchmark's log (and memory) stays bounded however long criterion runs it.
fn partition_shard() -> ShardRef<SimDisk> {
    let config = ShardConfig {
        shard_id: 0,
        replica_id: 1,
        wal: WalConfig {
            dir: "/bench/wal".into(),
            segment_bytes_max: 4 << 20,
            overlap_min_bytes: chronik_shards::wal::OVERLAP_MIN_BYTES_DEFAULT,
        },
        tick_interval_ms: 10,
        entry_cache_bytes_max: 4 << 20,
        entry_cache_shard_bytes_max: 64 << 20,
        entry_cache_unread_ticks: 10,
        proposal_waiters_max: 100_000,
        fetch_waiters_max: 10,
        uncommitted_bytes_max: 256 << 20,
        deterministic_elections: false,
    };
    let (shard, _doorbell) = block_on(Shard::open_on(SimDisk::default(), config)).expect("opens");
    let retention = RetentionLimits {
        retention_ms: -1,
        retention_bytes: 8 << 20,
    };
    let spec = GroupSpec::Partition {
        group_id: GROUP,
        retention,
    };
    shard.borrow_mut().add_group(spec).expect("group");
    shard.borrow_mut().finish_group_install();
    while shard.borrow().groups_catching_up() > 0 {
        block_on(run_pass(&shard)).expect("pass");
    }
    shard
}

fn propose_and_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("pump");
    let batch = kafka_batch(BATCH_PAYLOAD_BYTES);
    let header = BatchHeader::parse(&batch).expect("header");
    for batches_per_pass in [1usize, 16, 256] {
        let shard = partition_shard();
        group.throughput(Throughput::Bytes((batches_per_pass * batch.len()) as u64));
        group.bench_function(BenchmarkId::new("acks_all", batches_per_pass), |b| {
            b.iter(|| {
                let mut receivers = Vec::with_capacity(batches_per_pass);
                for _ in 0..batches_per_pass {
                    let proposed = shard.borrow_mut().propose_batch(
                        GROUP,
                        &batch,
                        &header,
                        AckWhen::Committed,
                    );
                    let (_, receiver) = proposed.expect("leader");
                    receivers.push(receiver.expect("acks=all waits"));
                }
                // One pass persists the batches, the next applies and acknowledges them.
                while shard.borrow().has_work() {
                    block_on(run_pass(&shard)).expect("pass");
                }
                for mut receiver in receivers {
                    assert!(
                        matches!(receiver.try_recv(), Ok(Some(Ok(_)))),
                        "acknowledged"
                    );
                }
                shard.borrow_mut().apply_retention(0);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = propose_and_commit
}
criterion_main!(benches);
