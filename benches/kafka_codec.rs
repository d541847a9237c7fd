//! The Kafka front-end's per-request CPU: decoding a Produce request that carries one large
//! batch (the records should be sliced, not copied), and encoding a Fetch response from
//! cached batches (copied once into the response frame).
//! Run: `cargo bench --bench kafka_codec`.

use std::hint::black_box;

use bytes::{BufMut, Bytes, BytesMut};
use chronik::kafka::codec::encode_response;
use chronik::kafka::dispatch::{self, Decoded};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchResponse, ProduceRequest, RequestHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One record batch of `records` values of `value_bytes` each.
fn batch(records: usize, value_bytes: usize) -> Bytes {
    let records: Vec<Record> = (0..records)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(vec![(i % 251) as u8; value_bytes])),
            headers: Default::default(),
        })
        .collect();
    let mut encoded = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut encoded, records.iter(), &options).expect("batch");
    encoded.freeze()
}

fn produce_frame(batch: Bytes) -> Bytes {
    let version = 9;
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("bench")))
        .encode(&mut frame, ApiKey::Produce.request_header_version(version))
        .expect("header");
    request.encode(&mut frame, version).expect("request");
    frame.freeze()
}

fn produce_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("produce_decode");
    for (records, value_bytes) in [(16usize, 1024usize), (1024, 1024)] {
        let frame = produce_frame(batch(records, value_bytes));
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("one_batch", frame.len()),
            &frame,
            |b, frame| {
                b.iter(|| match dispatch::decode(black_box(frame.clone()), false) {
                    Ok(Decoded::Request(request)) => black_box(request),
                    _ => panic!("a produce request decodes"),
                })
            },
        );
    }
    group.finish();
}

fn fetch_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("fetch_encode");
    for partitions in [1usize, 16] {
        // About 1 MiB of cached batches in all, 16 KiB each.
        let batches_per_partition = 64 / partitions;
        let one = batch(16, 1000);
        let mut records = BytesMut::new();
        for _ in 0..batches_per_partition {
            records.put_slice(&one);
        }
        let records = records.freeze();
        let response =
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("bench")))
                .with_partitions(
                    (0..partitions as i32)
                        .map(|index| {
                            PartitionData::default()
                                .with_partition_index(index)
                                .with_high_watermark(1_000_000)
                                .with_records(Some(records.clone()))
                        })
                        .collect(),
                )]);
        let body = ResponseKind::Fetch(response);
        let bytes = (records.len() * partitions) as u64;
        group.throughput(Throughput::Bytes(bytes));
        group.bench_with_input(
            BenchmarkId::new("partitions", partitions),
            &body,
            |b, body| {
                b.iter(|| encode_response(ApiKey::Fetch, 12, 7, black_box(body)).expect("encodes"))
            },
        );
    }
    group.finish();
}

criterion_group!(benches, produce_decode, fetch_encode);
criterion_main!(benches);
