//! The metadata every shard reads: an immutable snapshot of the controller's state, published
//! by the controller (shard 0) after each change. Shards swap their `Arc` on update.

use std::collections::BTreeMap;

use crate::controller::commands::{PartitionRecord, TopicRecord};
use crate::controller::state::MetadataState;

#[derive(Debug, Clone, Default)]
pub struct MetadataView {
    pub applied_index: u64,
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicRecord>,
}

impl MetadataView {
    pub fn from_state(state: &MetadataState) -> Self {
        Self {
            applied_index: state.applied_index,
            cluster_id: state.cluster_id.clone(),
            topics: state.topics.clone(),
        }
    }

    pub fn topic(&self, name: &str) -> Option<&TopicRecord> {
        self.topics.get(name)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionRecord> {
        let index = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(index)
    }
}

/// Topic-level settings with the broker's defaults underneath.
#[derive(Debug, Clone, Copy)]
pub struct TopicSettings {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub message_bytes_max: usize,
}

impl TopicSettings {
    pub fn of(topic: &TopicRecord, defaults: TopicSettings) -> Self {
        let number = |key: &str| topic.configs.get(key).and_then(|v| v.parse::<i64>().ok());
        Self {
            retention_ms: number("retention.ms").unwrap_or(defaults.retention_ms),
            retention_bytes: number("retention.bytes").unwrap_or(defaults.retention_bytes),
            message_bytes_max: number("max.message.bytes")
                .map_or(defaults.message_bytes_max, |v| v.max(0) as usize),
        }
    }
}
