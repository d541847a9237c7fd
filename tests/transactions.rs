//! Transactions with librdkafka's transactional producer: committed and aborted transactions
//! interleaved over several partitions (read_committed consumers see exactly the committed
//! records, read_uncommitted ones all), a second instance with the same transactional id
//! fences the first, and a broker `kill -9` in the middle of a transaction leaves it aborted
//! while an acknowledged commit stays committed.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const PARTITIONS: i32 = 4;
const TIMEOUT: Duration = Duration::from_secs(30);

fn transactional(bootstrap: &str, id: &str) -> BaseProducer<DeliveryContext> {
    let producer = producer(
        bootstrap,
        &[("transactional.id", id), ("enable.idempotence", "true")],
    );
    producer
        .init_transactions(TIMEOUT)
        .expect("init transactions");
    producer
}

/// One transaction of `count` records named `{tag}-{i}` over the partitions.
fn send_all(producer: &BaseProducer<DeliveryContext>, topic: &str, tag: &str, count: usize) {
    for i in 0..count {
        let payload = format!("{tag}-{i}");
        send_retry(
            producer,
            BaseRecord::to(topic)
                .partition((i % PARTITIONS as usize) as i32)
                .payload(payload.as_bytes()),
        );
    }
}

fn payloads(messages: &[OwnedMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
        .collect()
}

fn read(bootstrap: &str, topic: &str, expected: usize, isolation: &str) -> Vec<String> {
    read_within(bootstrap, topic, expected, isolation, TIMEOUT)
}

/// Reads from the beginning until `expected` records arrived or `timeout` passed.
fn read_within(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    isolation: &str,
    timeout: Duration,
) -> Vec<String> {
    payloads(&consume_with(
        bootstrap,
        topic,
        PARTITIONS,
        expected,
        timeout,
        &[("isolation.level", isolation)],
    ))
}

/// Every record of `tags`, `count` each.
fn expected(tags: &[&str], count: usize) -> BTreeSet<String> {
    tags.iter()
        .flat_map(|tag| (0..count).map(move |i| format!("{tag}-{i}")))
        .collect()
}

fn assert_in_order(messages: &[String]) {
    // Within a partition, records of one transaction keep their order.
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for payload in messages {
        let (tag, i) = payload.rsplit_once('-').expect("tag-i");
        let i: usize = i.parse().expect("number");
        let key = format!("{tag}/{}", i % PARTITIONS as usize);
        if let Some(previous) = last.insert(key, i) {
            assert!(previous < i, "{payload} after {previous}");
        }
    }
}

#[test]
fn read_committed_sees_exactly_the_committed_transactions() {
    let broker = Broker::start_with(2, &["--default-partitions", "4"], None);
    let bootstrap = broker.bootstrap();
    let topic = "ledger";
    let producer = transactional(&bootstrap, "tx-ledger");
    let mut committed = Vec::new();
    let mut all = Vec::new();
    for t in 0..6 {
        let tag = format!("t{t}");
        producer.begin_transaction().expect("begin");
        send_all(&producer, topic, &tag, 40);
        if t % 2 == 0 {
            producer.commit_transaction(TIMEOUT).expect("commit");
            committed.push(tag.clone());
        } else {
            // librdkafka wants the delivery reports served before an abort.
            producer.flush(TIMEOUT).expect("flush");
            producer.abort_transaction(TIMEOUT).expect("abort");
        }
        all.push(tag);
    }
    let committed: Vec<&str> = committed.iter().map(String::as_str).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();

    let seen = read(&bootstrap, topic, 120, "read_committed");
    assert_eq!(seen.len(), 120, "{seen:?}");
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        expected(&committed, 40)
    );
    assert_in_order(&seen);

    let seen = read(&bootstrap, topic, 240, "read_uncommitted");
    assert_eq!(seen.len(), 240);
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        expected(&all, 40)
    );

    // An open transaction holds read_committed consumers back; its commit releases them.
    producer.begin_transaction().expect("begin");
    send_all(&producer, topic, "open", 8);
    producer.flush(TIMEOUT).expect("flush");
    // Waits (up to TIMEOUT) for the 120 committed records, then 500 ms more: the open
    // transaction's records, flushed before the read, would arrive with them if not held back.
    let held_back = read(&bootstrap, topic, 120, "read_committed");
    assert_eq!(held_back.len(), 120, "{held_back:?}");
    producer.commit_transaction(TIMEOUT).expect("commit");
    assert_eq!(read(&bootstrap, topic, 128, "read_committed").len(), 128);
}

#[test]
fn a_new_instance_fences_the_old_one() {
    let broker = Broker::start_with(1, &["--default-partitions", "4"], None);
    let bootstrap = broker.bootstrap();
    let topic = "fenced";
    let old = transactional(&bootstrap, "tx-fence");
    old.begin_transaction().expect("begin");
    send_all(&old, topic, "old", 8);
    old.flush(TIMEOUT).expect("flush");

    // The new instance's InitProducerId aborts the old one's transaction and bumps the epoch.
    let new = transactional(&bootstrap, "tx-fence");
    let refused = old.commit_transaction(TIMEOUT);
    assert!(
        refused.is_err(),
        "the old instance committed after being fenced"
    );
    new.begin_transaction().expect("begin");
    send_all(&new, topic, "new", 8);
    new.commit_transaction(TIMEOUT).expect("commit");

    let seen = read(&bootstrap, topic, 8, "read_committed");
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        expected(&["new"], 8)
    );
}

#[test]
fn a_crash_mid_transaction_aborts_it_and_an_acknowledged_commit_stays() {
    let mut broker = Broker::start_with(2, &["--default-partitions", "4"], None);
    let bootstrap = broker.bootstrap();
    let topic = "crash";
    let producer = transactional(&bootstrap, "tx-crash");
    producer.begin_transaction().expect("begin");
    send_all(&producer, topic, "done", 20);
    producer.commit_transaction(TIMEOUT).expect("commit");
    producer.begin_transaction().expect("begin");
    send_all(&producer, topic, "cut", 20);
    producer.flush(TIMEOUT).expect("flush");

    broker.kill9();
    broker.restart();
    drop(producer);

    // The restarted producer's InitProducerId aborts what the crash interrupted.
    let producer = transactional(&bootstrap, "tx-crash");
    producer.begin_transaction().expect("begin");
    send_all(&producer, topic, "after", 20);
    producer.commit_transaction(TIMEOUT).expect("commit");

    let seen = read(&bootstrap, topic, 40, "read_committed");
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        expected(&["done", "after"], 20)
    );
    assert_eq!(seen.len(), 40);
    let all = read(&bootstrap, topic, 60, "read_uncommitted");
    assert_eq!(all.len(), 60);
}

/// Consume-transform-produce in one transaction per batch: the outputs and the consumed
/// offsets commit together. The broker is killed in the middle of a transaction; after the
/// restart a new instance (same transactional id, same group) carries on from the committed
/// offsets. Every input appears exactly once in the read_committed output.
#[test]
fn read_process_write_is_exactly_once_across_a_kill_9() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::ClientConfig;
    const INPUTS: usize = 300;
    let mut broker = Broker::start_with(
        2,
        &[
            "--default-partitions",
            "4",
            "--group-initial-rebalance-delay-ms",
            "100",
            "--group-min-session-timeout-ms",
            "1000",
        ],
        None,
    );
    let bootstrap = broker.bootstrap();
    let plain = producer(&bootstrap, &[("acks", "all")]);
    send_all(&plain, "inputs", "in", INPUTS);
    flush(&plain, TIMEOUT);

    let start = |bootstrap: &str| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "transformer")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", "3000")
            .create()
            .expect("consumer");
        consumer.subscribe(&["inputs"]).expect("subscribe");
        (consumer, transactional(bootstrap, "tx-transformer"))
    };
    // One transaction: up to 25 inputs polled, transformed, written with their offsets.
    let step = |consumer: &BaseConsumer, producer: &BaseProducer<DeliveryContext>| -> usize {
        let mut batch = Vec::new();
        while batch.len() < 25 {
            match consumer.poll(Duration::from_millis(300)) {
                Some(Ok(message)) => batch.push(message.detach()),
                _ => break,
            }
        }
        if batch.is_empty() {
            return 0;
        }
        producer.begin_transaction().expect("begin");
        for message in &batch {
            let output = format!(
                "out-{}",
                String::from_utf8_lossy(message.payload().unwrap_or_default())
            );
            send_retry(
                producer,
                BaseRecord::to("outputs")
                    .partition(message.partition())
                    .payload(output.as_bytes()),
            );
        }
        let positions = consumer.position().expect("position");
        let metadata = consumer.group_metadata().expect("group metadata");
        producer
            .send_offsets_to_transaction(&positions, &metadata, TIMEOUT)
            .expect("offsets in the transaction");
        producer.commit_transaction(TIMEOUT).expect("commit");
        batch.len()
    };

    let (consumer, producer) = start(&bootstrap);
    let mut done = 0;
    while done < INPUTS / 3 {
        done += step(&consumer, &producer);
    }
    // A transaction in flight when the broker dies: outputs written, nothing committed.
    producer.begin_transaction().expect("begin");
    send_all(&producer, "outputs", "orphan", 8);
    producer.flush(TIMEOUT).expect("flush");
    broker.kill9();
    broker.restart();
    drop(producer);
    drop(consumer);

    // The old member's session (3 s) must run out before the group rebalances to the new one.
    let (consumer, producer) = start(&bootstrap);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while done < INPUTS {
        assert!(
            std::time::Instant::now() < deadline,
            "processed {done} of {INPUTS}"
        );
        done += step(&consumer, &producer);
    }
    drop(consumer);

    let outputs = read(&bootstrap, "outputs", INPUTS, "read_committed");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for output in &outputs {
        *counts.entry(output.clone()).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(duplicated.is_empty(), "written twice: {duplicated:?}");
    let wanted: BTreeSet<String> = (0..INPUTS).map(|i| format!("out-in-{i}")).collect();
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), wanted);
}

#[test]
fn transactions_producers_and_log_dirs_are_described() {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    let broker = Broker::start_with(1, &["--default-partitions", "4"], None);
    let bootstrap = broker.bootstrap();
    let producer = transactional(&bootstrap, "tx-described");
    producer.begin_transaction().expect("begin");
    send_all(&producer, "described", "d", 8);
    producer.commit_transaction(TIMEOUT).expect("commit");
    producer.begin_transaction().expect("begin");
    send_all(&producer, "described", "open", 4);
    producer.flush(TIMEOUT).expect("flush");
    let addr = broker.addr();

    let id = TransactionalId(StrBytes::from_static_str("tx-described"));
    let request = DescribeTransactionsRequest::default().with_transactional_ids(vec![id]);
    let described: DescribeTransactionsResponse = typed_request(addr, &request, 0);
    let state = &described.transaction_states[0];
    assert_eq!(state.error_code, 0);
    assert_eq!(state.transaction_state.as_str(), "Ongoing");
    assert_eq!(state.topics[0].partitions.len(), 4);
    let producer_id = state.producer_id;

    let listed: ListTransactionsResponse =
        typed_request(addr, &ListTransactionsRequest::default(), 0);
    assert!(listed
        .transaction_states
        .iter()
        .any(|t| t.transactional_id.as_str() == "tx-described" && t.producer_id == producer_id));

    let request = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
        .with_name(TopicName(StrBytes::from_static_str("described")))
        .with_partition_indexes(vec![0])]);
    let producers: DescribeProducersResponse = typed_request(addr, &request, 0);
    let partition = &producers.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    let active = &partition.active_producers[0];
    assert_eq!(active.producer_id, producer_id);
    assert!(active.current_txn_start_offset > 0, "{active:?}");

    let request =
        DescribeLogDirsRequest::default()
            .with_topics(Some(vec![DescribableLogDirTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("described")))
                .with_partitions(vec![0, 1, 2, 3])]));
    let dirs: DescribeLogDirsResponse = typed_request(addr, &request, 4);
    let dir = &dirs.results[0];
    assert!(dir.total_bytes > 0 && dir.usable_bytes > 0);
    let sizes: Vec<i64> = dir.topics[0]
        .partitions
        .iter()
        .map(|p| p.partition_size)
        .collect();
    assert_eq!(sizes.len(), 4);
    assert!(sizes.iter().all(|&s| s > 0), "{sizes:?}");
    producer.abort_transaction(TIMEOUT).expect("abort");
}
