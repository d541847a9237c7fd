//! A 3-node chronik cluster of real processes, driven by librdkafka: metadata before the
//! first election, admin requests on any node, leader kills under an idempotent acks=all
//! producer (exactly once, byte-identical replicas, leadership balanced again after the
//! restarts), a controlled shutdown under load, a leader cut off from its followers, and
//! garbage on the peer port.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::*;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord};

const LEADER_NOT_AVAILABLE: i16 = 5;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const INVALID_REPLICATION_FACTOR: i16 = 38;

/// CreateTopics on node `index` with a replication factor, retried while the cluster has no
/// controller yet (retriable errors); returns the final error code.
fn create_replicated(
    cluster: &Cluster,
    index: usize,
    topic: &str,
    partitions: i32,
    replication: i16,
) -> i16 {
    create_with_configs(cluster, index, topic, partitions, replication, &[])
}

fn create_with_configs(
    cluster: &Cluster,
    index: usize,
    topic: &str,
    partitions: i32,
    replication: i16,
    configs: &[(&str, &str)],
) -> i16 {
    let addr = cluster.addr(index);
    let version = pick_version(addr, ApiKey::CreateTopics, (2, 7));
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name((*k).to_string().into())
                .with_value(Some((*v).to_string().into()))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(tn(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(replication)
            .with_configs(configs)])
        .with_timeout_ms(10_000);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response: CreateTopicsResponse = typed_request(addr, &request, version);
        let code = response.topics[0].error_code;
        // REQUEST_TIMED_OUT / NOT_CONTROLLER: no controller leader yet.
        if !matches!(code, 7 | 41) || Instant::now() > deadline {
            return code;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Produces `total` numbered messages round-robin over `partitions` with an idempotent
/// acks=all producer, calling `at(acknowledged)` between sends, and returns once all are
/// acknowledged. Asserts no delivery ever fails.
fn produce_numbered(
    cluster: &mut Cluster,
    topic: &str,
    partitions: i32,
    total: usize,
    mut at: impl FnMut(&mut Cluster, usize),
) {
    let producer = producer(
        &cluster.bootstrap(),
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "2"),
            ("message.timeout.ms", "120000"),
            ("reconnect.backoff.max.ms", "200"),
            ("retry.backoff.max.ms", "200"),
            ("topic.metadata.refresh.interval.ms", "1000"),
        ],
    );
    let delivered = producer.context().ok_count.clone();
    let failed = producer.context().err_count.clone();
    for n in 0..total {
        let payload = format!("{n:08}");
        let record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition(n as i32 % partitions)
            .payload(payload.as_bytes());
        send_retry(&producer, record);
        let waiting_since = Instant::now();
        while (n + 1).saturating_sub(delivered.load(Ordering::SeqCst)) > 2_000 {
            producer.poll(Duration::from_millis(1));
            let errors = failed.load(Ordering::SeqCst);
            if errors > 0 {
                let results = producer.context().results.lock().expect("lock");
                let first = results.iter().find(|d| d.error.is_some()).cloned();
                panic!("{errors} deliveries failed, first: {first:?}");
            }
            assert!(
                waiting_since.elapsed() < Duration::from_secs(60),
                "no acknowledgements for 60 s\n{}",
                cluster.logs(30)
            );
        }
        at(cluster, delivered.load(Ordering::SeqCst));
    }
    flush(&producer, Duration::from_secs(120));
    assert_eq!(failed.load(Ordering::SeqCst), 0, "deliveries failed");
    assert_eq!(delivered.load(Ordering::SeqCst), total);
}

/// Every numbered message 0..total is stored exactly once, in send order per partition.
fn assert_exactly_once(cluster: &Cluster, topic: &str, partitions: i32, total: usize) {
    assert_exactly_once_besides(cluster, topic, partitions, total, 0);
}

/// `assert_exactly_once`, where up to `unacknowledged` more messages named `lost-N` (whose
/// producer saw no acknowledgement) may be stored, each at most once.
fn assert_exactly_once_besides(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    total: usize,
    unacknowledged: usize,
) {
    let messages = consume_all(
        &cluster.bootstrap(),
        topic,
        partitions,
        total,
        Duration::from_secs(60),
    );
    let mut copies: HashMap<usize, usize> = HashMap::new();
    let mut last_on_partition: HashMap<i32, usize> = HashMap::new();
    let mut unacknowledged_seen = BTreeSet::new();
    for message in &messages {
        let text = String::from_utf8_lossy(message.payload().expect("payload")).to_string();
        if text.starts_with("lost-") {
            assert!(
                unacknowledged_seen.insert(text.clone()),
                "{text} stored twice"
            );
            continue;
        }
        let n: usize = text.parse().expect("numbered");
        *copies.entry(n).or_default() += 1;
        let previous = last_on_partition.insert(message.partition(), n);
        assert!(
            previous.is_none_or(|p| p < n),
            "{n} stored after {previous:?}"
        );
    }
    let duplicated: Vec<_> = copies.iter().filter(|(_, &c)| c > 1).take(10).collect();
    assert!(duplicated.is_empty(), "stored twice: {duplicated:?}");
    let missing: Vec<_> = (0..total)
        .filter(|n| !copies.contains_key(n))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "acknowledged but missing: {missing:?}");
    assert!(unacknowledged_seen.len() <= unacknowledged);
    assert_eq!(messages.len(), total + unacknowledged_seen.len());
}

/// Waits until every replica of every partition holds the same committed log (the same
/// high watermark), then asserts they are byte for byte identical.
fn assert_replicas_identical(cluster: &Cluster, topic: &str, partitions: i32) {
    for partition in 0..partitions {
        let mut logs = Vec::new();
        let converged = wait_until(Duration::from_secs(30), || {
            logs = (0..cluster.nodes.len())
                .map(|index| cluster.replica_log(index, topic, partition))
                .collect();
            logs.iter().all(|l| l.0 == logs[0].0)
        });
        let watermarks: Vec<i64> = logs.iter().map(|l| l.0).collect();
        assert!(
            converged,
            "partition {partition}: watermarks {watermarks:?}"
        );
        assert!(watermarks[0] > 0, "partition {partition} is empty");
        for (index, (_, log)) in logs.iter().enumerate() {
            assert!(
                log == &logs[0].1,
                "partition {partition}: node {} holds other bytes than node 1 ({} vs {})",
                index + 1,
                log.len(),
                logs[0].1.len()
            );
        }
    }
}

#[test]
fn brokers_are_listed_before_the_first_election_and_admin_works_on_any_node() {
    let mut cluster = Cluster::configure(3, 1, &[]);
    cluster.start_node(0);
    // Alone, node 1 can elect nothing; it still names every broker, and says a topic's
    // leader is not available (retriable) rather than that the topic does not exist.
    let response = metadata(cluster.addr(0), Some(&["early"]), false);
    let mut brokers: Vec<(i32, i32)> = response
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.port))
        .collect();
    brokers.sort_unstable();
    let expected: Vec<(i32, i32)> = cluster
        .nodes
        .iter()
        .map(|n| (n.id as i32, i32::from(n.kafka_port)))
        .collect();
    assert_eq!(brokers, expected);
    assert_eq!(response.topics[0].error_code, LEADER_NOT_AVAILABLE);

    cluster.start_node(1);
    cluster.start_node(2);
    // CreateTopics works on every node (forwarded to the controller leader), and the topic
    // is usable through the node that was asked as soon as it answers.
    for (index, topic) in ["on-1", "on-2", "on-3"].iter().enumerate() {
        assert_eq!(
            create_replicated(&cluster, index, topic, 3, 3),
            NONE,
            "{topic}"
        );
        let response = metadata(cluster.addr(index), Some(&[topic]), false);
        assert_eq!(response.topics[0].error_code, NONE);
        for partition in &response.topics[0].partitions {
            let replicas: BTreeSet<i32> = partition.replica_nodes.iter().map(|r| r.0).collect();
            assert_eq!(replicas, BTreeSet::from([1, 2, 3]));
        }
    }
    assert_eq!(
        create_replicated(&cluster, 1, "too-many", 1, 4),
        INVALID_REPLICATION_FACTOR
    );
    // Preferred leaders are spread: each node leads one of a topic's three partitions (at
    // once, or after the preferred leader takes its partition back).
    let balanced = wait_until(Duration::from_secs(20), || {
        let leaders: BTreeSet<i32> = cluster.wait_for_leaders("on-2", 3).into_iter().collect();
        leaders == BTreeSet::from([1, 2, 3])
    });
    assert!(balanced, "leaders are not spread over the nodes");

    // Garbage on a peer port closes that connection, nothing more.
    for garbage in [
        vec![0xff_u8; 64],
        b"\x00\x00\x00\x0cnot-a-frame!".to_vec(),
        (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect(),
    ] {
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], cluster.nodes[0].peer_port));
        if let Ok(mut stream) = std::net::TcpStream::connect(peer) {
            let _ = stream.write_all(&garbage);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    produce_numbered(&mut cluster, "on-1", 3, 300, |_, _| {});
    assert_exactly_once(&cluster, "on-1", 3, 300);

    // min.insync.replicas=3: once a replica is gone, acks=all is refused with a retriable
    // error instead of being committed by two; acks=1 still goes through.
    let strict = [("min.insync.replicas", "3")];
    assert_eq!(
        create_with_configs(&cluster, 0, "strict", 1, 3, &strict),
        NONE
    );
    let leader = cluster.index_of(cluster.wait_for_leaders("strict", 1)[0]);
    let leader_addr = cluster.addr(leader);
    let produce = |acks: i16| {
        let batch = simple_batch("strict", 1, now_ms());
        produce_result(&produce_raw(leader_addr, "strict", 0, batch, acks)).0
    };
    // A new partition's followers count as in sync once the leader has heard them replicate
    // (a round trip after the election); until then acks=all is refused, retriably.
    let accepted = wait_until(Duration::from_secs(15), || produce(-1) == NONE);
    assert!(accepted, "acks=all refused with every replica up");
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    cluster.kill9(follower);
    let refused = wait_until(Duration::from_secs(15), || {
        produce(-1) == NOT_ENOUGH_REPLICAS
    });
    assert!(refused, "acks=all accepted with a replica gone");
    assert_eq!(produce(1), NONE);
}

#[test]
fn killing_leaders_loses_nothing_and_replicas_converge() {
    let mut cluster = Cluster::start(3, 1);
    let topic = "failover";
    const PARTITIONS: i32 = 3;
    const TOTAL: usize = 30_000;
    assert_eq!(create_replicated(&cluster, 0, topic, PARTITIONS, 3), NONE);
    cluster.wait_for_leaders(topic, PARTITIONS as usize);
    // Kill the leader of partition k at a quarter, half and three quarters of the run, and
    // restart it once 2,000 more messages were acknowledged without it.
    let mut kills: Vec<(usize, i32)> = (1..=3)
        .rev()
        .map(|k| (TOTAL * k / 4, k as i32 - 1))
        .collect();
    let mut down: Option<(usize, usize)> = None;
    produce_numbered(
        &mut cluster,
        topic,
        PARTITIONS,
        TOTAL,
        |cluster, acknowledged| {
            if let Some((index, since)) = down {
                if acknowledged >= since + 2_000 {
                    eprintln!("restarting node {} at {acknowledged}", index + 1);
                    cluster.start_node(index);
                    down = None;
                }
                return;
            }
            if let Some(&(at, partition)) = kills.last() {
                if acknowledged >= at {
                    let leaders = cluster.wait_for_leaders(topic, PARTITIONS as usize);
                    let index = cluster.index_of(leaders[partition as usize]);
                    eprintln!(
                        "killing node {} (leads partition {partition}) at {acknowledged}",
                        index + 1
                    );
                    cluster.kill9(index);
                    down = Some((index, acknowledged));
                    kills.pop();
                }
            }
        },
    );
    assert!(kills.is_empty(), "the run ended before every kill");
    if let Some((index, _)) = down {
        cluster.start_node(index);
    }
    assert_exactly_once(&cluster, topic, PARTITIONS, TOTAL);
    assert_replicas_identical(&cluster, topic, PARTITIONS);
    // The restarted nodes caught up and took their preferred partitions back.
    let balanced = wait_until(Duration::from_secs(30), || {
        let leaders: BTreeSet<i32> = cluster
            .wait_for_leaders(topic, PARTITIONS as usize)
            .into_iter()
            .collect();
        leaders == BTreeSet::from([1, 2, 3])
    });
    assert!(balanced, "leadership is not balanced again");
}

#[test]
fn a_controlled_shutdown_under_load_shows_clients_only_retriable_errors() {
    let mut cluster = Cluster::start(3, 1);
    let topic = "sigterm";
    const TOTAL: usize = 12_000;
    assert_eq!(create_replicated(&cluster, 0, topic, 3, 3), NONE);
    cluster.wait_for_leaders(topic, 3);
    let mut stopped = None;
    produce_numbered(&mut cluster, topic, 3, TOTAL, |cluster, acknowledged| {
        if stopped.is_none() && acknowledged >= TOTAL / 3 {
            let leaders = cluster.wait_for_leaders(topic, 3);
            let index = cluster.index_of(leaders[0]);
            let status = cluster.terminate(index);
            assert!(status.success(), "SIGTERM exit status {status}");
            stopped = Some((index, acknowledged));
        } else if let Some((index, at)) = stopped {
            if acknowledged >= at + 3_000 && cluster.pid(index).is_none() {
                cluster.start_node(index);
            }
        }
    });
    assert_exactly_once(&cluster, topic, 3, TOTAL);
    assert_replicas_identical(&cluster, topic, 3);
}

/// Sends `count` messages `PREFIX-N` to partition 0 through `bootstrap` with `acks`, without
/// retries, and returns how many were acknowledged within `timeout_ms`.
fn produce_unretried(
    bootstrap: &str,
    topic: &str,
    acks: &str,
    prefix: &str,
    count: usize,
    timeout_ms: u64,
) -> usize {
    let producer = unretried_producer(bootstrap, acks, timeout_ms);
    send_unretried(&producer, topic, prefix, count, timeout_ms)
}

/// A producer with `acks` and no retries, whose messages time out after `timeout_ms`.
fn unretried_producer(
    bootstrap: &str,
    acks: &str,
    timeout_ms: u64,
) -> BaseProducer<DeliveryContext> {
    let timeout = timeout_ms.to_string();
    producer(
        bootstrap,
        &[
            ("acks", acks),
            ("message.timeout.ms", &timeout),
            ("retries", "0"),
        ],
    )
}

/// Sends `count` messages `PREFIX-N` to partition 0 with `producer` and returns how many were
/// acknowledged within `timeout_ms`.
fn send_unretried(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    prefix: &str,
    count: usize,
    timeout_ms: u64,
) -> usize {
    for n in 0..count {
        let payload = format!("{prefix}-{n}");
        let record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition(0)
            .payload(payload.as_bytes());
        send_retry(producer, record);
    }
    let _ = producer.flush(Duration::from_millis(timeout_ms + 5000));
    producer.context().ok_count.load(Ordering::SeqCst)
}

#[test]
fn a_leader_cut_off_from_its_followers_cannot_acknowledge() {
    let mut cluster = Cluster::start(3, 1);
    let topic = "cut-off";
    assert_eq!(create_replicated(&cluster, 0, topic, 1, 3), NONE);
    produce_numbered(&mut cluster, topic, 1, 100, |_, _| {});
    let old_leader = cluster.index_of(cluster.wait_for_leaders(topic, 1)[0]);
    let followers: Vec<usize> = (0..3).filter(|&i| i != old_leader).collect();
    // The acks=1 producer is made and learns the partition's leader before the followers
    // stop: the leader steps down within 2-3 s of losing them, too short for a bootstrap too.
    let leader_address = format!("127.0.0.1:{}", cluster.nodes[old_leader].kafka_port);
    let acks1 = unretried_producer(&leader_address, "1", 5000);
    acks1
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata for the acks=1 producer");
    for &index in &followers {
        cluster.signal(index, libc::SIGSTOP);
    }
    // acks=1 is the leader's own durable write: answered even alone, before check-quorum
    // makes it step down (and may be lost later, as in Kafka).
    let acknowledged = send_unretried(&acks1, topic, "lost-acks1", 5, 5000);
    drop(acks1);
    assert_eq!(
        acknowledged, 5,
        "acks=1 is answered by the leader's own durable write"
    );
    // The leader alone cannot commit: nothing sent to it now may be acknowledged.
    let acknowledged = produce_unretried(&leader_address, topic, "all", "lost", 20, 3000);
    assert_eq!(acknowledged, 0, "acknowledged while cut off");
    // The followers come back while the old leader is away: they elect one of themselves
    // and commit new data; then the old leader returns and follows. (What the old leader
    // sent before the followers stopped may still sit in their sockets' buffers, so its
    // unacknowledged batches may survive; a tail that never reached anyone is discarded,
    // which the byte comparison of the replicas covers.)
    cluster.signal(old_leader, libc::SIGSTOP);
    for &index in &followers {
        cluster.signal(index, libc::SIGCONT);
    }
    let new_leader = wait_until(Duration::from_secs(30), || {
        cluster
            .leaders(followers[0], topic)
            .first()
            .is_some_and(|&l| l > 0 && followers.contains(&cluster.index_of(l)))
    });
    assert!(
        new_leader,
        "no new leader among the followers\n{}",
        cluster.logs(20)
    );
    let survivors = producer(
        &followers
            .iter()
            .map(|&i| format!("127.0.0.1:{}", cluster.nodes[i].kafka_port))
            .collect::<Vec<_>>()
            .join(","),
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    for n in 100..200 {
        let payload = format!("{n:08}");
        let record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition(0)
            .payload(payload.as_bytes());
        send_retry(&survivors, record);
    }
    flush(&survivors, Duration::from_secs(60));
    assert_eq!(survivors.context().ok_count.load(Ordering::SeqCst), 100);
    cluster.signal(old_leader, libc::SIGCONT);
    assert_exactly_once_besides(&cluster, topic, 1, 200, 25);
    assert_replicas_identical(&cluster, topic, 1);
}
