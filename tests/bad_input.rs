//! Hostile and malformed input: oversized and truncated frames, garbage, unknown APIs and
//! versions, invalid produce requests, and a seeded fuzz loop. The broker must refuse what is
//! wrong, stay up, keep serving other clients and keep its data intact.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::{
    create_topics_request::CreatableTopic,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    metadata_request::MetadataRequestTopic,
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, DeleteTopicsRequest, ListOffsetsRequest,
    MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;

/// The broker answers ApiVersions on a fresh connection within 5 s and its process is alive.
fn assert_healthy(broker: &mut Broker, context: &str) {
    broker.assert_running(context);
    let addr = broker.addr();
    let r = (|| -> std::io::Result<Vec<u8>> {
        let mut c = RawConn::connect_timeout(addr, Duration::from_secs(5))?;
        c.set_timeout(Duration::from_secs(5))?;
        c.request(ApiKey::ApiVersions as i16, 0, &[])
    })();
    if let Err(e) = r {
        broker.assert_running(context);
        panic!(
            "broker does not answer ApiVersions after {context}: {e} (broker has {:?} open fds, {:?} threads)\n{}",
            broker.open_fds(),
            broker.threads(),
            broker.log_tail(40)
        );
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    s.set_nodelay(true).ok();
    s
}

fn frame_with_len(len: i32, payload: &[u8]) -> Vec<u8> {
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

#[test]
fn oversized_frame_is_refused() {
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    for size in [200 * 1024 * 1024i32, i32::MAX, -1, i32::MIN] {
        let mut s = connect(addr);
        let (_, hdr) = request_frame(ApiKey::Metadata as i16, 4, &[0, 0, 0, 0, 1]);
        let _ = s.write_all(&frame_with_len(size, &hdr));
        let _ = s.write_all(&[0u8; 4096]);
        let t = Instant::now();
        assert!(
            wait_closed(&mut s, Duration::from_secs(5)),
            "a frame with size prefix {size} was not refused: connection still open after 5 s"
        );
        eprintln!("size {size}: connection closed after {:?}", t.elapsed());
        assert_healthy(&mut broker, &format!("frame size {size}"));
    }
    // Memory must not have been reserved for the claimed sizes: many such connections at once.
    let mut conns: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(addr);
            let _ = s.write_all(&frame_with_len(200 * 1024 * 1024, &[0, 3, 0, 4]));
            s
        })
        .collect();
    for s in conns.iter_mut() {
        assert!(
            wait_closed(s, Duration::from_secs(5)),
            "200 MiB frame not refused"
        );
    }
    assert_healthy(&mut broker, "20 concurrent 200 MiB frames");
}

#[test]
fn truncated_and_random_frames() {
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    let mut rng = StdRng::seed_from_u64(7);

    // Truncated: the size prefix promises more than is sent, then the client half-closes.
    for (claimed, sent) in [(100i32, 10), (100, 0), (20, 19), (4, 2)] {
        let mut s = connect(addr);
        let (_, payload) = request_frame(ApiKey::ApiVersions as i16, 0, &[0u8; 100]);
        let mut bytes = claimed.to_be_bytes().to_vec();
        bytes.extend_from_slice(&payload[..sent]);
        s.write_all(&bytes).unwrap();
        s.shutdown(Shutdown::Write).ok();
        assert!(
            wait_closed(&mut s, Duration::from_secs(5)),
            "broker kept a half-closed connection with a truncated frame ({sent} of {claimed} bytes) open"
        );
    }
    // Truncated size prefix itself.
    for n in 1..4 {
        let mut s = connect(addr);
        s.write_all(&[0u8, 0, 0, 9][..n]).unwrap();
        s.shutdown(Shutdown::Write).ok();
        wait_closed(&mut s, Duration::from_secs(5));
    }
    assert_healthy(&mut broker, "truncated frames");

    // Stalled clients (incomplete frames, connection left open) do not block other clients.
    let mut stalled: Vec<TcpStream> = Vec::new();
    for _ in 0..8 {
        let mut s = connect(addr);
        let (_, payload) = request_frame(ApiKey::Metadata as i16, 4, &[0, 0, 0, 0, 1]);
        s.write_all(&frame_with_len(payload.len() as i32 + 50, &payload))
            .unwrap();
        stalled.push(s);
    }
    let t = Instant::now();
    create_topic(addr, "after-stall", 2);
    let r = produce_raw(addr, "after-stall", 1, simple_batch("s", 3, now_ms()), -1);
    assert_eq!(produce_result(&r), (NONE, 0));
    // Generous for a loaded machine; one blocked behind the stalled clients waits 30 s (the
    // default request_body_wait_ms) before they are cut off.
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "requests took {:?} while other clients were stalled",
        t.elapsed()
    );
    drop(stalled);

    // Size-prefixed frames of random bytes.
    for i in 0..200 {
        let len = rng.random_range(0..200usize);
        let mut payload = vec![0u8; len];
        rng.fill(&mut payload[..]);
        let mut s = connect(addr);
        s.set_read_timeout(Some(Duration::from_millis(200))).ok();
        let _ = s.write_all(&frame_with_len(len as i32, &payload));
        let _ = wait_closed(&mut s, Duration::from_millis(200));
        if i % 50 == 0 {
            assert_healthy(&mut broker, &format!("random frame #{i}"));
        }
    }
    // Valid header, truncated body, for a few APIs (array counts promising huge sizes).
    let bodies: Vec<(ApiKey, i16, Vec<u8>)> = vec![
        (ApiKey::Metadata, 4, vec![0x7f, 0xff, 0xff, 0xff]), // 2^31-1 topics, none sent
        (ApiKey::Metadata, 12, vec![0xff, 0xff, 0xff, 0xff, 0x07]), // compact array, huge varint
        (
            ApiKey::Produce,
            7,
            vec![0xff, 0xff, 0, 0, 0, 10, 0x7f, 0xff, 0xff, 0xff],
        ),
        (ApiKey::CreateTopics, 4, vec![0x7f, 0xff, 0xff, 0xff]),
        (
            ApiKey::ListOffsets,
            5,
            vec![0xff, 0xff, 0xff, 0xff, 0, 0x7f, 0xff, 0xff, 0xff],
        ),
        (ApiKey::Fetch, 11, vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
        (ApiKey::ApiVersions, 3, vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
        (ApiKey::DeleteTopics, 4, vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
    ];
    for (key, v, body) in bodies {
        let mut c = RawConn::connect(addr).unwrap();
        c.set_timeout(Duration::from_secs(5)).unwrap();
        let (_, payload) = request_frame(key as i16, v, &body);
        c.send_frame(&payload).unwrap();
        let outcome = c.read_outcome();
        eprintln!(
            "{key:?} v{v} with truncated body: {:?}",
            match &outcome {
                ReadOutcome::Frame(f) => format!("response of {} bytes", f.len()),
                o => format!("{o:?}"),
            }
        );
        assert!(
            !matches!(outcome, ReadOutcome::Timeout),
            "{key:?} v{v} with a truncated body: no response and connection not closed within 5 s"
        );
        assert_healthy(&mut broker, &format!("{key:?} v{v} with truncated body"));
    }
}

#[test]
fn unknown_api_key_closes_connection() {
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    for key in [9999i16, -1, i16::MAX] {
        let mut s = connect(addr);
        let (_, payload) = request_frame(key, 0, &[0u8; 8]);
        s.write_all(&frame_with_len(payload.len() as i32, &payload))
            .unwrap();
        assert!(
            wait_closed(&mut s, Duration::from_secs(5)),
            "request with unknown api key {key} did not close the connection within 5 s"
        );
        assert_healthy(&mut broker, &format!("unknown api key {key}"));
    }
}

#[test]
fn api_versions_unsupported_version() {
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    // ApiVersions v99, header v2 (as a client that speaks v3+ would send), v3-style body.
    let body = [2u8, b'x', 2, b'1', 0]; // compact strings "x", "1", no tagged fields
    let mut c = RawConn::connect(addr).unwrap();
    let resp = c
        .request(ApiKey::ApiVersions as i16, 99, &body)
        .expect("ApiVersions v99 should be answered");
    let (err, keys) = parse_api_versions_v0(&resp[4..]).unwrap_or_else(|e| {
        panic!(
            "ApiVersions v99 response is not v0-shaped: {e}; bytes {:?}",
            &resp[..resp.len().min(64)]
        )
    });
    assert_eq!(err, UNSUPPORTED_VERSION, "ApiVersions v99 error code");
    assert!(
        !keys.is_empty(),
        "ApiVersions v99 answer must list supported versions"
    );
    let av = keys.iter().find(|k| k.0 == ApiKey::ApiVersions as i16);
    assert!(
        matches!(av, Some(&(_, 0, max)) if max >= 3),
        "ApiVersions entry should be 0..>=3, got {av:?} in {keys:?}"
    );
    // The connection stays usable: a v0 request now succeeds.
    let resp = c
        .request(ApiKey::ApiVersions as i16, 0, &[])
        .expect("ApiVersions v0 after v99");
    let (err, keys0) = parse_api_versions_v0(&resp[4..]).unwrap();
    assert_eq!(err, NONE);
    assert_eq!(
        keys0, keys,
        "v0 answer and v99 error answer should list the same ranges"
    );
    // Every advertised range is sane and the implemented APIs are there.
    for (k, min, max) in &keys0 {
        assert!(
            0 <= *min && min <= max,
            "bad range for api {k}: {min}..{max}"
        );
    }
    for needed in [
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::Metadata,
        ApiKey::ApiVersions,
        ApiKey::CreateTopics,
        ApiKey::DeleteTopics,
    ] {
        assert!(
            keys0.iter().any(|k| k.0 == needed as i16),
            "{needed:?} not advertised: {keys0:?}"
        );
    }
    // ApiVersions v3 (flexible) decodes with the crate and agrees.
    let mut c = RawConn::connect(addr).unwrap();
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("chronik-it"))
        .with_client_software_version(StrBytes::from_static_str("1.0"));
    let r = c
        .typed(&req, 3)
        .unwrap_or_else(|e| panic!("ApiVersions v3: {e}"));
    assert_eq!(r.error_code, NONE);
    assert_eq!(
        r.api_keys.len(),
        keys0.len(),
        "v3 and v0 list the same number of APIs"
    );
    assert_healthy(&mut broker, "ApiVersions v99");
}

#[test]
fn invalid_produce_requests() {
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    create_topic(addr, "victim", 2);
    let r = produce_raw(addr, "victim", 0, simple_batch("ok-", 2, now_ms()), -1);
    assert_eq!(produce_result(&r), (NONE, 0), "valid raw produce: {r:?}");

    // Corrupt CRC: flip a bit in the last record's value.
    let mut bad = simple_batch("crc-", 3, now_ms());
    let n = bad.len();
    bad[n - 2] ^= 0x01;
    let r = produce_raw(addr, "victim", 0, bad, -1);
    assert_eq!(produce_result(&r).0, CORRUPT_MESSAGE, "corrupt CRC: {r:?}");
    // Corrupt CRC field itself.
    let mut bad = simple_batch("crc2-", 1, now_ms());
    bad[17] ^= 0xff;
    let r = produce_raw(addr, "victim", 0, bad, 1);
    assert_eq!(
        produce_result(&r).0,
        CORRUPT_MESSAGE,
        "wrong CRC field: {r:?}"
    );

    // Oversized batch: one 2 MiB record (> 1 MiB max.message.bytes).
    let big = vec![b'z'; 2 * 1024 * 1024];
    let batch = encode_batch(
        &[RawRecord {
            key: None,
            value: Some(&big),
            headers: vec![],
            timestamp_delta: 0,
        }],
        now_ms(),
    );
    let r = produce_raw(addr, "victim", 0, batch, -1);
    assert_eq!(
        produce_result(&r).0,
        MESSAGE_TOO_LARGE,
        "2 MiB batch: {r:?}"
    );

    // Invalid topic name.
    let r = produce_raw(addr, "bad/name", 0, simple_batch("n-", 1, now_ms()), -1);
    assert_eq!(
        produce_result(&r).0,
        INVALID_TOPIC_EXCEPTION,
        "produce to bad/name: {r:?}"
    );
    assert_eq!(
        topic_in_metadata(addr, "bad/name"),
        None,
        "bad/name must not be created"
    );

    // Unknown partition of an existing topic.
    let r = produce_raw(addr, "victim", 99, simple_batch("p-", 1, now_ms()), -1);
    assert_eq!(
        produce_result(&r).0,
        UNKNOWN_TOPIC_OR_PARTITION,
        "produce to partition 99: {r:?}"
    );
    let r = produce_raw(addr, "victim", -1, simple_batch("p-", 1, now_ms()), -1);
    assert_eq!(
        produce_result(&r).0,
        UNKNOWN_TOPIC_OR_PARTITION,
        "produce to partition -1: {r:?}"
    );
    assert_eq!(
        topic_in_metadata(addr, "victim"),
        Some((NONE, 2)),
        "partition count unchanged"
    );

    // Nothing of the rejected batches was appended, offsets continue at 2.
    let (err, _, latest) = list_offsets(addr, "victim", 0, -1);
    assert_eq!(
        (err, latest),
        (NONE, 2),
        "rejected batches must not be appended"
    );
    let r = produce_raw(addr, "victim", 0, simple_batch("ok2-", 2, now_ms()), -1);
    assert_eq!(
        produce_result(&r),
        (NONE, 2),
        "valid produce after the rejected ones"
    );
    let msgs = consume_all(&broker.bootstrap(), "victim", 1, 4, Duration::from_secs(30));
    let vals: Vec<String> = msgs
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(vals, vec!["ok-0", "ok-1", "ok2-0", "ok2-1"]);
    assert_healthy(&mut broker, "invalid produce requests");
}

/// Batches whose header is inconsistent with their content (but whose CRC is right, or whose
/// header fields before the CRC are wrong). Kafka rejects all of these; storing them would
/// break every consumer of the partition.
#[test]
fn inconsistent_batches_rejected() {
    let mut broker = Broker::start(2);
    let addr = broker.addr();
    create_topic(addr, "victim2", 1);
    let recrc = |b: &mut Vec<u8>| {
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    };
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // batchLength larger than the data.
    let mut b = simple_batch("a", 3, now_ms());
    let len = i32::from_be_bytes(b[8..12].try_into().unwrap());
    b[8..12].copy_from_slice(&(len + 100).to_be_bytes());
    cases.push(("batchLength too large", b));
    // batchLength smaller than the data.
    let mut b = simple_batch("a", 3, now_ms());
    b[8..12].copy_from_slice(&(len - 5).to_be_bytes());
    cases.push(("batchLength too small", b));
    // magic 1 (legacy) in a v2-shaped batch.
    let mut b = simple_batch("a", 3, now_ms());
    b[16] = 1;
    cases.push(("magic 1", b));
    // recordCount says 5 while 3 records follow (CRC recomputed).
    let mut b = simple_batch("a", 3, now_ms());
    b[57..61].copy_from_slice(&5i32.to_be_bytes());
    recrc(&mut b);
    cases.push(("recordCount 5 for 3 records", b));
    // lastOffsetDelta 10 for 3 records (CRC recomputed).
    let mut b = simple_batch("a", 3, now_ms());
    b[23..27].copy_from_slice(&10i32.to_be_bytes());
    recrc(&mut b);
    cases.push(("lastOffsetDelta 10 for 3 records", b));
    // Two batches in one partition's records (Produce v3+ allows exactly one).
    let mut b = simple_batch("a", 2, now_ms());
    b.extend_from_slice(&simple_batch("b", 2, now_ms()));
    cases.push(("two batches", b));
    // Empty records.
    cases.push(("empty records", Vec::new()));
    // Garbage shorter than a batch header.
    cases.push(("20 bytes of garbage", vec![7u8; 20]));

    let mut failures = Vec::new();
    for (what, batch) in cases {
        let (_, _, before) = list_offsets(addr, "victim2", 0, -1);
        let r = produce_raw(addr, "victim2", 0, batch, -1);
        let (err, base) = produce_result(&r);
        let (_, _, latest) = list_offsets(addr, "victim2", 0, -1);
        eprintln!("{what}: error code {err}, base offset {base}, log end {before} -> {latest}");
        if err == NONE || latest != before {
            failures.push(format!(
                "{what}: error code {err}, log end {before} -> {latest}"
            ));
        }
        assert_healthy(&mut broker, what);
    }
    // The partition is still readable by a real consumer.
    let r = produce_raw(addr, "victim2", 0, simple_batch("fine-", 2, now_ms()), -1);
    let (err, base) = produce_result(&r);
    assert_eq!(err, NONE, "valid produce after inconsistent batches");
    let msgs = consume_all(
        &broker.bootstrap(),
        "victim2",
        1,
        (base + 2) as usize,
        Duration::from_secs(20),
    );
    let tail: Vec<String> = msgs
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(|m| String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
        .collect();
    assert!(
        failures.is_empty(),
        "inconsistent batches were accepted (expected a non-zero error code and nothing appended):\n  {}\n(consumer then read {} messages, last: {tail:?})",
        failures.join("\n  "),
        msgs.len()
    );
    assert_eq!(tail, vec!["fine-0", "fine-1"]);
}

/// A zstd "bomb": a batch of under 1 MiB whose records section expands to tens of GiB. The
/// broker stores it as sent; ListOffsets by timestamp is the one place that looks inside a
/// stored batch, and it must stop decompressing at its cap, answer, and stay up.
#[test]
fn compression_bomb_in_list_offsets_is_bounded() {
    let mut broker = Broker::start(1);
    let addr = broker.addr();
    create_topic(addr, "bomb", 1);
    let base_timestamp = now_ms();
    let r = produce_raw(
        addr,
        "bomb",
        0,
        simple_batch("before-", 2, base_timestamp),
        -1,
    );
    assert_eq!(produce_result(&r), (NONE, 0), "a normal batch first");

    let frame = zstd::encode_all(&vec![0u8; 64 << 20][..], 3).expect("zstd");
    let repeats = 900_000 / frame.len();
    let expanded_gib = repeats * 64 / 1024;
    assert!(
        expanded_gib >= 8,
        "the bomb expands to {expanded_gib} GiB only"
    );
    let bomb_records = frame.repeat(repeats);
    let mut tail = Vec::new();
    tail.extend_from_slice(&4i16.to_be_bytes()); // attributes: zstd, create time
    tail.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta
    tail.extend_from_slice(&(base_timestamp + 10).to_be_bytes());
    tail.extend_from_slice(&(base_timestamp + 10).to_be_bytes());
    tail.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
    tail.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    tail.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    tail.extend_from_slice(&1i32.to_be_bytes()); // recordCount
    tail.extend_from_slice(&bomb_records);
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes());
    batch.extend_from_slice(&((4 + 1 + 4 + tail.len()) as i32).to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes());
    batch.push(2);
    batch.extend_from_slice(&crc32c::crc32c(&tail).to_be_bytes());
    batch.extend_from_slice(&tail);
    eprintln!(
        "bomb batch: {} bytes, expands to about {expanded_gib} GiB",
        batch.len()
    );
    let r = produce_raw(addr, "bomb", 0, batch, -1);
    assert_eq!(produce_result(&r), (NONE, 2), "stored as sent");

    let started = Instant::now();
    let (err, _, offset) = list_offsets(addr, "bomb", 0, base_timestamp + 5);
    eprintln!(
        "ListOffsets into the bomb answered in {:?}",
        started.elapsed()
    );
    assert_eq!(
        (err, offset),
        (NONE, 2),
        "the bomb batch is answered by its base offset"
    );
    assert_healthy(&mut broker, "ListOffsets into a compression bomb");
    // The partition's other data and offsets are intact.
    assert_eq!(list_offsets(addr, "bomb", 0, base_timestamp).2, 0);
    assert_eq!(list_offsets(addr, "bomb", 0, -1).2, 3);
}

// ---------------------------------------------------------------------------------------------
// Seeded fuzzing

fn tn(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn templates(addr: SocketAddr) -> Vec<(&'static str, Vec<u8>)> {
    let mv = pick_version(addr, ApiKey::Metadata, (4, 12));
    let pv = pick_version(addr, ApiKey::Produce, (3, 9));
    let lv = pick_version(addr, ApiKey::ListOffsets, (1, 7));
    let fv = pick_version(addr, ApiKey::Fetch, (4, 12));
    let cv = pick_version(addr, ApiKey::CreateTopics, (2, 7));
    let dv = pick_version(addr, ApiKey::DeleteTopics, (1, 5));
    vec![
        (
            "ApiVersions v0",
            encode_request(&ApiVersionsRequest::default(), 0),
        ),
        (
            "ApiVersions v3",
            encode_request(
                &ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("fuzz"))
                    .with_client_software_version(StrBytes::from_static_str("1")),
                3,
            ),
        ),
        (
            "Metadata",
            encode_request(
                &MetadataRequest::default()
                    .with_topics(Some(vec![
                        MetadataRequestTopic::default().with_name(Some(tn("fuzz-target")))
                    ]))
                    .with_allow_auto_topic_creation(false),
                mv,
            ),
        ),
        (
            "Produce",
            encode_request(
                &produce_request("fuzz-target", 0, simple_batch("fz", 3, now_ms()), 1),
                pv,
            ),
        ),
        (
            "ListOffsets",
            encode_request(
                &ListOffsetsRequest::default()
                    .with_replica_id((-1).into())
                    .with_topics(vec![ListOffsetsTopic::default()
                        .with_name(tn("fuzz-target"))
                        .with_partitions(vec![
                            ListOffsetsPartition::default().with_timestamp(-1)
                        ])]),
                lv,
            ),
        ),
        (
            "Fetch",
            encode_request(&fetch_request("fuzz-target", 0, 0, 10, 1 << 20), fv),
        ),
        (
            "CreateTopics",
            encode_request(
                &CreateTopicsRequest::default()
                    .with_topics(vec![CreatableTopic::default()
                        .with_name(tn("fuzz-created"))
                        .with_num_partitions(1)
                        .with_replication_factor(1)])
                    .with_timeout_ms(1000)
                    .with_validate_only(true),
                cv,
            ),
        ),
        (
            "DeleteTopics",
            encode_request(
                &DeleteTopicsRequest::default()
                    .with_topic_names(vec![tn("fuzz-not-there")])
                    .with_timeout_ms(1000),
                dv,
            ),
        ),
    ]
}

#[derive(Default, Debug)]
struct Stats {
    responses: usize,
    closed: usize,
    timeouts: usize,
    write_errors: usize,
    reused: usize,
}

fn fuzz_case(rng: &mut StdRng, templates: &[(&'static str, Vec<u8>)]) -> (String, Vec<u8>) {
    let keys: Vec<ApiKey> = ApiKey::iter().collect();
    match rng.random_range(0..10u32) {
        0 => {
            // Raw random bytes, no meaningful size prefix.
            let mut b = vec![0u8; rng.random_range(1..300usize)];
            rng.fill(&mut b[..]);
            ("random bytes".into(), b)
        }
        1 => {
            // Consistent size prefix + random payload.
            let mut p = vec![0u8; rng.random_range(0..300usize)];
            rng.fill(&mut p[..]);
            ("random frame".into(), frame_with_len(p.len() as i32, &p))
        }
        2..=4 => {
            // Valid header for a random API (random version, sometimes out of range) + random body.
            let key = keys[rng.random_range(0..keys.len())];
            let vr = key.valid_versions();
            let version = if rng.random_bool(0.8) {
                rng.random_range(vr.min..=vr.max)
            } else {
                rng.random_range(-5..200i16)
            };
            let mut body = vec![0u8; rng.random_range(0..200usize)];
            rng.fill(&mut body[..]);
            // Bias some bodies towards small numbers (short arrays/strings decode further).
            if rng.random_bool(0.5) {
                for b in body.iter_mut() {
                    if rng.random_bool(0.7) {
                        *b &= 0x03;
                    }
                }
            }
            let (_, payload) = request_frame(key as i16, version, &body);
            (
                format!("{key:?} v{version} random body"),
                frame_with_len(payload.len() as i32, &payload),
            )
        }
        5..=7 => {
            // Bit-flipped valid request.
            let (name, t) = &templates[rng.random_range(0..templates.len())];
            let mut p = t.clone();
            let flips = rng.random_range(1..=8usize);
            for _ in 0..flips {
                let i = rng.random_range(0..p.len());
                p[i] ^= 1 << rng.random_range(0..8u32);
            }
            (
                format!("{name} with {flips} bit flips"),
                frame_with_len(p.len() as i32, &p),
            )
        }
        8 => {
            // Valid request, truncated (prefix matching the truncated length, or the full one).
            let (name, t) = &templates[rng.random_range(0..templates.len())];
            let cut = rng.random_range(0..t.len());
            let len = if rng.random_bool(0.5) {
                cut as i32
            } else {
                t.len() as i32
            };
            (
                format!("{name} truncated to {cut} (prefix {len})"),
                frame_with_len(len, &t[..cut]),
            )
        }
        _ => {
            // Valid request with random bytes appended, or a wrong size prefix.
            let (name, t) = &templates[rng.random_range(0..templates.len())];
            let mut p = t.clone();
            let extra = rng.random_range(1..50usize);
            for _ in 0..extra {
                p.push(rng.random());
            }
            let len = if rng.random_bool(0.5) {
                p.len() as i32
            } else {
                rng.random_range(-10..(p.len() as i32 + 10))
            };
            (
                format!("{name} + {extra} junk bytes (prefix {len})"),
                frame_with_len(len, &p),
            )
        }
    }
}

#[test]
fn fuzz_then_clients_and_data_still_fine() {
    let seed: u64 = match std::env::var("CHRONIK_SEED") {
        Ok(s) => s.trim().parse().expect("CHRONIK_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    eprintln!("fuzz seed: CHRONIK_SEED={seed} (CHRONIK_FUZZ_VERBOSE=1 prints every case)");
    let verbose = std::env::var_os("CHRONIK_FUZZ_VERBOSE").is_some();
    let mut rng = StdRng::seed_from_u64(seed);

    let mut broker = Broker::start(2);
    let addr = broker.addr();
    let bs = broker.bootstrap();
    create_topic(addr, "fuzz-data", 2);
    create_topic(addr, "fuzz-target", 1);
    let p = producer(&bs, &[("acks", "all")]);
    for i in 0..1000 {
        let v = format!("keep-{i}");
        send_retry(
            &p,
            BaseRecord::to("fuzz-data")
                .partition(i % 2)
                .key(v.as_bytes())
                .payload(v.as_bytes()),
        );
    }
    flush(&p, Duration::from_secs(30));
    assert!(
        p.context()
            .results
            .lock()
            .unwrap()
            .iter()
            .all(|d| d.error.is_none()),
        "pre-fuzz produce failed"
    );
    drop(p);

    let templates = templates(addr);
    let mut stats = Stats::default();
    let mut conn: Option<TcpStream> = None;
    let started = Instant::now();
    let mut last_cases: Vec<String> = Vec::new();
    for i in 0..3000usize {
        let (what, bytes) = fuzz_case(&mut rng, &templates);
        last_cases.push(what.clone());
        if last_cases.len() > 10 {
            last_cases.remove(0);
        }
        let reuse_draw = rng.random_bool(0.3); // always drawn: the case sequence depends only on the seed
        let reuse = conn.is_some() && reuse_draw;
        if reuse {
            stats.reused += 1;
        } else {
            conn = None;
            let mut attempts = 0;
            while conn.is_none() {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(s) => conn = Some(s),
                    Err(e) => {
                        attempts += 1;
                        broker.assert_running(&format!(
                            "fuzz case #{i} ({what}), after {last_cases:?}"
                        ));
                        assert!(attempts < 20, "cannot connect during fuzzing at case #{i}: {e}; last cases: {last_cases:?}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
        let s = conn.as_mut().unwrap();
        s.set_nodelay(true).ok();
        s.set_write_timeout(Some(Duration::from_millis(500))).ok();
        if s.write_all(&bytes).is_err() {
            stats.write_errors += 1;
            conn = None;
            continue;
        }
        s.set_read_timeout(Some(Duration::from_millis(25))).ok();
        let mut rc = RawConn {
            stream: conn.take().unwrap(),
        };
        let outcome = rc.read_outcome();
        if verbose {
            let o = match &outcome {
                ReadOutcome::Frame(f) => format!("response {} bytes", f.len()),
                o => format!("{o:?}"),
            };
            eprintln!(
                "case #{i} ({}): {what} -> {o}",
                if reuse { "reused conn" } else { "new conn" }
            );
        }
        match outcome {
            ReadOutcome::Frame(_) => {
                stats.responses += 1;
                conn = Some(rc.stream);
            }
            ReadOutcome::Closed => stats.closed += 1,
            ReadOutcome::Timeout => {
                stats.timeouts += 1;
                conn = Some(rc.stream);
            }
        }
        if i % 250 == 249 {
            eprintln!("case #{i}: {stats:?}, broker fds {:?}", broker.open_fds());
            assert_healthy(
                &mut broker,
                &format!("fuzz case #{i}; last cases: {last_cases:?}"),
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "fuzz loop too slow: {i} cases in {:?}",
            started.elapsed()
        );
    }
    drop(conn);
    eprintln!("fuzzing took {:?}: {stats:?}", started.elapsed());
    assert_healthy(&mut broker, "fuzzing");

    // Data from before the fuzzing is intact.
    for part in 0..2 {
        let (err, _, latest) = list_offsets(addr, "fuzz-data", part, -1);
        assert_eq!(
            (err, latest),
            (NONE, 500),
            "fuzz-data partition {part} log end after fuzzing"
        );
    }
    let msgs = consume_all(&bs, "fuzz-data", 2, 1000, Duration::from_secs(60));
    assert_eq!(msgs.len(), 1000, "pre-fuzz data after fuzzing");
    for part in 0..2i32 {
        let vals: Vec<String> = msgs
            .iter()
            .filter(|m| m.partition() == part)
            .map(|m| String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
            .collect();
        let want: Vec<String> = (0..1000)
            .filter(|i| i % 2 == part)
            .map(|i| format!("keep-{i}"))
            .collect();
        assert_eq!(
            vals, want,
            "fuzz-data partition {part} content after fuzzing"
        );
    }

    // A normal producer and consumer still work.
    let p = producer(&bs, &[("acks", "all")]);
    for i in 0..200 {
        let v = format!("post-{i}");
        send_retry(
            &p,
            BaseRecord::to("post-fuzz")
                .partition(0)
                .payload(v.as_bytes()),
        );
    }
    flush(&p, Duration::from_secs(30));
    let ds = p.context().results.lock().unwrap().clone();
    assert!(
        ds.iter().all(|d| d.error.is_none()),
        "post-fuzz produce errors: {:?}",
        ds.iter().find(|d| d.error.is_some())
    );
    let msgs = consume_all(&bs, "post-fuzz", 1, 200, Duration::from_secs(60));
    let vals: Vec<String> = msgs
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(
        vals,
        (0..200).map(|i| format!("post-{i}")).collect::<Vec<_>>(),
        "post-fuzz round trip"
    );
    broker.assert_running("end of fuzz test");
}

/// A client that sends a frame's size and then nothing holds the room that size takes in the
/// shard's request budget (here the whole budget, 1 MiB) only for `request_body_wait_ms`:
/// then its connection is closed and a request queued behind it, on another connection, is
/// answered.
#[test]
fn a_stalled_request_body_gives_its_budget_back() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = scratch.path().join("chronik.toml");
    std::fs::write(
        &config,
        "queued_request_bytes_max = 1048576\nrequest_body_wait_ms = 500\n",
    )
    .expect("config file");
    let config_arg = config.to_string_lossy().to_string();
    let mut broker = Broker::start_with(1, &["--config", &config_arg], None);
    let addr = broker.addr();

    let mut stalled = connect(addr);
    stalled
        .write_all(&(1i32 << 20).to_be_bytes())
        .expect("size of a 1 MiB frame");
    std::thread::sleep(Duration::from_millis(100)); // its room is taken
    let started = Instant::now();
    let mut queued = RawConn::connect(addr).expect("connect");
    queued
        .set_timeout(Duration::from_secs(20))
        .expect("timeout");
    let answer = queued.request(ApiKey::ApiVersions as i16, 0, &[]);
    assert!(answer.is_ok(), "queued request: {answer:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "answered in {:?}: the stalled frame did not hold the budget",
        started.elapsed()
    );
    assert!(
        wait_closed(&mut stalled, Duration::from_secs(10)),
        "the stalled connection is closed"
    );
    assert_healthy(&mut broker, "after a stalled body");
}
