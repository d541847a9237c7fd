//! Retention: a topic's retention.bytes moves its log start offset forward, whole WAL segments
//! that no partition needs are deleted from disk, and both survive a restart.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{consume_all, flush, list_offsets, producer, send_retry, Broker};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};

fn segment_files(broker: &Broker) -> usize {
    std::fs::read_dir(broker.data_dir.join("shard-0"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                .count()
        })
        .unwrap_or(0)
}

/// One shard, 1 MiB WAL segments, retention checked every 200 ms, plus `extra` TOML. The
/// returned directory holds the config file and must outlive the broker.
fn start_small_segments(extra: &str) -> (tempfile::TempDir, Broker) {
    start_small_segments_checked_every(200, extra)
}

fn start_small_segments_checked_every(
    check_interval_ms: u64,
    extra: &str,
) -> (tempfile::TempDir, Broker) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = scratch.path().join("chronik.toml");
    let toml = format!(
        "retention_check_interval_ms = {check_interval_ms}\nmessage_bytes_max = 200000\n{extra}"
    );
    std::fs::write(&config, toml).expect("config file");
    let config_arg = config.to_string_lossy().to_string();
    let broker = Broker::start_with(
        1,
        &["--config", &config_arg, "--segment-bytes", "1048576"],
        None,
    );
    (scratch, broker)
}

#[test]
fn retention_bytes_reclaims_segments_and_survives_restart() {
    // 2 MB kept per partition.
    let (_scratch, mut broker) = start_small_segments("retention_bytes = 2000000\n");
    let topic = "retained";
    let payload = vec![b'r'; 10_000];
    let count = 1000; // about 10 MB
    produce_n(&broker, topic, count as usize, &payload);

    let addr = broker.addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut earliest, mut files) = (0, usize::MAX);
    let mut unchanged_since = Instant::now();
    while Instant::now() < deadline {
        let start = list_offsets(addr, topic, 0, -2).2;
        if start != earliest {
            earliest = start;
            unchanged_since = Instant::now();
        }
        files = segment_files(&broker);
        // Retention runs at rolls and every 200 ms: the last batches produced are only
        // expired at the next check, so wait for the settled state, not the first move.
        // Within ~2.3 MB is not enough (it keeps at least retention.bytes, and 205-230
        // messages can still be a step on the way): the log start must also stay put for 1 s.
        let settled = (count - earliest) * 10_000 <= 2_300_000
            && unchanged_since.elapsed() >= Duration::from_secs(1);
        if earliest > 0 && files <= 4 && settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let latest = list_offsets(addr, topic, 0, -1).2;
    assert_eq!(latest, count, "latest offset counts every message");
    assert!(
        earliest > 0,
        "retention moved the log start (earliest {earliest})\n{}",
        broker.log_tail(30)
    );
    let retained = latest - earliest;
    assert!(
        retained * 10_000 <= 2_300_000,
        "at most ~retention.bytes kept: {retained} messages"
    );
    assert!(
        files <= 4,
        "old segments were deleted: {files} left\n{}",
        broker.log_tail(30)
    );

    let messages = consume_all(
        &broker.bootstrap(),
        topic,
        1,
        retained as usize,
        Duration::from_secs(30),
    );
    let offsets: Vec<i64> = messages.iter().map(|m| m.offset()).collect();
    assert_eq!(
        offsets,
        (earliest..latest).collect::<Vec<_>>(),
        "the retained suffix is whole"
    );

    broker.restart();
    let addr = broker.addr();
    assert_eq!(
        list_offsets(addr, topic, 0, -2).2,
        earliest,
        "log start survives a restart"
    );
    assert_eq!(
        list_offsets(addr, topic, 0, -1).2,
        latest,
        "log end survives a restart"
    );
    let again = consume_all(
        &broker.bootstrap(),
        topic,
        1,
        retained as usize,
        Duration::from_secs(30),
    );
    assert_eq!(
        again.len(),
        retained as usize,
        "retained data readable after restart"
    );
    assert!(again.iter().all(|m| m.payload() == Some(&payload[..])));
}

/// Retention also runs whenever the WAL rolls into a new segment, so a shard that fills
/// segments faster than the periodic check frees them as they fill (and reuses their files):
/// with the periodic check an hour away, the log start still moves and old segments go.
#[test]
fn retention_runs_when_a_segment_rolls() {
    let (_scratch, broker) =
        start_small_segments_checked_every(3_600_000, "retention_bytes = 2000000\n");
    let topic = "rolled";
    let payload = vec![b'p'; 10_000];
    let count = 1000; // about 10 MB: nine or ten rolls of 1 MiB segments
    produce_n(&broker, topic, count, &payload);

    let addr = broker.addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut earliest, mut files, mut kept) = (0, usize::MAX, 0);
    while Instant::now() < deadline {
        earliest = list_offsets(addr, topic, 0, -2).2;
        files = segment_files(&broker);
        kept = segment_inodes(&broker).1.len();
        if earliest > 0 && files <= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(list_offsets(addr, topic, 0, -1).2, count as i64);
    assert!(
        earliest > 0,
        "retention ran at a roll: earliest {earliest}\n{}",
        broker.log_tail(30)
    );
    assert!(
        files <= 4,
        "segments were freed at the rolls: {files} left ({kept} kept for reuse)\n{}",
        broker.log_tail(30)
    );
}

fn create_with_configs(addr: std::net::SocketAddr, name: &str, configs: &[(&str, &str)]) {
    use kafka_protocol::messages::create_topics_request::{
        CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
    };
    use kafka_protocol::protocol::StrBytes;
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let topic = CreatableTopic::default()
        .with_name(common::tn(name))
        .with_num_partitions(1)
        .with_replication_factor(-1)
        .with_configs(configs);
    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(10_000);
    let response: kafka_protocol::messages::CreateTopicsResponse =
        common::typed_request(addr, &request, 5);
    assert_eq!(
        response.topics[0].error_code, 0,
        "create {name}: {response:?}"
    );
}

fn produce_n(broker: &Broker, topic: &str, count: usize, payload: &[u8]) {
    let producer = producer(
        &broker.bootstrap(),
        &[("acks", "all"), ("linger.ms", "2"), ("batch.size", "60000")],
    );
    for i in 0..count {
        let key = format!("{i}");
        send_retry(
            &producer,
            BaseRecord::to(topic)
                .partition(0)
                .key(key.as_bytes())
                .payload(payload),
        );
    }
    flush(&producer, Duration::from_secs(60));
    assert_eq!(
        producer
            .context()
            .err_count
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "all delivered"
    );
}

/// Segments shared by a topic that keeps everything, a deleted topic and a topic with tight
/// retention: old segments go, the kept topic keeps its data, the deleted topic stays deleted,
/// and the node restarts cleanly (twice, so state written after the first restart is checked).
#[test]
fn mixed_retention_and_deleted_topics_survive_restarts() {
    let (_scratch, mut broker) = start_small_segments("");
    let addr = broker.addr();
    create_with_configs(
        addr,
        "keep",
        &[("retention.ms", "-1"), ("retention.bytes", "-1")],
    );
    create_with_configs(addr, "gone", &[]);
    create_with_configs(addr, "tight", &[("retention.bytes", "1000000")]);
    let payload = vec![b'x'; 10_000];
    produce_n(&broker, "keep", 20, &payload);
    produce_n(&broker, "gone", 150, &payload);
    assert_eq!(
        common::delete_topics(addr, &["gone"])[0].1,
        0,
        "delete gone"
    );
    produce_n(&broker, "tight", 600, &payload);

    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && list_offsets(addr, "tight", 0, -2).2 == 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let tight_start = list_offsets(addr, "tight", 0, -2).2;
    assert!(
        tight_start > 0,
        "tight retention moved its log start\n{}",
        broker.log_tail(30)
    );
    for round in 0..2 {
        broker.restart();
        let addr = broker.addr();
        assert_eq!(
            list_offsets(addr, "keep", 0, -2).2,
            0,
            "round {round}: keep starts at 0"
        );
        assert_eq!(
            list_offsets(addr, "keep", 0, -1).2,
            20,
            "round {round}: keep ends at 20"
        );
        assert!(
            list_offsets(addr, "tight", 0, -2).2 >= tight_start,
            "round {round}: tight start kept"
        );
        assert_eq!(
            list_offsets(addr, "tight", 0, -1).2,
            600,
            "round {round}: tight end kept"
        );
        let gone = common::metadata(addr, Some(&["gone"]), false);
        assert_eq!(
            gone.topics[0].error_code, 3,
            "round {round}: deleted topic stays deleted"
        );
        let kept = consume_all(&broker.bootstrap(), "keep", 1, 20, Duration::from_secs(30));
        assert_eq!(kept.len(), 20, "round {round}: keep readable");
        // Write a little after each restart so the next recovery sees post-restart state too.
        produce_n(&broker, "tight", 0, &payload);
    }
}

/// The log start of `topic`'s partition 0 once it has not moved for 1 s (retention checks
/// every 200 ms and may still be expiring the last batches), or its last value after 20 s.
fn settled_log_start(addr: std::net::SocketAddr, topic: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut earliest = list_offsets(addr, topic, 0, -2).2;
    let mut unchanged_since = Instant::now();
    while Instant::now() < deadline && unchanged_since.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(100));
        let start = list_offsets(addr, topic, 0, -2).2;
        if start != earliest {
            earliest = start;
            unchanged_since = Instant::now();
        }
    }
    earliest
}

/// The inodes of the shard's segment files (`.wal`) and of the files retention kept for reuse
/// (`.free`).
fn segment_inodes(broker: &Broker) -> (BTreeSet<u64>, BTreeSet<u64>) {
    use std::os::unix::fs::MetadataExt;
    let (mut live, mut kept) = (BTreeSet::new(), BTreeSet::new());
    let Ok(dir) = std::fs::read_dir(broker.data_dir.join("shard-0")) else {
        return (live, kept);
    };
    for entry in dir.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().to_string();
        let Ok(meta) = entry.metadata() else { continue };
        if name.ends_with(".wal") {
            live.insert(meta.ino());
        } else if name.ends_with(".free") {
            kept.insert(meta.ino());
        }
    }
    (live, kept)
}

/// Segment files retention freed are kept and written again as new segments, with the old
/// records still in them past the new ones: every acknowledged record reads back as sent,
/// nothing of the files' earlier use does, before and after a kill -9.
#[test]
fn reused_segment_files_serve_only_their_new_records_across_kill9() {
    let (_scratch, mut broker) = start_small_segments("retention_bytes = 2000000\n");
    let topic = "reused";
    let producer = producer(
        &broker.bootstrap(),
        &[("acks", "all"), ("linger.ms", "2"), ("batch.size", "60000")],
    );
    let mut ever_kept = BTreeSet::new();
    let mut reused = false;
    let mut sent = 0usize;
    for _round in 0..6 {
        for _ in 0..300 {
            let key = format!("{sent}");
            let payload = format!("{key}:").repeat(1 + 10_000 / (key.len() + 1));
            send_retry(
                &producer,
                BaseRecord::to(topic)
                    .partition(0)
                    .key(key.as_bytes())
                    .payload(payload.as_bytes()),
            );
            sent += 1;
        }
        flush(&producer, Duration::from_secs(60));
        // Let retention run, then see which kept files came back as segments.
        std::thread::sleep(Duration::from_millis(600));
        let (live, kept) = segment_inodes(&broker);
        reused |= live.iter().any(|inode| ever_kept.contains(inode));
        ever_kept.extend(kept);
    }
    assert!(!ever_kept.is_empty(), "retention kept files for reuse");
    assert!(reused, "a kept file was written again as a new segment");

    let check = |broker: &Broker, when: &str| {
        let earliest = settled_log_start(broker.addr(), topic);
        let latest = list_offsets(broker.addr(), topic, 0, -1).2;
        assert_eq!(latest, sent as i64, "{when}: every record acknowledged");
        assert!(earliest > 0, "{when}: retention moved the log start");
        let retained = (latest - earliest) as usize;
        let messages = consume_all(
            &broker.bootstrap(),
            topic,
            1,
            retained,
            Duration::from_secs(30),
        );
        let offsets: Vec<i64> = messages.iter().map(|m| m.offset()).collect();
        assert_eq!(offsets, (earliest..latest).collect::<Vec<_>>(), "{when}");
        for message in &messages {
            let key = String::from_utf8_lossy(message.key().expect("key")).to_string();
            let payload = String::from_utf8_lossy(message.payload().expect("payload"));
            assert_eq!(
                key,
                message.offset().to_string(),
                "{when}: the record sent there"
            );
            assert!(
                payload.starts_with(&format!("{key}:{key}:")),
                "{when}: key {key}"
            );
        }
    };
    check(&broker, "before the kill");
    broker.restart();
    check(&broker, "after kill -9");
}
