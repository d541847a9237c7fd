//! ListOffsets: earliest (-2), latest (-1, the high watermark), max timestamp (-3), or the
//! first batch at or after a timestamp (-1 when there is none).

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};

use crate::kafka::errors;
use crate::runtime::context::ShardContext;
use crate::runtime::frame::{ShardReply, ShardRequest};

pub const VERSIONS: RangeInclusive<i16> = 1..=7;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let view = ctx.metadata();
    // v2+: read_committed consumers' "latest" is the last stable offset.
    let read_committed = version >= 2 && request.isolation_level == 1;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let lookups = topic.partitions.iter().map(|p| {
            let placement = view
                .partition(&topic.name.0, p.partition_index)
                .map(|r| (r.shard as usize, r.group_id));
            let (index, timestamp) = (p.partition_index, p.timestamp);
            async move {
                let response = ListOffsetsPartitionResponse::default().with_partition_index(index);
                let Some((shard, group_id)) = placement else {
                    return response.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                };
                match ctx
                    .call(
                        shard,
                        ShardRequest::ListOffset {
                            group_id,
                            timestamp,
                            read_committed,
                        },
                    )
                    .await
                {
                    Ok(ShardReply::ListOffset(Ok(listed))) => {
                        let response = response
                            .with_offset(listed.offset)
                            .with_timestamp(listed.timestamp);
                        // The field exists from v4; setting it earlier fails the encoding.
                        if version >= 4 {
                            response.with_leader_epoch(listed.leader_epoch)
                        } else {
                            response
                        }
                    }
                    Ok(ShardReply::ListOffset(Err(error))) => {
                        response.with_error_code(errors::read_error(&error).code())
                    }
                    Ok(_) => response.with_error_code(ResponseError::UnknownServerError.code()),
                    Err(error) => response.with_error_code(errors::read_route_error(&error).code()),
                }
            }
        });
        let partitions = futures::future::join_all(lookups).await;
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
