//! OffsetFetch: a group's committed offsets (-1 where none). v8+ asks for several groups at
//! once; each is answered by its own coordinator (NOT_COORDINATOR for those not led here).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::call_group;
use crate::coordinator::{FetchedOffset, GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;

/// v9 belongs to the KIP-848 protocol (member epochs), which is not implemented.
pub const VERSIONS: RangeInclusive<i16> = 1..=9;

type Topics = Option<Vec<(String, Vec<i32>)>>;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for group in request.groups {
            let topics: Topics = group.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes))
                    .collect()
            });
            let fetched = fetch(
                ctx,
                group.group_id.to_string(),
                topics,
                request.require_stable,
            )
            .await;
            let response = OffsetFetchResponseGroup::default().with_group_id(group.group_id);
            groups.push(match fetched {
                Ok(offsets) => response.with_topics(by_topic(offsets, |name, partitions| {
                    OffsetFetchResponseTopics::default()
                        .with_name(name)
                        .with_partitions(partitions.into_iter().map(partitions_v8).collect())
                })),
                Err(code) => response.with_error_code(code),
            });
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics: Topics = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let require_stable = version >= 7 && request.require_stable;
    match fetch(ctx, request.group_id.to_string(), topics, require_stable).await {
        Ok(offsets) => {
            OffsetFetchResponse::default().with_topics(by_topic(offsets, |name, partitions| {
                OffsetFetchResponseTopic::default()
                    .with_name(name)
                    .with_partitions(partitions.into_iter().map(partition_v1).collect())
            }))
        }
        Err(code) => OffsetFetchResponse::default().with_error_code(code),
    }
}

async fn fetch(
    ctx: &Rc<ShardContext>,
    group: String,
    topics: Topics,
    require_stable: bool,
) -> Result<Vec<FetchedOffset>, i16> {
    if group.is_empty() {
        return Err(ResponseError::InvalidGroupId.code());
    }
    let call = GroupCall::FetchOffsets {
        group: group.clone(),
        topics,
        require_stable,
    };
    match call_group(ctx, &group, call).await {
        GroupAnswer::FetchOffsets(result) => result,
        _ => Err(ResponseError::UnknownServerError.code()),
    }
}

fn by_topic<T>(
    offsets: Vec<FetchedOffset>,
    topic: impl Fn(TopicName, Vec<FetchedOffset>) -> T,
) -> Vec<T> {
    let mut grouped: BTreeMap<String, Vec<FetchedOffset>> = BTreeMap::new();
    for offset in offsets {
        grouped
            .entry(offset.topic.clone())
            .or_default()
            .push(offset);
    }
    grouped
        .into_iter()
        .map(|(name, partitions)| topic(TopicName(StrBytes::from_string(name)), partitions))
        .collect()
}

fn partition_v1(offset: FetchedOffset) -> OffsetFetchResponsePartition {
    OffsetFetchResponsePartition::default()
        .with_partition_index(offset.partition)
        .with_committed_offset(offset.offset)
        .with_committed_leader_epoch(offset.leader_epoch)
        .with_metadata(Some(StrBytes::from_string(offset.metadata)))
        .with_error_code(offset.error)
}

fn partitions_v8(offset: FetchedOffset) -> OffsetFetchResponsePartitions {
    OffsetFetchResponsePartitions::default()
        .with_partition_index(offset.partition)
        .with_committed_offset(offset.offset)
        .with_committed_leader_epoch(offset.leader_epoch)
        .with_metadata(Some(StrBytes::from_string(offset.metadata)))
        .with_error_code(offset.error)
}
