//! ConsumerGroupHeartbeat and ConsumerGroupDescribe (KIP-848) on the shard's group
//! coordinator: topic ids mapped to names and back, the state machine in `consumer_group`.
//!
//! Membership lives in the coordinator's memory only: after a failover or restart of the
//! coordinator, members hear UNKNOWN_MEMBER_ID and join again (the clients do so at once),
//! and they resume from the offsets committed in `__consumer_offsets`, which are durable.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member, TopicPartitions as DescribedTopic,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as HeartbeatAssignment, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, GroupId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::consumer_group::{Assignment, HeartbeatInput};
use super::partition_log::write_error;
use super::records::OffsetsRecord;
use super::service::write;
use super::{GroupAnswer, GroupCall};
use crate::metadata::MetadataView;
use crate::runtime::context::ShardContext;

fn text(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

pub fn refuse(call: GroupCall, error: ResponseError) -> GroupAnswer {
    match call {
        GroupCall::ConsumerDescribe(group) => GroupAnswer::ConsumerDescribe(
            DescribedGroup::default()
                .with_group_id(GroupId(text(group)))
                .with_error_code(error.code()),
        ),
        _ => GroupAnswer::ConsumerHeartbeat(
            ConsumerGroupHeartbeatResponse::default().with_error_code(error.code()),
        ),
    }
}

/// Runs a consumer-protocol call on the coordinator of `partition` (loaded).
pub async fn execute(ctx: &Rc<ShardContext>, partition: u64, call: GroupCall) -> GroupAnswer {
    match call {
        GroupCall::ConsumerHeartbeat {
            request,
            client_id,
            client_host,
        } => GroupAnswer::ConsumerHeartbeat(
            heartbeat(ctx, partition, request, client_id, client_host).await,
        ),
        GroupCall::ConsumerDescribe(group) => {
            GroupAnswer::ConsumerDescribe(describe(ctx, partition, &group))
        }
        other => refuse(other, ResponseError::UnknownServerError),
    }
}

fn topic_id(view: &MetadataView, topic: &str) -> Option<Uuid> {
    Uuid::from_slice(&view.topic(topic)?.topic_id).ok()
}

fn names_by_id(view: &MetadataView) -> BTreeMap<Uuid, String> {
    view.topics
        .values()
        .filter_map(|t| Some((Uuid::from_slice(&t.topic_id).ok()?, t.name.clone())))
        .collect()
}

fn decode_input(
    view: &MetadataView,
    request: &ConsumerGroupHeartbeatRequest,
    client_id: String,
    client_host: String,
) -> HeartbeatInput {
    let names = names_by_id(view);
    let owned = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .filter_map(|t| {
                let name = names.get(&t.topic_id)?;
                Some((name.clone(), t.partitions.iter().copied().collect()))
            })
            .collect::<Assignment>()
    });
    HeartbeatInput {
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.as_ref().map(|i| i.to_string()),
        rack_id: request.rack_id.as_ref().map(|r| r.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed: request
            .subscribed_topic_names
            .as_ref()
            .map(|topics| topics.iter().map(|t| t.to_string()).collect()),
        assignor: request.server_assignor.as_ref().map(|a| a.to_string()),
        owned,
        client_id,
        client_host,
    }
}

fn encode_assignment(view: &MetadataView, assignment: &Assignment) -> HeartbeatAssignment {
    let topics = assignment
        .iter()
        .filter_map(|(topic, partitions)| {
            Some(
                TopicPartitions::default()
                    .with_topic_id(topic_id(view, topic)?)
                    .with_partitions(partitions.iter().copied().collect()),
            )
        })
        .collect();
    HeartbeatAssignment::default().with_topic_partitions(topics)
}

/// One heartbeat. A change of the group's state (members, epochs, assignments) is written to
/// the partition, and the answer waits until it is committed: a member only ever acts on an
/// assignment that a new coordinator would read back.
pub async fn heartbeat(
    ctx: &Rc<ShardContext>,
    partition: u64,
    request: ConsumerGroupHeartbeatRequest,
    client_id: String,
    client_host: String,
) -> ConsumerGroupHeartbeatResponse {
    let error = |error: ResponseError, message: &str| {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(text(message)))
    };
    // librdkafka sends an empty expression when it subscribes by name.
    if request
        .subscribed_topic_regex
        .as_ref()
        .is_some_and(|regex| !regex.is_empty())
    {
        return error(
            ResponseError::InvalidRequest,
            "subscribing by regular expression is not supported; subscribe to topic names",
        );
    }
    let view = ctx.metadata();
    let input = decode_input(&view, &request, client_id, client_host);
    let (response, state) = match apply_heartbeat(ctx, partition, &request, input, &view) {
        Ok(done) => done,
        Err((code, message)) => return error(code, message),
    };
    let Some(state) = state else {
        return response;
    };
    let record = OffsetsRecord::ConsumerGroup {
        group: request.group_id.to_string(),
        value: Some(state),
    };
    match write(ctx, partition, &[record]).await {
        Ok(_) => response,
        Err(failure) => {
            // The log may not hold what memory does: read the partition back first.
            ctx.groups.borrow_mut().unload(partition);
            error(
                write_error(&failure),
                "the group's new state was not stored",
            )
        }
    }
}

/// The heartbeat on the group's state machine: the answer, and the group's new state when it
/// changed (to be written before the answer goes out).
fn apply_heartbeat(
    ctx: &ShardContext,
    partition: u64,
    request: &ConsumerGroupHeartbeatRequest,
    input: HeartbeatInput,
    view: &MetadataView,
) -> Result<(ConsumerGroupHeartbeatResponse, Option<bytes::Bytes>), (ResponseError, &'static str)> {
    let partitions_of = |topic: &str| view.topic(topic).map(|t| t.partitions.len() as i32);
    let mut coordinator = ctx.groups.borrow_mut();
    let now = coordinator.now_ms();
    let group = coordinator
        .group_or_new(partition, &request.group_id)
        .ok_or((ResponseError::NotCoordinator, "not the coordinator"))?;
    if group.has_classic_members() {
        return Err((
            ResponseError::GroupIdNotFound,
            "the group's members use the classic protocol",
        ));
    }
    let settings = group.consumer_settings();
    let new_member_id = || Uuid::new_v4().to_string();
    let response =
        match group
            .consumer
            .heartbeat(input, &partitions_of, new_member_id, settings, now)
        {
            Ok(output) => ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(text(output.member_id)))
                .with_member_epoch(output.member_epoch)
                .with_heartbeat_interval_ms(settings.heartbeat_interval_ms)
                .with_assignment(output.assignment.map(|a| encode_assignment(view, &a))),
            Err(code) => ConsumerGroupHeartbeatResponse::default()
                .with_error_code(code.code())
                .with_member_id(Some(request.member_id.clone()))
                .with_member_epoch(request.member_epoch),
        };
    Ok((response, group.consumer_to_store()))
}

fn described_assignment(view: &MetadataView, assignment: &Assignment) -> DescribedAssignment {
    let topics = assignment
        .iter()
        .filter_map(|(topic, partitions)| {
            Some(
                DescribedTopic::default()
                    .with_topic_id(topic_id(view, topic)?)
                    .with_topic_name(TopicName(text(topic.clone())))
                    .with_partitions(partitions.iter().copied().collect()),
            )
        })
        .collect();
    DescribedAssignment::default().with_topic_partitions(topics)
}

/// ConsumerGroupDescribe of one group: GROUP_ID_NOT_FOUND for a group with classic members
/// or none of the consumer protocol.
pub fn describe(ctx: &Rc<ShardContext>, partition: u64, group_id: &str) -> DescribedGroup {
    let view = ctx.metadata();
    let mut coordinator = ctx.groups.borrow_mut();
    let described = DescribedGroup::default().with_group_id(GroupId(text(group_id)));
    let Some(group) = coordinator.group_mut(partition, group_id) else {
        return described.with_error_code(ResponseError::GroupIdNotFound.code());
    };
    if group.has_classic_members() {
        return described
            .with_error_code(ResponseError::GroupIdNotFound.code())
            .with_error_message(Some(text("the group uses the classic protocol")));
    }
    let consumer = &group.consumer;
    let members = consumer
        .describe()
        .into_iter()
        .map(|(id, member, target)| {
            Member::default()
                .with_member_id(text(id.clone()))
                .with_instance_id(member.instance_id.clone().map(text))
                .with_rack_id(member.rack_id.clone().map(text))
                .with_member_epoch(member.epoch)
                .with_client_id(text(member.client_id.clone()))
                .with_client_host(text(member.client_host.clone()))
                .with_subscribed_topic_names(
                    member
                        .subscribed
                        .iter()
                        .map(|t| TopicName(text(t.clone())))
                        .collect(),
                )
                .with_assignment(described_assignment(&view, &member.assigned))
                .with_target_assignment(described_assignment(&view, &target))
                .with_member_type(1)
        })
        .collect();
    described
        .with_group_state(text(consumer.state()))
        .with_group_epoch(consumer.group_epoch)
        .with_assignment_epoch(consumer.target_epoch)
        .with_assignor_name(text(consumer.assignor()))
        .with_members(members)
}
