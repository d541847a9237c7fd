//! Produce: validate each partition's record batch on the receiving shard (magic, CRC-32C,
//! size), then append it on the owning shard. The batch is stored as received; only base
//! offset and leader epoch are patched there.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::protocol::StrBytes;

use chronik_shards::partition::batch::{split_batches, BatchHeader};

use super::auto_create;
use crate::kafka::{errors, topic_name};
use crate::metadata::{MetadataView, TopicSettings};
use crate::runtime::context::ShardContext;
use crate::runtime::frame::{ShardReply, ShardRequest};

/// v0-v2 are advertised (librdkafka's feature detection reads them) but never decode.
pub const VERSIONS: RangeInclusive<i16> = 0..=9;

enum Plan {
    Done(PartitionProduceResponse),
    Append {
        index: i32,
        shard: usize,
        group_id: u64,
        batch: Bytes,
    },
}

fn failed(index: i32, error: ResponseError, message: impl Into<String>) -> Plan {
    Plan::Done(
        PartitionProduceResponse::default()
            .with_index(index)
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message.into()))),
    )
}

pub async fn handle(
    ctx: &Rc<ShardContext>,
    _version: i16,
    request: ProduceRequest,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    if ctx.config.auto_create_topics && (-1..=1).contains(&acks) {
        auto_create(ctx, request.topic_data.iter().map(|t| t.name.0.to_string())).await;
    }
    let view = ctx.metadata();
    let mut plans: Vec<(String, Vec<Plan>)> = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let partitions = topic
            .partition_data
            .into_iter()
            .map(|p| plan_partition(ctx, &view, acks, &name, p.index, p.records))
            .collect();
        plans.push((name, partitions));
    }
    let mut responses = Vec::with_capacity(plans.len());
    // Appends of all partitions run concurrently; join_all keeps request order.
    let topic_futures = plans.into_iter().map(|(name, partitions)| async move {
        let partition_futures = partitions.into_iter().map(|plan| execute(ctx, plan, acks));
        (name, futures::future::join_all(partition_futures).await)
    });
    for (name, partitions) in futures::future::join_all(topic_futures).await {
        responses.push(
            TopicProduceResponse::default()
                .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(
                    name,
                )))
                .with_partition_responses(partitions),
        );
    }
    (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

fn plan_partition(
    ctx: &ShardContext,
    view: &MetadataView,
    acks: i16,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
) -> Plan {
    if !(-1..=1).contains(&acks) {
        return failed(
            index,
            ResponseError::InvalidRequiredAcks,
            format!("acks must be 0, 1 or -1, got {acks}"),
        );
    }
    if let Err(reason) = topic_name::validate(topic) {
        return failed(index, ResponseError::InvalidTopicException, reason);
    }
    let Some(record) = view.topic(topic) else {
        return failed(
            index,
            ResponseError::UnknownTopicOrPartition,
            "unknown topic",
        );
    };
    let Some(partition) = view.partition(topic, index) else {
        return failed(
            index,
            ResponseError::UnknownTopicOrPartition,
            format!("topic has no partition {index}"),
        );
    };
    let records = records.unwrap_or_default();
    let settings = TopicSettings::of(record, ctx.topic_defaults());
    if records.len() > settings.message_bytes_max {
        let message = format!(
            "batch of {} bytes exceeds max.message.bytes {}",
            records.len(),
            settings.message_bytes_max
        );
        return failed(index, ResponseError::MessageTooLarge, message);
    }
    let batches = match split_batches(&records) {
        Ok(batches) => batches,
        Err(error) => return failed(index, errors::batch_error(&error), error.to_string()),
    };
    if batches.len() != 1 {
        let message = format!(
            "produce carries {} record batches; exactly one is allowed",
            batches.len()
        );
        return failed(index, ResponseError::InvalidRecord, message);
    }
    if let Err(error) = BatchHeader::validate(batches[0]) {
        return failed(index, errors::batch_error(&error), error.to_string());
    }
    Plan::Append {
        index,
        shard: partition.shard as usize,
        group_id: partition.group_id,
        batch: records,
    }
}

async fn execute(ctx: &Rc<ShardContext>, plan: Plan, acks: i16) -> PartitionProduceResponse {
    let (index, shard, group_id, batch) = match plan {
        Plan::Done(response) => return response,
        Plan::Append {
            index,
            shard,
            group_id,
            batch,
        } => (index, shard, group_id, batch),
    };
    let response = PartitionProduceResponse::default()
        .with_index(index)
        .with_log_append_time_ms(-1);
    match ctx
        .call(
            shard,
            ShardRequest::Append {
                group_id,
                batch,
                acks,
            },
        )
        .await
    {
        Ok(ShardReply::Append(Ok(appended))) => response
            .with_base_offset(appended.base_offset)
            .with_log_start_offset(appended.log_start_offset),
        Ok(ShardReply::Append(Err(error))) => {
            let message = StrBytes::from_string(error.to_string());
            response
                .with_error_code(errors::shard_error(&error).code())
                .with_error_message(Some(message))
                .with_base_offset(-1)
        }
        Ok(_) => response
            .with_error_code(ResponseError::UnknownServerError.code())
            .with_base_offset(-1),
        Err(error) => response
            .with_error_code(errors::route_error(&error).code())
            .with_base_offset(-1),
    }
}
