//! OffsetForLeaderEpoch (KIP-101, KIP-320): where a leader epoch ended in the leader's log,
//! so a consumer (or a follower of another broker) can tell whether the log it read from was
//! truncated after a leader change. Leader epochs are Raft terms; the leader answers.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderEpochRequest;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};

use crate::kafka::errors;
use crate::runtime::context::ShardContext;
use crate::runtime::frame::{EpochError, ShardReply, ShardRequest};

pub const VERSIONS: RangeInclusive<i16> = 2..=4;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    _version: i16,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let view = ctx.metadata();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let lookups = topic.partitions.iter().map(|p| {
            let placement = view
                .partition(&topic.topic.0, p.partition)
                .map(|r| (r.shard as usize, r.group_id));
            let (index, leader_epoch, current_leader_epoch) =
                (p.partition, p.leader_epoch, p.current_leader_epoch);
            async move {
                let response = EpochEndOffset::default()
                    .with_partition(index)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1);
                let Some((shard, group_id)) = placement else {
                    return response.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                };
                let request = ShardRequest::EpochEndOffset {
                    group_id,
                    leader_epoch,
                    current_leader_epoch,
                };
                let error = match ctx.call(shard, request).await {
                    Ok(ShardReply::EpochEndOffset(Ok((epoch, end_offset)))) => {
                        return response
                            .with_leader_epoch(epoch)
                            .with_end_offset(end_offset);
                    }
                    Ok(ShardReply::EpochEndOffset(Err(EpochError::Shard(error)))) => {
                        errors::read_error(&error)
                    }
                    Ok(ShardReply::EpochEndOffset(Err(EpochError::Unknown))) => {
                        ResponseError::UnknownLeaderEpoch
                    }
                    Ok(ShardReply::EpochEndOffset(Err(EpochError::Fenced))) => {
                        ResponseError::FencedLeaderEpoch
                    }
                    Ok(_) => ResponseError::UnknownServerError,
                    Err(error) => errors::read_route_error(&error),
                };
                response.with_error_code(error.code())
            }
        });
        let partitions = futures::future::join_all(lookups).await;
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
