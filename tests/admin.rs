//! CreateTopics, DeleteTopics, ListOffsets and Metadata through the raw protocol.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::time::Duration;

use common::*;
use rdkafka::producer::BaseRecord;

#[test]
fn create_topics_success_and_errors() {
    let broker = Broker::start(2);
    let addr = broker.addr();

    // Success.
    let r = create_topics(addr, &[("admin-a", 3)], false);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0].0.as_str(), r[0].1),
        ("admin-a", NONE),
        "create admin-a: {r:?}"
    );
    assert_eq!(
        topic_in_metadata(addr, "admin-a"),
        Some((NONE, 3)),
        "metadata of admin-a"
    );
    let md = metadata(addr, Some(&["admin-a"]), false);
    let t = &md.topics[0];
    assert_eq!(t.error_code, NONE);
    let mut parts: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
    parts.sort();
    assert_eq!(parts, vec![0, 1, 2]);
    for p in &t.partitions {
        assert_eq!(p.error_code, NONE, "partition {}", p.partition_index);
        assert!(
            md.brokers.iter().any(|b| b.node_id == p.leader_id),
            "leader {:?} of partition {} is not among the brokers {:?}",
            p.leader_id,
            p.partition_index,
            md.brokers
        );
    }
    let b = md
        .brokers
        .iter()
        .find(|b| b.node_id == t.partitions[0].leader_id)
        .unwrap();
    assert_eq!(
        (b.host.as_str(), b.port),
        ("127.0.0.1", broker.port as i32),
        "advertised leader endpoint"
    );

    // Already exists.
    let r = create_topics(addr, &[("admin-a", 3)], false);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1, TOPIC_ALREADY_EXISTS, "re-create admin-a: {r:?}");
    assert_eq!(
        topic_in_metadata(addr, "admin-a"),
        Some((NONE, 3)),
        "existing topic unchanged"
    );

    // Invalid names.
    let long = "x".repeat(250);
    for name in [
        "bad/name",
        long.as_str(),
        "",
        ".",
        "..",
        "has space",
        "bad*",
    ] {
        let r = create_topics(addr, &[(name, 1)], false);
        assert_eq!(r.len(), 1, "{name:?}: {r:?}");
        assert_eq!(
            r[0].1,
            INVALID_TOPIC_EXCEPTION,
            "CreateTopics with name {name:?} (len {}): {r:?}",
            name.len()
        );
    }
    // A 249-character name is legal.
    let max_name = "y".repeat(249);
    let r = create_topics(addr, &[(max_name.as_str(), 1)], false);
    assert_eq!(r[0].1, NONE, "249-char name should be accepted: {:?}", r[0]);

    // Invalid partition counts (-1 means "broker default" and is valid in v4+).
    for parts in [0i32, -2, -100] {
        let name = format!("admin-parts{}", parts.abs());
        let r = create_topics(addr, &[(name.as_str(), parts)], false);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].1, INVALID_PARTITIONS,
            "CreateTopics {name} with {parts} partitions: {r:?}"
        );
        assert_eq!(
            topic_in_metadata(addr, &name),
            None,
            "{name} must not exist after a failed create"
        );
    }

    // Several topics in one request: independent results.
    let r = create_topics(
        addr,
        &[("admin-b", 2), ("bad/name2", 1), ("admin-a", 1)],
        false,
    );
    let code = |n: &str| r.iter().find(|t| t.0 == n).map(|t| t.1);
    assert_eq!(code("admin-b"), Some(NONE), "{r:?}");
    assert_eq!(code("bad/name2"), Some(INVALID_TOPIC_EXCEPTION), "{r:?}");
    assert_eq!(code("admin-a"), Some(TOPIC_ALREADY_EXISTS), "{r:?}");
    assert_eq!(topic_in_metadata(addr, "admin-b"), Some((NONE, 2)));
}

#[test]
fn create_topics_validate_only_creates_nothing() {
    let broker = Broker::start(2);
    let addr = broker.addr();
    let r = create_topics(addr, &[("validate-me", 4)], true);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1, NONE, "validate_only of a valid topic: {r:?}");
    assert_eq!(
        topic_in_metadata(addr, "validate-me"),
        None,
        "validate_only must not create the topic"
    );
    let md = metadata(addr, Some(&["validate-me"]), false);
    assert_eq!(md.topics.len(), 1);
    assert_eq!(
        md.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION,
        "metadata after validate_only"
    );
    // validate_only still reports errors.
    let r = create_topics(addr, &[("bad/name", 1), ("validate-zero", 0)], true);
    assert_eq!(
        r.iter().map(|t| t.1).collect::<Vec<_>>(),
        vec![INVALID_TOPIC_EXCEPTION, INVALID_PARTITIONS],
        "{r:?}"
    );
    // And a real create afterwards works.
    create_topic(addr, "validate-me", 4);
    assert_eq!(topic_in_metadata(addr, "validate-me"), Some((NONE, 4)));
}

#[test]
fn delete_and_recreate_starts_at_zero() {
    let broker = Broker::start(2);
    let addr = broker.addr();
    let bs = broker.bootstrap();
    create_topic(addr, "doomed", 2);
    let p = producer(&bs, &[("acks", "all")]);
    for i in 0..50 {
        let v = format!("old-{i}");
        send_retry(
            &p,
            BaseRecord::to("doomed")
                .partition(i % 2)
                .payload(v.as_bytes()),
        );
    }
    flush(&p, Duration::from_secs(30));
    drop(p);
    assert_eq!(lo(addr, "doomed", 0, -1), (NONE, 25), "before delete");

    let r = delete_topics(addr, &["doomed"]);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1, NONE, "DeleteTopics doomed: {r:?}");
    let gone = wait_until(Duration::from_secs(10), || {
        topic_in_metadata(addr, "doomed").is_none()
    });
    assert!(
        gone,
        "deleted topic still in metadata: {:?}",
        topic_in_metadata(addr, "doomed")
    );
    let md = metadata(addr, Some(&["doomed"]), false);
    assert_eq!(
        md.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION,
        "metadata for the deleted topic"
    );
    let (err, _, _) = list_offsets(addr, "doomed", 0, -1);
    assert_eq!(
        err, UNKNOWN_TOPIC_OR_PARTITION,
        "ListOffsets on the deleted topic"
    );

    // Deleting an unknown topic.
    let r = delete_topics(addr, &["never-existed"]);
    assert_eq!(
        r[0].1, UNKNOWN_TOPIC_OR_PARTITION,
        "DeleteTopics of unknown topic: {r:?}"
    );

    // Recreate: empty, starts at offset 0.
    create_topic(addr, "doomed", 3);
    assert_eq!(topic_in_metadata(addr, "doomed"), Some((NONE, 3)));
    for part in 0..3 {
        let (err, _, latest) = list_offsets(addr, "doomed", part, -1);
        let (err2, _, earliest) = list_offsets(addr, "doomed", part, -2);
        assert_eq!(
            (err, latest, err2, earliest),
            (NONE, 0, NONE, 0),
            "recreated partition {part}"
        );
    }
    let p = producer(&bs, &[("acks", "all")]);
    send_retry(
        &p,
        BaseRecord::to("doomed")
            .partition(0)
            .payload(b"new".as_slice()),
    );
    flush(&p, Duration::from_secs(30));
    let d = p.context().results.lock().unwrap()[0].clone();
    assert_eq!(
        (d.error, d.offset),
        (None, 0),
        "first message of the recreated topic"
    );
    let msgs = consume_all(&bs, "doomed", 3, 1, Duration::from_secs(30));
    assert_eq!(msgs.len(), 1, "recreated topic must not contain old data");
    use rdkafka::message::Message;
    assert_eq!(msgs[0].payload(), Some(b"new".as_slice()));

    // Deleted-and-recreated state survives a restart (the old data stays gone).
    let mut broker = broker;
    let status = broker.terminate();
    assert!(status.success(), "clean shutdown: {status}");
    broker.restart();
    let addr = broker.addr();
    assert_eq!(
        topic_in_metadata(addr, "doomed"),
        Some((NONE, 3)),
        "after restart"
    );
    assert_eq!(lo(addr, "doomed", 0, -1), (NONE, 1), "after restart");
    assert_eq!(lo(addr, "doomed", 1, -1), (NONE, 0), "after restart");
}

/// ListOffsets (error_code, offset), ignoring the timestamp field.
fn lo(addr: std::net::SocketAddr, topic: &str, part: i32, ts: i64) -> (i16, i64) {
    let (e, _, o) = list_offsets(addr, topic, part, ts);
    (e, o)
}

#[test]
fn list_offsets_earliest_latest_and_by_timestamp() {
    let broker = Broker::start(2);
    let addr = broker.addr();
    let bs = broker.bootstrap();
    create_topic(addr, "lo", 1);
    assert_eq!(
        lo(addr, "lo", 0, -2),
        (NONE, 0),
        "earliest of empty partition"
    );
    assert_eq!(
        lo(addr, "lo", 0, -1),
        (NONE, 0),
        "latest of empty partition"
    );
    assert_eq!(
        lo(addr, "lo", 0, 1000).1,
        -1,
        "by timestamp in an empty partition"
    );

    let p = producer(&bs, &[("acks", "all"), ("linger.ms", "0")]);
    for ts in [1000i64, 2000, 3000] {
        let v = format!("ts-{ts}");
        send_retry(
            &p,
            BaseRecord::to("lo")
                .partition(0)
                .timestamp(ts)
                .payload(v.as_bytes()),
        );
        flush(&p, Duration::from_secs(30)); // separate batches
    }
    let ds = p.context().results.lock().unwrap().clone();
    assert_eq!(
        ds.iter()
            .map(|d| (d.error.clone(), d.offset))
            .collect::<Vec<_>>(),
        vec![(None, 0), (None, 1), (None, 2)]
    );

    assert_eq!(lo(addr, "lo", 0, -2), (NONE, 0), "earliest");
    assert_eq!(lo(addr, "lo", 0, -1), (NONE, 3), "latest = count");
    assert_eq!(
        lo(addr, "lo", 0, 0),
        (NONE, 0),
        "timestamp 0 -> first record"
    );
    assert_eq!(
        lo(addr, "lo", 0, 1000),
        (NONE, 0),
        "timestamp 1000 -> offset 0"
    );
    let (e, ts, off) = list_offsets(addr, "lo", 0, 1500);
    assert_eq!(
        (e, off, ts),
        (NONE, 1, 2000),
        "timestamp 1500 -> offset 1 (timestamp 2000)"
    );
    assert_eq!(
        lo(addr, "lo", 0, 2000),
        (NONE, 1),
        "timestamp 2000 -> offset 1"
    );
    assert_eq!(
        lo(addr, "lo", 0, 2001),
        (NONE, 2),
        "timestamp 2001 -> offset 2"
    );
    assert_eq!(
        lo(addr, "lo", 0, 3000),
        (NONE, 2),
        "timestamp 3000 -> offset 2"
    );
    assert_eq!(
        lo(addr, "lo", 0, 3001),
        (NONE, -1),
        "timestamp after every record -> -1"
    );
    assert_eq!(
        lo(addr, "lo", 0, i64::MAX / 2),
        (NONE, -1),
        "far-future timestamp -> -1"
    );

    // Unknown topic / partition.
    assert_eq!(
        lo(addr, "no-such-topic", 0, -1).0,
        UNKNOWN_TOPIC_OR_PARTITION,
        "unknown topic"
    );
    assert_eq!(
        lo(addr, "lo", 7, -1).0,
        UNKNOWN_TOPIC_OR_PARTITION,
        "unknown partition"
    );
    assert_eq!(
        topic_in_metadata(addr, "no-such-topic"),
        None,
        "ListOffsets must not auto-create"
    );
}

#[test]
fn metadata_auto_creation_flag() {
    let broker = Broker::start_with(2, &["--default-partitions", "3"], None);
    let addr = broker.addr();
    // allow_auto_topic_creation=false: error 3, nothing created.
    let md = metadata(addr, Some(&["not-created"]), false);
    assert_eq!(md.topics.len(), 1, "{md:?}");
    assert_eq!(
        md.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION,
        "{md:?}"
    );
    assert_eq!(
        topic_in_metadata(addr, "not-created"),
        None,
        "topic was created despite allow_auto_topic_creation=false"
    );
    // allow_auto_topic_creation=true: created with --default-partitions.
    let ok = wait_until(Duration::from_secs(10), || {
        let md = metadata(addr, Some(&["auto-made"]), true);
        md.topics.len() == 1
            && md.topics[0].error_code == NONE
            && md.topics[0].partitions.len() == 3
    });
    assert!(
        ok,
        "Metadata with auto-creation did not create auto-made with 3 partitions: {:?}",
        metadata(addr, Some(&["auto-made"]), false)
    );
    assert_eq!(topic_in_metadata(addr, "auto-made"), Some((NONE, 3)));
    // Invalid names are never auto-created.
    let md = metadata(addr, Some(&["bad/auto"]), true);
    assert_ne!(
        md.topics[0].error_code, NONE,
        "invalid name auto-created? {md:?}"
    );
    assert_eq!(topic_in_metadata(addr, "bad/auto"), None);
    // All-topics metadata lists brokers with the listen address.
    let md = metadata(addr, None, false);
    assert!(!md.brokers.is_empty(), "no brokers in metadata");
    assert!(
        md.brokers.iter().any(|b| b.port == broker.port as i32),
        "brokers: {:?}",
        md.brokers
    );
}

/// Kafka resolves a timestamp lookup to the first *record* with timestamp >= target, also
/// inside a multi-record batch (not to the batch's base offset).
#[test]
fn list_offsets_by_timestamp_inside_a_batch() {
    let broker = Broker::start(2);
    let addr = broker.addr();
    create_topic(addr, "lo", 1);
    let r = produce_raw(addr, "lo", 0, simple_batch("before-", 3, 1000), -1);
    assert_eq!(produce_result(&r), (NONE, 0), "raw produce: {r:?}");
    let recs: Vec<RawRecord<'_>> = (0..5)
        .map(|i| RawRecord {
            key: None,
            value: Some(b"in-batch".as_slice()),
            headers: vec![],
            timestamp_delta: i * 100,
        })
        .collect();
    let r = produce_raw(addr, "lo", 0, encode_batch(&recs, 10_000), -1);
    assert_eq!(
        produce_result(&r),
        (NONE, 3),
        "raw produce of a 5-record batch: {r:?}"
    );
    assert_eq!(lo(addr, "lo", 0, -1), (NONE, 8), "latest after the batch");
    assert_eq!(
        lo(addr, "lo", 0, 5000),
        (NONE, 3),
        "timestamp 5000 -> first record of the batch"
    );
    assert_eq!(
        lo(addr, "lo", 0, 10_250),
        (NONE, 6),
        "timestamp 10250 -> record with ts 10300 (offset 6)"
    );
    assert_eq!(lo(addr, "lo", 0, 10_401), (NONE, -1), "after all");

    // Same inside a compressed batch (the answer does not depend on how records are batched).
    let p = producer(
        &broker.bootstrap(),
        &[
            ("acks", "all"),
            ("linger.ms", "200"),
            ("compression.codec", "gzip"),
        ],
    );
    for i in 0..5i64 {
        send_retry(
            &p,
            BaseRecord::to("lo")
                .partition(0)
                .timestamp(20_000 + i * 100)
                .payload(b"gz".as_slice()),
        );
    }
    flush(&p, Duration::from_secs(30));
    let ds = p.context().results.lock().unwrap().clone();
    assert_eq!(
        ds.iter().map(|d| d.offset).collect::<Vec<_>>(),
        vec![8, 9, 10, 11, 12],
        "{ds:?}"
    );
    assert_eq!(
        lo(addr, "lo", 0, 20_000),
        (NONE, 8),
        "timestamp 20000 -> offset 8"
    );
    assert_eq!(
        lo(addr, "lo", 0, 20_150),
        (NONE, 10),
        "timestamp 20150 -> offset 10 (ts 20200, compressed batch)"
    );
    assert_eq!(lo(addr, "lo", 0, 20_401), (NONE, -1), "after all");
}
