//! Node configuration: clap flags over an optional TOML file over defaults. Every limit carries
//! its unit in its name and is validated once at start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Command-line flags. Every flag overrides the same key of the `--config` file.
#[derive(Debug, Parser, Default)]
#[command(
    name = "chronik",
    version,
    about = "A Kafka-compatible streaming broker"
)]
pub struct Cli {
    /// TOML configuration file (keys as in the README's table).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory for the write-ahead logs and node state.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address Kafka clients connect to.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// host:port given to clients in Metadata (default: the listen address).
    #[arg(long)]
    pub advertised_listener: Option<String>,
    /// Number of shards (one executor pinned per core). Default: the number of CPUs.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Partitions of auto-created topics and of CreateTopics with num_partitions = -1.
    #[arg(long)]
    pub default_partitions: Option<u32>,
    /// Create unknown topics on Metadata and Produce.
    #[arg(long)]
    pub auto_create_topics: Option<bool>,
    /// Size at which a WAL segment rolls.
    #[arg(long)]
    pub segment_bytes: Option<u64>,
    /// This node's id (broker id and Raft replica id).
    #[arg(long)]
    pub node_id: Option<u32>,
    /// Core the first shard is pinned to (shard i: core first_core + i, wrapping); several
    /// nodes on one machine use different ones.
    #[arg(long)]
    pub first_core: Option<usize>,
    /// Address this node listens on for its peers' Raft traffic (cluster mode).
    #[arg(long)]
    pub peer_listen: Option<SocketAddr>,
    /// Every node of the cluster, this one included: `ID=KAFKA_HOST:PORT/PEER_HOST:PORT`,
    /// comma separated (e.g. `1=127.0.0.1:9092/127.0.0.1:10092,2=...`). Without it the node
    /// is a cluster of one.
    #[arg(long)]
    pub cluster_nodes: Option<String>,
    /// Partitions of `__consumer_offsets` (fixed once the topic exists).
    #[arg(long)]
    pub offsets_topic_partitions: Option<u32>,
    /// How long the first rebalance of an empty group waits for more members (Kafka's
    /// `group.initial.rebalance.delay.ms`).
    #[arg(long)]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// The shortest session timeout a group member may ask for.
    #[arg(long)]
    pub group_min_session_timeout_ms: Option<i32>,
    /// Records an internal topic's partition may hold beyond twice its coordinator's live
    /// state before the coordinator rewrites the state and drops what is older.
    #[arg(long)]
    pub coordinator_log_slack: Option<u64>,
    /// How long an empty group's committed offsets are kept (Kafka's
    /// `offsets.retention.minutes`, in ms; -1: forever).
    #[arg(long)]
    pub offsets_retention_ms: Option<i64>,
    /// How often members of KIP-848 consumer groups heartbeat (Kafka's
    /// `group.consumer.heartbeat.interval.ms`).
    #[arg(long)]
    pub group_consumer_heartbeat_interval_ms: Option<i32>,
    /// How long the log cleaner of each shard rests between passes over its compacted
    /// partitions (Kafka's `log.cleaner.backoff.ms`).
    #[arg(long)]
    pub log_cleaner_backoff_ms: Option<u64>,
}

/// One node of the static cluster description: its id and its two addresses. Ports are
/// always explicit; none is derived from another.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddress {
    pub id: u32,
    /// host:port Kafka clients use (what Metadata advertises).
    pub kafka: String,
    /// host:port of the node's peer (Raft) listener.
    pub peer: SocketAddr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// A name for the cluster; a data directory created under one name refuses another.
    pub name: Option<String>,
    #[serde(default)]
    pub nodes: Vec<NodeAddress>,
}

/// The TOML file: the same keys as the flags, plus the less common limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub advertised_listener: Option<String>,
    pub shards: Option<usize>,
    pub node_id: Option<u32>,
    pub default_partitions: Option<u32>,
    pub auto_create_topics: Option<bool>,
    pub segment_bytes: Option<u64>,
    pub request_bytes_max: Option<usize>,
    pub message_bytes_max: Option<usize>,
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<i64>,
    pub retention_check_interval_ms: Option<u64>,
    pub tick_interval_ms: Option<u64>,
    pub entry_cache_bytes_max: Option<usize>,
    pub entry_cache_shard_bytes_max: Option<usize>,
    pub entry_cache_unread_ms: Option<u64>,
    pub commit_overlap_bytes: Option<usize>,
    pub connection_requests_in_flight_max: Option<usize>,
    pub queued_request_bytes_max: Option<usize>,
    pub fetch_read_bytes_max: Option<usize>,
    pub fetch_wait_ms_max: Option<u64>,
    pub request_body_wait_ms: Option<u64>,
    pub fetch_bytes_max: Option<usize>,
    pub peer_listen: Option<SocketAddr>,
    pub first_core: Option<usize>,
    pub default_replication_factor: Option<u32>,
    pub offsets_topic_partitions: Option<u32>,
    pub group_initial_rebalance_delay_ms: Option<u64>,
    pub group_min_session_timeout_ms: Option<i32>,
    pub group_max_session_timeout_ms: Option<i32>,
    pub group_max_size: Option<usize>,
    pub group_consumer_session_timeout_ms: Option<u64>,
    pub group_consumer_heartbeat_interval_ms: Option<i32>,
    pub coordinator_log_slack: Option<u64>,
    pub offsets_retention_ms: Option<i64>,
    pub log_cleaner_backoff_ms: Option<u64>,
    pub cluster: Option<ClusterFile>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub shards: usize,
    pub node_id: u32,
    pub default_partitions: u32,
    pub auto_create_topics: bool,
    pub segment_bytes: u64,
    /// Kafka's `socket.request.max.bytes`: larger frames are refused before allocation.
    pub request_bytes_max: usize,
    /// Kafka's `message.max.bytes`: default `max.message.bytes` of topics.
    pub message_bytes_max: usize,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub retention_check_interval_ms: u64,
    pub tick_interval_ms: u64,
    /// Recent batches one partition keeps in memory for tail reads, at most...
    pub entry_cache_bytes_max: usize,
    /// ...and all partitions of a shard together (each gets an equal share).
    pub entry_cache_shard_bytes_max: usize,
    /// A partition with one replica that nobody read (or waited on with a long-poll fetch)
    /// for this long caches nothing it has applied (0: always cache); counted in ticks while
    /// the partition is active.
    pub entry_cache_unread_ms: u64,
    /// A WAL group commit at least this large lets the next one start beside it, once this
    /// much more waits (two commits in flight; see `WalConfig::overlap_min_bytes`).
    pub commit_overlap_bytes: usize,
    pub connection_requests_in_flight_max: usize,
    /// Bytes of requests one shard holds at once, all its connections together (Kafka's
    /// `queued.max.request.bytes`): past it, connections stop reading until requests finish,
    /// so producers that outrun the disk are slowed by TCP rather than buffered in memory.
    pub queued_request_bytes_max: usize,
    /// Bytes of batches read from the WAL that one shard's fetch answers hold at once, until
    /// written to their sockets. Past it fetches read less (one batch at least), so slow
    /// or many consumers cannot hold unbounded memory.
    pub fetch_read_bytes_max: usize,
    pub fetch_wait_ms_max: u64,
    /// How long a request's body may take to arrive once its room in the request budget is
    /// taken; past it the connection is closed, so a client that sends a size and stalls
    /// cannot hold the room (and every connection queued behind it) for good.
    pub request_body_wait_ms: u64,
    /// Kafka's `fetch.max.bytes`: the most one fetch response carries (beyond one batch).
    pub fetch_bytes_max: usize,
    pub cluster: ClusterConfig,
    /// Replication factor of auto-created topics and of CreateTopics with -1.
    pub default_replication_factor: u32,
    /// Shard i is pinned to core `first_core + i` (modulo the cores there are).
    pub first_core: usize,
    pub offsets_topic_partitions: u32,
    pub groups: crate::coordinator::group::GroupSettings,
    /// See `Cli::coordinator_log_slack`.
    pub coordinator_log_slack: u64,
    /// See `Cli::offsets_retention_ms`.
    pub offsets_retention_ms: i64,
    /// See `Cli::log_cleaner_backoff_ms`.
    pub log_cleaner_backoff_ms: u64,
}

/// The static cluster: every node (sorted by id) and where this one listens for peers.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    pub nodes: Vec<NodeAddress>,
    /// None for a cluster of one: no peer listener at all.
    pub peer_listen: Option<SocketAddr>,
}

/// The controller group's voters: the first five nodes by id (more voters only slow
/// metadata changes down).
pub const CONTROLLER_VOTERS_MAX: usize = 5;

impl ClusterConfig {
    pub fn is_multi_node(&self) -> bool {
        self.nodes.len() > 1
    }

    pub fn node(&self, id: u32) -> Option<&NodeAddress> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn node_ids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn controller_voters(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .take(CONTROLLER_VOTERS_MAX)
            .map(|n| u64::from(n.id))
            .collect()
    }
}

/// Where this node listens for Kafka clients: given, else its address in the cluster
/// description, else the single-node default 127.0.0.1:9092.
/// Listen, peer listen and advertised listener, as given in a file.
type FileAddresses = (Option<SocketAddr>, Option<SocketAddr>, Option<String>);
/// Listen address, peer listen address, advertised (host, port).
type NodeAddresses = (SocketAddr, Option<SocketAddr>, (String, u16));

/// Where this node listens (clients, peers) and the address it advertises: flags over the
/// file over the cluster's node list.
fn node_addresses(
    cli: &Cli,
    from_file: FileAddresses,
    this_node: Option<&NodeAddress>,
) -> Result<NodeAddresses, ConfigError> {
    let (file_listen, file_peer_listen, file_advertised) = from_file;
    let listen = listen_address(cli.listen.or(file_listen), this_node)?;
    let peer_listen = cli
        .peer_listen
        .or(file_peer_listen)
        .or(this_node.map(|n| n.peer));
    let advertised = cli.advertised_listener.clone().or(file_advertised);
    let advertised = advertised_address(advertised, this_node, listen)?;
    Ok((listen, peer_listen, advertised))
}

fn listen_address(
    given: Option<SocketAddr>,
    this_node: Option<&NodeAddress>,
) -> Result<SocketAddr, ConfigError> {
    match (given, this_node) {
        (Some(listen), _) => Ok(listen),
        (None, Some(node)) => node.kafka.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "node {}'s kafka address {:?} is not an IP:port; give --listen",
                node.id, node.kafka
            ))
        }),
        (None, None) => Ok(SocketAddr::from(([127, 0, 0, 1], 9092))),
    }
}

/// The cluster's nodes, sorted by id: from `--cluster-nodes`, else from the file.
fn cluster_nodes(cli: &Cli, file: &mut ClusterFile) -> Result<Vec<NodeAddress>, ConfigError> {
    let mut nodes = match &cli.cluster_nodes {
        Some(text) => parse_cluster_nodes(text)?,
        None => std::mem::take(&mut file.nodes),
    };
    nodes.sort_by_key(|n| n.id);
    Ok(nodes)
}

/// Parses `--cluster-nodes`: `ID=KAFKA_HOST:PORT/PEER_HOST:PORT,...`.
fn parse_cluster_nodes(text: &str) -> Result<Vec<NodeAddress>, ConfigError> {
    let bad = |part: &str| {
        ConfigError::Invalid(format!(
            "cluster node {part:?} is not ID=KAFKA_HOST:PORT/PEER_HOST:PORT"
        ))
    };
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (id, addresses) = part.trim().split_once('=').ok_or_else(|| bad(part))?;
            let (kafka, peer) = addresses.split_once('/').ok_or_else(|| bad(part))?;
            Ok(NodeAddress {
                id: id.parse().map_err(|_| bad(part))?,
                kafka: kafka.to_string(),
                peer: peer.parse().map_err(|_| bad(part))?,
            })
        })
        .collect()
}

impl Config {
    pub fn load(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let groups = group_settings(&cli, &file);
        let (partitions, slack, offsets_kept_ms, cleaner_rest_ms) =
            background_settings(&cli, &file);
        let node_id = cli.node_id.or(file.node_id).unwrap_or(1);
        let mut cluster_file = file.cluster.unwrap_or_default();
        let nodes = cluster_nodes(&cli, &mut cluster_file)?;
        let this_node = nodes.iter().find(|n| n.id == node_id).cloned();
        let (listen, peer_listen, (advertised_host, advertised_port)) = node_addresses(
            &cli,
            (file.listen, file.peer_listen, file.advertised_listener),
            this_node.as_ref(),
        )?;
        let mut config = Config {
            data_dir: cli
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            listen,
            advertised_host,
            advertised_port,
            shards: cli.shards.or(file.shards).unwrap_or_else(cpu_count),
            node_id,
            default_partitions: cli
                .default_partitions
                .or(file.default_partitions)
                .unwrap_or(1),
            auto_create_topics: cli
                .auto_create_topics
                .or(file.auto_create_topics)
                .unwrap_or(true),
            segment_bytes: cli.segment_bytes.or(file.segment_bytes).unwrap_or(64 << 20),
            request_bytes_max: file.request_bytes_max.unwrap_or(100 << 20),
            message_bytes_max: file.message_bytes_max.unwrap_or(1_048_588),
            retention_ms: file.retention_ms.unwrap_or(7 * 24 * 3600 * 1000),
            retention_bytes: file.retention_bytes.unwrap_or(-1),
            retention_check_interval_ms: file.retention_check_interval_ms.unwrap_or(5_000),
            tick_interval_ms: file.tick_interval_ms.unwrap_or(100),
            entry_cache_bytes_max: file.entry_cache_bytes_max.unwrap_or(8 << 20),
            entry_cache_shard_bytes_max: file.entry_cache_shard_bytes_max.unwrap_or(256 << 20),
            entry_cache_unread_ms: file.entry_cache_unread_ms.unwrap_or(1_000),
            commit_overlap_bytes: file
                .commit_overlap_bytes
                .unwrap_or(chronik_shards::wal::OVERLAP_MIN_BYTES_DEFAULT),
            connection_requests_in_flight_max: file.connection_requests_in_flight_max.unwrap_or(32),
            queued_request_bytes_max: file.queued_request_bytes_max.unwrap_or(256 << 20),
            fetch_read_bytes_max: file.fetch_read_bytes_max.unwrap_or(128 << 20),
            fetch_wait_ms_max: file.fetch_wait_ms_max.unwrap_or(30_000),
            request_body_wait_ms: file.request_body_wait_ms.unwrap_or(30_000),
            fetch_bytes_max: file.fetch_bytes_max.unwrap_or(57_671_680),
            first_core: cli.first_core.or(file.first_core).unwrap_or(0),
            default_replication_factor: file
                .default_replication_factor
                .unwrap_or_else(|| nodes.len().clamp(1, 3) as u32),
            offsets_topic_partitions: partitions,
            groups,
            coordinator_log_slack: slack,
            offsets_retention_ms: offsets_kept_ms,
            log_cleaner_backoff_ms: cleaner_rest_ms,
            cluster: ClusterConfig {
                name: cluster_file.name.take().unwrap_or_else(|| "chronik".into()),
                nodes,
                peer_listen,
            },
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let invalid = |text: String| Err(ConfigError::Invalid(text));
        if self.shards == 0 || self.shards > 256 {
            return invalid(format!("shards must be 1..=256, got {}", self.shards));
        }
        if self.node_id == 0 || self.node_id > i32::MAX as u32 {
            return invalid("node_id must be a positive 32-bit integer".into());
        }
        if self.default_partitions == 0 || self.default_partitions > 100_000 {
            return invalid("default_partitions must be 1..=100000".into());
        }
        if self.segment_bytes < (1 << 20)
            || !self.segment_bytes.is_multiple_of(4096)
            || self.segment_bytes > (1 << 34)
        {
            return invalid(
                "segment_bytes must be a multiple of 4096 between 1 MiB and 16 GiB".into(),
            );
        }
        if self.message_bytes_max as u64 * 2 + 4096 > self.segment_bytes {
            return invalid("message_bytes_max must be below half of segment_bytes".into());
        }
        if self.request_bytes_max < 1024 || self.request_bytes_max > (1 << 30) {
            return invalid("request_bytes_max must be between 1 KiB and 1 GiB".into());
        }
        if self.tick_interval_ms == 0 || self.retention_check_interval_ms == 0 {
            return invalid("intervals must be positive".into());
        }
        if self.commit_overlap_bytes < 4096 {
            return invalid("commit_overlap_bytes must be at least 4096".into());
        }
        self.validate_cluster()?;
        if self.offsets_topic_partitions == 0 || self.offsets_topic_partitions > 1000 {
            return invalid("offsets_topic_partitions must be 1..=1000".into());
        }
        if self.groups.min_session_timeout_ms <= 0
            || self.groups.min_session_timeout_ms > self.groups.max_session_timeout_ms
            || self.groups.max_size == 0
            || self.groups.consumer_heartbeat_interval_ms <= 0
            || self.groups.consumer_session_timeout_ms
                <= self.groups.consumer_heartbeat_interval_ms as u64
        {
            return invalid(
                "group session timeouts must be positive, min <= max; group_max_size >= 1; \
                 the consumer heartbeat interval positive and below its session timeout"
                    .into(),
            );
        }
        if self.connection_requests_in_flight_max == 0
            || self.connection_requests_in_flight_max > 1024
        {
            return invalid("connection_requests_in_flight_max must be 1..=1024".into());
        }
        if self.queued_request_bytes_max < 1 << 20 {
            return invalid("queued_request_bytes_max must be at least 1 MiB".into());
        }
        if self.fetch_read_bytes_max < 1 << 20 {
            return invalid("fetch_read_bytes_max must be at least 1 MiB".into());
        }
        Ok(())
    }
}

impl Config {
    /// The cluster description must name this node, once, with distinct addresses; a single
    /// node without one is a cluster of one (filled in here with its own addresses).
    fn validate_cluster(&mut self) -> Result<(), ConfigError> {
        let invalid = |text: String| Err(ConfigError::Invalid(text));
        if self.cluster.nodes.is_empty() {
            self.cluster.nodes.push(NodeAddress {
                id: self.node_id,
                kafka: format!("{}:{}", self.advertised_host, self.advertised_port),
                peer: self
                    .cluster
                    .peer_listen
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            });
            return Ok(());
        }
        let ids: std::collections::BTreeSet<u32> =
            self.cluster.nodes.iter().map(|n| n.id).collect();
        if ids.len() != self.cluster.nodes.len() {
            return invalid("cluster node ids must be distinct".into());
        }
        if ids.len() > CONTROLLER_VOTERS_MAX {
            return invalid(format!(
                "clusters of up to {CONTROLLER_VOTERS_MAX} nodes are supported (every node is a \
                 controller voter)"
            ));
        }
        if ids.contains(&0) {
            return invalid("cluster node ids must be positive".into());
        }
        let peers: std::collections::BTreeSet<SocketAddr> =
            self.cluster.nodes.iter().map(|n| n.peer).collect();
        if peers.len() != self.cluster.nodes.len() {
            return invalid("cluster nodes need distinct peer addresses".into());
        }
        if self.cluster.node(self.node_id).is_none() {
            return invalid(format!(
                "node_id {} is not one of the cluster's nodes {:?}",
                self.node_id,
                self.cluster.node_ids()
            ));
        }
        if self.cluster.is_multi_node() && self.cluster.peer_listen.is_none() {
            return invalid("a cluster node needs a peer address (peer_listen)".into());
        }
        if self.cluster.peer_listen == Some(self.listen) {
            return invalid("the peer address must differ from the Kafka listener".into());
        }
        if self.default_replication_factor == 0
            || self.default_replication_factor as usize > self.cluster.nodes.len()
        {
            return invalid(format!(
                "default_replication_factor must be 1..={}",
                self.cluster.nodes.len()
            ));
        }
        Ok(())
    }
}

/// (partitions of the internal topics, records their logs may hold beyond the live state,
/// how long an empty group's offsets are kept, the log cleaner's rest between passes).
fn background_settings(cli: &Cli, file: &FileConfig) -> (u32, u64, i64, u64) {
    let partitions = cli
        .offsets_topic_partitions
        .or(file.offsets_topic_partitions)
        .unwrap_or(16);
    let slack = cli
        .coordinator_log_slack
        .or(file.coordinator_log_slack)
        .unwrap_or(10_000);
    let retention = cli
        .offsets_retention_ms
        .or(file.offsets_retention_ms)
        .unwrap_or(7 * 24 * 3600 * 1000);
    let cleaner_backoff = cli
        .log_cleaner_backoff_ms
        .or(file.log_cleaner_backoff_ms)
        .unwrap_or(15_000);
    (partitions, slack, retention, cleaner_backoff)
}

/// Kafka's `group.*` settings, with Kafka's defaults.
fn group_settings(cli: &Cli, file: &FileConfig) -> crate::coordinator::group::GroupSettings {
    crate::coordinator::group::GroupSettings {
        min_session_timeout_ms: cli
            .group_min_session_timeout_ms
            .or(file.group_min_session_timeout_ms)
            .unwrap_or(6_000),
        max_session_timeout_ms: file.group_max_session_timeout_ms.unwrap_or(1_800_000),
        initial_rebalance_delay_ms: cli
            .group_initial_rebalance_delay_ms
            .or(file.group_initial_rebalance_delay_ms)
            .unwrap_or(3_000),
        max_size: file.group_max_size.unwrap_or(10_000),
        consumer_session_timeout_ms: file.group_consumer_session_timeout_ms.unwrap_or(45_000),
        consumer_heartbeat_interval_ms: cli
            .group_consumer_heartbeat_interval_ms
            .or(file.group_consumer_heartbeat_interval_ms)
            .unwrap_or(5_000),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.into(),
        source: Box::new(source),
    })
}

fn parse_host_port(text: &str) -> Result<(String, u16), ConfigError> {
    let (host, port) = text.rsplit_once(':').ok_or_else(|| {
        ConfigError::Invalid(format!("advertised listener {text:?} is not host:port"))
    })?;
    let port = port
        .parse()
        .map_err(|_| ConfigError::Invalid(format!("bad port in {text:?}")))?;
    if host.is_empty() {
        return Err(ConfigError::Invalid(format!("empty host in {text:?}")));
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// The address clients are told to use: the flag or file, else this node's entry in the
/// cluster, else the listen address.
fn advertised_address(
    configured: Option<String>,
    this_node: Option<&NodeAddress>,
    listen: SocketAddr,
) -> Result<(String, u16), ConfigError> {
    match configured.or(this_node.map(|n| n.kafka.clone())) {
        Some(text) => parse_host_port(&text),
        None => Ok((listen.ip().to_string(), listen.port())),
    }
}

/// The default shard count: one per CPU this process may run on.
fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
