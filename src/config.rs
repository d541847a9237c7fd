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
    pub connection_requests_in_flight_max: Option<usize>,
    pub fetch_wait_ms_max: Option<u64>,
    pub fetch_bytes_max: Option<usize>,
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
    pub entry_cache_bytes_max: usize,
    pub connection_requests_in_flight_max: usize,
    pub fetch_wait_ms_max: u64,
    /// Kafka's `fetch.max.bytes`: the most one fetch response carries (beyond one batch).
    pub fetch_bytes_max: usize,
}

impl Config {
    pub fn load(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = cli
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092)));
        let advertised = cli.advertised_listener.or(file.advertised_listener);
        let (advertised_host, advertised_port) = match advertised {
            Some(text) => parse_host_port(&text)?,
            None => (listen.ip().to_string(), listen.port()),
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let config = Config {
            data_dir: cli
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            listen,
            advertised_host,
            advertised_port,
            shards: cli.shards.or(file.shards).unwrap_or(cpus),
            node_id: cli.node_id.or(file.node_id).unwrap_or(1),
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
            connection_requests_in_flight_max: file.connection_requests_in_flight_max.unwrap_or(32),
            fetch_wait_ms_max: file.fetch_wait_ms_max.unwrap_or(30_000),
            fetch_bytes_max: file.fetch_bytes_max.unwrap_or(57_671_680),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
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
        if self.connection_requests_in_flight_max == 0
            || self.connection_requests_in_flight_max > 1024
        {
            return invalid("connection_requests_in_flight_max must be 1..=1024".into());
        }
        Ok(())
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
