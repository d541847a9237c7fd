//! Produce: validate each partition's record batch on the receiving shard (magic, CRC-32C,
//! size), then append it on the owning shard. The batch is stored as received; only base
//! offset and leader epoch are patched there, in place: the batches of a large request are
//! cut from its frame rather than copied (`cut_batches`).

use std::ops::{Range, RangeInclusive};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::protocol::StrBytes;

use chronik_shards::partition::batch::{split_batches, BatchHeader};
use chronik_shards::partition::owned_batch::{KeepAlive, OwnedBatch};

use super::auto_create;
use crate::kafka::{errors, topic_name};
use crate::metadata::{MetadataView, TopicSettings};
use crate::runtime::context::ShardContext;
use crate::runtime::frame::{AppendResult, PartitionAppend, ShardReply, ShardRequest};
use crate::runtime::held_memory::HeldMemory;
use chronik_shards::error::ShardError;
use std::collections::BTreeMap;

/// v0-v2 are advertised (librdkafka's feature detection reads them) but never decode.
pub const VERSIONS: RangeInclusive<i16> = 0..=9;

enum Plan {
    Done(PartitionProduceResponse),
    Append {
        index: i32,
        shard: usize,
        group_id: u64,
        min_in_sync: usize,
        /// The validated batch, a slice of the request frame.
        records: Bytes,
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

/// A topic's name and its partitions' (index, records) as received.
type ReceivedTopic = (String, Vec<(i32, Option<Bytes>)>);

/// `frame` is the request's whole frame, of which its batches are slices.
pub async fn handle(
    ctx: &Rc<ShardContext>,
    _version: i16,
    mut request: ProduceRequest,
    frame: Option<Bytes>,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    // Names and batches out of the request, whose other fields (slices of the frame too) go.
    let topics: Vec<ReceivedTopic> = std::mem::take(&mut request.topic_data)
        .into_iter()
        .map(|topic| {
            let partitions = topic.partition_data.into_iter();
            let partitions = partitions.map(|p| (p.index, p.records)).collect();
            (topic.name.0.to_string(), partitions)
        })
        .collect();
    drop(request);
    let refused = if ctx.config.auto_create_topics && (-1..=1).contains(&acks) {
        auto_create(ctx, topics.iter().map(|(name, _)| name.clone())).await
    } else {
        Default::default()
    };
    let view = ctx.metadata();
    let mut plans: Vec<(String, Vec<Plan>)> = Vec::with_capacity(topics.len());
    for (name, partitions) in topics {
        let partitions = partitions
            .into_iter()
            .map(|(index, records)| match refused.get(&name) {
                Some(&error) => failed(index, error, "topic name collides with another"),
                None => plan_partition(ctx, &view, acks, &name, index, records),
            })
            .collect();
        plans.push((name, partitions));
    }
    let responses = execute(ctx, plans, frame, acks).await;
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
        group_id: partition.group_id,
        min_in_sync,
        records,
    }
}

/// The planned batches (slices of `frame`, in frame order) as batches the owning shards may
/// patch and keep. Cut from the frame without a copy when the frame is its allocation's only
/// owner (a large request, see `codec::OWN_ALLOCATION_FRAME_BYTES_MIN`) and the shard's
/// bound on bodies kept that way has room; copied otherwise.
fn cut_batches(
    kept_bodies: &HeldMemory,
    frame: Option<Bytes>,
    batches: Vec<Bytes>,
) -> Vec<OwnedBatch> {
    let copy_all = |batches: &[Bytes]| batches.iter().map(|b| OwnedBatch::copy_of(b)).collect();
    let Some(frame) = frame.filter(|frame| kept_bodies.room() >= frame.len()) else {
        return copy_all(&batches);
    };
    let ranges: Option<Vec<Range<usize>>> =
        batches.iter().map(|b| range_within(&frame, b)).collect();
    let Some(ranges) = ranges.filter(|r| r.windows(2).all(|w| w[0].end <= w[1].start)) else {
        return copy_all(&batches);
    };
    drop(batches);
    let mut body = match frame.try_into_mut() {
        Ok(body) => body,
        Err(shared) => {
            return ranges
                .into_iter()
                .map(|r| OwnedBatch::copy_of(&shared[r]))
                .collect()
        }
    };
    let keep_alive: KeepAlive = Arc::new(kept_bodies.reserve(body.len()));
    let mut position = 0;
    ranges
        .into_iter()
        .map(|range| {
            body.advance(range.start - position);
            position = range.end;
            OwnedBatch::cut_from(body.split_to(range.len()), keep_alive.clone())
        })
        .collect()
}

/// The batches of the appends planned, in plan order, for the owning shards to keep.
fn take_batches(
    ctx: &ShardContext,
    plans: &mut [(String, Vec<Plan>)],
    frame: Option<Bytes>,
) -> Vec<OwnedBatch> {
    let received: Vec<Bytes> = plans
        .iter_mut()
        .flat_map(|(_, partitions)| partitions.iter_mut())
        .filter_map(|plan| match plan {
            Plan::Append { records, .. } => Some(std::mem::take(records)),
            Plan::Done(_) => None,
        })
        .collect();
    let appends = received.len();
    let batches = cut_batches(&ctx.kept_request_bodies, frame, received);
    assert_eq!(batches.len(), appends, "one batch per planned append");
    batches
}

/// Where `slice` lies in `frame`, if it is a slice of it.
fn range_within(frame: &Bytes, slice: &Bytes) -> Option<Range<usize>> {
    let start = (slice.as_ptr() as usize).checked_sub(frame.as_ptr() as usize)?;
    let end = start.checked_add(slice.len())?;
    (end <= frame.len()).then_some(start..end)
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
    mut plans: Vec<(String, Vec<Plan>)>,
    frame: Option<Bytes>,
    acks: i16,
) -> Vec<TopicProduceResponse> {
    let mut batches = take_batches(ctx, &mut plans, frame).into_iter();
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
                    group_id,
                    min_in_sync,
                    records: _,
                } => {
                    topic_answers.push(None);
                    let (slots, appends) = by_shard.entry(shard).or_default();
                    slots.push((topic_position, partition_position, index));
                    appends.push(PartitionAppend {
                        group_id,
                        batch: batches
                            .next()
                            .expect("take_batches returns one batch per append, in plan order"),
                        min_in_sync,
                    });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame standing alone in its allocation, and its batches at (start, end) in it.
    fn frame_and_batches(ranges: &[(usize, usize)]) -> (Bytes, Vec<Bytes>) {
        let frame = Bytes::from((0..64u8).collect::<Vec<u8>>());
        let batches = ranges.iter().map(|&(s, e)| frame.slice(s..e)).collect();
        (frame, batches)
    }

    fn inside(frame_start: usize, frame_len: usize, batch: &[u8]) -> bool {
        let at = batch.as_ptr() as usize;
        at >= frame_start && at + batch.len() <= frame_start + frame_len
    }

    #[test]
    fn batches_are_cut_from_a_frame_alone_in_its_allocation_and_count_it_until_dropped() {
        let kept = HeldMemory::new(1000);
        let (frame, batches) = frame_and_batches(&[(4, 10), (20, 30)]);
        let frame_start = frame.as_ptr() as usize;
        let cut = cut_batches(&kept, Some(frame), batches);
        assert_eq!(cut.len(), 2);
        assert!(cut.iter().all(|b| inside(frame_start, 64, b)), "no copy");
        assert_eq!(&cut[0][..], &(4..10u8).collect::<Vec<_>>()[..]);
        assert_eq!(&cut[1][..], &(20..30u8).collect::<Vec<_>>()[..]);
        assert_eq!(kept.held(), 64, "the whole body is kept");
        let frozen: Vec<Bytes> = cut.into_iter().map(OwnedBatch::freeze).collect();
        let survivor = frozen[1].clone();
        drop(frozen);
        assert_eq!(kept.held(), 64, "one batch still keeps the body");
        drop(survivor);
        assert_eq!(kept.held(), 0);
    }

    #[test]
    fn batches_are_copied_past_the_bound_on_kept_bodies() {
        let kept = HeldMemory::new(100);
        let _other_bodies = kept.reserve(50);
        let (frame, batches) = frame_and_batches(&[(0, 8)]);
        let frame_start = frame.as_ptr() as usize;
        let cut = cut_batches(&kept, Some(frame), batches);
        assert!(!inside(frame_start, 64, &cut[0]), "copied");
        assert_eq!(&cut[0][..], &(0..8u8).collect::<Vec<_>>()[..]);
        assert_eq!(kept.held(), 50);
    }

    #[test]
    fn batches_of_a_frame_that_is_not_theirs_alone_are_copied() {
        let kept = HeldMemory::new(1000);
        let (frame, batches) = frame_and_batches(&[(8, 16)]);
        let frame_start = frame.as_ptr() as usize;
        let elsewhere = frame.slice(40..48);
        let cut = cut_batches(&kept, Some(frame), batches);
        assert!(!inside(frame_start, 64, &cut[0]));
        assert_eq!(&cut[0][..], &(8..16u8).collect::<Vec<_>>()[..]);
        assert_eq!((kept.held(), elsewhere.len()), (0, 8));
        let cut = cut_batches(&kept, None, vec![elsewhere]);
        assert!(!inside(frame_start, 64, &cut[0]), "no frame: copied");
    }
}
