//! DescribeProducers: the producers a partition's leader knows (idempotent and
//! transactional), with epoch, last sequence and the start of an open transaction.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::errors;
use crate::runtime::context::ShardContext;
use crate::runtime::frame::{ShardReply, ShardRequest};

pub const VERSIONS: RangeInclusive<i16> = 0..=0;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let view = ctx.metadata();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
        for index in topic.partition_indexes {
            let response = PartitionResponse::default().with_partition_index(index);
            let Some(record) = view.partition(&topic.name, index) else {
                partitions
                    .push(response.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let request = ShardRequest::DescribeProducers {
                group_id: record.group_id,
            };
            partitions.push(match ctx.call(record.shard as usize, request).await {
                Ok(ShardReply::Producers(Ok(producers))) => response.with_active_producers(
                    producers
                        .into_iter()
                        .map(|(id, epoch, last_sequence, txn_start)| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(id))
                                .with_producer_epoch(i32::from(epoch))
                                .with_last_sequence(last_sequence)
                                .with_last_timestamp(-1)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(txn_start)
                        })
                        .collect(),
                ),
                Ok(ShardReply::Producers(Err(error))) => response
                    .with_error_code(errors::read_error(&error).code())
                    .with_error_message(Some(StrBytes::from_string(error.to_string()))),
                _ => response.with_error_code(ResponseError::NotLeaderOrFollower.code()),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}
