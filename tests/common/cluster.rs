//! A cluster of real chronik processes on 127.0.0.1: every node gets a free Kafka port and a
//! free peer port (both explicit in every node's `--cluster-nodes`), its own data dir and
//! log. Nodes are stopped by their PIDs when the fixture drops.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse};

use super::*;

pub struct Node {
    pub id: u32,
    pub kafka_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    shards: usize,
    extra_args: Vec<String>,
    _root: tempfile::TempDir,
}

impl Cluster {
    /// Starts `count` nodes with `shards` shards each and waits until every one answers.
    pub fn start(count: usize, shards: usize) -> Cluster {
        let mut cluster = Cluster::configure(count, shards, &[]);
        for index in 0..count {
            cluster.start_node(index);
        }
        cluster
    }

    /// Describes the nodes without starting any (see `start_node`).
    pub fn configure(count: usize, shards: usize, extra_args: &[&str]) -> Cluster {
        let root = tempfile::Builder::new()
            .prefix("chronik-cluster-")
            .tempdir()
            .expect("temp dir");
        let nodes = (1..=count as u32)
            .map(|id| Node {
                id,
                kafka_port: free_port(),
                peer_port: free_port(),
                data_dir: root.path().join(format!("node-{id}")),
                log_path: root.path().join(format!("node-{id}.log")),
                child: None,
            })
            .collect();
        Cluster {
            nodes,
            shards,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            _root: root,
        }
    }

    fn cluster_nodes_flag(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "{}=127.0.0.1:{}/127.0.0.1:{}",
                    n.id, n.kafka_port, n.peer_port
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.kafka_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn addr(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.nodes[index].kafka_port))
    }

    pub fn index_of(&self, node_id: i32) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id as i32 == node_id)
            .unwrap_or_else(|| panic!("no node {node_id}"))
    }

    pub fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].child.as_ref().map(Child::id)
    }

    /// Starts (or restarts) node `index` on its data dir and waits until it answers.
    pub fn start_node(&mut self, index: usize) {
        let flag = self.cluster_nodes_flag();
        let node = &mut self.nodes[index];
        assert!(node.child.is_none(), "node {} is running", node.id);
        std::fs::create_dir_all(&node.data_dir).expect("data dir");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("log");
        writeln!(log, "===== chronik-it: starting node {} =====", node.id).ok();
        let log_err = log.try_clone().expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_chronik"))
            .arg("--node-id")
            .arg(node.id.to_string())
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--shards")
            .arg(self.shards.to_string())
            // Nodes sharing the machine pin their shards to different cores.
            .arg("--first-core")
            .arg((index * self.shards).to_string())
            .arg("--cluster-nodes")
            .arg(&flag)
            .args(&self.extra_args)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .expect("spawn chronik");
        node.child = Some(child);
        let addr = self.addr(index);
        let ready = wait_until(Duration::from_secs(30), || {
            api_versions_probe(addr, Duration::from_millis(500)).is_ok()
        });
        assert!(ready, "node {} did not start\n{}", index + 1, self.logs(40));
    }

    pub fn kill9(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            // SAFETY: signalling a child process we own.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    pub fn signal(&self, index: usize, signal: libc::c_int) {
        if let Some(pid) = self.pid(index) {
            // SAFETY: signalling a child process we own.
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }

    /// SIGTERM and wait (at most 30 s) for the exit.
    pub fn terminate(&mut self, index: usize) -> ExitStatus {
        let mut child = self.nodes[index].child.take().expect("node running");
        // SAFETY: signalling a child process we own.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {} ignored SIGTERM for 30 s", index + 1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of every node's log (and any panic), for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.log_path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let panics: Vec<&&str> = all.iter().filter(|l| l.contains("panicked")).collect();
            out.push_str(&format!(
                "----- node {} (panics: {panics:?}) -----\n",
                node.id
            ));
            out.push_str(&all[all.len().saturating_sub(lines)..].join("\n"));
            out.push('\n');
        }
        out
    }

    /// Leader id of each partition of `topic` as node `index` reports it (-1: none).
    pub fn leaders(&self, index: usize, topic: &str) -> Vec<i32> {
        let response = metadata(self.addr(index), Some(&[topic]), false);
        response
            .topics
            .first()
            .map(|t| t.partitions.iter().map(|p| p.leader_id.0).collect())
            .unwrap_or_default()
    }

    /// Waits until some running node names a live leader for every partition of `topic`, and
    /// returns the leaders.
    pub fn wait_for_leaders(&self, topic: &str, partitions: usize) -> Vec<i32> {
        let mut found = Vec::new();
        let live: Vec<i32> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id as i32)
            .collect();
        let ok = wait_until(Duration::from_secs(30), || {
            for (index, node) in self.nodes.iter().enumerate() {
                if node.child.is_none() {
                    continue;
                }
                let leaders = self.leaders(index, topic);
                if leaders.len() == partitions && leaders.iter().all(|l| live.contains(l)) {
                    // Ask the leader itself: it knows it leads only once it does.
                    let confirmed = leaders
                        .iter()
                        .enumerate()
                        .all(|(p, &l)| self.leaders(self.index_of(l), topic).get(p) == Some(&l));
                    if confirmed {
                        found = leaders;
                        return true;
                    }
                }
            }
            false
        });
        assert!(ok, "no leaders for {topic}\n{}", self.logs(30));
        found
    }

    /// Every committed batch of a partition as replica `index` holds it (read from followers
    /// too, through a rack-aware fetch), from offset 0 to its high watermark.
    pub fn replica_log(&self, index: usize, topic: &str, partition: i32) -> (i64, Vec<u8>) {
        self.replica_log_if_ready(index, topic, partition)
            .unwrap_or_else(|code| panic!("replica fetch from node {}: error {code}", index + 1))
    }

    /// `replica_log`, or the error code of a replica not ready to serve the partition.
    pub fn replica_log_if_ready(
        &self,
        index: usize,
        topic: &str,
        partition: i32,
    ) -> Result<(i64, Vec<u8>), i16> {
        let addr = self.addr(index);
        let version = pick_version(addr, ApiKey::Fetch, (11, 12));
        let mut offset = 0;
        let mut log = Vec::new();
        let mut high_watermark = 0;
        for _ in 0..10_000 {
            let request: FetchRequest =
                fetch_request(topic, partition, offset, 0, 4 << 20).with_rack_id("it".into());
            let mut connection = RawConn::connect(addr).expect("connect");
            connection.set_timeout(Duration::from_secs(10)).ok();
            let response: FetchResponse = connection
                .typed(&request, version)
                .unwrap_or_else(|e| panic!("{e}"));
            let answer = &response.responses[0].partitions[0];
            if answer.error_code != NONE {
                return Err(answer.error_code);
            }
            high_watermark = answer.high_watermark;
            let records = answer.records.clone().unwrap_or_default();
            let (whole, next) = whole_batches(&records);
            let Some(next) = next else {
                break;
            };
            offset = next;
            log.extend_from_slice(&records[..whole]);
            if offset >= high_watermark {
                break;
            }
        }
        Ok((high_watermark, log))
    }
}

/// The length of the whole batches at the start of `records`, and the offset after them.
fn whole_batches(records: &[u8]) -> (usize, Option<i64>) {
    let mut position = 0;
    let mut next = None;
    while records.len() >= position + 61 {
        let field = |at: usize, n: usize| &records[position + at..position + at + n];
        let length = i32::from_be_bytes(field(8, 4).try_into().expect("4 bytes")) as usize;
        if records.len() < position + 12 + length {
            break;
        }
        let base_offset = i64::from_be_bytes(field(0, 8).try_into().expect("8 bytes"));
        let last_delta = i32::from_be_bytes(field(23, 4).try_into().expect("4 bytes"));
        next = Some(base_offset + i64::from(last_delta) + 1);
        position += 12 + length;
    }
    (position, next)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs(60));
        }
        for index in 0..self.nodes.len() {
            self.signal(index, libc::SIGCONT);
            self.kill9(index);
        }
    }
}
