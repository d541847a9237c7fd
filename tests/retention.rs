//! Retention: a topic's retention.bytes moves its log start offset forward, whole WAL segments
//! that no partition needs are deleted from disk, and both survive a restart.

mod common;

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

#[test]
fn retention_bytes_reclaims_segments_and_survives_restart() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = scratch.path().join("chronik.toml");
    // 1 MiB segments, 2 MB kept per partition, retention checked every 200 ms.
    std::fs::write(
        &config,
        "retention_bytes = 2000000\nretention_check_interval_ms = 200\nmessage_bytes_max = 200000\n",
    )
    .expect("config file");
    let config_arg = config.to_string_lossy().to_string();
    let mut broker = Broker::start_with(
        1,
        &["--config", &config_arg, "--segment-bytes", "1048576"],
        None,
    );
    let topic = "retained";
    let producer = producer(
        &broker.bootstrap(),
        &[("acks", "all"), ("linger.ms", "2"), ("batch.size", "60000")],
    );
    let payload = vec![b'r'; 10_000];
    let count = 1000; // about 10 MB
    for i in 0..count {
        let key = format!("{i}");
        send_retry(
            &producer,
            BaseRecord::to(topic)
                .partition(0)
                .key(key.as_bytes())
                .payload(&payload[..]),
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

    let addr = broker.addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut earliest, mut files) = (0, usize::MAX);
    while Instant::now() < deadline {
        earliest = list_offsets(addr, topic, 0, -2).2;
        files = segment_files(&broker);
        if earliest > 0 && files <= 4 {
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
