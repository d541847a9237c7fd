//! Controller log entries and the metadata snapshot, encoded with prost (no .proto build step).

use std::collections::BTreeMap;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Command {
    #[prost(message, optional, tag = "1")]
    pub init: Option<InitCluster>,
    #[prost(message, optional, tag = "2")]
    pub create_topic: Option<CreateTopic>,
    #[prost(message, optional, tag = "3")]
    pub delete_topic: Option<DeleteTopic>,
    #[prost(message, optional, tag = "4")]
    pub allocate_producer_ids: Option<AllocateProducerIds>,
    #[prost(message, optional, tag = "5")]
    pub alter_configs: Option<AlterTopicConfigs>,
    #[prost(message, optional, tag = "6")]
    pub create_partitions: Option<CreatePartitions>,
}

/// Replaces a topic's configs (the controller computed the new set from its state).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlterTopicConfigs {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub configs: BTreeMap<String, String>,
}

/// Grows a topic to `count` partitions (new ones placed like a new topic's).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreatePartitions {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

/// Reserves the next `count` producer ids (idempotent producers), never handed out twice.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AllocateProducerIds {
    #[prost(uint64, tag = "1")]
    pub count: u64,
}

/// First entry of a new cluster: fixes its id and the shard count its placement uses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InitCluster {
    #[prost(string, tag = "1")]
    pub cluster_id: String,
    #[prost(uint32, tag = "2")]
    pub shard_count: u32,
    /// The nodes of the static cluster configuration, which replicas are placed on.
    #[prost(uint32, repeated, tag = "3")]
    pub node_ids: Vec<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateTopic {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub topic_id: Vec<u8>,
    #[prost(uint32, tag = "3")]
    pub partitions: u32,
    #[prost(uint32, tag = "4")]
    pub replication_factor: u32,
    #[prost(btree_map = "string, string", tag = "5")]
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteTopic {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PartitionRecord {
    /// The partition's Raft group; never reused, so a recreated topic starts empty.
    #[prost(uint64, tag = "1")]
    pub group_id: u64,
    /// The shard that owns the partition on every replica (all nodes run the same number
    /// of shards).
    #[prost(uint32, tag = "2")]
    pub shard: u32,
    /// Node ids holding a replica, the preferred leader first. Empty in metadata written
    /// before clusters existed: then the partition lives on the cluster's only node.
    #[prost(uint32, repeated, tag = "3")]
    pub replicas: Vec<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TopicRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub topic_id: Vec<u8>,
    #[prost(message, repeated, tag = "3")]
    pub partitions: Vec<PartitionRecord>,
    #[prost(btree_map = "string, string", tag = "4")]
    pub configs: BTreeMap<String, String>,
    #[prost(uint32, tag = "5")]
    pub replication_factor: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetadataSnapshot {
    #[prost(string, tag = "1")]
    pub cluster_id: String,
    #[prost(uint32, tag = "2")]
    pub shard_count: u32,
    #[prost(uint64, tag = "3")]
    pub next_group_id: u64,
    #[prost(message, repeated, tag = "4")]
    pub topics: Vec<TopicRecord>,
    #[prost(uint64, tag = "5")]
    pub applied_index: u64,
    #[prost(uint64, tag = "6")]
    pub next_producer_id: u64,
    #[prost(uint32, repeated, tag = "7")]
    pub node_ids: Vec<u32>,
}
