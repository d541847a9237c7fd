//! Shared helpers for chronik's integration tests: a broker process fixture, rdkafka
//! producer/consumer helpers (blocking API only, no tokio) and a small raw Kafka
//! protocol client for admin requests and malformed input.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    create_topics_request::CreatableTopic,
    delete_topics_request::DeleteTopicState,
    fetch_request::{FetchPartition, FetchTopic},
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    metadata_request::MetadataRequestTopic,
    produce_request::{PartitionProduceData, TopicProduceData},
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
pub use rdkafka::producer::Producer;
use rdkafka::producer::{BaseProducer, DeliveryResult, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

pub mod cluster;

// ---------------------------------------------------------------------------------------------
// Kafka error codes used by the tests.
pub const NONE: i16 = 0;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;

// ---------------------------------------------------------------------------------------------
// Broker process fixture

/// Returns a port that was free a moment ago on 127.0.0.1 (bind port 0, read it, drop it),
/// and that this test process has not handed out before: the kernel may give a port just
/// released to the next bind, so two nodes of one cluster could otherwise get the same.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        if HANDED_OUT.lock().expect("ports").insert(port) {
            return port;
        }
    }
}

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub shards: usize,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    extra_args: Vec<String>,
    // Holds the log file and (unless a data dir was given) the data dir.
    _root: tempfile::TempDir,
    pub starts: u32,
}

impl Broker {
    /// Starts a broker with `--shards n` in a fresh temporary data dir.
    pub fn start(shards: usize) -> Broker {
        Broker::start_with(shards, &[], None)
    }

    /// Starts a broker with extra CLI args (e.g. `["--default-partitions", "8"]`), in `data_dir`
    /// if given (the caller keeps it alive), else in a fresh temporary dir.
    pub fn start_with(shards: usize, extra_args: &[&str], data_dir: Option<&Path>) -> Broker {
        let root = tempfile::Builder::new()
            .prefix("chronik-it-")
            .tempdir()
            .expect("create temp dir");
        let data_dir = match data_dir {
            Some(d) => d.to_path_buf(),
            None => root.path().join("data"),
        };
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let log_path = root.path().join("broker.log");
        let mut b = Broker {
            child: None,
            port: free_port(),
            shards,
            data_dir,
            log_path,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            _root: root,
            starts: 0,
        };
        b.spawn_and_wait();
        b
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn spawn_and_wait(&mut self) {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open broker log");
        writeln!(
            log,
            "===== chronik-it: start #{} on port {} data dir {} =====",
            self.starts,
            self.port,
            self.data_dir.display()
        )
        .ok();
        let log_err = log.try_clone().expect("clone log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chronik"));
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--shards")
            .arg(self.shards.to_string())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        cmd.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd.spawn().expect("spawn chronik binary");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30));
    }

    /// Polls until the broker accepts a connection and answers an ApiVersions v0 request.
    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last_err: String;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "broker exited during start-up with {status}\n{}",
                        self.log_tail(60)
                    );
                }
            }
            match api_versions_probe(self.addr(), Duration::from_millis(1000)) {
                Ok(()) => return,
                Err(e) => last_err = e.to_string(),
            }
            if Instant::now() > deadline {
                panic!(
                    "broker on port {} not ready after {:?} (last error: {last_err})\n{}",
                    self.port,
                    timeout,
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Last `lines` lines of the broker's stderr/stdout log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let start = len.saturating_sub(256 * 1024);
            f.seek(SeekFrom::Start(start)).ok();
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).ok();
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        let all: Vec<&str> = s.lines().collect();
        let from = all.len().saturating_sub(lines);
        // Panics anywhere in the log (a panicking shard thread may leave the process running).
        let full = std::fs::read(&self.log_path).unwrap_or_default();
        let full = String::from_utf8_lossy(&full);
        let flines: Vec<&str> = full.lines().collect();
        let mut panics = String::new();
        for (i, l) in flines.iter().enumerate() {
            if l.contains("panicked") && panics.len() < 4000 {
                panics.push_str(&flines[i.saturating_sub(1)..(i + 2).min(flines.len())].join("\n"));
                panics.push('\n');
            }
        }
        if !panics.is_empty() {
            panics = format!("----- panics in broker log -----\n{panics}");
        }
        format!(
            "{panics}----- tail of broker log {} -----\n{}\n----- end of broker log -----",
            self.log_path.display(),
            all[from..].join("\n")
        )
    }

    /// Number of open file descriptors of the broker process (Linux /proc), for diagnostics.
    pub fn open_fds(&self) -> Option<usize> {
        let pid = self.pid()?;
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()
            .map(|d| d.count())
    }

    /// Number of threads of the broker process (Linux /proc), for diagnostics.
    pub fn threads(&self) -> Option<usize> {
        let pid = self.pid()?;
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()
            .map(|d| d.count())
    }

    /// True if the broker process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Panics (with the log tail) if the broker process has exited.
    pub fn assert_running(&mut self, context: &str) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                panic!(
                    "broker process exited unexpectedly ({context}): {status}\n{}",
                    self.log_tail(80)
                );
            }
        } else {
            panic!("broker is not running ({context})");
        }
    }

    /// SIGKILL the broker and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as libc::pid_t;
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }

    /// Kill (SIGKILL) if still running, then start again on the same data dir and port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn_and_wait();
    }

    /// SIGTERM, wait up to 30 s for the exit, return its status (panics on timeout).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("terminate: broker not running");
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match c.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) => {}
                Err(e) => panic!("waiting for broker: {e}"),
            }
            if Instant::now() > deadline {
                unsafe {
                    libc::kill(c.id() as libc::pid_t, libc::SIGKILL);
                }
                let _ = c.wait();
                panic!(
                    "broker did not exit within 30 s of SIGTERM\n{}",
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(80));
        }
        self.kill9();
        // CHRONIK_IT_KEEP_LOGS=<dir>: keep every broker log as <dir>/broker-<port>.log.
        if let Some(dir) = std::env::var_os("CHRONIK_IT_KEEP_LOGS") {
            let dest = Path::new(&dir).join(format!("broker-{}.log", self.port));
            if std::fs::create_dir_all(&dir).is_ok() && std::fs::copy(&self.log_path, &dest).is_ok()
            {
                eprintln!("broker log kept at {}", dest.display());
            }
        }
    }
}

pub fn api_versions_probe(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    let mut conn = RawConn::connect_timeout(addr, timeout)?;
    conn.set_timeout(timeout)?;
    let resp = conn.request(ApiKey::ApiVersions as i16, 0, &[])?;
    if resp.len() < 6 {
        return Err(io::Error::other(format!(
            "short ApiVersions response ({} bytes)",
            resp.len()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// rdkafka helpers

#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub error: Option<String>,
}

/// Producer context that records every delivery report.
#[derive(Clone, Default)]
pub struct DeliveryContext {
    pub results: Arc<Mutex<Vec<Delivery>>>,
    pub ok_count: Arc<AtomicUsize>,
    pub err_count: Arc<AtomicUsize>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        let (m, error) = match r {
            Ok(m) => (m, None),
            Err((e, m)) => (m, Some(e.to_string())),
        };
        let d = Delivery {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(|k| k.to_vec()),
            payload: m.payload().map(|p| p.to_vec()),
            error,
        };
        if d.error.is_none() {
            self.ok_count.fetch_add(1, Ordering::SeqCst);
        } else {
            self.err_count.fetch_add(1, Ordering::SeqCst);
        }
        self.results.lock().expect("delivery lock").push(d);
    }
}

/// A `BaseProducer` whose delivery reports land in `producer.context().results`.
pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> BaseProducer<DeliveryContext> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "30000")
        .set("socket.timeout.ms", "10000");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    cfg.create_with_context(DeliveryContext::default())
        .expect("create producer")
}

/// Polls until every message has a delivery report (or the timeout passes).
pub fn flush(p: &BaseProducer<DeliveryContext>, timeout: Duration) {
    if let Err(e) = p.flush(timeout) {
        panic!(
            "producer flush failed after {timeout:?}: {e} (delivered ok {}, errors {}, in flight {})",
            p.context().ok_count.load(Ordering::SeqCst),
            p.context().err_count.load(Ordering::SeqCst),
            p.in_flight_count()
        );
    }
}

/// Sends a record, polling while the local queue is full (at most 30 s).
pub fn send_retry(
    p: &BaseProducer<DeliveryContext>,
    mut rec: rdkafka::producer::BaseRecord<'_, [u8], [u8]>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                rec = r;
                p.poll(Duration::from_millis(10));
                assert!(Instant::now() < deadline, "producer queue full for 30 s");
            }
            Err((e, _)) => panic!("send failed: {e}"),
        }
    }
}

pub fn consumer(bootstrap: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("group.id", "chronik-it-unused-group")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("socket.timeout.ms", "10000");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    cfg.create().expect("create consumer")
}

/// Assigns partitions 0..partitions of `topic` from the beginning and polls until
/// `expected` messages arrived (then 500 ms more to catch extras) or `timeout` passed.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    consume_with(bootstrap, topic, partitions, expected, timeout, &[])
}

pub fn consume_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
    extra: &[(&str, &str)],
) -> Vec<OwnedMessage> {
    let c = consumer(bootstrap, extra);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition");
    }
    c.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut grace_end: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now > deadline {
            break;
        }
        if let Some(g) = grace_end {
            if now > g {
                break;
            }
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) if errors.len() < 20 => errors.push(e.to_string()),
            Some(Err(_)) => {}
            None => {}
        }
        if out.len() >= expected && grace_end.is_none() {
            grace_end = Some(Instant::now() + Duration::from_millis(500));
        }
    }
    if out.len() < expected {
        eprintln!(
            "consume_all({topic}): got {} of {expected} messages in {timeout:?}; consumer errors: {errors:?}",
            out.len()
        );
    } else if !errors.is_empty() {
        eprintln!("consume_all({topic}): consumer errors (non-fatal): {errors:?}");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Raw protocol client

static CORRELATION: AtomicI32 = AtomicI32::new(1);

pub struct RawConn {
    pub stream: TcpStream,
}

/// How a read of a response ended.
#[derive(Debug)]
pub enum ReadOutcome {
    Frame(Vec<u8>),
    /// Peer closed (EOF) or reset the connection.
    Closed,
    /// Nothing (complete) within the timeout.
    Timeout,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> io::Result<RawConn> {
        RawConn::connect_timeout(addr, Duration::from_secs(5))
    }

    pub fn connect_timeout(addr: SocketAddr, t: Duration) -> io::Result<RawConn> {
        let stream = TcpStream::connect_timeout(&addr, t)?;
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(RawConn { stream })
    }

    pub fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(t))?;
        self.stream.set_write_timeout(Some(t))
    }

    /// Writes raw bytes as they are (no size prefix added).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes a size-prefixed frame.
    pub fn send_frame(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(payload.len() + 4);
        buf.extend_from_slice(&(payload.len() as i32).to_be_bytes());
        buf.extend_from_slice(payload);
        self.stream.write_all(&buf)
    }

    /// Reads one size-prefixed frame (payload without the prefix).
    pub fn recv_frame(&mut self) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        if !(0..=256 * 1024 * 1024).contains(&len) {
            return Err(io::Error::other(format!("bad response frame size {len}")));
        }
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Like `recv_frame` but classifies EOF/reset and timeouts.
    pub fn read_outcome(&mut self) -> ReadOutcome {
        match self.recv_frame() {
            Ok(f) => ReadOutcome::Frame(f),
            Err(e) => classify(&e),
        }
    }

    /// Sends a request with a correct header for (api_key, api_version) and returns the
    /// response frame payload (starting with the correlation id, which is checked).
    pub fn request(&mut self, api_key: i16, api_version: i16, body: &[u8]) -> io::Result<Vec<u8>> {
        let (corr, frame) = request_frame(api_key, api_version, body);
        self.send_frame(&frame)?;
        let resp = self.recv_frame()?;
        if resp.len() < 4 {
            return Err(io::Error::other("response shorter than a correlation id"));
        }
        let got = i32::from_be_bytes([resp[0], resp[1], resp[2], resp[3]]);
        if got != corr {
            return Err(io::Error::other(format!(
                "correlation id mismatch: sent {corr}, got {got}"
            )));
        }
        Ok(resp)
    }

    /// Encodes `req` at `version`, sends it, decodes the typed response.
    pub fn typed<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response, String> {
        let mut body = BytesMut::new();
        req.encode(&mut body, version)
            .map_err(|e| format!("encode {} v{version}: {e}", api_name(R::KEY)))?;
        let resp = self
            .request(R::KEY, version, &body)
            .map_err(|e| format!("{} v{version} request failed: {e}", api_name(R::KEY)))?;
        let mut b = Bytes::from(resp);
        let hv = <R::Response as HeaderVersion>::header_version(version);
        ResponseHeader::decode(&mut b, hv)
            .map_err(|e| format!("decode response header of {}: {e}", api_name(R::KEY)))?;
        let r = R::Response::decode(&mut b, version)
            .map_err(|e| format!("decode {} v{version} response: {e}", api_name(R::KEY)))?;
        Ok(r)
    }
}

pub fn classify(e: &io::Error) -> ReadOutcome {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ReadOutcome::Timeout,
        _ => ReadOutcome::Closed,
    }
}

/// Waits up to `t` for the peer to close the connection: true if it was closed (EOF or reset),
/// false if it was still open after `t`. Any response bytes are read and ignored.
pub fn wait_closed(stream: &mut TcpStream, t: Duration) -> bool {
    let deadline = Instant::now() + t;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).ok();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => return false,
                io::ErrorKind::Interrupted => continue,
                _ => return true,
            },
        }
    }
}

pub fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("api_key {key}"),
    }
}

/// Request header version for (key, version); 1 for keys the crate does not know.
pub fn request_header_version(api_key: i16, api_version: i16) -> i16 {
    match ApiKey::try_from(api_key) {
        Ok(k) => k.request_header_version(api_version),
        Err(_) => 1,
    }
}

/// Builds a frame payload (without size prefix): header (v1 or v2 as the API wants) + body.
pub fn request_frame(api_key: i16, api_version: i16, body: &[u8]) -> (i32, Vec<u8>) {
    let corr = CORRELATION.fetch_add(1, Ordering::Relaxed);
    let hv = request_header_version(api_key, api_version);
    let mut buf = Vec::with_capacity(body.len() + 32);
    buf.extend_from_slice(&api_key.to_be_bytes());
    buf.extend_from_slice(&api_version.to_be_bytes());
    buf.extend_from_slice(&corr.to_be_bytes());
    if hv >= 1 {
        let client_id = b"chronik-it";
        buf.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
        buf.extend_from_slice(client_id);
    }
    if hv >= 2 {
        buf.push(0); // no tagged fields
    }
    buf.extend_from_slice(body);
    (corr, buf)
}

/// Encodes a typed request into a full frame payload (header + body), for bit-flip fuzzing.
pub fn encode_request<R: Request>(req: &R, version: i16) -> Vec<u8> {
    let mut body = BytesMut::new();
    req.encode(&mut body, version).expect("encode request");
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(CORRELATION.fetch_add(1, Ordering::Relaxed))
        .with_client_id(Some(StrBytes::from_static_str("chronik-it")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, R::header_version(version))
        .expect("encode header");
    buf.extend_from_slice(&body);
    buf.to_vec()
}

/// One-shot raw request on a fresh connection. Returns the response frame payload (starting
/// with the correlation id).
pub fn raw_request(
    addr: SocketAddr,
    api_key: i16,
    api_version: i16,
    body: &[u8],
) -> io::Result<Vec<u8>> {
    let mut c = RawConn::connect(addr)?;
    c.request(api_key, api_version, body)
}

/// One-shot typed request on a fresh connection; panics with context on failure.
pub fn typed_request<R: Request>(addr: SocketAddr, req: &R, version: i16) -> R::Response {
    let mut c = RawConn::connect(addr).expect("connect to broker");
    match c.typed(req, version) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

/// ApiVersions v0: map api_key -> (min, max) as advertised by the broker.
pub fn api_versions(addr: SocketAddr) -> HashMap<i16, (i16, i16)> {
    let resp = raw_request(addr, ApiKey::ApiVersions as i16, 0, &[]).expect("ApiVersions v0");
    let (err, keys) = parse_api_versions_v0(&resp[4..]).expect("parse ApiVersions v0 response");
    assert_eq!(err, NONE, "ApiVersions v0 error code");
    keys.into_iter().map(|(k, a, b)| (k, (a, b))).collect()
}

/// Parses a v0-shaped ApiVersions response body (after the correlation id):
/// error_code i16, [api_key i16, min i16, max i16] (int32 count).
/// (api key, min version, max version)
pub type ApiVersionRange = (i16, i16, i16);

pub fn parse_api_versions_v0(b: &[u8]) -> Result<(i16, Vec<ApiVersionRange>), String> {
    if b.len() < 6 {
        return Err(format!("body too short: {} bytes", b.len()));
    }
    let err = i16::from_be_bytes([b[0], b[1]]);
    let n = i32::from_be_bytes([b[2], b[3], b[4], b[5]]);
    if n < 0 || (n as usize) * 6 > b.len() - 6 {
        return Err(format!(
            "bad api_keys count {n} for body of {} bytes",
            b.len()
        ));
    }
    let mut out = Vec::new();
    for i in 0..n as usize {
        let o = 6 + i * 6;
        out.push((
            i16::from_be_bytes([b[o], b[o + 1]]),
            i16::from_be_bytes([b[o + 2], b[o + 3]]),
            i16::from_be_bytes([b[o + 4], b[o + 5]]),
        ));
    }
    Ok((err, out))
}

/// Highest version both the broker (per ApiVersions) and we (`ours` = range the test code
/// builds requests for) support. Panics if there is none.
pub fn pick_version(addr: SocketAddr, key: ApiKey, ours: (i16, i16)) -> i16 {
    let adv = api_versions(addr);
    let (bmin, bmax) = *adv
        .get(&(key as i16))
        .unwrap_or_else(|| panic!("broker does not advertise {key:?} in ApiVersions: {adv:?}"));
    let v = bmax.min(ours.1);
    assert!(
        v >= bmin.max(ours.0),
        "no common version for {key:?}: broker {bmin}..{bmax}, tests {}..{}",
        ours.0,
        ours.1
    );
    v
}

pub fn tn(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub fn topic_name_str(t: &TopicName) -> String {
    t.0.as_str().to_string()
}

/// CreateTopics for (name, partitions); returns per-topic (name, error_code, error_message).
pub fn create_topics(
    addr: SocketAddr,
    topics: &[(&str, i32)],
    validate_only: bool,
) -> Vec<(String, i16, Option<String>)> {
    let v = pick_version(addr, ApiKey::CreateTopics, (2, 7));
    let req = CreateTopicsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|(n, p)| {
                    CreatableTopic::default()
                        .with_name(tn(n))
                        .with_num_partitions(*p)
                        .with_replication_factor(-1)
                })
                .collect(),
        )
        .with_timeout_ms(10_000)
        .with_validate_only(validate_only);
    let resp: CreateTopicsResponse = typed_request(addr, &req, v);
    resp.topics
        .iter()
        .map(|t| {
            (
                topic_name_str(&t.name),
                t.error_code,
                t.error_message.as_ref().map(|m| m.as_str().to_string()),
            )
        })
        .collect()
}

/// Creates one topic and asserts success.
pub fn create_topic(addr: SocketAddr, name: &str, partitions: i32) {
    let r = create_topics(addr, &[(name, partitions)], false);
    assert_eq!(r.len(), 1, "CreateTopics({name}) returned {r:?}");
    assert_eq!(
        r[0].1, NONE,
        "CreateTopics({name}, {partitions}) failed: {r:?}"
    );
}

/// DeleteTopics by name; returns (name, error_code).
pub fn delete_topics(addr: SocketAddr, names: &[&str]) -> Vec<(Option<String>, i16)> {
    let v = pick_version(addr, ApiKey::DeleteTopics, (1, 6));
    let mut req = DeleteTopicsRequest::default().with_timeout_ms(10_000);
    if v >= 6 {
        req = req.with_topics(
            names
                .iter()
                .map(|n| DeleteTopicState::default().with_name(Some(tn(n))))
                .collect(),
        );
    } else {
        req = req.with_topic_names(names.iter().map(|n| tn(n)).collect());
    }
    let resp: DeleteTopicsResponse = typed_request(addr, &req, v);
    resp.responses
        .iter()
        .map(|r| (r.name.as_ref().map(topic_name_str), r.error_code))
        .collect()
}

/// Metadata for the given topics (None = all topics).
pub fn metadata(
    addr: SocketAddr,
    topics: Option<&[&str]>,
    allow_auto_create: bool,
) -> MetadataResponse {
    let v = pick_version(addr, ApiKey::Metadata, (4, 12));
    let req = MetadataRequest::default()
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(tn(n))))
                .collect()
        }))
        .with_allow_auto_topic_creation(allow_auto_create);
    typed_request(addr, &req, v)
}

/// (error_code, partition count) of `topic` in an all-topics Metadata response, None if absent.
pub fn topic_in_metadata(addr: SocketAddr, topic: &str) -> Option<(i16, usize)> {
    let md = metadata(addr, None, false);
    md.topics
        .iter()
        .find(|t| t.name.as_ref().map(topic_name_str).as_deref() == Some(topic))
        .map(|t| (t.error_code, t.partitions.len()))
}

/// ListOffsets for one partition: (error_code, timestamp, offset).
pub fn list_offsets(
    addr: SocketAddr,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> (i16, i64, i64) {
    let v = pick_version(addr, ApiKey::ListOffsets, (1, 7));
    let req = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(tn(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])]);
    let resp: ListOffsetsResponse = typed_request(addr, &req, v);
    let t = resp
        .topics
        .first()
        .unwrap_or_else(|| panic!("ListOffsets({topic}) response has no topics: {resp:?}"));
    let p = t
        .partitions
        .first()
        .unwrap_or_else(|| panic!("ListOffsets({topic}) response has no partitions: {resp:?}"));
    (p.error_code, p.timestamp, p.offset)
}

/// Produce one record batch (raw bytes) to (topic, partition); returns the typed response.
pub fn produce_raw(
    addr: SocketAddr,
    topic: &str,
    partition: i32,
    batch: Vec<u8>,
    acks: i16,
) -> ProduceResponse {
    let v = pick_version(addr, ApiKey::Produce, (3, 9));
    let req = produce_request(topic, partition, batch, acks);
    typed_request(addr, &req, v)
}

pub fn produce_request(topic: &str, partition: i32, batch: Vec<u8>, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(tn(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(batch)))])])
}

/// (error_code, base_offset) of the single partition in a Produce response.
pub fn produce_result(resp: &ProduceResponse) -> (i16, i64) {
    let t = resp
        .responses
        .first()
        .unwrap_or_else(|| panic!("Produce response without topics: {resp:?}"));
    let p = t
        .partition_responses
        .first()
        .unwrap_or_else(|| panic!("Produce response without partitions: {resp:?}"));
    (p.error_code, p.base_offset)
}

pub fn fetch_request(
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    max_bytes: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(tn(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(max_bytes)])])
}

/// Fetch one partition: (error_code, high_watermark, records bytes).
pub fn fetch_raw(
    addr: SocketAddr,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    max_bytes: i32,
) -> (i16, i64, Bytes) {
    let v = pick_version(addr, ApiKey::Fetch, (4, 12));
    let req = fetch_request(topic, partition, offset, max_wait_ms, max_bytes);
    let mut c = RawConn::connect(addr).expect("connect");
    c.set_timeout(Duration::from_millis(max_wait_ms.max(0) as u64 + 10_000))
        .ok();
    let resp: FetchResponse = c.typed(&req, v).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.error_code, NONE, "Fetch top-level error: {resp:?}");
    let t = resp
        .responses
        .first()
        .unwrap_or_else(|| panic!("Fetch response without topics: {resp:?}"));
    let p = t
        .partitions
        .first()
        .unwrap_or_else(|| panic!("Fetch response without partitions: {resp:?}"));
    (
        p.error_code,
        p.high_watermark,
        p.records.clone().unwrap_or_default(),
    )
}

/// Summary of the record batches in a fetched records blob (complete batches only).
#[derive(Debug, Clone)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub magic: i8,
    pub attributes: i16,
    pub record_count: i32,
    pub crc_ok: bool,
}

pub fn parse_batches(b: &[u8]) -> Vec<BatchInfo> {
    let mut out = Vec::new();
    let mut o = 0usize;
    while o + 12 <= b.len() {
        let base_offset = i64::from_be_bytes(b[o..o + 8].try_into().expect("8"));
        let len = i32::from_be_bytes(b[o + 8..o + 12].try_into().expect("4"));
        if len < 49 || o + 12 + len as usize > b.len() {
            break; // partial trailing batch (allowed in fetch responses)
        }
        let batch = &b[o..o + 12 + len as usize];
        let magic = batch[16] as i8;
        let crc = u32::from_be_bytes(batch[17..21].try_into().expect("4"));
        let attributes = i16::from_be_bytes(batch[21..23].try_into().expect("2"));
        let last_offset_delta = i32::from_be_bytes(batch[23..27].try_into().expect("4"));
        let record_count = i32::from_be_bytes(batch[57..61].try_into().expect("4"));
        out.push(BatchInfo {
            base_offset,
            last_offset_delta,
            magic,
            attributes,
            record_count,
            crc_ok: crc32c::crc32c(&batch[21..]) == crc,
        });
        o += 12 + len as usize;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Record batch encoding (magic 2, uncompressed) for raw produce tests.

pub fn put_varint(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            buf.push(z as u8);
            return;
        }
        buf.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

pub struct RawRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    pub timestamp_delta: i64,
}

/// Encodes an uncompressed v2 record batch with a correct CRC-32C.
pub fn encode_batch(records: &[RawRecord<'_>], base_timestamp: i64) -> Vec<u8> {
    let mut recs = Vec::new();
    let mut max_ts = base_timestamp;
    for (i, r) in records.iter().enumerate() {
        let mut body = Vec::new();
        body.push(0u8); // attributes
        put_varint(&mut body, r.timestamp_delta);
        put_varint(&mut body, i as i64);
        match r.key {
            Some(k) => {
                put_varint(&mut body, k.len() as i64);
                body.extend_from_slice(k);
            }
            None => put_varint(&mut body, -1),
        }
        match r.value {
            Some(v) => {
                put_varint(&mut body, v.len() as i64);
                body.extend_from_slice(v);
            }
            None => put_varint(&mut body, -1),
        }
        put_varint(&mut body, r.headers.len() as i64);
        for (hk, hv) in &r.headers {
            put_varint(&mut body, hk.len() as i64);
            body.extend_from_slice(hk.as_bytes());
            match hv {
                Some(v) => {
                    put_varint(&mut body, v.len() as i64);
                    body.extend_from_slice(v);
                }
                None => put_varint(&mut body, -1),
            }
        }
        put_varint(&mut recs, body.len() as i64);
        recs.extend_from_slice(&body);
        max_ts = max_ts.max(base_timestamp + r.timestamp_delta);
    }
    // From attributes to the end (covered by the CRC).
    let mut tail = Vec::new();
    tail.extend_from_slice(&0i16.to_be_bytes()); // attributes: no compression, create time
    tail.extend_from_slice(&((records.len() as i32) - 1).to_be_bytes()); // lastOffsetDelta
    tail.extend_from_slice(&base_timestamp.to_be_bytes());
    tail.extend_from_slice(&max_ts.to_be_bytes());
    tail.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
    tail.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    tail.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    tail.extend_from_slice(&(records.len() as i32).to_be_bytes());
    tail.extend_from_slice(&recs);
    let crc = crc32c::crc32c(&tail);
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
    let batch_len = 4 + 1 + 4 + tail.len(); // leader epoch + magic + crc + tail
    batch.extend_from_slice(&(batch_len as i32).to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc.to_be_bytes());
    batch.extend_from_slice(&tail);
    batch
}

/// A batch of `n` simple records with values `"{prefix}{i}"`.
pub fn simple_batch(prefix: &str, n: usize, base_timestamp: i64) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("{prefix}{i}").into_bytes())
        .collect();
    let recs: Vec<RawRecord<'_>> = values
        .iter()
        .map(|v| RawRecord {
            key: None,
            value: Some(v.as_slice()),
            headers: vec![],
            timestamp_delta: 0,
        })
        .collect();
    encode_batch(&recs, base_timestamp)
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}
