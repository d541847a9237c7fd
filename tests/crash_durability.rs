//! kill -9 while producing with acks=all: every acknowledged message must survive the crash,
//! exactly once, at its acknowledged offset.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, PurgeConfig};

const TOTAL: usize = 100_000;
const PARTITIONS: i32 = 4;

#[test]
fn acked_messages_survive_kill9() {
    let mut broker = Broker::start(2);
    let bs = broker.bootstrap();
    let topic = "durable";
    create_topic(broker.addr(), topic, PARTITIONS);

    let p = producer(&bs, &[("acks", "all"), ("enable.idempotence", "false")]);
    let ok_count: Arc<AtomicUsize> = p.context().ok_count.clone();
    let killed = Arc::new(AtomicBool::new(false));
    let acked_at_kill = Arc::new(AtomicUsize::new(0));
    let pid = broker.pid().expect("broker pid") as libc::pid_t;

    let killer = {
        let ok_count = ok_count.clone();
        let killed = killed.clone();
        let acked_at_kill = acked_at_kill.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while ok_count.load(Ordering::SeqCst) < TOTAL / 2
                && start.elapsed() < Duration::from_secs(45)
            {
                std::thread::sleep(Duration::from_micros(200));
            }
            acked_at_kill.store(ok_count.load(Ordering::SeqCst), Ordering::SeqCst);
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed.store(true, Ordering::SeqCst);
            start.elapsed()
        })
    };

    // Produce until everything is queued or the broker has been killed.
    let started = Instant::now();
    let mut sent = 0usize;
    while sent < TOTAL && !killed.load(Ordering::SeqCst) {
        let v = format!("{sent:08}");
        let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition((sent % PARTITIONS as usize) as i32)
            .payload(v.as_bytes());
        match p.send(rec) {
            Ok(()) => {
                sent += 1;
                if sent.is_multiple_of(64) {
                    p.poll(Duration::ZERO);
                }
            }
            Err((e, _)) => {
                // Queue full: serve delivery reports and retry.
                assert!(
                    matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ),
                    "unexpected send error: {e}"
                );
                p.poll(Duration::from_millis(5));
            }
        }
    }
    // Keep serving delivery reports until the kill happened.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !killed.load(Ordering::SeqCst) {
        p.poll(Duration::from_millis(20));
        assert!(Instant::now() < deadline, "killer thread never fired");
    }
    let kill_after = killer.join().expect("killer thread");
    // If the broker stopped acknowledging before half was acked (e.g. a stuck shard), requests
    // time out and librdkafka retries them, which legitimately duplicates/reorders data: that
    // is a broker failure before the crash, so report it as such.
    assert!(
        acked_at_kill.load(Ordering::SeqCst) >= TOTAL / 2,
        "the broker stopped acknowledging before the kill: only {} of {sent} sent messages were \
         acknowledged within {kill_after:?} (expected {} within 45 s)",
        acked_at_kill.load(Ordering::SeqCst),
        TOTAL / 2
    );
    // Drain acknowledgements that arrived before the kill, then drop everything unacknowledged
    // so that nothing is retried against the restarted broker.
    let drain_end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < drain_end {
        p.poll(Duration::from_millis(50));
    }
    p.purge(PurgeConfig::default().queue().inflight());
    let drain_end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < drain_end {
        p.poll(Duration::from_millis(50));
    }
    let deliveries = p.context().results.lock().unwrap().clone();
    drop(p);
    broker.kill9(); // reap
    let acked: Vec<&Delivery> = deliveries.iter().filter(|d| d.error.is_none()).collect();
    eprintln!(
        "sent {sent} messages, killed after {kill_after:?} (produce started {:?} before), \
         {} acked at kill time, {} acked in total, {} failed/purged",
        started.elapsed(),
        acked_at_kill.load(Ordering::SeqCst),
        acked.len(),
        deliveries.len() - acked.len()
    );
    assert!(
        acked.len() >= 1000,
        "too few acknowledged messages ({}) to test anything",
        acked.len()
    );

    // Acked (partition, offset) pairs must be unique, and payloads must be unique.
    let mut acked_at: HashMap<(i32, i64), String> = HashMap::new();
    for d in &acked {
        let payload = String::from_utf8(d.payload.clone().expect("payload")).expect("utf8");
        assert!(d.offset >= 0, "acknowledged message without offset: {d:?}");
        if let Some(prev) = acked_at.insert((d.partition, d.offset), payload.clone()) {
            panic!(
                "two messages acknowledged at the same position {}/{}: {prev} and {payload}",
                d.partition, d.offset
            );
        }
    }

    // Restart on the same data dir and port.
    let t = Instant::now();
    broker.restart();
    eprintln!("restart (recovery) took {:?}", t.elapsed());

    let mut hw = HashMap::new();
    let mut total_hw = 0i64;
    for part in 0..PARTITIONS {
        let (err, _, off) = list_offsets(broker.addr(), topic, part, -1);
        assert_eq!(
            err, NONE,
            "ListOffsets latest for partition {part} after restart"
        );
        let max_acked = acked_at
            .keys()
            .filter(|(p, _)| *p == part)
            .map(|(_, o)| *o)
            .max()
            .unwrap_or(-1);
        assert!(
            off > max_acked,
            "partition {part}: log end {off} after restart, but offset {max_acked} was acknowledged"
        );
        let (err, _, start) = list_offsets(broker.addr(), topic, part, -2);
        assert_eq!(
            (err, start),
            (NONE, 0),
            "partition {part}: earliest offset after restart"
        );
        hw.insert(part, off);
        total_hw += off;
    }
    eprintln!("high watermarks after restart: {hw:?}");

    let msgs = consume_all(
        &broker.bootstrap(),
        topic,
        PARTITIONS,
        total_hw as usize,
        Duration::from_secs(90),
    );
    assert_eq!(
        msgs.len() as i64,
        total_hw,
        "consumed messages vs. sum of high watermarks {hw:?}"
    );

    let mut seen_payloads: HashSet<String> = HashSet::new();
    let mut stored: HashMap<(i32, i64), String> = HashMap::new();
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    let mut last_seq: HashMap<i32, i64> = HashMap::new();
    for m in &msgs {
        let part = m.partition();
        let payload = String::from_utf8(m.payload().expect("null payload in log").to_vec())
            .unwrap_or_else(|_| panic!("non-UTF-8 payload at {part}/{}", m.offset()));
        let expect_off = next_offset.entry(part).or_insert(0);
        assert_eq!(
            m.offset(),
            *expect_off,
            "partition {part}: offsets must be contiguous and in order"
        );
        *expect_off += 1;
        let seq: i64 = payload
            .parse()
            .unwrap_or_else(|_| panic!("garbage payload {payload:?} at {part}/{}", m.offset()));
        assert_eq!(
            seq % PARTITIONS as i64,
            part as i64,
            "payload {payload} found in the wrong partition {part}"
        );
        if let Some(prev) = last_seq.insert(part, seq) {
            assert!(
                prev < seq,
                "partition {part}: payload {seq} after {prev} (out of order) at offset {}",
                m.offset()
            );
        }
        assert!(
            seen_payloads.insert(payload.clone()),
            "payload {payload} appears twice (second at {part}/{})",
            m.offset()
        );
        stored.insert((part, m.offset()), payload);
    }
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    for ((part, off), payload) in &acked_at {
        match stored.get(&(*part, *off)) {
            None => missing.push((*part, *off, payload.clone())),
            Some(s) if s != payload => wrong.push((*part, *off, payload.clone(), s.clone())),
            Some(_) => {}
        }
    }
    missing.sort();
    wrong.sort();
    assert!(
        missing.is_empty() && wrong.is_empty(),
        "{} acknowledged messages lost (first: {:?}), {} at a different position (first: acked {:?})",
        missing.len(),
        missing.first(),
        wrong.len(),
        wrong.first()
    );
    eprintln!(
        "verified {} acknowledged messages; {} unacknowledged ones also survived",
        acked_at.len(),
        msgs.len() - acked_at.len()
    );

    // The restarted broker appends after the recovered log end.
    let p2 = producer(&broker.bootstrap(), &[("acks", "all")]);
    for part in 0..PARTITIONS {
        let v = format!("after-restart-{part}");
        send_retry(
            &p2,
            BaseRecord::to(topic).partition(part).payload(v.as_bytes()),
        );
    }
    flush(&p2, Duration::from_secs(30));
    for d in p2.context().results.lock().unwrap().iter() {
        assert!(d.error.is_none(), "produce after restart failed: {d:?}");
        assert_eq!(
            d.offset, hw[&d.partition],
            "first offset after restart in partition {}",
            d.partition
        );
    }
}

/// A group commit is one write that is durable when it completes, with no fdatasync after
/// it: that holds only while every WAL segment is open with O_DSYNC (and O_DIRECT). A kill -9
/// cannot show a missing flag (the page cache survives it), so the flags are read from the
/// kernel's view of the broker's open files.
#[test]
fn wal_segments_are_open_for_durable_direct_writes() {
    let broker = Broker::start(2);
    create_topic(broker.addr(), "flags", 2);
    let pid = broker.pid().expect("broker pid");
    let mut segments = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fd dir") {
        let entry = entry.expect("fd entry");
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue; // closed meanwhile
        };
        if target.extension().is_none_or(|e| e != "wal") {
            continue;
        }
        let fdinfo = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))
        .expect("fdinfo");
        let flags = fdinfo
            .lines()
            .find_map(|line| line.strip_prefix("flags:"))
            .and_then(|octal| i32::from_str_radix(octal.trim(), 8).ok())
            .expect("flags line");
        assert_eq!(flags & libc::O_DSYNC, libc::O_DSYNC, "{target:?}: O_DSYNC");
        assert_eq!(
            flags & libc::O_DIRECT,
            libc::O_DIRECT,
            "{target:?}: O_DIRECT"
        );
        segments += 1;
    }
    assert!(segments >= 2, "each of the 2 shards has a WAL segment open");
}
