//! Pure-CPU costs on the produce path: framing a WAL record, scanning records at recovery,
//! and validating a Kafka batch (CRC-32C). Run: `cargo bench --bench wal_record`.

use std::hint::black_box;

use chronik_shards::partition::batch::BatchHeader;
use chronik_shards::wal::record::{self, RecordKind};
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
                record::encode(&mut buffer, 42, RecordKind::Entry, &[black_box(payload)]);
            })
        });
        let mut log = Vec::new();
        while log.len() < (4 << 20) {
            record::encode(&mut log, 42, RecordKind::Entry, &[&payload]);
        }
        group.throughput(Throughput::Bytes(log.len() as u64));
        group.bench_with_input(BenchmarkId::new("scan_4MiB", size), &log, |b, log| {
            b.iter(|| black_box(record::scan(black_box(log)).records.len()))
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

criterion_group!(benches, encode_and_scan, validate_batch);
criterion_main!(benches);
