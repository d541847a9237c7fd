//! chronik-load: a Kafka load generator that costs almost nothing per message, so that what
//! it measures is the broker. Record batches are built once and sent again and again with a
//! fresh request header; each connection keeps several requests in flight; latencies are
//! recorded per record in an HdrHistogram, in open-loop mode from each request's due time.
//!
//! ```sh
//! cargo run --release --bin chronik-load -- --bootstrap 127.0.0.1:9092 --topic load \
//!     --partitions 16 --connections 4 --size 1024 --batch 16 --acks all --seconds 10
//! cargo run --release --bin chronik-load -- ... --rate 100000   # open loop, msgs/s
//! ```
//! `--mode consume` reads the topic from its start to the log end it finds, instead.
//! Prints progress each second on stderr, then a table and one JSON line on stdout.
//!
//! - `batch`: the record batches.
//! - `connection`: one producing connection (writer and reader threads).
//! - `setup`: creating the topic and finding the partitions' leaders.

mod batch;
mod connection;
mod consume;
mod setup;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use kafka_protocol::records::Compression;

use batch::BatchShape;
use connection::{ConnectionPlan, Totals};

#[derive(Parser, Debug)]
#[command(
    name = "chronik-load",
    about = "Produce load against a Kafka-API broker"
)]
struct Args {
    /// produce, or consume (reads the topic from its start to its log end).
    #[arg(long, default_value = "produce")]
    mode: String,
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "chronik-load")]
    topic: String,
    /// Partitions of the topic (created with them when it does not exist).
    #[arg(long, default_value_t = 16)]
    partitions: i32,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Records per batch (one batch per partition and request).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Give every record a 16-byte key.
    #[arg(long)]
    keys: bool,
    /// Requests each connection keeps unanswered at most.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Open loop: this many messages per second in all, on a fixed schedule.
    #[arg(long)]
    rate: Option<u64>,
    /// Stop after about this many messages (else after `--seconds`).
    #[arg(long)]
    messages: Option<u64>,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

fn compression(name: &str) -> anyhow::Result<Compression> {
    Ok(match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => anyhow::bail!("unknown compression {other}"),
    })
}

fn acks(name: &str) -> anyhow::Result<i16> {
    Ok(match name {
        "0" => 0,
        "1" => 1,
        "all" | "-1" => -1,
        other => anyhow::bail!("acks must be 0, 1 or all, not {other}"),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = BatchShape {
        records: args.batch.max(1),
        value_bytes: args.size,
        keyed: args.keys,
        compression: compression(&args.compression)?,
    };
    let acks = acks(&args.acks)?;
    let leaders = setup::leaders(&args.bootstrap, &args.topic, args.partitions)?;
    let groups = setup::split(&leaders, args.connections.max(1));
    let totals = Arc::new(Totals::new()?);
    if args.mode == "consume" {
        return run_consumers(&args, &groups, &totals);
    }
    anyhow::ensure!(args.mode == "produce", "--mode is produce or consume");
    let records_per_round: u64 =
        groups.iter().map(|g| g.1.len() as u64).sum::<u64>() * shape.records as u64;
    let mut handles = Vec::new();
    for (index, (addr, partitions)) in groups.iter().enumerate() {
        let body = setup::produce_body(&args.topic, partitions, shape, acks, index as u64)?;
        let records_per_request = (partitions.len() * shape.records) as u64;
        let plan = ConnectionPlan {
            addr: *addr,
            body: body.clone(),
            version: setup::PRODUCE_VERSION,
            records_per_request,
            bytes_per_request: records_per_request * args.size as u64,
            acks,
            in_flight: args.in_flight,
            // Each connection carries its share of the rate.
            interval: args
                .rate
                .map(|rate| Duration::from_secs_f64(records_per_round as f64 / rate.max(1) as f64)),
            requests: args.messages.map(|m| m.div_ceil(records_per_round.max(1))),
        };
        handles.push(connection::start(plan, totals.clone())?);
    }
    let started = Instant::now();
    watch(&args, &totals, started, &handles);
    totals.stop.store(true, Ordering::Relaxed);
    for handle in handles {
        let _ = handle.join();
    }
    let summary = report::Summary::of(&totals, started.elapsed(), "produce", &args.acks, args.size);
    println!("{}", summary.table());
    println!("{}", summary.json());
    if let Some(why) = totals.first_failure.lock().expect("failure lock").as_ref() {
        eprintln!("first failure: {why}");
    }
    Ok(())
}

/// Consume mode: one reader per connection; the run ends when every partition reached its
/// log end (or after `--seconds`).
fn run_consumers(
    args: &Args,
    groups: &[(std::net::SocketAddr, Vec<i32>)],
    totals: &Arc<Totals>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let handles: Vec<_> = groups
        .iter()
        .cloned()
        .map(|(addr, partitions)| {
            let (totals, topic) = (totals.clone(), args.topic.clone());
            std::thread::spawn(move || {
                if let Err(error) = consume::consume(addr, &topic, &partitions, &totals) {
                    totals.fail(format!("consuming: {error}"));
                }
            })
        })
        .collect();
    watch(args, totals, started, &handles);
    totals.stop.store(true, Ordering::Relaxed);
    for handle in handles {
        let _ = handle.join();
    }
    let summary = report::Summary::of(totals, started.elapsed(), "consume", "-", args.size);
    println!("{}", summary.table());
    println!("{}", summary.json());
    Ok(())
}

/// Prints progress once a second until the run's bound: `--messages` sent (the connections
/// end on their own) or `--seconds` passed.
fn watch(args: &Args, totals: &Totals, started: Instant, handles: &[std::thread::JoinHandle<()>]) {
    let mut last = (started, 0u64);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let done = handles.iter().all(std::thread::JoinHandle::is_finished);
        let out_of_time = args.messages.is_none() && started.elapsed().as_secs() >= args.seconds;
        if done || out_of_time {
            return;
        }
        if !args.quiet && last.0.elapsed() >= Duration::from_secs(1) {
            let acked = totals.acked_records.load(Ordering::Relaxed);
            let rate = (acked - last.1) as f64 / last.0.elapsed().as_secs_f64();
            let p99 = totals
                .latency_us
                .lock()
                .expect("histogram")
                .value_at_quantile(0.99);
            eprintln!(
                "{:>5.1} s  {:>10.0} msgs/s  {:>8.1} MiB/s  p99 so far {:.2} ms",
                started.elapsed().as_secs_f64(),
                rate,
                rate * args.size as f64 / (1 << 20) as f64,
                p99 as f64 / 1000.0
            );
            last = (Instant::now(), acked);
        }
    }
}

mod report;
