//! Controlled shutdown under load: SIGTERM while a producer is busy. The broker stops taking
//! requests, finishes those in flight, syncs and exits 0 in bounded time; after a restart
//! every acknowledged message is at its acknowledged offset.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;

#[test]
fn sigterm_under_load_exits_cleanly_and_keeps_acknowledged_data() {
    let mut broker = Broker::start(2);
    let topic = "busy";
    create_topic(broker.addr(), topic, 4);
    let producer = Arc::new(producer(
        &broker.bootstrap(),
        &[
            ("acks", "all"),
            ("linger.ms", "1"),
            ("message.timeout.ms", "5000"),
        ],
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let producer = producer.clone();
        std::thread::spawn(move || {
            let mut sent = 0usize;
            while !stop.load(Ordering::SeqCst) && sent < 200_000 {
                let value = format!("busy-{sent}");
                let record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
                    .partition((sent % 4) as i32)
                    .payload(value.as_bytes());
                if producer.send(record).is_ok() {
                    sent += 1;
                }
                producer.poll(Duration::ZERO);
            }
        })
    };
    let started = Instant::now();
    while producer.context().ok_count.load(Ordering::SeqCst) < 5_000 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "producer never got going"
        );
        producer.poll(Duration::from_millis(5));
    }
    let terminated = Instant::now();
    let status = broker.terminate();
    let shutdown = terminated.elapsed();
    stop.store(true, Ordering::SeqCst);
    sender.join().expect("sender thread");
    let _ = producer.flush(Duration::from_secs(10));
    assert!(
        status.success(),
        "SIGTERM under load exits 0, got {status}\n{}",
        broker.log_tail(40)
    );
    eprintln!("shutdown under load took {shutdown:?}");
    assert!(
        shutdown < Duration::from_secs(20),
        "shutdown took {shutdown:?}"
    );

    let acknowledged: Vec<Delivery> = producer
        .context()
        .results
        .lock()
        .expect("deliveries")
        .iter()
        .filter(|d| d.error.is_none())
        .cloned()
        .collect();
    assert!(
        acknowledged.len() >= 5_000,
        "acknowledged before the stop: {}",
        acknowledged.len()
    );
    broker.restart();
    let expected_end: HashMap<i32, i64> =
        acknowledged.iter().fold(HashMap::new(), |mut ends, d| {
            let end = ends.entry(d.partition).or_insert(0);
            *end = (*end).max(d.offset + 1);
            ends
        });
    let total: i64 = (0..4)
        .map(|p| list_offsets(broker.addr(), topic, p, -1).2)
        .sum();
    let messages = consume_all(
        &broker.bootstrap(),
        topic,
        4,
        total as usize,
        Duration::from_secs(60),
    );
    let stored: HashMap<(i32, i64), Vec<u8>> = messages
        .iter()
        .map(|m| {
            (
                (m.partition(), m.offset()),
                m.payload().unwrap_or_default().to_vec(),
            )
        })
        .collect();
    for d in &acknowledged {
        let payload = stored.get(&(d.partition, d.offset));
        assert_eq!(
            payload,
            d.payload.as_ref(),
            "acknowledged {}/{} survives the restart",
            d.partition,
            d.offset
        );
    }
    for (partition, end) in expected_end {
        assert!(
            list_offsets(broker.addr(), topic, partition, -1).2 >= end,
            "partition {partition} end"
        );
    }
}
