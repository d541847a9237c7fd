//! The topic configs chronik understands, by Kafka's names: type, validation, the broker
//! setting that gives the default, and what it does here. CreateTopics, AlterConfigs,
//! IncrementalAlterConfigs and DescribeConfigs all read this one table.

use std::collections::BTreeMap;

use crate::config::Config;

/// The most partitions a topic may have.
pub const PARTITIONS_MAX: u32 = 10_000;
/// Topic configs are short settings; the bounds keep the metadata record small.
pub const CONFIG_VALUE_CHARS_MAX: usize = 1024;
pub const CONFIGS_PER_TOPIC_MAX: usize = 64;

/// Kafka's config types (DescribeConfigs v3+).
#[derive(Debug, Clone, Copy)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

pub struct TopicConfig {
    pub name: &'static str,
    pub kind: ConfigType,
    /// The broker setting whose value is the default (Kafka's synonym).
    pub broker_name: &'static str,
    valid: fn(&str) -> bool,
    pub doc: &'static str,
}

fn long_at_least(min: i64) -> impl Fn(&str) -> bool {
    move |v: &str| v.parse::<i64>().is_ok_and(|n| n >= min)
}

pub const TOPIC_CONFIGS: &[TopicConfig] = &[
    TopicConfig {
        name: "cleanup.policy",
        kind: ConfigType::List,
        broker_name: "log.cleanup.policy",
        valid: |v| cleanup_policy(v).is_some(),
        doc: "delete: old data goes by retention.ms / retention.bytes; compact: the log \
              cleaner keeps the latest record of each key; compact,delete: both.",
    },
    TopicConfig {
        name: "compression.type",
        kind: ConfigType::String,
        broker_name: "compression.type",
        valid: |v| {
            matches!(
                v,
                "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd"
            )
        },
        doc: "Accepted; batches are always stored as the producer sent them.",
    },
    TopicConfig {
        name: "delete.retention.ms",
        kind: ConfigType::Long,
        broker_name: "log.cleaner.delete.retention.ms",
        valid: |v| long_at_least(0)(v),
        doc: "How long tombstones stay in compacted topics.",
    },
    TopicConfig {
        name: "max.message.bytes",
        kind: ConfigType::Int,
        broker_name: "message.max.bytes",
        valid: |v| {
            v.parse::<i64>()
                .is_ok_and(|n| (0..=i64::from(i32::MAX)).contains(&n))
        },
        doc: "The largest record batch a producer may send to the topic.",
    },
    TopicConfig {
        name: "message.timestamp.type",
        kind: ConfigType::String,
        broker_name: "log.message.timestamp.type",
        valid: |v| v == "CreateTime",
        doc: "CreateTime: timestamps are the producer's.",
    },
    TopicConfig {
        name: "min.cleanable.dirty.ratio",
        kind: ConfigType::Double,
        broker_name: "log.cleaner.min.cleanable.ratio",
        valid: |v| v.parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r)),
        doc: "Compacted topics: the share of a partition not yet cleaned above which the \
              cleaner runs.",
    },
    TopicConfig {
        name: "min.compaction.lag.ms",
        kind: ConfigType::Long,
        broker_name: "log.cleaner.min.compaction.lag.ms",
        valid: |v| long_at_least(0)(v),
        doc: "Compacted topics: records younger than this are not cleaned.",
    },
    TopicConfig {
        name: "min.insync.replicas",
        kind: ConfigType::Int,
        broker_name: "min.insync.replicas",
        valid: |v| long_at_least(1)(v),
        doc: "acks=all is refused (NOT_ENOUGH_REPLICAS) while fewer replicas are in sync.",
    },
    TopicConfig {
        name: "retention.bytes",
        kind: ConfigType::Long,
        broker_name: "log.retention.bytes",
        valid: |v| long_at_least(-1)(v),
        doc: "Per partition: older batches go once the partition holds more (-1: no limit).",
    },
    TopicConfig {
        name: "retention.ms",
        kind: ConfigType::Long,
        broker_name: "log.retention.ms",
        valid: |v| long_at_least(-1)(v),
        doc: "Batches older than this go (-1: kept forever).",
    },
    TopicConfig {
        name: "segment.bytes",
        kind: ConfigType::Int,
        broker_name: "log.segment.bytes",
        valid: |v| {
            v.parse::<i64>()
                .is_ok_and(|n| (14..=i64::from(i32::MAX)).contains(&n))
        },
        doc: "Accepted; partitions share their shard's write-ahead log, whose segment size \
              is the broker's segment_bytes.",
    },
    TopicConfig {
        name: "segment.ms",
        kind: ConfigType::Long,
        broker_name: "log.roll.ms",
        valid: |v| long_at_least(1)(v),
        doc: "Accepted; segments belong to the shard's write-ahead log.",
    },
];

/// `cleanup.policy`'s value as (compact, delete); None when it is not a non-empty list of
/// those two words.
pub fn cleanup_policy(value: &str) -> Option<(bool, bool)> {
    let mut policy = (false, false);
    for word in value.split(',').map(str::trim) {
        match word {
            "compact" => policy.0 = true,
            "delete" => policy.1 = true,
            _ => return None,
        }
    }
    Some(policy)
}

pub fn find(name: &str) -> Option<&'static TopicConfig> {
    TOPIC_CONFIGS.iter().find(|c| c.name == name)
}

/// The broker's default for a topic config.
pub fn default_value(config: &TopicConfig, broker: &Config) -> String {
    match config.name {
        "cleanup.policy" => "delete".into(),
        "compression.type" => "producer".into(),
        "delete.retention.ms" => "86400000".into(),
        "max.message.bytes" => broker.message_bytes_max.to_string(),
        "message.timestamp.type" => "CreateTime".into(),
        "min.insync.replicas" => "1".into(),
        "min.cleanable.dirty.ratio" => "0.5".into(),
        "min.compaction.lag.ms" => "0".into(),
        "retention.bytes" => broker.retention_bytes.to_string(),
        "retention.ms" => broker.retention_ms.to_string(),
        "segment.bytes" => broker.segment_bytes.min(i32::MAX as u64).to_string(),
        "segment.ms" => "604800000".into(),
        _ => String::new(),
    }
}

/// Checks one config; the error names the key, as INVALID_CONFIG's message should.
pub fn validate(key: &str, value: &str) -> Result<(), String> {
    if value.len() > CONFIG_VALUE_CHARS_MAX {
        return Err(format!(
            "value of {key} is longer than {CONFIG_VALUE_CHARS_MAX} characters"
        ));
    }
    match find(key) {
        Some(config) if (config.valid)(value) => Ok(()),
        Some(_) => Err(format!("invalid value {value:?} for {key}")),
        None => Err(format!("unknown topic config {key}")),
    }
}

pub fn validate_all(configs: &BTreeMap<String, String>) -> Result<(), String> {
    if configs.len() > CONFIGS_PER_TOPIC_MAX {
        return Err(format!("more than {CONFIGS_PER_TOPIC_MAX} configs"));
    }
    configs.iter().try_for_each(|(k, v)| validate(k, v))
}

/// The broker's own settings as DescribeConfigs lists them (read-only: they come from the
/// configuration file and flags).
pub fn broker_configs(broker: &Config) -> Vec<(&'static str, String, ConfigType)> {
    use ConfigType::{Boolean, Int, List, Long};
    let groups = &broker.groups;
    let settings: [(&'static str, String, ConfigType); 19] = [
        ("broker.id", broker.node_id.to_string(), Int),
        ("num.partitions", broker.default_partitions.to_string(), Int),
        (
            "default.replication.factor",
            broker.default_replication_factor.to_string(),
            Int,
        ),
        (
            "auto.create.topics.enable",
            broker.auto_create_topics.to_string(),
            Boolean,
        ),
        ("log.retention.ms", broker.retention_ms.to_string(), Long),
        (
            "log.retention.bytes",
            broker.retention_bytes.to_string(),
            Long,
        ),
        ("log.segment.bytes", broker.segment_bytes.to_string(), Int),
        ("log.cleanup.policy", "delete".into(), List),
        (
            "log.cleaner.backoff.ms",
            broker.log_cleaner_backoff_ms.to_string(),
            Long,
        ),
        (
            "message.max.bytes",
            broker.message_bytes_max.to_string(),
            Int,
        ),
        ("min.insync.replicas", "1".into(), Int),
        ("compression.type", "producer".into(), ConfigType::String),
        (
            "socket.request.max.bytes",
            broker.request_bytes_max.to_string(),
            Int,
        ),
        ("fetch.max.bytes", broker.fetch_bytes_max.to_string(), Int),
        (
            "offsets.topic.num.partitions",
            broker.offsets_topic_partitions.to_string(),
            Int,
        ),
        (
            "group.initial.rebalance.delay.ms",
            groups.initial_rebalance_delay_ms.to_string(),
            Int,
        ),
        (
            "group.min.session.timeout.ms",
            groups.min_session_timeout_ms.to_string(),
            Int,
        ),
        (
            "group.max.session.timeout.ms",
            groups.max_session_timeout_ms.to_string(),
            Int,
        ),
        ("group.max.size", groups.max_size.to_string(), Int),
    ];
    settings.into()
}
