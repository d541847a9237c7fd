//! Failover timing: kill -9 the leader of a partition in a running dev cluster, over and
//! over, and measure from the kill to the first acks=all produce acknowledged on that (moved)
//! partition. Prints every sample, then the median and the worst.
//!
//! ```sh
//! tools/devcluster.sh start --nodes 3 --dir /tmp/fo --base-port 19092
//! cargo run --release --example failover -- --dir /tmp/fo --bootstrap 127.0.0.1:19092 --kills 10
//! tools/devcluster.sh stop --dir /tmp/fo
//! ```
//! The killed node is restarted (`tools/devcluster.sh start-node`) and given time to catch up
//! and take its preferred partitions back before the next kill. One producer lives through
//! every kill with librdkafka's defaults but for acks=all, as a real application would
//! (`-X key=value` sets more client options, e.g. `-X retry.backoff.ms=10`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

const TOPIC: &str = "failover-probe";

struct Reports(mpsc::Sender<bool>);

impl ClientContext for Reports {
    /// librdkafka's own log (with `-X debug=...`), timestamped, on stderr.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        eprintln!("{:.3} {level:?} {facility} {message}", now.as_secs_f64());
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let _ = self.0.send(result.is_ok());
    }
}

struct Options {
    dir: PathBuf,
    bootstrap: String,
    kills: usize,
    settle: Duration,
    /// Extra librdkafka settings (`-X key=value`), e.g. shorter retry backoffs.
    client: Vec<(String, String)>,
}

fn options() -> Options {
    let mut options = Options {
        dir: PathBuf::from("devcluster"),
        bootstrap: "127.0.0.1:9092".into(),
        kills: 10,
        settle: Duration::from_secs(4),
        client: Vec::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--dir" => options.dir = PathBuf::from(value),
            "--bootstrap" => options.bootstrap = value,
            "--kills" => options.kills = value.parse().expect("--kills N"),
            "--settle-ms" => {
                options.settle = Duration::from_millis(value.parse().expect("--settle-ms N"))
            }
            "-X" => {
                let (key, value) = value.split_once('=').expect("-X key=value");
                options.client.push((key.to_string(), value.to_string()));
            }
            other => {
                panic!("unknown option {other} (--dir, --bootstrap, --kills, --settle-ms, -X)")
            }
        }
    }
    options
}

/// Produces one message and waits for its report: true when acknowledged.
fn produce_one(producer: &BaseProducer<Reports>, reports: &mpsc::Receiver<bool>) -> bool {
    let record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(TOPIC).partition(0).payload(b"probe");
    if producer.send(record).is_err() {
        producer.poll(Duration::from_millis(5));
        return false;
    }
    loop {
        producer.poll(Duration::from_millis(1));
        if let Ok(ok) = reports.try_recv() {
            return ok;
        }
    }
}

/// The leader of partition 0 as the broker at `address` reports it now (Metadata v1 on a new
/// connection, so no client cache is involved).
fn leader_at(address: &str) -> Option<i32> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut body = Vec::new();
    body.extend_from_slice(&3i16.to_be_bytes()); // Metadata
    body.extend_from_slice(&1i16.to_be_bytes()); // v1
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&1i16.to_be_bytes());
    body.push(b'f'); // client id
    body.extend_from_slice(&1i32.to_be_bytes()); // one topic
    body.extend_from_slice(&(TOPIC.len() as i16).to_be_bytes());
    body.extend_from_slice(TOPIC.as_bytes());
    let mut request = (body.len() as i32).to_be_bytes().to_vec();
    request.extend_from_slice(&body);
    stream.write_all(&request).ok()?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut response = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
    stream.read_exact(&mut response).ok()?;
    let mut at = 4; // correlation id
    let i32_at = |at: usize| {
        Some(i32::from_be_bytes(
            response.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let i16_at = |at: usize| {
        Some(i16::from_be_bytes(
            response.get(at..at + 2)?.try_into().ok()?,
        ))
    };
    let brokers = i32_at(at)?;
    at += 4;
    for _ in 0..brokers {
        at += 4; // node id
        at += 2 + i16_at(at)?.max(0) as usize + 4; // host, port
        at += 2 + i16_at(at)?.max(0) as usize; // rack
    }
    at += 4 + 4; // controller id, topic count
    at += 2; // topic error
    at += 2 + i16_at(at)?.max(0) as usize + 1; // name, is_internal
    at += 4 + 2 + 4; // partition count, partition error, partition index
    i32_at(at)
}

fn leader(producer: &BaseProducer<Reports>) -> Option<i32> {
    let metadata = producer
        .client()
        .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
        .ok()?;
    let leader = metadata.topics().first()?.partitions().first()?.leader();
    (leader >= 0).then_some(leader)
}

// The measurement reads as one procedure, top to bottom.
#[allow(clippy::too_many_lines)]
fn main() {
    let options = options();
    let (sender, reports) = mpsc::channel();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "10000");
    for (key, value) in &options.client {
        config.set(key, value);
    }
    let producer: BaseProducer<Reports> = config
        .create_with_context(Reports(sender))
        .expect("producer");
    // The first produce auto-creates the topic (one partition, replicated on 3 nodes).
    let ready = Instant::now();
    while !produce_one(&producer, &reports) {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "cluster not producing"
        );
    }
    let mut samples = Vec::new();
    for kill in 1..=options.kills {
        let leader_id = leader(&producer).expect("a leader");
        let pid_file = options.dir.join(format!("node-{leader_id}.pid"));
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        let pid: i32 = pid.trim().parse().expect("pid");
        let killed = Instant::now();
        eprintln!(
            "{:.3} killing node {leader_id}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
        );
        // SAFETY: a plain kill(2) of the dev cluster's node process.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        // The cluster's own failover: a survivor names a new, live leader (the dead node's
        // address just refuses).
        let survivors: Vec<String> = options.bootstrap.split(',').map(str::to_string).collect();
        let moved = loop {
            let leaders: Vec<Option<i32>> = survivors.iter().map(|a| leader_at(a)).collect();
            if leaders
                .iter()
                .any(|l| l.is_some_and(|l| l >= 0 && l != leader_id))
            {
                break killed.elapsed();
            }
            assert!(killed.elapsed() < Duration::from_secs(30), "no new leader");
            std::thread::sleep(Duration::from_millis(1));
        };
        while !produce_one(&producer, &reports) {}
        let took = killed.elapsed();
        println!(
            "kill {kill}: node {leader_id}; a survivor names the new leader after {moved:?}, \
             first acks=all produce acknowledged after {took:?}"
        );
        samples.push((moved, took));
        let status = Command::new("tools/devcluster.sh")
            .args(["start-node", &leader_id.to_string(), "--dir"])
            .arg(&options.dir)
            .status()
            .expect("devcluster.sh");
        assert!(status.success(), "restart of node {leader_id} failed");
        std::thread::sleep(options.settle);
    }
    for (what, mut times) in [
        (
            "new leader named",
            samples.iter().map(|s| s.0).collect::<Vec<_>>(),
        ),
        (
            "first acks=all produce",
            samples.iter().map(|s| s.1).collect(),
        ),
    ] {
        times.sort();
        println!(
            "{} kills, {what}: median {:?}, worst {:?}, best {:?}",
            times.len(),
            times[times.len() / 2],
            times[times.len() - 1],
            times[0]
        );
    }
    producer.flush(Duration::from_secs(5)).ok();
}
