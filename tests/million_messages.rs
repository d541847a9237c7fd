//! A million acknowledged messages (acks=all, 100 bytes each, four partitions over two
//! shards), a clean restart, and every one of them read back: none lost, none duplicated,
//! each at its place in its partition's order.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

const TOTAL: usize = 1_000_000;
const PARTITIONS: usize = 4;
const MESSAGE_BYTES: usize = 100;

#[test]
fn a_million_messages_survive_a_restart_exactly_once_in_order() {
    let mut broker = Broker::start(2);
    let topic = "million";
    create_topic(broker.addr(), topic, PARTITIONS as i32);
    let producer = producer(
        &broker.bootstrap(),
        &[
            ("acks", "all"),
            ("linger.ms", "5"),
            ("batch.num.messages", "10000"),
            ("queue.buffering.max.messages", "200000"),
        ],
    );
    for n in 0..TOTAL {
        let payload = format!("{n:0width$}", width = MESSAGE_BYTES);
        let record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition((n % PARTITIONS) as i32)
            .payload(payload.as_bytes());
        send_retry(&producer, record);
    }
    flush(&producer, Duration::from_secs(120));
    let context = producer.context();
    assert_eq!(
        context.err_count.load(Ordering::SeqCst),
        0,
        "failed deliveries"
    );
    assert_eq!(context.ok_count.load(Ordering::SeqCst), TOTAL);
    drop(producer);

    let status = broker.terminate();
    assert!(status.success(), "SIGTERM exit: {status}");
    broker.restart();

    let consumer = consumer(
        &broker.bootstrap(),
        &[("fetch.message.max.bytes", "4194304")],
    );
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, partition as i32, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    // Message n sits on partition n % 4 at offset n / 4: check each as it arrives.
    let mut next: Vec<usize> = (0..PARTITIONS).collect();
    let mut received = 0usize;
    let deadline = Instant::now() + Duration::from_secs(180);
    while received < TOTAL {
        assert!(
            Instant::now() < deadline,
            "only {received} of {TOTAL} messages came back; next expected per partition {next:?}"
        );
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = result.expect("consume");
        let partition = message.partition() as usize;
        let payload = message.payload().expect("payload");
        let n: usize = std::str::from_utf8(payload)
            .ok()
            .and_then(|text| text.parse().ok())
            .expect("a sequence number");
        assert_eq!(
            n, next[partition],
            "partition {partition}: lost or duplicated"
        );
        assert_eq!(
            message.offset(),
            (n / PARTITIONS) as i64,
            "offset of message {n}"
        );
        next[partition] += PARTITIONS;
        received += 1;
    }
    // And nothing after them.
    for partition in 0..PARTITIONS {
        let (error, _, end) = list_offsets(broker.addr(), topic, partition as i32, -1);
        assert_eq!(
            (error, end),
            (NONE, (TOTAL / PARTITIONS) as i64),
            "partition {partition}"
        );
    }
}
