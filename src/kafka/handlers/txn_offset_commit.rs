//! TxnOffsetCommit: a transactional producer commits a group's offsets inside its
//! transaction (consume-transform-produce); they count once the transaction commits.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::call_group;
use crate::coordinator::{GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=3;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group_id = request.group_id.to_string();
    let fallback = every_partition(&request, ResponseError::UnknownServerError);
    if group_id.is_empty() {
        return every_partition(&request, ResponseError::InvalidGroupId);
    }
    match call_group(ctx, &group_id, GroupCall::TxnCommit(request)).await {
        GroupAnswer::TxnCommit(response) => response,
        _ => fallback,
    }
}

fn every_partition(
    request: &TxnOffsetCommitRequest,
    error: ResponseError,
) -> TxnOffsetCommitResponse {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(
                    topic
                        .partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(error.code())
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
