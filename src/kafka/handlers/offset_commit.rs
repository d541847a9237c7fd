//! OffsetCommit: answered once the offsets are committed in `__consumer_offsets`.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::call_group;
use crate::coordinator::{GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;

/// v9 belongs to the KIP-848 protocol (member epochs), which is not implemented.
pub const VERSIONS: RangeInclusive<i16> = 2..=8;

pub async fn handle(ctx: &Rc<ShardContext>, request: OffsetCommitRequest) -> OffsetCommitResponse {
    if request.group_id.is_empty() {
        return every_partition(&request, ResponseError::InvalidGroupId);
    }
    let group_id = request.group_id.to_string();
    let fallback = every_partition(&request, ResponseError::UnknownServerError);
    match call_group(ctx, &group_id, GroupCall::Commit(request)).await {
        GroupAnswer::Commit(response) => response,
        _ => fallback,
    }
}

fn every_partition(request: &OffsetCommitRequest, error: ResponseError) -> OffsetCommitResponse {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.code())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
