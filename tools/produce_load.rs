//! A minimal produce load generator (until the full one of its own issue): sends `--messages`
//! records of `--size` bytes to `--topic` with librdkafka as fast as the client allows,
//! then prints throughput and the acknowledgement latency distribution (hdrhistogram, from
//! send to delivery report).
//!
//! ```sh
//! cargo run --release --example produce_load -- --bootstrap 127.0.0.1:9092 --topic load \
//!     --messages 500000 --size 1024 --acks all
//! ```
//! `--partitions N` creates the topic first (replication factor: the cluster's default);
//! `-X key=value` passes any librdkafka producer setting (e.g. `-X linger.ms=5`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

/// Delivery reports: each message's latency (the opaque is its send time) and failures.
struct Reports {
    started: Instant,
    latencies: Arc<Mutex<Histogram<u64>>>,
    failed: Arc<Mutex<VecDeque<String>>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<u64>;
    fn delivery(&self, result: &DeliveryResult<'_>, sent_at_us: Box<u64>) {
        match result {
            Ok(_) => {
                let now = self.started.elapsed().as_micros() as u64;
                let mut latencies = self.latencies.lock().expect("histogram");
                let _ = latencies.record(now.saturating_sub(*sent_at_us).max(1));
            }
            Err((error, _)) => {
                let mut failed = self.failed.lock().expect("failures");
                if failed.len() < 10 {
                    failed.push_back(error.to_string());
                }
            }
        }
    }
}

/// Creates `topic` with `partitions` (replication factor -1: the cluster's default) through
/// the broker at `address`, retrying while the cluster has no controller yet; an existing
/// topic is fine.
fn create_topic(address: &str, topic: &str, partitions: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let code = create_topic_once(address, topic, partitions);
        match code {
            0 | 36 => return,
            // REQUEST_TIMED_OUT, NOT_CONTROLLER: no controller leader yet.
            7 | 41 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => panic!("CreateTopics {topic}: error {other}"),
        }
    }
}

fn create_topic_once(address: &str, topic: &str, partitions: i32) -> i16 {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{
        CreateTopicsRequest, CreateTopicsResponse, RequestHeader, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
    use std::io::{Read, Write};
    const VERSION: i16 = 4;
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)])
        .with_timeout_ms(30_000);
    let header = RequestHeader::default()
        .with_request_api_key(19)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("produce_load")));
    let mut frame = BytesMut::new();
    header
        .encode(&mut frame, CreateTopicsRequest::header_version(VERSION))
        .expect("header");
    request.encode(&mut frame, VERSION).expect("request");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .write_all(&(frame.len() as i32).to_be_bytes())
        .and_then(|_| stream.write_all(&frame))
        .expect("send CreateTopics");
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("CreateTopics answer");
    let mut answer = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
    stream.read_exact(&mut answer).expect("CreateTopics answer");
    let mut answer = Bytes::from(answer);
    ResponseHeader::decode(&mut answer, 0).expect("response header");
    let response = CreateTopicsResponse::decode(&mut answer, VERSION).expect("response");
    response.topics.first().map_or(-1, |t| t.error_code)
}

struct Options {
    bootstrap: String,
    topic: String,
    messages: u64,
    size: usize,
    acks: String,
    client: Vec<String>,
    partitions: i32,
}

fn options() -> Options {
    let mut options = Options {
        bootstrap: "127.0.0.1:9092".to_string(),
        topic: "load".to_string(),
        messages: 200_000,
        size: 1024,
        acks: "all".to_string(),
        client: Vec::new(),
        partitions: 0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--bootstrap" => options.bootstrap = value,
            "--topic" => options.topic = value,
            "--messages" => options.messages = value.parse().expect("--messages N"),
            "--size" => options.size = value.parse().expect("--size BYTES"),
            "--acks" => options.acks = value,
            "-X" => options.client.push(value),
            "--partitions" => options.partitions = value.parse().expect("--partitions N"),
            other => panic!("unknown option {other}"),
        }
    }
    options
}

fn client_config(bootstrap: &str, acks: &str, client: &[String]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "60000");
    for setting in client {
        let (key, value) = setting.split_once('=').expect("-X key=value");
        config.set(key, value);
    }
    config
}

fn report(
    messages: u64,
    size: usize,
    acks: &str,
    seconds: f64,
    latencies: &Histogram<u64>,
    failures: &VecDeque<String>,
) {
    let megabytes = (messages as f64 * size as f64) / 1e6;
    println!(
        "{messages} messages of {size} B, acks={acks}: {seconds:.2} s, {:.0} msg/s, {:.1} MB/s; \
         ack latency p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms; failed: {}",
        messages as f64 / seconds,
        megabytes / seconds,
        latencies.value_at_quantile(0.5) as f64 / 1000.0,
        latencies.value_at_quantile(0.99) as f64 / 1000.0,
        latencies.value_at_quantile(0.999) as f64 / 1000.0,
        latencies.max() as f64 / 1000.0,
        if failures.is_empty() {
            "none".to_string()
        } else {
            format!("{failures:?}")
        }
    );
}

fn main() {
    let Options {
        bootstrap,
        topic,
        messages,
        size,
        acks,
        client,
        partitions,
    } = options();
    if partitions > 0 {
        let first = bootstrap.split(',').next().unwrap_or_default();
        create_topic(first, &topic, partitions);
    }
    let reports = Reports {
        started: Instant::now(),
        latencies: Arc::new(Mutex::new(Histogram::new(3).expect("histogram"))),
        failed: Arc::default(),
    };
    let (latencies, failed, started) = (
        reports.latencies.clone(),
        reports.failed.clone(),
        reports.started,
    );
    let config = client_config(&bootstrap, &acks, &client);
    let producer: BaseProducer<Reports> = config.create_with_context(reports).expect("producer");
    let payload = vec![b'x'; size];
    // Warm up: metadata and connections (and auto-creation) before the clock starts.
    let warm: BaseRecord<'_, [u8], [u8], Box<u64>> =
        BaseRecord::with_opaque_to(&topic, Box::new(0)).payload(&payload[..1]);
    producer.send(warm).map_err(|(e, _)| e).expect("first send");
    producer
        .flush(Duration::from_secs(30))
        .expect("warm-up flush");
    latencies.lock().expect("histogram").reset();
    let begin = Instant::now();
    for _ in 0..messages {
        let mut record: BaseRecord<'_, [u8], [u8], Box<u64>> =
            BaseRecord::with_opaque_to(&topic, Box::new(started.elapsed().as_micros() as u64))
                .payload(&payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let seconds = begin.elapsed().as_secs_f64();
    let failures = failed.lock().expect("failures");
    report(
        messages,
        size,
        &acks,
        seconds,
        &latencies.lock().expect("histogram"),
        &failures,
    );
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
