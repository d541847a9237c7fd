//! Round trips through the broker with rdkafka: keys, headers, null keys/values, explicit
//! timestamps, per-partition order over 8 partitions on 2 shards, and acks 0 / 1 / all.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::BaseRecord;
use rdkafka::Timestamp;

const PARTITIONS: i32 = 8;
const PER_PARTITION: usize = 60;

#[derive(Debug, Clone, PartialEq)]
struct Expected {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: i64,
}

fn expected_message(p: i32, i: usize) -> Expected {
    let key = match i % 5 {
        0 => None,
        1 => Some(Vec::new()), // empty, not null
        _ => Some(format!("key-{p}-{i}").into_bytes()),
    };
    let value = match i % 7 {
        0 => None, // tombstone-style null value
        1 => Some(Vec::new()),
        2 => Some(vec![0u8, 255, 1, 254, 0, 0, 7]), // binary
        _ => Some(format!("value-{p}-{i}-{}", "x".repeat(i % 50)).into_bytes()),
    };
    let headers = match i % 4 {
        0 => vec![],
        1 => vec![("h1".to_string(), Some(format!("hv-{i}").into_bytes()))],
        2 => vec![
            ("a".to_string(), Some(b"1".to_vec())),
            ("a".to_string(), Some(b"2".to_vec())), // duplicate header keys keep order
            ("null-header".to_string(), None),
            ("empty".to_string(), Some(Vec::new())),
        ],
        _ => vec![("bin".to_string(), Some(vec![0u8, 1, 2, 3, 255]))],
    };
    Expected {
        key,
        value,
        headers,
        timestamp: 1_600_000_000_000 + (p as i64) * 1_000_000 + i as i64 * 7,
    }
}

fn owned_headers(h: &[(String, Option<Vec<u8>>)]) -> Option<OwnedHeaders> {
    if h.is_empty() {
        return None;
    }
    let mut oh = OwnedHeaders::new();
    for (k, v) in h {
        oh = oh.insert(Header {
            key: k.as_str(),
            value: v.as_deref(),
        });
    }
    Some(oh)
}

fn actual(m: &OwnedMessage) -> Expected {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                .collect()
        })
        .unwrap_or_default();
    Expected {
        key: m.key().map(|k| k.to_vec()),
        value: m.payload().map(|v| v.to_vec()),
        headers,
        timestamp: match m.timestamp() {
            Timestamp::CreateTime(t) => t,
            other => panic!(
                "expected CreateTime timestamp, got {other:?} at {}/{}",
                m.partition(),
                m.offset()
            ),
        },
    }
}

#[test]
fn round_trip_8_partitions_2_shards() {
    let broker = Broker::start_with(2, &["--default-partitions", "8"], None);
    let bs = broker.bootstrap();
    let topic = "round-trip";
    create_topic(broker.addr(), topic, PARTITIONS);

    let p = producer(&bs, &[("acks", "all"), ("linger.ms", "5")]);
    // Interleave partitions so batches for different partitions/shards are in flight together.
    for i in 0..PER_PARTITION {
        for part in 0..PARTITIONS {
            let e = expected_message(part, i);
            let mut rec: BaseRecord<'_, [u8], [u8]> =
                BaseRecord::to(topic).partition(part).timestamp(e.timestamp);
            if let Some(k) = e.key.as_deref() {
                rec = rec.key(k);
            }
            if let Some(v) = e.value.as_deref() {
                rec = rec.payload(v);
            }
            if let Some(h) = owned_headers(&e.headers) {
                rec = rec.headers(h);
            }
            send_retry(&p, rec);
            p.poll(Duration::ZERO);
        }
    }
    flush(&p, Duration::from_secs(30));

    let deliveries = p.context().results.lock().expect("delivery lock").clone();
    let total = PARTITIONS as usize * PER_PARTITION;
    assert_eq!(deliveries.len(), total, "delivery report count");
    let errors: Vec<_> = deliveries.iter().filter(|d| d.error.is_some()).collect();
    assert!(
        errors.is_empty(),
        "{} delivery errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    // Delivery offsets: each partition gets exactly 0..PER_PARTITION.
    let mut by_part: HashMap<i32, Vec<i64>> = HashMap::new();
    for d in &deliveries {
        by_part.entry(d.partition).or_default().push(d.offset);
    }
    for part in 0..PARTITIONS {
        let mut offs = by_part.remove(&part).unwrap_or_default();
        offs.sort();
        let want: Vec<i64> = (0..PER_PARTITION as i64).collect();
        assert_eq!(offs, want, "acknowledged offsets of partition {part}");
    }

    let msgs = consume_all(&bs, topic, PARTITIONS, total, Duration::from_secs(60));
    assert_eq!(msgs.len(), total, "consumed message count");
    let mut per_part: HashMap<i32, Vec<&OwnedMessage>> = HashMap::new();
    for m in &msgs {
        assert_eq!(m.topic(), topic);
        per_part.entry(m.partition()).or_default().push(m);
    }
    for part in 0..PARTITIONS {
        let ms = per_part
            .get(&part)
            .unwrap_or_else(|| panic!("no messages consumed from partition {part}"));
        assert_eq!(ms.len(), PER_PARTITION, "messages in partition {part}");
        for (i, m) in ms.iter().enumerate() {
            assert_eq!(
                m.offset(),
                i as i64,
                "partition {part}: offsets must be 0,1,2,... in order"
            );
            let want = expected_message(part, i);
            let got = actual(m);
            assert_eq!(got, want, "partition {part} offset {i}: message differs");
        }
    }

    // ListOffsets agrees with what was consumed.
    for part in 0..PARTITIONS {
        let (err, _, off) = list_offsets(broker.addr(), topic, part, -1);
        assert_eq!(
            (err, off),
            (NONE, PER_PARTITION as i64),
            "ListOffsets latest of partition {part}"
        );
    }
}

/// Auto-creation: producing to an unknown topic creates it with --default-partitions.
#[test]
fn auto_created_topic_round_trip() {
    let broker = Broker::start_with(2, &["--default-partitions", "8"], None);
    let bs = broker.bootstrap();
    let topic = "auto-created";
    let p = producer(&bs, &[("acks", "all")]);
    for i in 0..200 {
        let v = format!("auto-{i}");
        let k = format!("k{i}");
        send_retry(
            &p,
            BaseRecord::to(topic)
                .key(k.as_bytes())
                .payload(v.as_bytes()),
        );
    }
    flush(&p, Duration::from_secs(30));
    let deliveries = p.context().results.lock().expect("delivery lock").clone();
    assert!(
        deliveries.iter().all(|d| d.error.is_none()),
        "delivery errors: {:?}",
        deliveries.iter().find(|d| d.error.is_some())
    );
    let parts: std::collections::HashSet<i32> = deliveries.iter().map(|d| d.partition).collect();
    assert!(
        parts.len() > 1,
        "200 keyed messages should spread over >1 of 8 partitions: {parts:?}"
    );
    let md = topic_in_metadata(broker.addr(), topic);
    assert_eq!(
        md,
        Some((NONE, 8)),
        "auto-created topic should have --default-partitions 8"
    );

    let msgs = consume_all(&bs, topic, 8, 200, Duration::from_secs(60));
    assert_eq!(msgs.len(), 200);
    // Same key -> same partition; all values present exactly once.
    let mut seen: Vec<String> = msgs
        .iter()
        .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
        .collect();
    seen.sort();
    let mut want: Vec<String> = (0..200).map(|i| format!("auto-{i}")).collect();
    want.sort();
    assert_eq!(seen, want);
    for d in &deliveries {
        let m = msgs
            .iter()
            .find(|m| m.partition() == d.partition && m.offset() == d.offset)
            .unwrap_or_else(|| panic!("acked {}/{} not consumed", d.partition, d.offset));
        assert_eq!(m.payload(), d.payload.as_deref());
    }
}

fn acks_round_trip(acks: &str) {
    let broker = Broker::start(2);
    let bs = broker.bootstrap();
    let topic = format!("acks-{}", acks.replace('-', "m"));
    create_topic(broker.addr(), &topic, 2);
    let p = producer(&bs, &[("acks", acks)]);
    let n = 500usize;
    for i in 0..n {
        let v = format!("{acks}-{i}");
        send_retry(
            &p,
            BaseRecord::to(&topic)
                .partition((i % 2) as i32)
                .payload(v.as_bytes()),
        );
        p.poll(Duration::ZERO);
    }
    flush(&p, Duration::from_secs(30));
    let deliveries = p.context().results.lock().expect("delivery lock").clone();
    assert_eq!(deliveries.len(), n);
    assert!(
        deliveries.iter().all(|d| d.error.is_none()),
        "acks={acks}: delivery error {:?}",
        deliveries.iter().find(|d| d.error.is_some())
    );
    if acks == "0" {
        // No response from the broker, so no offsets are known (librdkafka reports an invalid,
        // negative offset such as -1 / -1001).
        assert!(
            deliveries.iter().all(|d| d.offset < 0),
            "acks=0 delivery reports should carry no offset, got e.g. {:?}",
            deliveries.iter().find(|d| d.offset >= 0)
        );
    } else {
        for part in 0..2 {
            let mut offs: Vec<i64> = deliveries
                .iter()
                .filter(|d| d.partition == part)
                .map(|d| d.offset)
                .collect();
            offs.sort();
            assert_eq!(
                offs,
                (0..(n / 2) as i64).collect::<Vec<_>>(),
                "acks={acks} partition {part} offsets"
            );
        }
    }
    let msgs = consume_all(&bs, &topic, 2, n, Duration::from_secs(60));
    assert_eq!(msgs.len(), n, "acks={acks}: consumed count");
    for part in 0..2 {
        let vals: Vec<String> = msgs
            .iter()
            .filter(|m| m.partition() == part)
            .map(|m| String::from_utf8_lossy(m.payload().unwrap_or(b"<null>")).into_owned())
            .collect();
        let want: Vec<String> = (0..n)
            .filter(|i| (i % 2) as i32 == part)
            .map(|i| format!("{acks}-{i}"))
            .collect();
        assert_eq!(vals, want, "acks={acks} partition {part}: content/order");
        let offs: Vec<i64> = msgs
            .iter()
            .filter(|m| m.partition() == part)
            .map(|m| m.offset())
            .collect();
        assert_eq!(offs, (0..(n / 2) as i64).collect::<Vec<_>>());
    }
}

#[test]
fn acks_0() {
    acks_round_trip("0");
}

#[test]
fn acks_1() {
    acks_round_trip("1");
}

#[test]
fn acks_all() {
    acks_round_trip("all");
}

/// SIGTERM shuts down cleanly (exit 0) and acknowledged data survives a clean restart.
#[test]
fn clean_shutdown_and_restart_keeps_data() {
    let mut broker = Broker::start(2);
    let bs = broker.bootstrap();
    let topic = "restart-clean";
    create_topic(broker.addr(), topic, 4);
    let p = producer(&bs, &[("acks", "all")]);
    for i in 0..400 {
        let v = format!("r-{i}");
        send_retry(
            &p,
            BaseRecord::to(topic).partition(i % 4).payload(v.as_bytes()),
        );
    }
    flush(&p, Duration::from_secs(30));
    drop(p);
    let status = broker.terminate();
    assert!(
        status.success(),
        "SIGTERM should exit with code 0, got {status}\n{}",
        broker.log_tail(40)
    );
    broker.restart();
    let msgs = consume_all(&broker.bootstrap(), topic, 4, 400, Duration::from_secs(60));
    assert_eq!(msgs.len(), 400, "messages after clean restart");
    for part in 0..4 {
        let vals: Vec<String> = msgs
            .iter()
            .filter(|m| m.partition() == part)
            .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
            .collect();
        let want: Vec<String> = (0..400)
            .filter(|i| i % 4 == part)
            .map(|i| format!("r-{i}"))
            .collect();
        assert_eq!(vals, want, "partition {part} after restart");
    }
    assert_eq!(topic_in_metadata(broker.addr(), topic), Some((NONE, 4)));
}

/// Answers finish out of order (ApiVersions at once, produce after its group commit) yet
/// go back in request order, several to one write when they are ready together.
#[test]
fn pipelined_answers_that_finish_out_of_order_return_in_request_order() {
    let broker = Broker::start(1);
    let addr = broker.addr();
    let v = pick_version(addr, kafka_protocol::messages::ApiKey::Produce, (3, 9));
    create_topic(addr, "out-of-order", 1);
    let mut c = RawConn::connect(addr).expect("connect");
    c.set_timeout(Duration::from_secs(15)).unwrap();
    let mut sent = Vec::new();
    for i in 0..60 {
        let (frame, is_produce) = if i % 3 == 0 {
            let versions = kafka_protocol::messages::ApiVersionsRequest::default();
            (encode_request(&versions, 0), false)
        } else {
            let batch = simple_batch(&format!("r{i}-"), 3, now_ms());
            (
                encode_request(&produce_request("out-of-order", 0, batch, -1), v),
                true,
            )
        };
        sent.push((
            i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
            is_produce,
        ));
        c.send_frame(&frame).expect("send");
    }
    let mut produced = 0;
    for (i, (correlation_id, is_produce)) in sent.into_iter().enumerate() {
        let answer = c.recv_frame().unwrap_or_else(|e| panic!("answer {i}: {e}"));
        let got = i32::from_be_bytes([answer[0], answer[1], answer[2], answer[3]]);
        assert_eq!(got, correlation_id, "answer {i} out of order");
        produced += usize::from(is_produce);
    }
    let (err, _, end) = list_offsets(addr, "out-of-order", 0, -1);
    assert_eq!((err, end), (NONE, 3 * produced as i64));
}

/// Many produce requests in flight at once (pipelined on one connection and from several
/// connections) to freshly created partitions: all succeed with distinct, contiguous offsets.
#[test]
fn pipelined_and_concurrent_produce_requests() {
    let broker = Broker::start(2);
    let addr = broker.addr();
    let v = pick_version(addr, kafka_protocol::messages::ApiKey::Produce, (3, 9));
    for round in 0..5 {
        let topic = format!("pipelined-{round}");
        create_topic(addr, &topic, 2);
        let mut handles = Vec::new();
        for conn_no in 0..3 {
            let topic = topic.clone();
            handles.push(std::thread::spawn(move || {
                let mut c = RawConn::connect(addr).expect("connect");
                c.set_timeout(Duration::from_secs(15)).unwrap();
                let n = 10;
                let mut corrs = Vec::new();
                for i in 0..n {
                    let req = produce_request(&topic, i % 2, simple_batch(&format!("c{conn_no}-{i}-"), 5, now_ms()), -1);
                    let frame = encode_request(&req, v);
                    corrs.push(i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]));
                    c.send_frame(&frame).expect("send");
                }
                let mut results = Vec::new();
                for (i, corr) in corrs.iter().enumerate() {
                    let resp = c.recv_frame().unwrap_or_else(|e| panic!("response {i} of connection {conn_no}: {e}"));
                    let got = i32::from_be_bytes([resp[0], resp[1], resp[2], resp[3]]);
                    assert_eq!(got, *corr, "responses must come back in request order");
                    let mut b = bytes::Bytes::from(resp);
                    use kafka_protocol::protocol::{Decodable, HeaderVersion};
                    let hv = <kafka_protocol::messages::ProduceResponse as HeaderVersion>::header_version(v);
                    kafka_protocol::messages::ResponseHeader::decode(&mut b, hv).expect("header");
                    let r = kafka_protocol::messages::ProduceResponse::decode(&mut b, v).expect("decode");
                    results.push(((i % 2) as i32, produce_result(&r)));
                }
                results
            }));
        }
        let mut offsets: HashMap<i32, Vec<i64>> = HashMap::new();
        for h in handles {
            for (part, (err, base)) in h.join().expect("producer thread panicked") {
                assert_eq!(
                    err, NONE,
                    "round {round}: produce error on partition {part}"
                );
                offsets.entry(part).or_default().push(base);
            }
        }
        for part in 0..2 {
            let mut o = offsets.remove(&part).unwrap();
            o.sort();
            let want: Vec<i64> = (0..15).map(|k| k * 5).collect();
            assert_eq!(
                o, want,
                "round {round} partition {part}: base offsets of 15 batches of 5"
            );
            let (err, _, latest) = list_offsets(addr, &topic, part, -1);
            assert_eq!(
                (err, latest),
                (NONE, 75),
                "round {round} partition {part}: log end"
            );
        }
    }
}
