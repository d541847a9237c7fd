//! Log compaction (`cleanup.policy=compact`) through librdkafka: the cleaner keeps exactly
//! the latest value of each key at its original offset, drops tombstones once
//! `delete.retention.ms` has passed, and what it kept survives `kill -9` and a restart.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{consume_all, flush, list_offsets, producer, send_retry, Broker};
use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::ClientConfig;

const KEYS: usize = 50;
const ROUNDS: usize = 20;

/// (key, offset, value: None for a tombstone) of every record a consumer reads from the
/// beginning of partition 0, in order.
fn read_partition(
    broker: &Broker,
    topic: &str,
    expected: usize,
) -> Vec<(String, i64, Option<String>)> {
    consume_all(
        &broker.bootstrap(),
        topic,
        1,
        expected,
        Duration::from_secs(5),
    )
    .iter()
    .map(|m| {
        (
            String::from_utf8_lossy(m.key().expect("every record has a key")).to_string(),
            m.offset(),
            m.payload().map(|p| String::from_utf8_lossy(p).to_string()),
        )
    })
    .collect()
}

/// Reads until the partition holds exactly `expected` records (the cleaner runs in the
/// background) or 30 s pass; returns the last read.
fn wait_for_records(
    broker: &Broker,
    topic: &str,
    expected: usize,
) -> Vec<(String, i64, Option<String>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = read_partition(broker, topic, expected);
        if records.len() == expected || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Produces `value` (None: a tombstone) for each key; returns each key's offset.
fn produce_round(
    broker: &Broker,
    topic: &str,
    keys: std::ops::Range<usize>,
    value: Option<&str>,
) -> BTreeMap<String, i64> {
    let p = producer(
        &broker.bootstrap(),
        &[("compression.type", "lz4"), ("linger.ms", "5")],
    );
    for key in keys {
        let key = format!("key-{key:02}");
        let mut record = BaseRecord::to(topic).partition(0).key(key.as_bytes());
        if let Some(value) = value {
            record = record.payload(value.as_bytes());
        }
        send_retry(&p, record);
    }
    flush(&p, Duration::from_secs(30));
    let deliveries = p.context().results.lock().expect("deliveries").clone();
    deliveries
        .into_iter()
        .map(|d| {
            assert!(d.error.is_none(), "delivered: {d:?}");
            (
                String::from_utf8(d.key.expect("key")).expect("utf-8"),
                d.offset,
            )
        })
        .collect()
}

#[test]
fn compaction_keeps_the_latest_value_of_each_key_at_its_offset() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = scratch.path().join("chronik.toml");
    std::fs::write(&config, "retention_check_interval_ms = 200\n").expect("config file");
    let config_arg = config.to_string_lossy().to_string();
    let mut broker = Broker::start_with(
        1,
        &["--config", &config_arg, "--log-cleaner-backoff-ms", "200"],
        None,
    );
    let topic = "compacted";
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin client");
    let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("delete.retention.ms", "3000");
    let created =
        block_on(admin.create_topics(&[new_topic], &AdminOptions::new())).expect("create");
    assert!(created[0].is_ok(), "created: {created:?}");

    // Every key written ROUNDS times, then tombstones for the first ten keys.
    let mut latest: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    for round in 0..ROUNDS {
        let value = format!("round-{round}");
        for (key, offset) in produce_round(&broker, topic, 0..KEYS, Some(&value)) {
            latest.insert(key, (offset, Some(value.clone())));
        }
    }
    for (key, offset) in produce_round(&broker, topic, 0..10, None) {
        latest.insert(key, (offset, None));
    }
    let produced = (KEYS * ROUNDS + 10) as i64;
    assert_eq!(list_offsets(broker.addr(), topic, 0, -1).2, produced);

    // The cleaner leaves one record per key, at the offset it was written at; the recent
    // tombstones stay (delete.retention.ms has not passed).
    let expected: Vec<(String, i64, Option<String>)> = {
        let mut records: Vec<_> = latest
            .iter()
            .map(|(key, (offset, value))| (key.clone(), *offset, value.clone()))
            .collect();
        records.sort_by_key(|r| r.1);
        records
    };
    let records = wait_for_records(&broker, topic, KEYS);
    assert_eq!(
        records,
        expected,
        "exactly the latest record of each key\n{}",
        broker.log_tail(30)
    );
    assert_eq!(
        list_offsets(broker.addr(), topic, 0, -1).2,
        produced,
        "the log end does not move"
    );

    // What the cleaner kept survives kill -9; offsets go on from the same log end.
    broker.restart();
    let records = read_partition(&broker, topic, KEYS);
    assert_eq!(
        records,
        expected,
        "after kill -9 and a restart\n{}",
        broker.log_tail(30)
    );
    let appended = produce_round(&broker, topic, 20..21, Some("after-restart"));
    assert_eq!(
        appended["key-20"], produced,
        "the next offset follows the log end"
    );
    latest.insert("key-20".into(), (produced, Some("after-restart".into())));

    // Past delete.retention.ms, the next pass drops the tombstones.
    std::thread::sleep(Duration::from_millis(3_500));
    produce_round(&broker, topic, 30..31, Some("wake-the-cleaner"));
    let live = KEYS - 10;
    let records = wait_for_records(&broker, topic, live);
    assert_eq!(
        records.len(),
        live,
        "tombstones are gone\n{}",
        broker.log_tail(30)
    );
    assert!(records.iter().all(|(_, _, value)| value.is_some()));
    let values: BTreeMap<&str, &str> = records
        .iter()
        .map(|(key, _, value)| (key.as_str(), value.as_deref().unwrap_or_default()))
        .collect();
    assert_eq!(values["key-20"], "after-restart");
    assert_eq!(values["key-30"], "wake-the-cleaner");
    assert_eq!(values["key-49"], format!("round-{}", ROUNDS - 1));
    let offsets: Vec<i64> = records.iter().map(|r| r.1).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets ascend: {offsets:?}"
    );
}
