//! The metadata every shard reads: an immutable snapshot of the controller's state, published
//! by the controller (shard 0) after each change. Shards swap their `Arc` on update.

use std::collections::{BTreeMap, HashMap};

use crate::controller::commands::{PartitionRecord, TopicRecord};
use crate::controller::state::MetadataState;

#[derive(Debug, Clone, Default)]
pub struct MetadataView {
    pub applied_index: u64,
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicRecord>,
    /// Every group id below this was created at some point; one no topic holds was deleted.
    pub next_group_id: u64,
    /// Group id -> the shard owning it on every node (peer messages are routed by it).
    group_shards: HashMap<u64, usize>,
}

impl MetadataView {
    pub fn from_state(state: &MetadataState) -> Self {
        let group_shards = state
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .map(|p| (p.group_id, p.shard as usize))
            .collect();
        Self {
            applied_index: state.applied_index,
            cluster_id: state.cluster_id.clone(),
            topics: state.topics.clone(),
            next_group_id: state.next_group_id,
            group_shards,
        }
    }

    /// The shard owning `group_id` on this node, if the metadata knows the group.
    pub fn shard_of(&self, group_id: u64) -> Option<usize> {
        if group_id == crate::controller::state::CONTROLLER_GROUP_ID {
            return Some(0);
        }
        self.group_shards.get(&group_id).copied()
    }

    /// Whether `group_id` belonged to a topic that was deleted (safe to decide from any
    /// committed prefix of the metadata: group ids are never reused).
    pub fn group_deleted(&self, group_id: u64) -> bool {
        group_id != crate::controller::state::CONTROLLER_GROUP_ID
            && group_id < self.next_group_id
            && !self.group_shards.contains_key(&group_id)
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
    /// `cleanup.policy` holds `delete`: retention applies (a compact-only topic keeps its
    /// records until the cleaner supersedes them).
    pub deletes_old_data: bool,
}

impl TopicSettings {
    pub fn of(topic: &TopicRecord, defaults: TopicSettings) -> Self {
        let number = |key: &str| topic.configs.get(key).and_then(|v| v.parse::<i64>().ok());
        Self {
            retention_ms: number("retention.ms").unwrap_or(defaults.retention_ms),
            retention_bytes: number("retention.bytes").unwrap_or(defaults.retention_bytes),
            message_bytes_max: number("max.message.bytes")
                .map_or(defaults.message_bytes_max, |v| v.max(0) as usize),
            deletes_old_data: topic
                .configs
                .get("cleanup.policy")
                .and_then(|v| crate::kafka::topic_configs::cleanup_policy(v))
                .is_none_or(|(_, delete)| delete),
        }
    }
}
