//! Log compaction (`cleanup.policy=compact`) through librdkafka: the cleaner keeps exactly
//! the latest value of each key at its original offset, drops tombstones once
//! `delete.retention.ms` has passed, frees the WAL segments of what it dropped, and what it
//! kept survives `kill -9` and a restart; on a cluster, every replica (one that was down
//! while the leader cleaned too) holds the same bytes, and a new leader serves them.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{consume_all, flush, list_offsets, producer, send_retry, wait_until, Broker};
use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::ClientConfig;

const KEYS: usize = 50;

/// (WAL segment files on disk, the highest segment number ever created among them).
fn segment_files(broker: &Broker) -> (usize, u64) {
    let numbers: Vec<u64> = std::fs::read_dir(broker.data_dir.join("shard-0"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    name.strip_suffix(".wal")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    (numbers.len(), numbers.iter().copied().max().unwrap_or(0))
}

const ROUNDS: usize = 20;

/// (key, offset, value: None for a tombstone) of every record a consumer reads from the
/// beginning of partition 0, in order (values without their padding).
fn read_partition(
    bootstrap: &str,
    topic: &str,
    expected: usize,
) -> Vec<(String, i64, Option<String>)> {
    consume_all(bootstrap, topic, 1, expected, Duration::from_secs(5))
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(m.key().expect("every record has a key")).to_string(),
                m.offset(),
                m.payload().map(|p| {
                    let value = String::from_utf8_lossy(p);
                    value.split('|').next().unwrap_or_default().to_string()
                }),
            )
        })
        .collect()
}

/// Reads until the partition holds exactly `expected` records (the cleaner runs in the
/// background) or 30 s pass; returns the last read.
fn wait_for_records(
    bootstrap: &str,
    topic: &str,
    expected: usize,
) -> Vec<(String, i64, Option<String>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = read_partition(bootstrap, topic, expected);
        if records.len() == expected || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Produces `value` (None: a tombstone), padded to 4 KB after a `|`, for each key with
/// acks=all; returns each key's offset.
fn produce_round(
    bootstrap: &str,
    topic: &str,
    keys: std::ops::Range<usize>,
    value: Option<&str>,
) -> BTreeMap<String, i64> {
    let p = producer(
        bootstrap,
        &[
            ("compression.type", "lz4"),
            ("linger.ms", "5"),
            ("batch.size", "100000"),
            ("acks", "all"),
        ],
    );
    // Padding that differs per record and compresses poorly, so records fill segments.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ keys.start as u64 ^ value.map_or(0, str::len) as u64;
    let mut noise = move || -> String {
        (0..4096)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b'a' + (seed % 26) as u8)
            })
            .collect()
    };
    for key in keys {
        let key = format!("key-{key:02}");
        let mut record = BaseRecord::to(topic).partition(0).key(key.as_bytes());
        let padded = value.map(|v| format!("{v}|{}", noise()));
        if let Some(value) = &padded {
            record = record.payload(value.as_bytes());
        }
        send_retry(&p, record);
    }
    flush(&p, Duration::from_secs(30));
    let deliveries = p.context().results.lock().expect("deliveries").clone();
    deliveries
        .into_iter()
        .map(|d| {
            assert!(d.error.is_none(), "delivered: {:?}", d.error);
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
    // Small segments and a small entry cache: cleaned batches are read back from the WAL,
    // and freed segments show.
    let toml = "retention_check_interval_ms = 200\nentry_cache_bytes_max = 65536\n\
                message_bytes_max = 200000\n";
    std::fs::write(&config, toml).expect("config file");
    let config_arg = config.to_string_lossy().to_string();
    let mut broker = Broker::start_with(
        1,
        &[
            "--config",
            &config_arg,
            "--log-cleaner-backoff-ms",
            "200",
            "--segment-bytes",
            "1048576",
        ],
        None,
    );
    let topic = "compacted";
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin client");
    let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        // Any new record makes a pass due (a few tombstones are a tiny share of the bytes).
        .set("min.cleanable.dirty.ratio", "0")
        // Long enough that a loaded machine still sees the tombstones at the first check.
        .set("delete.retention.ms", "10000");
    let created =
        block_on(admin.create_topics(&[new_topic], &AdminOptions::new())).expect("create");
    assert!(created[0].is_ok(), "created: {created:?}");

    // Every key written ROUNDS times, then tombstones for the first ten keys.
    let mut latest: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    for round in 0..ROUNDS {
        let value = format!("round-{round}");
        for (key, offset) in produce_round(&broker.bootstrap(), topic, 0..KEYS, Some(&value)) {
            latest.insert(key, (offset, Some(value.clone())));
        }
    }
    for (key, offset) in produce_round(&broker.bootstrap(), topic, 0..10, None) {
        latest.insert(key, (offset, None));
    }
    let produced = (KEYS * ROUNDS + 10) as i64;
    assert_eq!(list_offsets(broker.addr(), topic, 0, -1).2, produced);
    let (_, segments_written) = segment_files(&broker);

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
    let records = wait_for_records(&broker.bootstrap(), topic, KEYS);
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
    let mut segments_left = usize::MAX;
    let freed = wait_until(Duration::from_secs(20), || {
        segments_left = segment_files(&broker).0;
        // The active segment, the one before it, and the spare made ahead of the next roll.
        segments_left <= 3
    });
    assert!(
        freed && segments_written >= 4,
        "the segments of superseded records are freed: {segments_written} written, \
         {segments_left} left"
    );

    // What the cleaner kept survives kill -9; offsets go on from the same log end.
    broker.restart();
    // Retried: right after the restart the first read may come back short.
    let records = wait_for_records(&broker.bootstrap(), topic, KEYS);
    assert_eq!(
        records,
        expected,
        "after kill -9 and a restart\n{}",
        broker.log_tail(30)
    );
    let appended = produce_round(&broker.bootstrap(), topic, 20..21, Some("after-restart"));
    assert_eq!(
        appended["key-20"], produced,
        "the next offset follows the log end"
    );
    latest.insert("key-20".into(), (produced, Some("after-restart".into())));

    // Past delete.retention.ms, the next pass drops the tombstones.
    std::thread::sleep(Duration::from_millis(10_500));
    produce_round(&broker.bootstrap(), topic, 30..31, Some("wake-the-cleaner"));
    let live = KEYS - 10;
    let records = wait_for_records(&broker.bootstrap(), topic, live);
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

#[test]
fn every_replica_holds_the_cleaned_log_and_a_new_leader_serves_it() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = scratch.path().join("chronik.toml");
    std::fs::write(&config, "retention_check_interval_ms = 200\n").expect("config file");
    let config_arg = config.to_string_lossy().to_string();
    let mut cluster = Cluster::configure(
        3,
        1,
        &["--config", &config_arg, "--log-cleaner-backoff-ms", "200"],
    );
    for index in 0..3 {
        cluster.start_node(index);
    }
    let topic = "compacted-replicated";
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .create()
        .expect("admin client");
    let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(3))
        .set("cleanup.policy", "compact")
        .set("min.cleanable.dirty.ratio", "0");
    let created =
        block_on(admin.create_topics(&[new_topic], &AdminOptions::new())).expect("create");
    assert!(created[0].is_ok(), "created: {created:?}");
    let leader = cluster.wait_for_leaders(topic, 1)[0];
    let leader_index = cluster.index_of(leader);

    // A follower is down while every key is written and the leader cleans.
    let absent = (leader_index + 1) % 3;
    cluster.kill9(absent);
    let mut latest: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    for round in 0..10 {
        let value = format!("round-{round}");
        for (key, offset) in produce_round(&cluster.bootstrap(), topic, 0..KEYS, Some(&value)) {
            latest.insert(key, (offset, Some(value.clone())));
        }
    }
    let mut expected: Vec<(String, i64, Option<String>)> = latest
        .iter()
        .map(|(key, (offset, value))| (key.clone(), *offset, value.clone()))
        .collect();
    expected.sort_by_key(|r| r.1);
    let records = wait_for_records(&cluster.bootstrap(), topic, KEYS);
    assert_eq!(
        records,
        expected,
        "the leader cleaned\n{}",
        cluster.logs(30)
    );

    // It comes back behind the leader's compaction point (retention compacts the Raft log
    // past the entries the cleaning replaced within 200 ms), catches up from a snapshot and
    // the cleaning entries, and holds the same bytes as the others.
    std::thread::sleep(Duration::from_millis(1_000));
    cluster.start_node(absent);
    let mut logs = Vec::new();
    let converged = wait_until(Duration::from_secs(30), || {
        // A replica just restarted refuses reads until it has the partition: retry.
        logs = (0..3)
            .map(|index| cluster.replica_log_if_ready(index, topic, 0))
            .collect::<Result<Vec<_>, i16>>()
            .unwrap_or_default();
        !logs.is_empty() && logs.iter().all(|log| log == &logs[0])
    });
    assert!(
        converged,
        "replicas differ: {:?}\n{}",
        logs.iter()
            .map(|(hw, log)| (*hw, log.len()))
            .collect::<Vec<_>>(),
        cluster.logs(30)
    );

    // The leader dies; the new one serves exactly the cleaned records.
    cluster.kill9(leader_index);
    let new_leader = cluster.wait_for_leaders(topic, 1)[0];
    assert_ne!(new_leader, leader);
    // Retried: the new leader may not serve reads at once.
    let records = wait_for_records(&cluster.bootstrap(), topic, KEYS);
    assert_eq!(records, expected, "after failover\n{}", cluster.logs(30));
}
