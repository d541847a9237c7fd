//! Fetch long polling: a fetch waiting at the log end is woken by new data, and an empty
//! fetch waits (roughly) max_wait_ms instead of returning at once or hanging.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

fn poll_one(c: &BaseConsumer, timeout: Duration) -> Option<(i64, Vec<u8>, Instant)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(20)) {
            Some(Ok(m)) => {
                return Some((
                    m.offset(),
                    m.payload().unwrap_or_default().to_vec(),
                    Instant::now(),
                ))
            }
            Some(Err(e)) => eprintln!("consumer error (ignored): {e}"),
            None => {}
        }
    }
    None
}

#[test]
fn waiting_consumer_is_woken_by_produce() {
    let broker = Broker::start(2);
    let bs = broker.bootstrap();
    let topic = "long-poll";
    create_topic(broker.addr(), topic, 1);
    let p = producer(&bs, &[("acks", "1"), ("linger.ms", "0")]);

    // A long max wait (librdkafka wants the socket timeout 1 s above it) keeps "woken by new
    // data" far from "waited out max wait", so the bound below can allow for a loaded machine.
    let c = consumer(
        &bs,
        &[
            ("fetch.wait.max.ms", "20000"),
            ("socket.timeout.ms", "30000"),
            ("fetch.min.bytes", "1"),
        ],
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();

    // Warm up: one message gets the consumer connected and positioned at the log end.
    send_retry(
        &p,
        BaseRecord::to(topic)
            .partition(0)
            .payload(b"warm-up".as_slice()),
    );
    flush(&p, Duration::from_secs(10));
    let first =
        poll_one(&c, Duration::from_secs(30)).expect("warm-up message not received within 30 s");
    assert_eq!((first.0, first.1.as_slice()), (0, b"warm-up".as_slice()));

    for round in 1..=3i64 {
        // The consumer is now parked in a long-poll fetch at the log end. Produce 1 s later.
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if let Some(m) = poll_one(&c, Duration::from_millis(50)) {
                panic!("unexpected message before produce: {m:?}");
            }
        }
        let v = format!("wake-{round}");
        let sent_at = Instant::now();
        send_retry(&p, BaseRecord::to(topic).partition(0).payload(v.as_bytes()));
        p.poll(Duration::ZERO);
        let got = poll_one(&c, Duration::from_secs(15));
        flush(&p, Duration::from_secs(10));
        let (off, payload, at) =
            got.unwrap_or_else(|| panic!("round {round}: message not received within 15 s"));
        let latency = at.duration_since(sent_at);
        eprintln!("round {round}: produce -> receive {latency:?}");
        assert_eq!(
            (off, payload),
            (round, v.into_bytes()),
            "round {round}: wrong message"
        );
        assert!(
            latency < Duration::from_millis(8000),
            "round {round}: a fetch waiting at the log end (fetch.wait.max.ms=20000) was not woken \
             by new data: produce -> receive took {latency:?}"
        );
    }
}

#[test]
fn raw_fetch_at_log_end_waits_then_returns_empty() {
    let broker = Broker::start(2);
    let addr = broker.addr();
    let topic = "long-poll-raw";
    create_topic(addr, topic, 1);
    let r = produce_raw(addr, topic, 0, simple_batch("lp-", 3, now_ms()), -1);
    assert_eq!(produce_result(&r), (NONE, 0), "raw produce: {r:?}");

    // At the log end with no new data: waits about max_wait_ms, then answers with no records.
    let t = Instant::now();
    let (err, hw, records) = fetch_raw(addr, topic, 0, 3, 1000, 1 << 20);
    let took = t.elapsed();
    assert_eq!(err, NONE, "fetch at log end");
    assert_eq!(hw, 3, "high watermark");
    assert!(
        parse_batches(&records).is_empty(),
        "no batches expected at the log end, got {} bytes",
        records.len()
    );
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(4000),
        "fetch at log end with max_wait_ms=1000 answered after {took:?} (expected ~1 s)"
    );

    // Data available: answers at once even with a long max wait.
    let t = Instant::now();
    let (err, _, records) = fetch_raw(addr, topic, 0, 0, 20_000, 1 << 20);
    let took = t.elapsed();
    assert_eq!(err, NONE);
    let batches = parse_batches(&records);
    assert_eq!(batches.len(), 1, "one stored batch: {batches:?}");
    assert_eq!(batches[0].record_count, 3);
    assert!(
        took < Duration::from_millis(5000),
        "fetch with data available took {took:?} (max wait 20 s)"
    );

    // A raw long poll woken by a produce from another thread.
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let res = fetch_raw(addr, "long-poll-raw", 0, 3, 20_000, 1 << 20);
        tx.send(Instant::now()).ok();
        (res, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(1000));
    let sent_at = Instant::now();
    let r = produce_raw(addr, topic, 0, simple_batch("late-", 2, now_ms()), 1);
    assert_eq!(
        produce_result(&r),
        (NONE, 3),
        "raw produce while a fetch waits: {r:?}"
    );
    let woke_at = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("waiting fetch never returned");
    let ((err, hw, records), _) = waiter.join().unwrap();
    let latency = woke_at.saturating_duration_since(sent_at);
    assert_eq!(err, NONE);
    assert_eq!(hw, 5);
    let batches = parse_batches(&records);
    assert_eq!(
        batches.len(),
        1,
        "woken fetch should return the new batch: {batches:?}"
    );
    assert_eq!(batches[0].base_offset, 3);
    assert!(
        latency < Duration::from_millis(8000),
        "woken fetch (max wait 20 s) returned {latency:?} after the produce"
    );

    // Fetch beyond the log end: OFFSET_OUT_OF_RANGE (1), promptly.
    let t = Instant::now();
    let (err, _, _) = fetch_raw(addr, topic, 0, 100, 20_000, 1 << 20);
    assert_eq!(
        err, 1,
        "fetch beyond the log end should be OFFSET_OUT_OF_RANGE"
    );
    assert!(
        t.elapsed() < Duration::from_millis(5000),
        "out-of-range fetch (max wait 20 s) took {:?}",
        t.elapsed()
    );
}
