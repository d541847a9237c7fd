//! The cluster metadata state machine: pure and deterministic. Every replica of the controller
//! group applies the same commands in the same order and reaches the same placement.

use std::collections::BTreeMap;

use prost::Message;

use super::commands::{Command, MetadataSnapshot, PartitionRecord, TopicRecord};

/// Group id of the controller's own Raft group (lives on shard 0).
pub const CONTROLLER_GROUP_ID: u64 = 1;
const FIRST_PARTITION_GROUP_ID: u64 = 2;
/// Producer ids start here (0 looks like an unset id in logs).
pub const FIRST_PRODUCER_ID: u64 = 1000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataState {
    pub cluster_id: String,
    pub shard_count: u32,
    pub next_group_id: u64,
    pub topics: BTreeMap<String, TopicRecord>,
    pub applied_index: u64,
    /// The next producer id to hand out to an idempotent producer.
    pub next_producer_id: u64,
}

impl MetadataState {
    pub fn is_initialized(&self) -> bool {
        self.shard_count > 0
    }

    pub fn apply(&mut self, index: u64, command: Command) {
        assert!(index > self.applied_index, "commands apply in log order");
        self.applied_index = index;
        if let Some(init) = command.init {
            if !self.is_initialized() {
                assert!(init.shard_count > 0);
                self.cluster_id = init.cluster_id;
                self.shard_count = init.shard_count;
                self.next_group_id = FIRST_PARTITION_GROUP_ID;
            }
        }
        if let Some(create) = command.create_topic {
            if self.is_initialized() && !self.topics.contains_key(&create.name) {
                let partitions = (0..create.partitions)
                    .map(|_| {
                        let group_id = self.next_group_id;
                        self.next_group_id += 1;
                        PartitionRecord {
                            group_id,
                            shard: 0,
                            replicas: vec![],
                        }
                    })
                    .collect::<Vec<_>>();
                let mut topic = TopicRecord {
                    name: create.name.clone(),
                    topic_id: create.topic_id,
                    partitions: Vec::new(),
                    configs: create.configs,
                    replication_factor: create.replication_factor,
                };
                // Place one partition at a time so the load count sees the earlier ones.
                for mut partition in partitions {
                    partition.shard = self.least_loaded_shard_with(&topic);
                    topic.partitions.push(partition);
                }
                self.topics.insert(create.name, topic);
            }
        }
        if let Some(delete) = command.delete_topic {
            self.topics.remove(&delete.name);
        }
        if let Some(allocate) = command.allocate_producer_ids {
            self.next_producer_id = self.next_producer_id.max(FIRST_PRODUCER_ID) + allocate.count;
        }
    }

    fn shard_loads(&self) -> Vec<usize> {
        let mut loads = vec![0usize; self.shard_count as usize];
        for topic in self.topics.values() {
            for partition in &topic.partitions {
                if let Some(load) = loads.get_mut(partition.shard as usize) {
                    *load += 1;
                }
            }
        }
        loads
    }

    /// The shard with the fewest partitions (counting `pending`), lowest index on ties.
    fn least_loaded_shard_with(&self, pending: &TopicRecord) -> u32 {
        let mut loads = self.shard_loads();
        for partition in &pending.partitions {
            if let Some(load) = loads.get_mut(partition.shard as usize) {
                *load += 1;
            }
        }
        let (shard, _) = loads
            .iter()
            .enumerate()
            .min_by_key(|&(i, &load)| (load, i))
            .unwrap_or((0, &0));
        shard as u32
    }

    pub fn to_snapshot(&self) -> MetadataSnapshot {
        MetadataSnapshot {
            cluster_id: self.cluster_id.clone(),
            shard_count: self.shard_count,
            next_group_id: self.next_group_id,
            topics: self.topics.values().cloned().collect(),
            applied_index: self.applied_index,
            next_producer_id: self.next_producer_id,
        }
    }

    pub fn from_snapshot(snapshot: MetadataSnapshot) -> Self {
        Self {
            cluster_id: snapshot.cluster_id,
            shard_count: snapshot.shard_count,
            next_group_id: snapshot.next_group_id,
            topics: snapshot
                .topics
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect(),
            applied_index: snapshot.applied_index,
            next_producer_id: snapshot.next_producer_id,
        }
    }

    pub fn encode_snapshot(&self) -> Vec<u8> {
        self.to_snapshot().encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::commands::{CreateTopic, DeleteTopic, InitCluster};

    fn create(name: &str, partitions: u32) -> Command {
        Command {
            create_topic: Some(CreateTopic {
                name: name.into(),
                partitions,
                replication_factor: 1,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn placement_spreads_partitions_and_survives_a_snapshot() {
        let mut state = MetadataState::default();
        state.apply(
            1,
            Command {
                init: Some(InitCluster {
                    cluster_id: "c".into(),
                    shard_count: 3,
                }),
                ..Default::default()
            },
        );
        state.apply(2, create("a", 4));
        state.apply(3, create("b", 2));
        let shards: Vec<u32> = state.topics["a"]
            .partitions
            .iter()
            .map(|p| p.shard)
            .collect();
        assert_eq!(shards, vec![0, 1, 2, 0]);
        let shards: Vec<u32> = state.topics["b"]
            .partitions
            .iter()
            .map(|p| p.shard)
            .collect();
        assert_eq!(shards, vec![1, 2]);
        let groups: Vec<u64> = state.topics["b"]
            .partitions
            .iter()
            .map(|p| p.group_id)
            .collect();
        assert_eq!(groups, vec![6, 7]);
        state.apply(
            4,
            Command {
                delete_topic: Some(DeleteTopic { name: "a".into() }),
                ..Default::default()
            },
        );
        state.apply(5, create("a", 1));
        assert_eq!(
            state.topics["a"].partitions[0].group_id, 8,
            "group ids are never reused"
        );
        let restored = MetadataState::from_snapshot(
            MetadataSnapshot::decode(state.encode_snapshot().as_slice()).expect("decodes"),
        );
        assert_eq!(restored, state);
    }
}
