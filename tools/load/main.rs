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
//! `--mode consume` reads the topic from its start to the log end it finds, instead;
//! `--mode end-to-end` produces while consumers tail the topic, and measures from each
//! batch's send time (stamped in its first value) to its arrival at a consumer.
//! Prints progress each second on stderr, then a table and one JSON line per side (produce,
//! consume or end-to-end) on stdout; `--histogram-dir` also writes percentile files.
//! `--warmup S` runs S seconds first and leaves them out of every figure.
//!
//! - `batch`: the record batches.
//! - `connection`: one producing connection (writer and reader threads).
//! - `consume`: one consuming connection.
//! - `setup`: creating the topic and finding the partitions' leaders.
//! - `stamp`: send-time stamps for end-to-end latency.
//! - `report`: the summary table, JSON line and percentile files.

mod batch;
mod connection;
mod consume;
mod setup;
mod stamp;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use kafka_protocol::records::Compression;

use batch::BatchShape;
use connection::{ConnectionPlan, Totals};
use consume::Start;

#[derive(Parser, Debug)]
#[command(
    name = "chronik-load",
    about = "Produce load against a Kafka-API broker"
)]
struct Args {
    /// produce; consume (reads the topic from its start to its log end); or end-to-end
    /// (produces while consumers tail the topic: produce-to-consume latency).
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
    /// Run this many seconds first and leave them out of the figures (rates, percentiles):
    /// a fresh broker's first seconds (new log segments, caches filling) measure the start,
    /// not the steady state. Not with `--messages`.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// Write each latency histogram here as an HdrHistogram percentile file
    /// (`produce.hgrm`, `consume.hgrm`, `end-to-end.hgrm`), for `chronik-plot`.
    #[arg(long)]
    histogram_dir: Option<std::path::PathBuf>,
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

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Produce,
    /// Reads the topic from its start to its log end.
    Consume,
    /// Produces stamped batches while consumers tail the topic: produce-to-consume latency.
    EndToEnd,
}

impl Mode {
    fn parse(name: &str) -> anyhow::Result<Self> {
        Ok(match name {
            "produce" => Self::Produce,
            "consume" => Self::Consume,
            "end-to-end" => Self::EndToEnd,
            other => anyhow::bail!("--mode is produce, consume or end-to-end, not {other}"),
        })
    }
}

type Groups = [(std::net::SocketAddr, Vec<i32>)];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mode = Mode::parse(&args.mode)?;
    let shape = BatchShape {
        records: args.batch.max(1),
        value_bytes: args.size,
        keyed: args.keys,
        compression: compression(&args.compression)?,
    };
    let acks = acks(&args.acks)?;
    anyhow::ensure!(
        args.warmup == 0 || args.messages.is_none(),
        "--warmup bounds the run in seconds: not with --messages"
    );
    if mode == Mode::EndToEnd {
        anyhow::ensure!(
            args.compression == "none" && args.size >= 8,
            "end-to-end mode stamps values in the clear: --compression none, --size 8 or more"
        );
    }
    let leaders = setup::leaders(&args.bootstrap, &args.topic, args.partitions)?;
    let groups = setup::split(&leaders, args.connections.max(1));
    let totals = Arc::new(Totals::new()?);
    let started = Instant::now();
    let consumers = match mode {
        Mode::Produce => Vec::new(),
        Mode::Consume => start_consumers(&groups, &args.topic, false, &totals)?,
        Mode::EndToEnd => start_consumers(&groups, &args.topic, true, &totals)?,
    };
    let producers = match mode {
        Mode::Consume => Vec::new(),
        Mode::Produce | Mode::EndToEnd => {
            start_producers(&args, mode, shape, acks, &groups, &totals)?
        }
    };
    let bounding = if mode == Mode::Consume {
        &consumers
    } else {
        &producers
    };
    let measured = watch(&args, &totals, started, bounding);
    // Producers first, with their answers; then consumers get to read what was acknowledged.
    totals.stop_producing.store(true, Ordering::Relaxed);
    for handle in producers {
        let _ = handle.join();
    }
    let elapsed = measured.started.elapsed();
    if mode == Mode::EndToEnd {
        drain(&totals);
    }
    totals.stop.store(true, Ordering::Relaxed);
    for handle in consumers {
        let _ = handle.join();
    }
    report(&args, mode, &totals, &measured, elapsed)
}

/// One producing connection per group of partitions.
fn start_producers(
    args: &Args,
    mode: Mode,
    shape: BatchShape,
    acks: i16,
    groups: &Groups,
    totals: &Arc<Totals>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let records_per_round: u64 =
        groups.iter().map(|g| g.1.len() as u64).sum::<u64>() * shape.records as u64;
    let mut handles = Vec::new();
    for (index, (addr, partitions)) in groups.iter().enumerate() {
        let (body, batches) =
            setup::produce_body(&args.topic, partitions, shape, acks, index as u64)?;
        let stamps = (mode == Mode::EndToEnd)
            .then(|| stamp::spots(&body, &batches))
            .transpose()?;
        let records_per_request = (partitions.len() * shape.records) as u64;
        let plan = ConnectionPlan {
            addr: *addr,
            body,
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
            stamps,
        };
        handles.push(connection::start(plan, totals.clone())?);
    }
    Ok(handles)
}

/// One consumer per group of partitions: from the start (consume mode) or, to `tail`,
/// from the topic's log end now (end-to-end mode).
fn start_consumers(
    groups: &Groups,
    topic: &str,
    tail: bool,
    totals: &Arc<Totals>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::new();
    for (addr, partitions) in groups.iter().cloned() {
        let start = if tail {
            Start::Tail(setup::log_ends(addr, topic, &partitions)?)
        } else {
            Start::Beginning
        };
        let (totals, topic) = (totals.clone(), topic.to_string());
        handles.push(std::thread::spawn(move || {
            if let Err(error) = consume::consume(addr, &topic, &partitions, &start, &totals) {
                totals.fail(format!("consuming: {error}"));
            }
        }));
    }
    Ok(handles)
}

/// End-to-end mode, after the producers stopped: lets the consumers read what was
/// acknowledged (at most 10 s), so the last batches' latencies count too.
fn drain(totals: &Totals) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while totals.consumed_records.load(Ordering::Relaxed)
        < totals.acked_records.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The table and JSON line of each side of the run, and its percentile files.
fn report(
    args: &Args,
    mode: Mode,
    totals: &Totals,
    measured: &Measured,
    elapsed: Duration,
) -> anyhow::Result<()> {
    let failed_requests = totals.failed_requests.load(Ordering::Relaxed);
    let mut sides = Vec::new();
    if mode != Mode::Consume {
        let run = report::Run {
            mode: "produce",
            elapsed,
            messages: totals.acked_records.load(Ordering::Relaxed) - measured.acked_records,
            bytes: totals.acked_bytes.load(Ordering::Relaxed) - measured.acked_bytes,
            failed_requests,
            acks: &args.acks,
            size: args.size,
        };
        sides.push((run, &totals.latency_us));
    }
    if mode != Mode::Produce {
        let run = report::Run {
            mode: if mode == Mode::Consume {
                "consume"
            } else {
                "end-to-end"
            },
            elapsed,
            messages: totals.consumed_records.load(Ordering::Relaxed) - measured.consumed_records,
            bytes: totals.consumed_bytes.load(Ordering::Relaxed) - measured.consumed_bytes,
            failed_requests,
            acks: "-",
            size: args.size,
        };
        sides.push((run, &totals.consumed_latency_us));
    }
    for (run, histogram) in sides {
        let histogram = histogram.lock().expect("histogram lock");
        let summary = report::Summary::of(&run, &histogram);
        println!("{}", summary.table());
        println!("{}", summary.json());
        if let Some(dir) = &args.histogram_dir {
            std::fs::create_dir_all(dir)?;
            report::write_percentiles(&dir.join(format!("{}.hgrm", run.mode)), &histogram)?;
        }
    }
    if let Some(why) = totals.first_failure.lock().expect("failure lock").as_ref() {
        eprintln!("first failure: {why}");
    }
    Ok(())
}

/// Where the measured part of a run starts: its instant and the counts before it.
#[derive(Debug, Clone, Copy)]
struct Measured {
    started: Instant,
    acked_records: u64,
    acked_bytes: u64,
    consumed_records: u64,
    consumed_bytes: u64,
}

impl Measured {
    /// From now on: the counts so far are left out and the histograms start empty. Produce
    /// answers are counted under their histogram's lock, held here, so those agree exactly;
    /// consumers' may differ by one fetch at the boundary.
    fn start_now(totals: &Totals) -> Self {
        let mut produced = totals.latency_us.lock().expect("histogram");
        let mut consumed = totals.consumed_latency_us.lock().expect("histogram");
        produced.reset();
        consumed.reset();
        Self {
            started: Instant::now(),
            acked_records: totals.acked_records.load(Ordering::Relaxed),
            acked_bytes: totals.acked_bytes.load(Ordering::Relaxed),
            consumed_records: totals.consumed_records.load(Ordering::Relaxed),
            consumed_bytes: totals.consumed_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Prints progress once a second until the run's bound: `--messages` sent (the bounding
/// threads end on their own) or `--warmup` and then `--seconds` passed. Returns where the
/// measured part began.
fn watch(args: &Args, totals: &Totals, started: Instant, bounding: &[JoinHandle<()>]) -> Measured {
    let mut last = (started, 0u64, 0u64);
    let warmup = Duration::from_secs(args.warmup);
    let mut measured = warmup.is_zero().then_some(Measured {
        started,
        acked_records: 0,
        acked_bytes: 0,
        consumed_records: 0,
        consumed_bytes: 0,
    });
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if measured.is_none() && started.elapsed() >= warmup {
            measured = Some(Measured::start_now(totals));
        }
        let done = bounding.iter().all(JoinHandle::is_finished);
        let out_of_time = measured.is_some_and(|m| {
            args.messages.is_none() && m.started.elapsed().as_secs() >= args.seconds
        });
        if done || out_of_time {
            return measured.unwrap_or_else(|| Measured::start_now(totals));
        }
        if !args.quiet && last.0.elapsed() >= Duration::from_secs(1) {
            let acked = totals.acked_records.load(Ordering::Relaxed);
            let consumed = totals.consumed_records.load(Ordering::Relaxed);
            let seconds = last.0.elapsed().as_secs_f64();
            let p99 = |h: &Mutex<Histogram<u64>>| {
                h.lock().expect("histogram").value_at_quantile(0.99) as f64 / 1000.0
            };
            eprintln!(
                "{:>5.1} s  produced {:>9.0} msgs/s (p99 {:.2} ms)  consumed {:>9.0} msgs/s (p99 {:.2} ms)",
                started.elapsed().as_secs_f64(),
                (acked - last.1) as f64 / seconds,
                p99(&totals.latency_us),
                (consumed - last.2) as f64 / seconds,
                p99(&totals.consumed_latency_us),
            );
            last = (Instant::now(), acked, consumed);
        }
    }
}

mod report;
