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
use crate::runtime::frame::{AppendResult, PartitionAppend, ShardReply, ShardRequest};
use chronik_shards::error::ShardError;
use std::collections::BTreeMap;

/// v0-v2 are advertised (librdkafka's feature detection reads them) but never decode.
pub const VERSIONS: RangeInclusive<i16> = 0..=9;

enum Plan {
    Done(PartitionProduceResponse),
    Append {
        index: i32,
        shard: usize,
        append: PartitionAppend,
    },
}

fn failed(index: i32, error: ResponseError, message: impl Into<String>) -> Plan {
    Plan::Done(
        PartitionProduceResponse::default()
            .with_index(index)
            .with_base_offset(-1)
            .with_log_append_time_ms(-1)
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
    let refused = if ctx.config.auto_create_topics && (-1..=1).contains(&acks) {
        auto_create(ctx, request.topic_data.iter().map(|t| t.name.0.to_string())).await
    } else {
        Default::default()
    };
    let view = ctx.metadata();
    let mut plans: Vec<(String, Vec<Plan>)> = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let partitions = topic
            .partition_data
            .into_iter()
            .map(|p| match refused.get(&name) {
                Some(&error) => failed(p.index, error, "topic name collides with another"),
                None => plan_partition(ctx, &view, acks, &name, p.index, p.records),
            })
            .collect();
        plans.push((name, partitions));
    }
    let responses = execute(ctx, plans, acks).await;
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
    if crate::coordinator::is_internal_topic(topic) {
        let message = format!("{topic} is internal: only the broker writes to it");
        return failed(index, ResponseError::InvalidTopicException, message);
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
    if let Err((error, message)) = check_batch(&records, settings.message_bytes_max) {
        return failed(index, error, message);
    }
    let min_in_sync = if acks == -1 {
        record
            .configs
            .get("min.insync.replicas")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
    } else {
        0
    };
    Plan::Append {
        index,
        shard: partition.shard as usize,
        append: PartitionAppend {
            group_id: partition.group_id,
            batch: records,
            min_in_sync,
        },
    }
}

/// The produce payload must be one valid record batch within the topic's size limit, and not
/// a control batch (markers are the transaction coordinator's).
fn check_batch(records: &[u8], message_bytes_max: usize) -> Result<(), (ResponseError, String)> {
    if records.len() > message_bytes_max {
        let message = format!(
            "batch of {} bytes exceeds max.message.bytes {message_bytes_max}",
            records.len()
        );
        return Err((ResponseError::MessageTooLarge, message));
    }
    let batches = split_batches(records).map_err(|e| (errors::batch_error(&e), e.to_string()))?;
    if batches.len() != 1 {
        let message = format!(
            "produce carries {} record batches; exactly one is allowed",
            batches.len()
        );
        return Err((ResponseError::InvalidRecord, message));
    }
    let header =
        BatchHeader::validate(batches[0]).map_err(|e| (errors::batch_error(&e), e.to_string()))?;
    if header.is_control() {
        let message = "control batches are written by the broker only".to_string();
        return Err((ResponseError::InvalidRecord, message));
    }
    Ok(())
}

/// Per shard: where each answer goes (topic position, partition position, partition index)
/// and the (group, batch) appends, in the same order.
type ShardAppends = (Vec<(usize, usize, i32)>, Vec<PartitionAppend>);

/// Sends each shard its partitions' batches in one request (all shards at once) and puts
/// the answers back in request order.
async fn execute(
    ctx: &Rc<ShardContext>,
    plans: Vec<(String, Vec<Plan>)>,
    acks: i16,
) -> Vec<TopicProduceResponse> {
    let mut answers: Vec<Vec<Option<PartitionProduceResponse>>> = Vec::with_capacity(plans.len());
    let mut names = Vec::with_capacity(plans.len());
    let mut by_shard: BTreeMap<usize, ShardAppends> = BTreeMap::new();
    for (topic_position, (name, partitions)) in plans.into_iter().enumerate() {
        let mut topic_answers = Vec::with_capacity(partitions.len());
        for (partition_position, plan) in partitions.into_iter().enumerate() {
            match plan {
                Plan::Done(response) => topic_answers.push(Some(response)),
                Plan::Append {
                    index,
                    shard,
                    append,
                } => {
                    topic_answers.push(None);
                    let (slots, appends) = by_shard.entry(shard).or_default();
                    slots.push((topic_position, partition_position, index));
                    appends.push(append);
                }
            }
        }
        answers.push(topic_answers);
        names.push(name);
    }
    let calls = by_shard
        .into_iter()
        .map(|(shard, (slots, appends))| async move {
            let count = appends.len();
            let results: Vec<Result<Result<AppendResult, ShardError>, ResponseError>> = match ctx
                .call(shard, ShardRequest::Append { appends, acks })
                .await
            {
                Ok(ShardReply::Append(results)) => results.into_iter().map(Ok).collect(),
                Ok(_) => (0..count)
                    .map(|_| Err(ResponseError::UnknownServerError))
                    .collect(),
                Err(error) => (0..count)
                    .map(|_| Err(errors::route_error(&error)))
                    .collect(),
            };
            (slots, results)
        });
    for (slots, results) in futures::future::join_all(calls).await {
        for ((topic_position, partition_position, index), result) in slots.into_iter().zip(results)
        {
            answers[topic_position][partition_position] = Some(partition_answer(index, result));
        }
    }
    names
        .into_iter()
        .zip(answers)
        .map(|(name, partitions)| {
            TopicProduceResponse::default()
                .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(
                    name,
                )))
                .with_partition_responses(partitions.into_iter().flatten().collect())
        })
        .collect()
}

fn partition_answer(
    index: i32,
    result: Result<Result<AppendResult, ShardError>, ResponseError>,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default()
        .with_index(index)
        .with_log_append_time_ms(-1);
    match result {
        Ok(Ok(appended)) => response
            .with_base_offset(appended.base_offset)
            .with_log_start_offset(appended.log_start_offset),
        Ok(Err(error)) => response
            .with_error_code(errors::shard_error(&error).code())
            .with_error_message(Some(StrBytes::from_string(error.to_string())))
            .with_base_offset(-1),
        Err(code) => response.with_error_code(code.code()).with_base_offset(-1),
    }
}
