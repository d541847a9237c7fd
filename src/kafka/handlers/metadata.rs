//! Metadata: this broker (from configuration, so it is right before any election), the
//! requested topics with partitions, leaders, replicas, ISR and leader epochs.

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
use crate::kafka::topic_name;
use crate::metadata::MetadataView;
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=12;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    version: i16,
    request: MetadataRequest,
) -> MetadataResponse {
    let requested: Option<Vec<String>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .filter_map(|t| t.name.map(|n| n.0.to_string()))
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
    let node_id = ctx.config.node_id as i32;
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(node_id))
        .with_host(StrBytes::from_string(ctx.config.advertised_host.clone()))
        .with_port(i32::from(ctx.config.advertised_port));
    MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(StrBytes::from_string(view.cluster_id.clone())))
        .with_controller_id(BrokerId(node_id))
        .with_topics(topics)
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
    let Some(topic) = view.topic(&name) else {
        return response.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    let placements: Vec<(u32, u64)> = topic
        .partitions
        .iter()
        .map(|p| (p.shard, p.group_id))
        .collect();
    let described = describe(ctx, &placements).await;
    let node_id = ctx.config.node_id as i32;
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, partition)| {
            let response = MetadataResponsePartition::default().with_partition_index(index as i32);
            match described.get(&partition.group_id) {
                Some(d) if d.leader.is_some() => response
                    .with_leader_id(BrokerId(d.leader.map_or(-1, |l| l as i32)))
                    .with_leader_epoch(d.leader_epoch)
                    .with_replica_nodes(vec![BrokerId(node_id)])
                    .with_isr_nodes(vec![BrokerId(node_id)]),
                _ => response
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1))
                    .with_replica_nodes(vec![BrokerId(node_id)]),
            }
        })
        .collect();
    let topic_id = uuid::Uuid::from_slice(&topic.topic_id).unwrap_or_default();
    response.with_topic_id(topic_id).with_partitions(partitions)
}
