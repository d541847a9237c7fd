//! DeleteRecords: moves a partition's log start forward (-1: to the high watermark). The new
//! start is a Raft entry, so every replica applies it once committed; clients see it at
//! once, and the batches wholly below it leave storage at the next retention pass.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::kafka::errors;
use crate::runtime::context::ShardContext;
use crate::runtime::frame::{ShardReply, ShardRequest};

pub const VERSIONS: RangeInclusive<i16> = 0..=2;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let view = ctx.metadata();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let internal = crate::coordinator::is_internal_topic(&topic.name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(partition.partition_index)
                .with_low_watermark(-1);
            let placement = view.partition(&topic.name, partition.partition_index);
            let outcome = match placement {
                // The coordinators read their internal topics back whole.
                _ if internal => Err(ResponseError::InvalidTopicException),
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(record) => {
                    let request = ShardRequest::DeleteRecords {
                        group_id: record.group_id,
                        offset: partition.offset,
                    };
                    match ctx.call(record.shard as usize, request).await {
                        Ok(ShardReply::Deleted(Ok(low_watermark))) => Ok(low_watermark),
                        Ok(ShardReply::Deleted(Err(error))) => Err(errors::read_error(&error)),
                        _ => Err(ResponseError::NotLeaderOrFollower),
                    }
                }
            };
            partitions.push(match outcome {
                Ok(low_watermark) => result.with_low_watermark(low_watermark),
                Err(error) => result.with_error_code(error.code()),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
