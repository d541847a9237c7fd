//! Pure-CPU costs on the produce path and at recovery: framing a WAL record, scanning
//! records, folding them into group logs, and validating a Kafka batch (CRC-32C).
//! Run: `cargo bench --bench wal_record`.

use std::hint::black_box;

use chronik_shards::partition::batch::BatchHeader;
use chronik_shards::wal::record::{self, RecordKind};
use chronik_shards::wal::recovery::{EntryHeader, Recovery};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn kafka_batch(payload_bytes: usize) -> Vec<u8> {
    let mut batch = vec![0u8; 61 + payload_bytes];
    let length = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    batch[16] = 2;
    batch[57..61].copy_from_slice(&1i32.to_be_bytes());
    for (i, byte) in batch[61..].iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

fn encode_and_scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_record");
    for size in [100usize, 1024, 16 * 1024, 256 * 1024] {
        let payload = vec![7u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encode", size), &payload, |b, payload| {
            let mut buffer = Vec::with_capacity(size + 64);
            b.iter(|| {
                buffer.clear();
                record::encode(&mut buffer, 1, 42, RecordKind::Entry, &[black_box(payload)]);
            })
        });
        let mut log = Vec::new();
        while log.len() < (4 << 20) {
            record::encode(&mut log, 1, 42, RecordKind::Entry, &[&payload]);
        }
        group.throughput(Throughput::Bytes(log.len() as u64));
        group.bench_with_input(BenchmarkId::new("scan_4MiB", size), &log, |b, log| {
            b.iter(|| black_box(record::scan(black_box(log), 1).records.len()))
        });
    }
    group.finish();
}

fn validate_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_validate");
    for size in [1024usize, 64 * 1024, 1024 * 1024] {
        let batch = kafka_batch(size);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &batch, |b, batch| {
            b.iter(|| BatchHeader::validate(black_box(batch)).is_ok())
        });
    }
    group.finish();
}

/// Recovery's fold over a scanned log: one group, N contiguous entries (as after a restart of
/// a partition that took many small batches). Linear in N, or restarts stall.
fn fold_entries(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_recovery");
    group.sample_size(10);
    for entries in [10_000u64, 100_000] {
        let mut log = Vec::new();
        let data = vec![5u8; 100];
        for index in 1..=entries {
            let header = EntryHeader {
                term: 1,
                index,
                entry_type: 0,
            };
            record::encode(
                &mut log,
                1,
                1,
                RecordKind::Entry,
                &[&header.encode(), &data],
            );
        }
        let scan = record::scan(&log, 1);
        group.throughput(Throughput::Elements(entries));
        group.bench_with_input(BenchmarkId::new("fold", entries), &scan, |b, scan| {
            b.iter(|| {
                let mut recovery = Recovery::default();
                for &(position, rec) in &scan.records {
                    recovery.apply(1, position as u64, rec).expect("applies");
                }
                recovery.release_committed_data();
                black_box(recovery.finish().expect("recovers").groups.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode_and_scan, validate_batch, fold_entries);
criterion_main!(benches);
