//! Consumer-group benchmark with librdkafka: how long a group of `--members` consumers over a
//! `--partitions` topic takes to form, to take in one more member, and to let one go (time
//! until every member holds its new assignment); then how many synchronous offset commits
//! (each for every partition of a member) the coordinator answers per second.
//!
//! ```sh
//! cargo run --release --example group_bench -- --bootstrap 127.0.0.1:9092 \
//!     --members 8 --partitions 64 --commit-seconds 10 [--heartbeat-ms 3000] \
//!     [--protocol consumer]
//! ```
//! `--protocol consumer` uses KIP-848 (`group.protocol=consumer`): the heartbeat interval is
//! then the broker's (`--group-consumer-heartbeat-interval-ms`), not the client's.
//! Start the broker with `--group-initial-rebalance-delay-ms 0` to time the protocol itself
//! (Kafka's default delay, 3 s, is part of the formation time otherwise).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::TopicPartitionList;

struct Args {
    bootstrap: String,
    members: usize,
    partitions: i32,
    commit_seconds: u64,
    /// librdkafka's heartbeat.interval.ms (3000 by default): members learn of a rebalance
    /// through a heartbeat, so it bounds how soon they rejoin.
    heartbeat_ms: u64,
    /// "classic" (eager range/roundrobin rebalances) or "consumer" (KIP-848).
    protocol: String,
}

fn parse_args() -> Args {
    let mut args = Args {
        bootstrap: "127.0.0.1:9092".into(),
        members: 8,
        partitions: 64,
        commit_seconds: 10,
        heartbeat_ms: 3000,
        protocol: "classic".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bootstrap" => args.bootstrap = value,
            "--members" => args.members = value.parse().expect("--members N"),
            "--partitions" => args.partitions = value.parse().expect("--partitions N"),
            "--commit-seconds" => args.commit_seconds = value.parse().expect("--commit-seconds S"),
            "--heartbeat-ms" => args.heartbeat_ms = value.parse().expect("--heartbeat-ms MS"),
            "--protocol" => args.protocol = value,
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// A member polling in its own thread; `assigned` is how many partitions it holds.
struct Member {
    assigned: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

fn start_member(args: &Args, topic: &str, group: &str) -> Member {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", group);
    match args.protocol.as_str() {
        "consumer" => config.set("group.protocol", "consumer"),
        _ => config
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", args.heartbeat_ms.to_string()),
    };
    let consumer: BaseConsumer = config.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let assigned = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (report, stopping) = (assigned.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        while !stopping.load(Ordering::Relaxed) {
            let _ = consumer.poll(Duration::from_millis(10));
            let count = consumer.assignment().map_or(0, |a| a.count());
            report.store(count, Ordering::Relaxed);
        }
    });
    Member {
        assigned,
        stop,
        thread,
    }
}

/// Waits until every member holds a share and the shares cover the topic: the time taken,
/// and the fewest partitions held by any member meanwhile (0 when the rebalance stopped the
/// whole group, as an eager one does).
fn settle(members: &[Member], partitions: usize, started: Instant) -> (Duration, usize) {
    let mut fewest_held = partitions;
    loop {
        let counts: Vec<usize> = members
            .iter()
            .map(|m| m.assigned.load(Ordering::Relaxed))
            .collect();
        let held: usize = counts.iter().sum();
        fewest_held = fewest_held.min(held);
        if counts.iter().all(|&c| c > 0) && held == partitions {
            return (started.elapsed(), fewest_held);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no settled group: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn main() {
    let args = parse_args();
    let run = std::process::id();
    let topic = format!("group-bench-{run}");
    let group = format!("group-bench-{run}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .create()
        .expect("admin");
    let new_topic = NewTopic::new(&topic, args.partitions, TopicReplication::Fixed(-1));
    futures::executor::block_on(admin.create_topics(&[new_topic], &AdminOptions::new()))
        .expect("create topic");
    let partitions = args.partitions as usize;

    let started = Instant::now();
    let mut members: Vec<Member> = (0..args.members)
        .map(|_| start_member(&args, &topic, &group))
        .collect();
    let (formed, _) = settle(&members, partitions, started);
    let started = Instant::now();
    members.push(start_member(&args, &topic, &group));
    let (joined, held_joining) = settle(&members, partitions, started);
    let leaving = members.pop().expect("a member");
    let started = Instant::now();
    leaving.stop.store(true, Ordering::Relaxed);
    leaving.thread.join().expect("member");
    let (left, held_leaving) = settle(&members, partitions, started);
    for member in members {
        member.stop.store(true, Ordering::Relaxed);
        member.thread.join().expect("member");
    }
    println!(
        "group of {} over {partitions} partitions ({} protocol): formed in {} ms, a join \
         rebalanced in {} ms (at least {held_joining} partitions held meanwhile), a leave in {} \
         ms (at least {held_leaving} held)",
        args.members,
        args.protocol,
        formed.as_millis(),
        joined.as_millis(),
        left.as_millis()
    );
    commit_throughput(&args, &topic);
}

/// Synchronous commits of every partition, from `--members` threads with a group each
/// (standalone commits: generation -1), for `--commit-seconds`.
fn commit_throughput(args: &Args, topic: &str) {
    let commits = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let histogram = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    ));
    let threads: Vec<_> = (0..args.members)
        .map(|i| {
            let (commits, stop, histogram) = (commits.clone(), stop.clone(), histogram.clone());
            let (bootstrap, topic) = (args.bootstrap.clone(), topic.to_string());
            let partitions = args.partitions;
            std::thread::spawn(move || {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .set("group.id", format!("{topic}-committer-{i}"))
                    .create()
                    .expect("consumer");
                let mut offset = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    offset += 1;
                    let mut list = TopicPartitionList::new();
                    for p in 0..partitions {
                        list.add_partition_offset(&topic, p, rdkafka::Offset::Offset(offset))
                            .expect("offset");
                    }
                    let sent = Instant::now();
                    consumer.commit(&list, CommitMode::Sync).expect("commit");
                    let micros = sent.elapsed().as_micros() as u64;
                    let _ = histogram.lock().expect("histogram").record(micros.max(1));
                    commits.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.commit_seconds));
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("committer");
    }
    let total = commits.load(Ordering::Relaxed) as f64;
    let seconds = args.commit_seconds as f64;
    let histogram = histogram.lock().expect("histogram");
    println!(
        "offset commits ({} committers, {} partitions each): {:.0} commits/s, {:.0} partition \
         offsets/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.members,
        args.partitions,
        total / seconds,
        total * f64::from(args.partitions) / seconds,
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0
    );
}
