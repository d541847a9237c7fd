//! Consumer groups with librdkafka: members share partitions without overlap, every message
//! is consumed exactly once across rebalances (a member leaves, another joins), and committed
//! offsets and membership survive `kill -9` of the broker, and of the coordinator in a cluster.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerProtocolAssignment,
    GroupId,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::BaseRecord;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

/// Group settings that keep the tests short (the defaults are Kafka's: 3 s, 6 s).
const FAST_GROUPS: &[&str] = &[
    "--group-initial-rebalance-delay-ms",
    "200",
    "--group-min-session-timeout-ms",
    "1000",
];

/// Commits the offsets stored so far before partitions are revoked, so the member that gets
/// them next starts exactly after what this one processed.
struct CommitOnRevoke;

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            let _ = consumer.commit_consumer_state(CommitMode::Sync);
        }
    }
}

/// How a member takes part in its group.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    /// The classic protocol with client-side assignors (librdkafka's default is
    /// "range,roundrobin"; "cooperative-sticky" rebalances incrementally: only moved
    /// partitions are revoked).
    Classic(&'static str),
    /// KIP-848 (`group.protocol=consumer`): the coordinator assigns, members reconcile one
    /// by one.
    Consumer,
}

const CLASSIC: Protocol = Protocol::Classic("range,roundrobin");

fn group_consumer(bootstrap: &str, group: &str) -> BaseConsumer<CommitOnRevoke> {
    group_consumer_with(bootstrap, group, CLASSIC)
}

fn group_consumer_with(
    bootstrap: &str,
    group: &str,
    protocol: Protocol,
) -> BaseConsumer<CommitOnRevoke> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    match protocol {
        Protocol::Classic(strategy) => config
            .set("partition.assignment.strategy", strategy)
            .set("session.timeout.ms", "10000"),
        // Session and heartbeat times come from the coordinator.
        Protocol::Consumer => config.set("group.protocol", "consumer"),
    };
    config
        .create_with_context(CommitOnRevoke)
        .expect("create group consumer")
}

fn produce(bootstrap: &str, topic: &str, range: std::ops::Range<usize>, partitions: i32) {
    let producer = producer(
        bootstrap,
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    for i in range {
        let payload = format!("m{i}");
        let partition = (i % partitions as usize) as i32;
        send_retry(
            &producer,
            BaseRecord::to(topic)
                .partition(partition)
                .payload(payload.as_bytes())
                .key(payload.as_bytes()),
        );
    }
    flush(&producer, Duration::from_secs(60));
    assert_eq!(producer.context().err_count.load(Ordering::SeqCst), 0);
}

/// A member in its own thread: polls, records each payload, stores its offset and commits
/// every 50 messages; on stop it commits what it stored and closes (LeaveGroup).
struct Member {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

fn start_member(
    bootstrap: &str,
    topic: &str,
    group: &str,
    seen: Arc<Mutex<Vec<String>>>,
) -> Member {
    start_member_with(bootstrap, topic, group, seen, CLASSIC)
}

fn start_member_with(
    bootstrap: &str,
    topic: &str,
    group: &str,
    seen: Arc<Mutex<Vec<String>>>,
    protocol: Protocol,
) -> Member {
    let consumer = group_consumer_with(bootstrap, group, protocol);
    consumer.subscribe(&[topic]).expect("subscribe");
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut uncommitted = 0;
        while !stopping.load(Ordering::SeqCst) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let payload = String::from_utf8_lossy(message.payload().unwrap_or_default());
                    seen.lock().expect("seen").push(payload.into_owned());
                    consumer
                        .store_offset_from_message(&message)
                        .expect("store offset");
                    uncommitted += 1;
                    if uncommitted >= 50 && commit_stored(&consumer) {
                        uncommitted = 0;
                    }
                }
                Some(Err(error)) => eprintln!("consumer error (retried): {error}"),
                None => {
                    if uncommitted > 0 && commit_stored(&consumer) {
                        uncommitted = 0;
                    }
                }
            }
        }
        // The final commit may race a rebalance too: poll (which heartbeats and learns the
        // new epoch; what it delivers is stored like the rest) and commit again, bounded.
        for attempt in 0.. {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                // NoOffset: nothing stored since the last commit.
                Ok(())
                | Err(rdkafka::error::KafkaError::ConsumerCommit(
                    rdkafka::types::RDKafkaErrorCode::NoOffset,
                )) => break,
                Err(error) if attempt < 50 && raced_a_rebalance(&error) => {
                    if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                        let payload = message.payload().unwrap_or_default();
                        seen.lock()
                            .expect("seen")
                            .push(String::from_utf8_lossy(payload).into_owned());
                        consumer
                            .store_offset_from_message(&message)
                            .expect("store offset");
                    }
                }
                Err(error) => panic!("final commit: {error}"),
            }
        }
        drop(consumer);
    });
    Member { stop, thread }
}

/// Under the consumer protocol (KIP-848) a commit carries the member epoch, and one sent
/// while a rebalance moves the epoch on is refused with STALE_MEMBER_EPOCH, as in Kafka: the
/// member learns the new epoch at its next heartbeat and commits again.
fn is_stale_epoch(error: &rdkafka::error::KafkaError) -> bool {
    matches!(
        error,
        rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::StaleMemberEpoch
        )
    )
}

/// A commit refused because a rebalance moved the group on: STALE_MEMBER_EPOCH (KIP-848), or
/// under the classic protocol REBALANCE_IN_PROGRESS / ILLEGAL_GENERATION (a commit sent during
/// a cooperative rebalance), which librdkafka returns to the caller. The member commits again.
fn raced_a_rebalance(error: &rdkafka::error::KafkaError) -> bool {
    is_stale_epoch(error)
        || matches!(
            error,
            rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::RebalanceInProgress
                    | rdkafka::types::RDKafkaErrorCode::IllegalGeneration
            )
        )
}

/// Commits what the member stored; false (retry later) when the commit raced a rebalance.
/// NoOffset (librdkafka's own, no request sent): nothing is stored since the last commit,
/// as after a rebalance whose revocation committed it (`CommitOnRevoke`). A commit really
/// lost would show as a duplicate in `assert_exactly_once`.
fn commit_stored(consumer: &BaseConsumer<impl ConsumerContext>) -> bool {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(())
        | Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => true,
        Err(error) if raced_a_rebalance(&error) => {
            eprintln!("commit raced a rebalance (retried): {error}");
            false
        }
        Err(error) => panic!("commit: {error}"),
    }
}

impl Member {
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("member thread");
    }
}

fn wait_for_count(seen: &Mutex<Vec<String>>, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while seen.lock().expect("seen").len() < count {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {count} within {timeout:?}",
            seen.lock().expect("seen").len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (state, member id -> assigned partitions) of a group, from DescribeGroups ("Dead" with
/// no members when the coordinator does not know the group).
fn describe_group(bootstrap: &str, group: &str) -> (String, BTreeMap<String, Vec<i32>>) {
    let admin = consumer(bootstrap, &[]);
    let list = admin
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .expect("describe group");
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return ("Dead".to_string(), BTreeMap::new());
    };
    let members = info
        .members()
        .iter()
        .map(|m| {
            let mut bytes = Bytes::copy_from_slice(m.assignment().unwrap_or_default());
            let partitions = if bytes.len() < 2 {
                Vec::new()
            } else {
                let version = bytes::Buf::get_i16(&mut bytes);
                let assignment = ConsumerProtocolAssignment::decode(&mut bytes, version.min(3))
                    .expect("assignment decodes");
                assignment
                    .assigned_partitions
                    .into_iter()
                    .flat_map(|t| t.partitions)
                    .collect()
            };
            (m.id().to_string(), partitions)
        })
        .collect();
    (info.state().to_string(), members)
}

/// What `describe` says of a group once it answers Stable (a restarted coordinator loads
/// its groups lazily), within 30 s.
fn stable_after_restart<T: std::fmt::Debug>(describe: impl Fn() -> (String, T)) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (state, described) = describe();
        if state == "Stable" {
            return described;
        }
        assert!(
            Instant::now() < deadline,
            "not stable after the restart: {state} {described:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the group is Stable with `members` members, and checks that no partition is
/// assigned to two of them and that all `partitions` are assigned.
fn wait_stable(bootstrap: &str, group: &str, members: usize, partitions: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (state, assigned) = describe_group(bootstrap, group);
        if state == "Stable" && assigned.len() == members {
            let distinct = assigned_once(&assigned);
            // With cooperative-sticky the group is Stable between the round that revokes
            // partitions and the one that assigns them again: wait for them all.
            if distinct == (0..partitions).collect::<BTreeSet<i32>>() {
                assert_partitions_shared(&assigned, partitions);
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "group {group} not stable with {members} members and all {partitions} partitions \
             assigned: {state} {assigned:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (state, member id -> assigned partitions) of a KIP-848 group, from ConsumerGroupDescribe
/// (the state is "error N" when it answers error N).
fn describe_consumer_group(
    addr: std::net::SocketAddr,
    group: &str,
) -> (String, BTreeMap<String, Vec<i32>>) {
    let request = ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let response: ConsumerGroupDescribeResponse = typed_request(addr, &request, 0);
    let described = &response.groups[0];
    if described.error_code != 0 {
        // Not there yet (the offsets topic is created on first use), or not known.
        return (format!("error {}", described.error_code), BTreeMap::new());
    }
    let members = described
        .members
        .iter()
        .map(|m| {
            let partitions = m
                .assignment
                .topic_partitions
                .iter()
                .flat_map(|t| t.partitions.iter().copied())
                .collect();
            (m.member_id.to_string(), partitions)
        })
        .collect();
    (described.group_state.to_string(), members)
}

/// `wait_stable` for a KIP-848 group: every member has reached the target assignment.
fn wait_stable_consumer(addr: std::net::SocketAddr, group: &str, members: usize, partitions: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (state, assigned) = describe_consumer_group(addr, group);
        assigned_once(&assigned);
        if state == "Stable" && assigned.len() == members {
            assert_partitions_shared(&assigned, partitions);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} not stable with {members} members: {state} {assigned:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// No partition assigned to two members, and all of them assigned.
/// The partitions assigned, checking that none is assigned to two members.
fn assigned_once(assigned: &BTreeMap<String, Vec<i32>>) -> BTreeSet<i32> {
    let all: Vec<i32> = assigned.values().flatten().copied().collect();
    let distinct: BTreeSet<i32> = all.iter().copied().collect();
    assert_eq!(
        all.len(),
        distinct.len(),
        "a partition assigned twice: {assigned:?}"
    );
    distinct
}

fn assert_partitions_shared(assigned: &BTreeMap<String, Vec<i32>>, partitions: i32) {
    let distinct = assigned_once(assigned);
    assert_eq!(
        distinct,
        (0..partitions).collect(),
        "not all assigned: {assigned:?}"
    );
}

fn assert_exactly_once(seen: &Mutex<Vec<String>>, total: usize) {
    let seen = seen.lock().expect("seen");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for payload in seen.iter() {
        *counts.entry(payload.as_str()).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).take(10).collect();
    assert!(
        duplicated.is_empty(),
        "consumed more than once: {duplicated:?}"
    );
    let missing: Vec<usize> = (0..total)
        .filter(|i| !counts.contains_key(format!("m{i}").as_str()))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "never consumed: {missing:?}");
    assert_eq!(seen.len(), total);
}

#[test]
fn three_members_share_twelve_partitions_exactly_once_across_rebalances() {
    members_share_partitions_exactly_once(CLASSIC);
}

/// The same with incremental (cooperative) rebalances: members keep the partitions that do
/// not move, and still nothing is read twice or missed.
#[test]
fn cooperative_sticky_rebalances_are_exactly_once_too() {
    members_share_partitions_exactly_once(Protocol::Classic("cooperative-sticky"));
}

/// The same with the consumer protocol of KIP-848: the coordinator assigns, a member gives
/// up a partition before another gets it, and nothing is read twice or missed.
#[test]
fn consumer_protocol_members_share_partitions_exactly_once() {
    members_share_partitions_exactly_once(Protocol::Consumer);
}

fn members_share_partitions_exactly_once(protocol: Protocol) {
    const PARTITIONS: i32 = 12;
    const PHASE: usize = 2000;
    let mut args = vec!["--default-partitions", "12"];
    args.extend_from_slice(FAST_GROUPS);
    args.extend_from_slice(&["--group-consumer-heartbeat-interval-ms", "300"]);
    let broker = Broker::start_with(2, &args, None);
    let bootstrap = broker.bootstrap();
    let (topic, group) = ("orders", "billing");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let member = |seen: &Arc<Mutex<Vec<String>>>| {
        start_member_with(&bootstrap, topic, group, seen.clone(), protocol)
    };
    let wait_stable = |members: usize| match protocol {
        Protocol::Classic(_) => wait_stable(&bootstrap, group, members, PARTITIONS),
        Protocol::Consumer => wait_stable_consumer(broker.addr(), group, members, PARTITIONS),
    };

    produce(&bootstrap, topic, 0..PHASE, PARTITIONS);
    let a = member(&seen);
    let b = member(&seen);
    wait_stable(2);
    wait_for_count(&seen, PHASE, Duration::from_secs(60));

    // A third member joins: partitions are revoked (all of them, or with cooperative-sticky
    // only those that move) and assigned again.
    let c = member(&seen);
    produce(&bootstrap, topic, PHASE..2 * PHASE, PARTITIONS);
    wait_stable(3);
    wait_for_count(&seen, 2 * PHASE, Duration::from_secs(60));

    // One leaves: the other two take its partitions from its last commit.
    b.stop();
    produce(&bootstrap, topic, 2 * PHASE..3 * PHASE, PARTITIONS);
    wait_stable(2);
    wait_for_count(&seen, 3 * PHASE, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1)); // a duplicate would show up by now
    a.stop();
    c.stop();
    assert_exactly_once(&seen, 3 * PHASE);

    // Both gone: the group is empty, its offsets are the end of every partition.
    let (state, members) = match protocol {
        Protocol::Classic(_) => describe_group(&bootstrap, group),
        Protocol::Consumer => describe_consumer_group(broker.addr(), group),
    };
    assert_eq!((state.as_str(), members.len()), ("Empty", 0));
    let probe = consumer(&bootstrap, &[("group.id", group)]);
    let mut wanted = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        wanted.add_partition(topic, p);
    }
    let committed = probe
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("committed offsets");
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            other => panic!("partition {} has no commit: {other:?}", e.partition()),
        })
        .sum();
    assert_eq!(total, (3 * PHASE) as i64);
}

#[test]
fn commits_and_membership_survive_kill_9() {
    const PARTITIONS: i32 = 4;
    const TOTAL: usize = 1000;
    let mut args = vec!["--default-partitions", "4"];
    args.extend_from_slice(FAST_GROUPS);
    let mut broker = Broker::start_with(2, &args, None);
    let bootstrap = broker.bootstrap();
    let (topic, group) = ("payments", "ledger");
    produce(&bootstrap, topic, 0..TOTAL, PARTITIONS);

    // The first member reads part of the topic and commits exactly what it read.
    let first = group_consumer(&bootstrap, group);
    first.subscribe(&[topic]).expect("subscribe");
    let mut read_first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_first.len() < 400 {
        assert!(
            Instant::now() < deadline,
            "first member read {}",
            read_first.len()
        );
        if let Some(Ok(message)) = first.poll(Duration::from_millis(100)) {
            read_first
                .push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
            first.store_offset_from_message(&message).expect("store");
        }
    }
    first
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    let committed_before = first
        .committed(Duration::from_secs(10))
        .expect("committed")
        .to_topic_map();
    let (state, members_before) = describe_group(&bootstrap, group);
    assert_eq!(state, "Stable");
    assert_eq!(members_before.len(), 1);

    broker.kill9();
    broker.restart();

    // The restarted coordinator knows the group, its member and its assignment (it loads
    // the group lazily, so it may not answer Stable at once).
    let members_after = stable_after_restart(|| describe_group(&bootstrap, group));
    assert_eq!(members_after, members_before);
    let probe = consumer(&bootstrap, &[("group.id", group)]);
    let mut wanted = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        wanted.add_partition(topic, p);
    }
    let committed_after = probe
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("committed offsets")
        .to_topic_map();
    assert_eq!(committed_after, committed_before);

    // The first member leaves without committing more; a second one resumes exactly at the
    // commits: together they read every message once.
    drop(first);
    let seen = Arc::new(Mutex::new(read_first));
    let second = start_member(&bootstrap, topic, group, seen.clone());
    wait_for_count(&seen, TOTAL, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    second.stop();
    assert_exactly_once(&seen, TOTAL);

    // An empty group can be deleted, with its offsets; a deleted group is gone.
    let admin: rdkafka::admin::AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin");
    let options = rdkafka::admin::AdminOptions::new();
    let results = futures::executor::block_on(admin.delete_groups(&[group], &options))
        .expect("delete groups");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let again = futures::executor::block_on(admin.delete_groups(&[group], &options))
        .expect("delete groups");
    assert!(
        matches!(
            &again[0],
            Err((_, rdkafka::types::RDKafkaErrorCode::GroupIdNotFound))
        ),
        "{again:?}"
    );
}

/// A KIP-848 group's members, epochs and assignments are stored in `__consumer_offsets`:
/// after `kill -9` the restarted coordinator knows the same members with the same
/// partitions, their commits go through, and nothing is lost or read twice.
#[test]
fn consumer_protocol_membership_and_commits_survive_kill_9() {
    const PARTITIONS: i32 = 4;
    const HALF: usize = 500;
    let mut broker = Broker::start_with(
        2,
        &[
            "--default-partitions",
            "4",
            "--group-consumer-heartbeat-interval-ms",
            "300",
        ],
        None,
    );
    let bootstrap = broker.bootstrap();
    let (topic, group) = ("refunds", "auditors");
    produce(&bootstrap, topic, 0..HALF, PARTITIONS);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let members: Vec<Member> = (0..2)
        .map(|_| start_member_with(&bootstrap, topic, group, seen.clone(), Protocol::Consumer))
        .collect();
    wait_stable_consumer(broker.addr(), group, 2, PARTITIONS);
    wait_for_count(&seen, HALF, Duration::from_secs(60));
    // Let the members commit what they read (they commit whenever a poll comes back empty).
    std::thread::sleep(Duration::from_secs(1));
    let (_, before) = describe_consumer_group(broker.addr(), group);

    broker.kill9();
    broker.restart();
    let after = stable_after_restart(|| describe_consumer_group(broker.addr(), group));
    assert_eq!(after, before, "the same members hold the same partitions");
    produce(&bootstrap, topic, HALF..2 * HALF, PARTITIONS);
    wait_for_count(&seen, 2 * HALF, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1)); // a duplicate would show up by now
    for member in members {
        member.stop();
    }
    assert_exactly_once(&seen, 2 * HALF);
}

/// The node coordinating `group`, asked of the node at `addr` (FindCoordinator v3).
fn find_coordinator(addr: std::net::SocketAddr, group: &str) -> i32 {
    use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
    use kafka_protocol::protocol::StrBytes;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0);
        let response: FindCoordinatorResponse = typed_request(addr, &request, 3);
        if response.error_code == 0 {
            return response.node_id.0;
        }
        assert!(Instant::now() < deadline, "no coordinator: {response:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn commits_survive_the_coordinators_kill_9_in_a_cluster() {
    const PARTITIONS: i32 = 6;
    const TOTAL: usize = 600;
    let mut args = vec!["--default-partitions", "6"];
    args.extend_from_slice(FAST_GROUPS);
    let mut cluster = common::cluster::Cluster::configure(3, 1, &args);
    for index in 0..3 {
        cluster.start_node(index);
    }
    let bootstrap = cluster.bootstrap();
    let (topic, group) = ("events", "audit");
    produce(&bootstrap, topic, 0..TOTAL, PARTITIONS);

    // A member reads half, commits exactly that and leaves.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let first = start_member(&bootstrap, topic, group, seen.clone());
    wait_for_count(&seen, TOTAL / 2, Duration::from_secs(60));
    first.stop();
    let read_first = seen.lock().expect("seen").len();

    // Its coordinator dies; the next leader of the group's offsets partition takes over from
    // the replicated log.
    let coordinator = find_coordinator(cluster.addr(0), group);
    let index = cluster.index_of(coordinator);
    cluster.kill9(index);
    let survivor = cluster.addr((index + 1) % 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    while find_coordinator(survivor, group) == coordinator {
        assert!(Instant::now() < deadline, "no new coordinator after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    let second = start_member(&bootstrap, topic, group, seen.clone());
    wait_for_count(&seen, TOTAL, Duration::from_secs(90));
    std::thread::sleep(Duration::from_secs(1));
    second.stop();
    assert!(read_first >= TOTAL / 2);
    assert_exactly_once(&seen, TOTAL);
    cluster.start_node(index);
}

/// Every commit is a record in `__consumer_offsets`; the coordinator rewrites its live state
/// and drops the older log once the log outgrows it, so a restart reads back little and
/// still finds every group and offset.
#[test]
fn the_offsets_log_stays_small_and_keeps_the_latest_commits() {
    let mut args = vec!["--coordinator-log-slack", "50"];
    args.extend_from_slice(FAST_GROUPS);
    let mut broker = Broker::start_with(1, &args, None);
    let bootstrap = broker.bootstrap();
    produce(&bootstrap, "busy", 0..10, 1);
    let consumer = group_consumer(&bootstrap, "committer");
    consumer.subscribe(&["busy"]).expect("subscribe");
    let mut position = 0i64;
    while position < 10 {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            position = message.offset() + 1;
        }
    }
    // 400 commits, the last one of offset 10.
    for round in 0..400i64 {
        let mut list = TopicPartitionList::new();
        let offset = if round == 399 { 10 } else { round % 10 };
        list.add_partition_offset("busy", 0, Offset::Offset(offset))
            .expect("offset");
        consumer.commit(&list, CommitMode::Sync).expect("commit");
    }
    drop(consumer);
    // The group's partition of __consumer_offsets dropped its older records.
    let probe = self::consumer(&bootstrap, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let trimmed = loop {
        let trimmed = (0..16).any(|p| {
            probe
                .fetch_watermarks("__consumer_offsets", p, Duration::from_secs(5))
                .is_ok_and(|(low, high)| low > 0 && high - low < 100)
        });
        if trimmed || Instant::now() > deadline {
            break trimmed;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(trimmed, "no offsets partition was cleaned");
    broker.restart();
    let probe = self::consumer(&bootstrap, &[("group.id", "committer")]);
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("busy", 0);
    let committed = probe
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("committed");
    assert_eq!(committed.elements()[0].offset(), Offset::Offset(10));
}

/// An empty group's offsets go after `offsets_retention_ms` (Kafka's
/// `offsets.retention.minutes`); a group with members keeps them.
#[test]
fn an_empty_groups_offsets_expire() {
    let mut args = vec!["--offsets-retention-ms", "1500"];
    args.extend_from_slice(FAST_GROUPS);
    let broker = Broker::start_with(1, &args, None);
    let bootstrap = broker.bootstrap();
    produce(&bootstrap, "fading", 0..4, 1);
    let standalone = self::consumer(&bootstrap, &[("group.id", "fading-group")]);
    let mut list = TopicPartitionList::new();
    list.add_partition_offset("fading", 0, Offset::Offset(3))
        .expect("offset");
    standalone.commit(&list, CommitMode::Sync).expect("commit");
    let committed = |consumer: &BaseConsumer| {
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition("fading", 0);
        consumer
            .committed_offsets(wanted, Duration::from_secs(10))
            .expect("committed")
            .elements()[0]
            .offset()
    };
    assert_eq!(committed(&standalone), Offset::Offset(3));
    let deadline = Instant::now() + Duration::from_secs(20);
    while committed(&standalone) != Offset::Invalid {
        assert!(Instant::now() < deadline, "the offset never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
}
