//! Fetch with long poll. Partitions are read on their owning shards concurrently; the reply
//! respects max_bytes and partition_max_bytes, except that the first batch is always whole so
//! a consumer can make progress. With less than min_bytes available, the request waits on
//! every involved shard until any partition commits more data or max_wait_ms passes.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::FetchRequest;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{ProducerId, TopicName};

use crate::kafka::errors;
use crate::kafka::shared_records::SharedRecords;
use crate::metadata::MetadataView;
use crate::runtime::context::ShardContext;
use crate::runtime::frame::{PartitionRead, ReadResult, ShardReply, ShardRequest};

pub const VERSIONS: RangeInclusive<i16> = 4..=12;

struct Wanted {
    topic_index: usize,
    partition: i32,
    fetch_offset: i64,
    partition_max_bytes: usize,
    /// (shard, group) when the partition exists.
    placement: Option<(usize, u64)>,
    /// A consumer naming its rack (v11+) may read from a follower, as in Kafka (KIP-392).
    from_follower: bool,
    /// isolation_level=1 (v4+): up to the last stable offset.
    read_committed: bool,
}

type Outcome = Result<ReadResult, ResponseError>;

/// The answer, and the batches its records fields stand for (see `shared_records`).
pub async fn handle(
    ctx: &Rc<ShardContext>,
    version: i16,
    request: FetchRequest,
) -> (FetchResponse, SharedRecords) {
    if let Err(error) = check_session(version, &request) {
        let response = FetchResponse::default().with_error_code(error.code());
        return (response, SharedRecords::default());
    }
    let view = ctx.metadata();
    let wanted = plan(&view, version, &request);
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64)
        .min(Duration::from_millis(ctx.config.fetch_wait_ms_max));
    let deadline = Instant::now() + wait;
    let max_bytes = (request.max_bytes.max(0) as usize).min(ctx.config.fetch_bytes_max);
    loop {
        let outcomes = read_all(ctx, &wanted, max_bytes).await;
        let available: usize = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .flat_map(|r| &r.batches)
            .map(Bytes::len)
            .sum();
        let any_error = outcomes.iter().any(Result::is_err);
        let memory_full = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .any(|r| r.cut_short_by_memory);
        let now = Instant::now();
        let stopping = ctx.stopping.get();
        // min_bytes 0 answers at once, even with nothing to send, as Kafka does. So does a
        // read cut short by the shard's read memory: waiting would hold what it has.
        if available >= request.min_bytes.max(0) as usize
            || any_error
            || (memory_full && available > 0)
            || now >= deadline
            || stopping
        {
            return respond(&request, &wanted, outcomes, max_bytes);
        }
        wait_for_data(ctx, &wanted, &outcomes, deadline - now).await;
    }
}

/// Fetch sessions (KIP-227, v7+): chronik keeps none, and every answer says so with session
/// id 0, so clients send full fetches. As in Kafka's `FetchManager`: epoch 0 (open a session)
/// or -1 (sessionless) is a full fetch whatever the session id (a named session is closed,
/// here: there is none); any other epoch continues a session, which we do not know.
fn check_session(version: i16, request: &FetchRequest) -> Result<(), ResponseError> {
    const INITIAL_EPOCH: i32 = 0;
    const FINAL_EPOCH: i32 = -1;
    if version < 7 || matches!(request.session_epoch, INITIAL_EPOCH | FINAL_EPOCH) {
        return Ok(());
    }
    Err(ResponseError::FetchSessionIdNotFound)
}

fn plan(view: &MetadataView, version: i16, request: &FetchRequest) -> Vec<Wanted> {
    let from_follower = version >= 11 && !request.rack_id.is_empty();
    let read_committed = version >= 4 && request.isolation_level == 1;
    let mut wanted = Vec::new();
    for (topic_index, topic) in request.topics.iter().enumerate() {
        for partition in &topic.partitions {
            let placement = view
                .partition(&topic.topic.0, partition.partition)
                .map(|p| (p.shard as usize, p.group_id));
            wanted.push(Wanted {
                topic_index,
                partition: partition.partition,
                fetch_offset: partition.fetch_offset,
                partition_max_bytes: partition.partition_max_bytes.max(0) as usize,
                placement,
                from_follower,
                read_committed,
            });
        }
    }
    wanted
}

/// One read request per shard, all shards at once; each shard reads its partitions in
/// request order under the request's byte budget, and `respond` trims the merged result.
async fn read_all(ctx: &Rc<ShardContext>, wanted: &[Wanted], max_bytes: usize) -> Vec<Outcome> {
    let mut outcomes: Vec<Outcome> =
        vec![Err(ResponseError::UnknownTopicOrPartition); wanted.len()];
    let mut by_shard: BTreeMap<usize, (Vec<usize>, Vec<PartitionRead>)> = BTreeMap::new();
    for (position, w) in wanted.iter().enumerate() {
        if let Some((shard, group_id)) = w.placement {
            let (positions, reads) = by_shard.entry(shard).or_default();
            positions.push(position);
            reads.push(PartitionRead {
                group_id,
                offset: w.fetch_offset,
                max_bytes: w.partition_max_bytes,
                from_follower: w.from_follower,
                read_committed: w.read_committed,
            });
        }
    }
    let calls = by_shard
        .into_iter()
        .map(|(shard, (positions, reads))| async move {
            let count = reads.len();
            let request = ShardRequest::Read {
                reads,
                budget_bytes: max_bytes,
            };
            let results: Vec<Outcome> = match ctx.call(shard, request).await {
                Ok(ShardReply::Read(results)) => results
                    .into_iter()
                    .map(|r| r.map_err(|e| errors::read_error(&e)))
                    .collect(),
                Ok(_) => vec![Err(ResponseError::UnknownServerError); count],
                Err(error) => vec![Err(errors::read_route_error(&error)); count],
            };
            (positions, results)
        });
    for (positions, results) in futures::future::join_all(calls).await {
        for (position, result) in positions.into_iter().zip(results) {
            outcomes[position] = result;
        }
    }
    outcomes
}

async fn wait_for_data(
    ctx: &Rc<ShardContext>,
    wanted: &[Wanted],
    outcomes: &[Outcome],
    wait: Duration,
) {
    let mut by_shard: BTreeMap<usize, Vec<(u64, i64)>> = BTreeMap::new();
    for (w, outcome) in wanted.iter().zip(outcomes) {
        if let (Some((shard, group_id)), Ok(read)) = (w.placement, outcome) {
            by_shard
                .entry(shard)
                .or_default()
                .push((group_id, read.high_watermark));
        }
    }
    let wait_ms = wait.as_millis() as u64;
    let waits: Vec<_> = by_shard
        .into_iter()
        .map(|(shard, waits)| {
            Box::pin(ctx.call(shard, ShardRequest::WaitForData { waits, wait_ms }))
        })
        .collect();
    if waits.is_empty() {
        glommio::timer::sleep(wait).await;
        return;
    }
    // The first shard with news ends the wait; the others time out on their own. The local
    // timer bounds the wait even if a shard never answers (it is stopping).
    let first_news = futures::future::select_all(waits);
    futures::future::select(first_news, std::pin::pin!(glommio::timer::sleep(wait))).await;
}

fn respond(
    request: &FetchRequest,
    wanted: &[Wanted],
    outcomes: Vec<Outcome>,
    max_bytes: usize,
) -> (FetchResponse, SharedRecords) {
    let mut shared = SharedRecords::default();
    let mut topics: Vec<FetchableTopicResponse> = request
        .topics
        .iter()
        .map(|t| {
            FetchableTopicResponse::default()
                .with_topic(TopicName(t.topic.0.clone()))
                .with_topic_id(t.topic_id)
        })
        .collect();
    let mut budget = max_bytes;
    let mut first_batch_sent = false;
    for (w, outcome) in wanted.iter().zip(outcomes) {
        let data = PartitionData::default().with_partition_index(w.partition);
        let data = match outcome {
            Err(error) => data.with_error_code(error.code()).with_high_watermark(-1),
            Ok(result) => {
                let mut batches = Vec::with_capacity(result.batches.len());
                for batch in result.batches {
                    if batch.len() > budget && first_batch_sent {
                        break;
                    }
                    budget = budget.saturating_sub(batch.len());
                    first_batch_sent = true;
                    batches.push(batch);
                }
                let aborted = result
                    .aborted
                    .iter()
                    .map(|&(producer_id, first_offset)| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(producer_id))
                            .with_first_offset(first_offset)
                    })
                    .collect();
                data.with_high_watermark(result.high_watermark)
                    .with_last_stable_offset(result.last_stable_offset)
                    .with_log_start_offset(result.log_start_offset)
                    .with_aborted_transactions(Some(aborted))
                    .with_records(Some(shared.records(batches)))
            }
        };
        topics[w.topic_index].partitions.push(data);
    }
    (FetchResponse::default().with_responses(topics), shared)
}
