//! Metadata: the cluster's brokers (from the static configuration, so the list is right
//! before any election), the requested topics with partitions, leaders, replicas, ISR and
//! leader epochs. A node whose metadata is not initialized yet answers topics with
//! LEADER_NOT_AVAILABLE (retriable) instead of claiming they do not exist.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{auto_create, describe};
use crate::controller::commands::PartitionRecord;
use crate::kafka::topic_name;
use crate::metadata::MetadataView;
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=12;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    version: i16,
    request: MetadataRequest,
) -> MetadataResponse {
    // v10+ may name a topic by its id alone (KIP-848 clients learn ids from their
    // assignment): such a topic is described under its name, or UNKNOWN_TOPIC_ID.
    let mut unknown_ids = Vec::new();
    let requested: Option<Vec<String>> = request.topics.map(|topics| {
        let view = ctx.metadata();
        topics
            .into_iter()
            .filter_map(|t| match t.name {
                Some(name) => Some(name.0.to_string()),
                None => {
                    let name = topic_name_of(&view, t.topic_id);
                    if name.is_none() {
                        unknown_ids.push(t.topic_id);
                    }
                    name
                }
            })
            .collect()
    });
    // v0 used an empty list to mean "all topics"; later versions use null.
    let requested = match requested {
        Some(names) if names.is_empty() && version == 0 => None,
        other => other,
    };
    let allow_auto_create =
        ctx.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let refused = match (&requested, allow_auto_create) {
        (Some(names), true) => auto_create(ctx, names.iter().cloned()).await,
        _ => Default::default(),
    };
    let view = ctx.metadata();
    let names: Vec<String> = requested.unwrap_or_else(|| view.topics.keys().cloned().collect());
    let mut topics = Vec::with_capacity(names.len());
    for name in names {
        let topic = match refused.get(&name) {
            Some(error) => MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name))))
                .with_error_code(error.code()),
            None => describe_topic(ctx, &view, name).await,
        };
        topics.push(topic);
    }
    topics.extend(unknown_ids.into_iter().map(|id| {
        MetadataResponseTopic::default()
            .with_topic_id(id)
            .with_error_code(ResponseError::UnknownTopicId.code())
    }));
    // Any node takes admin requests (it forwards them), so while no controller leader is
    // known this node names itself, as KRaft brokers name a live broker: clients such as
    // kafkajs fail outright on -1.
    let controller = ctx
        .node
        .controller_leader()
        .unwrap_or(u64::from(ctx.config.node_id)) as i32;
    MetadataResponse::default()
        .with_brokers(brokers(ctx))
        .with_cluster_id(Some(StrBytes::from_string(view.cluster_id.clone())))
        .with_controller_id(BrokerId(controller))
        .with_topics(topics)
}

fn topic_name_of(view: &MetadataView, id: uuid::Uuid) -> Option<String> {
    view.topics
        .values()
        .find(|t| !id.is_nil() && t.topic_id == id.as_bytes())
        .map(|t| t.name.clone())
}

/// Every node of the static configuration; this node with its advertised listener.
fn brokers(ctx: &ShardContext) -> Vec<MetadataResponseBroker> {
    ctx.config
        .cluster
        .nodes
        .iter()
        .map(|node| {
            let (host, port) = if node.id == ctx.config.node_id {
                (
                    ctx.config.advertised_host.clone(),
                    ctx.config.advertised_port,
                )
            } else {
                split_host_port(&node.kafka)
            };
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(node.id as i32))
                .with_host(StrBytes::from_string(host))
                .with_port(i32::from(port))
        })
        .collect()
}

/// The address clients reach `node` at: this node's advertised listener, or the node's
/// `kafka` address in the cluster description.
pub fn broker_address(ctx: &ShardContext, node: u32) -> Option<(String, u16)> {
    if node == ctx.config.node_id {
        return Some((
            ctx.config.advertised_host.clone(),
            ctx.config.advertised_port,
        ));
    }
    ctx.config
        .cluster
        .node(node)
        .map(|n| split_host_port(&n.kafka))
}

fn split_host_port(address: &str) -> (String, u16) {
    match address.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_matches(['[', ']']).to_string(),
            port.parse().unwrap_or(0),
        ),
        None => (address.to_string(), 0),
    }
}

async fn describe_topic(
    ctx: &Rc<ShardContext>,
    view: &MetadataView,
    name: String,
) -> MetadataResponseTopic {
    let response = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
    if topic_name::validate(&name).is_err() {
        return response.with_error_code(ResponseError::InvalidTopicException.code());
    }
    if !ctx.metadata_installed.get() {
        return response.with_error_code(ResponseError::LeaderNotAvailable.code());
    }
    let Some(topic) = view.topic(&name) else {
        return response.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    let me = ctx.config.node_id;
    let hosted = |p: &PartitionRecord| p.replicas.is_empty() || p.replicas.contains(&me);
    let placements: Vec<(u32, u64)> = topic
        .partitions
        .iter()
        .filter(|p| hosted(p))
        .map(|p| (p.shard, p.group_id))
        .collect();
    let described = describe(ctx, &placements).await;
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, partition)| {
            let replicas: Vec<BrokerId> = if partition.replicas.is_empty() {
                vec![BrokerId(me as i32)]
            } else {
                partition
                    .replicas
                    .iter()
                    .map(|&n| BrokerId(n as i32))
                    .collect()
            };
            let response = MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_replica_nodes(replicas.clone());
            match described.get(&partition.group_id) {
                Some(d) if d.leader.is_some() => {
                    // The leader knows who is in sync; a follower reports every replica.
                    let isr = if d.in_sync.is_empty() {
                        replicas
                    } else {
                        d.in_sync.iter().map(|&n| BrokerId(n as i32)).collect()
                    };
                    response
                        .with_leader_id(BrokerId(d.leader.map_or(-1, |l| l as i32)))
                        .with_leader_epoch(d.leader_epoch)
                        .with_isr_nodes(isr)
                }
                // Not a replica here: point at the preferred leader, which redirects a
                // client that finds another leader in charge (NOT_LEADER_OR_FOLLOWER).
                None if !hosted(partition) => response
                    .with_leader_id(replicas[0])
                    .with_leader_epoch(-1)
                    .with_isr_nodes(replicas),
                _ => response
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1)),
            }
        })
        .collect();
    let topic_id = uuid::Uuid::from_slice(&topic.topic_id).unwrap_or_default();
    response
        .with_topic_id(topic_id)
        .with_is_internal(crate::coordinator::is_internal_topic(&name))
        .with_partitions(partitions)
}
