//! Consume mode: each connection fetches its partitions from the start up to the log end it
//! found when the run began, one Fetch in flight at a time, as a Kafka consumer does per
//! broker. Counts records and bytes from the batch headers alone. In end-to-end mode the
//! consumers tail the log instead and read each batch's send-time stamp.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::connection::{read_frame_into, Totals};
use crate::stamp;

const FETCH_VERSION: i16 = 12;
/// What one answer may carry, in all and per partition.
const FETCH_BYTES_MAX: i32 = 50 << 20;
const PARTITION_BYTES_MAX: i32 = 8 << 20;

/// What the whole batches in `records` hold: records, the offset after the last one, and
/// (end-to-end mode) each batch's send-time stamp with its record count.
#[derive(Default)]
struct BatchesRead {
    records: u64,
    next_offset: Option<i64>,
    stamps: Vec<(u64, u64)>,
}

fn read_batches(mut records: Bytes, with_stamps: bool) -> BatchesRead {
    let mut read = BatchesRead::default();
    while records.len() >= 61 {
        let base_offset = i64::from_be_bytes(records[0..8].try_into().expect("8 bytes"));
        let length = i32::from_be_bytes(records[8..12].try_into().expect("4 bytes"));
        let Ok(length) = usize::try_from(length) else {
            break;
        };
        if records.len() < 12 + length {
            break; // a partial batch at the end of the answer
        }
        let last_delta = i32::from_be_bytes(records[23..27].try_into().expect("4 bytes"));
        let record_count = i32::from_be_bytes(records[57..61].try_into().expect("4 bytes"));
        let record_count = u64::try_from(record_count).unwrap_or(0);
        read.records += record_count;
        read.next_offset = Some(base_offset + i64::from(last_delta) + 1);
        if with_stamps {
            if let Some(stamp) = stamp::read(&records[..12 + length]) {
                read.stamps.push((stamp, record_count));
            }
        }
        records.advance(12 + length);
    }
    read
}

fn fetch(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    topic: &str,
    positions: &[(i32, i64)],
    correlation_id: i32,
) -> anyhow::Result<FetchResponse> {
    let partitions = positions
        .iter()
        .map(|&(index, offset)| {
            FetchPartition::default()
                .with_partition(index)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(PARTITION_BYTES_MAX)
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES_MAX)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(partitions)]);
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[0; 4]);
    RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(FETCH_VERSION)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("chronik-load")))
        .encode(
            &mut frame,
            ApiKey::Fetch.request_header_version(FETCH_VERSION),
        )?;
    request.encode(&mut frame, FETCH_VERSION)?;
    let length = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&length.to_be_bytes());
    stream.write_all(&frame)?;
    let mut payload = read_frame_into(stream, buffer)?;
    ResponseHeader::decode(
        &mut payload,
        ApiKey::Fetch.response_header_version(FETCH_VERSION),
    )?;
    FetchResponse::decode(&mut payload, FETCH_VERSION)
}

/// Where a consumer starts and when it stops.
#[derive(Clone)]
pub enum Start {
    /// From offset 0 to the high watermark of each partition's first answer; latency is
    /// from asking to answer.
    Beginning,
    /// From these offsets on, until the run is stopped; latency is end to end, from each
    /// batch's send-time stamp.
    Tail(BTreeMap<i32, i64>),
}

/// Reads `partitions` of `topic` as `start` says, one Fetch in flight.
pub fn consume(
    addr: SocketAddr,
    topic: &str,
    partitions: &[i32],
    start: &Start,
    totals: &Arc<Totals>,
) -> anyhow::Result<()> {
    let mut ends = BTreeMap::new();
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let tail = matches!(start, Start::Tail(_));
    let mut positions: Vec<(i32, i64)> = partitions
        .iter()
        .map(|&p| match start {
            Start::Beginning => (p, 0),
            Start::Tail(from) => (p, from.get(&p).copied().unwrap_or(0)),
        })
        .collect();
    let mut correlation_id = 0;
    let mut buffer = BytesMut::new();
    while !totals.stop.load(Ordering::Relaxed) {
        positions.retain(|(p, offset)| ends.get(p).is_none_or(|end| offset < end));
        if positions.is_empty() {
            return Ok(());
        }
        correlation_id += 1;
        let asked = Instant::now();
        let response = fetch(&mut stream, &mut buffer, topic, &positions, correlation_id)?;
        let mut records_read = 0;
        for partition in response.responses.iter().flat_map(|t| &t.partitions) {
            anyhow::ensure!(
                partition.error_code == 0,
                "partition {}: error {}",
                partition.partition_index,
                partition.error_code
            );
            if !tail {
                ends.entry(partition.partition_index)
                    .or_insert(partition.high_watermark);
            }
            let records = partition.records.clone().unwrap_or_default();
            let bytes = records.len() as u64;
            let read = read_batches(records, tail);
            if let Some(next) = read.next_offset {
                if let Some(position) = positions
                    .iter_mut()
                    .find(|(p, _)| *p == partition.partition_index)
                {
                    position.1 = next;
                }
            }
            record_end_to_end(totals, &read.stamps);
            records_read += read.records;
            totals
                .consumed_records
                .fetch_add(read.records, Ordering::Relaxed);
            totals.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        if records_read > 0 && !tail {
            let latency_us = asked.elapsed().as_micros().max(1) as u64;
            let mut histogram = totals.consumed_latency_us.lock().expect("histogram lock");
            let _ = histogram.record_n(latency_us, records_read);
        }
    }
    Ok(())
}

/// End-to-end latencies: now less each batch's stamp, once per record.
fn record_end_to_end(totals: &Totals, stamps: &[(u64, u64)]) {
    if stamps.is_empty() {
        return;
    }
    let now = stamp::now_micros();
    let mut histogram = totals.consumed_latency_us.lock().expect("histogram lock");
    for &(sent, records) in stamps {
        let _ = histogram.record_n(now.saturating_sub(sent).max(1), records);
    }
}
