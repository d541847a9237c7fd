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
    /// The cluster's nodes, which replicas are placed on (empty in metadata written before
    /// clusters existed: a single node).
    pub node_ids: Vec<u32>,
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
                self.node_ids = init.node_ids;
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
                    partition.replicas = self.place_replicas(&topic, create.replication_factor);
                    topic.partitions.push(partition);
                }
                self.topics.insert(create.name, topic);
            }
        }
        if let Some(delete) = command.delete_topic {
            self.topics.remove(&delete.name);
        }
        if let Some(alter) = command.alter_configs {
            if let Some(topic) = self.topics.get_mut(&alter.name) {
                topic.configs = alter.configs;
            }
        }
        if let Some(grow) = command.create_partitions {
            self.add_partitions(&grow.name, grow.count);
        }
        if let Some(allocate) = command.allocate_producer_ids {
            self.next_producer_id = self.next_producer_id.max(FIRST_PRODUCER_ID) + allocate.count;
        }
    }

    /// Grows a topic to `count` partitions; each new one gets a fresh group id and is placed
    /// as a new topic's partitions are.
    fn add_partitions(&mut self, name: &str, count: u32) {
        let Some(mut topic) = self.topics.remove(name) else {
            return;
        };
        while topic.partitions.len() < count as usize {
            let group_id = self.next_group_id;
            self.next_group_id += 1;
            let shard = self.least_loaded_shard_with(&topic);
            let replicas = self.place_replicas(&topic, topic.replication_factor);
            topic.partitions.push(PartitionRecord {
                group_id,
                shard,
                replicas,
            });
        }
        self.topics.insert(name.to_string(), topic);
    }

    /// Replicas of a new partition: the preferred leader is the node leading the fewest
    /// partitions (then holding the fewest replicas, then the lowest id); the others are the
    /// nodes holding the fewest replicas. Counts include `pending` (the topic being placed).
    fn place_replicas(&self, pending: &TopicRecord, replication_factor: u32) -> Vec<u32> {
        if self.node_ids.is_empty() {
            return Vec::new();
        }
        let mut leaders: BTreeMap<u32, usize> = self.node_ids.iter().map(|&n| (n, 0)).collect();
        let mut replicas = leaders.clone();
        let placed = self
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .chain(&pending.partitions);
        for partition in placed {
            if let Some(count) = partition.replicas.first().and_then(|l| leaders.get_mut(l)) {
                *count += 1;
            }
            for node in &partition.replicas {
                if let Some(count) = replicas.get_mut(node) {
                    *count += 1;
                }
            }
        }
        let wanted = (replication_factor.max(1) as usize).min(self.node_ids.len());
        let leader = *self
            .node_ids
            .iter()
            .min_by_key(|&&n| (leaders[&n], replicas[&n], n))
            .expect("nodes are not empty");
        let mut followers: Vec<u32> = self
            .node_ids
            .iter()
            .copied()
            .filter(|&n| n != leader)
            .collect();
        followers.sort_by_key(|&n| (replicas[&n], n));
        std::iter::once(leader)
            .chain(followers.into_iter().take(wanted - 1))
            .collect()
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
            node_ids: self.node_ids.clone(),
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
            node_ids: snapshot.node_ids,
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
                    node_ids: vec![1],
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
        assert!(state.topics["b"]
            .partitions
            .iter()
            .all(|p| p.replicas == vec![1]));
        let restored = MetadataState::from_snapshot(
            MetadataSnapshot::decode(state.encode_snapshot().as_slice()).expect("decodes"),
        );
        assert_eq!(restored, state);
    }

    fn create_replicated(name: &str, partitions: u32, replication_factor: u32) -> Command {
        let mut command = create(name, partitions);
        if let Some(create) = command.create_topic.as_mut() {
            create.replication_factor = replication_factor;
        }
        command
    }

    #[test]
    fn replicas_and_preferred_leaders_spread_over_the_nodes() {
        let mut state = MetadataState::default();
        let init = InitCluster {
            cluster_id: "c".into(),
            shard_count: 2,
            node_ids: vec![1, 2, 3],
        };
        state.apply(
            1,
            Command {
                init: Some(init),
                ..Default::default()
            },
        );
        state.apply(2, create_replicated("r3", 6, 3));
        state.apply(3, create_replicated("r1", 3, 1));
        let mut leaders = BTreeMap::new();
        for partition in &state.topics["r3"].partitions {
            let mut sorted = partition.replicas.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![1, 2, 3], "three distinct replicas");
            *leaders.entry(partition.replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        let singles: Vec<u32> = state.topics["r1"]
            .partitions
            .iter()
            .map(|p| p.replicas[0])
            .collect();
        assert_eq!(singles, vec![1, 2, 3], "single replicas go round the nodes");
    }
}
