//! Transaction markers: the control batch (commit or abort) the coordinator appends to every
//! partition of a transaction once it is prepared. A partition led by this node gets it from
//! the shard that owns it; one led elsewhere through Kafka's own WriteTxnMarkers request to
//! its leader, as Kafka's brokers do. Delivery retries (leaders move) within a bound; a
//! transaction whose markers are not all written stays prepared, and the coordinator's timer
//! tries again.

use chronik_shards::runtime::shard::wall_clock_ms;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, RequestHeader, ResponseHeader, TopicName, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::kafka::handlers::describe;
use crate::runtime::context::ShardContext;
use crate::runtime::frame::{ShardReply, ShardRequest};

/// How long one delivery keeps trying before it leaves the transaction to the timer.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// A peer's answer to WriteTxnMarkers waits at most this long.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a WriteTxnMarkers response read from a peer.
const RESPONSE_BYTES_MAX: usize = 16 << 20;

/// A commit or abort marker of `producer_id` at `epoch`: one control record whose key is
/// (version 0, type: 0 abort, 1 commit) and whose value is (version 0, coordinator epoch).
pub fn control_batch(producer_id: i64, epoch: i16, commit: bool, coordinator_epoch: i32) -> Bytes {
    let mut key = BytesMut::new();
    key.put_i16(0);
    key.put_i16(i16::from(commit));
    let mut value = BytesMut::new();
    value.put_i16(0);
    value.put_i32(coordinator_epoch);
    let now = wall_clock_ms();
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: now,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    if let Err(error) = RecordBatchEncoder::encode(&mut buf, [&record], &options) {
        tracing::error!(%error, "control batch does not encode");
    }
    buf.freeze()
}

/// The marker type of a control record's key (None: not a marker).
pub fn marker_is_commit(key: &[u8]) -> Option<bool> {
    match key.get(2..4)? {
        [0, 0] => Some(false),
        [0, 1] => Some(true),
        _ => None,
    }
}

/// Appends a marker to a partition this node leads (WriteTxnMarkers, and local delivery).
/// Answers once it is committed; an offsets partition's coordinator then applies (or drops)
/// the producer's transactional offset commits.
pub async fn write_local(
    ctx: &Rc<ShardContext>,
    topic: &str,
    partition: i32,
    producer_id: i64,
    epoch: i16,
    commit: bool,
) -> Result<(), ResponseError> {
    let view = ctx.metadata();
    let Some(record) = view.partition(topic, partition) else {
        return Err(ResponseError::UnknownTopicOrPartition);
    };
    let request = ShardRequest::WriteMarker {
        group_id: record.group_id,
        producer_id,
        epoch,
        commit,
        is_offsets_partition: topic == crate::coordinator::OFFSETS_TOPIC,
    };
    match ctx.call(record.shard as usize, request).await {
        Ok(ShardReply::Marker(Ok(()))) => Ok(()),
        Ok(ShardReply::Marker(Err(error))) => Err(crate::kafka::errors::shard_error(&error)),
        _ => Err(ResponseError::NotLeaderOrFollower),
    }
}

/// Writes the marker to every partition, retrying within `DELIVERY_DEADLINE` for as long as
/// `still_coordinator` holds (a deposed coordinator stops: the next one finishes the
/// transaction). Partitions of deleted topics are done. Ok once every partition has it.
pub async fn write_markers(
    ctx: &Rc<ShardContext>,
    (producer_id, epoch, commit): (i64, i16, bool),
    partitions: &BTreeSet<(String, i32)>,
    still_coordinator: impl Fn() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    let mut pending: BTreeSet<(String, i32)> = partitions.clone();
    let mut attempt = 0usize;
    loop {
        if !still_coordinator() {
            return Err("no longer the coordinator".into());
        }
        let by_leader = leaders_of(ctx, &pending, attempt).await;
        attempt += 1;
        let me = ctx.config.node_id;
        for (leader, targets) in by_leader {
            let outcomes = if leader == Some(me) {
                let mut outcomes = Vec::with_capacity(targets.len());
                for (topic, partition) in &targets {
                    let written =
                        write_local(ctx, topic, *partition, producer_id, epoch, commit).await;
                    let code = written.map_or_else(|e| e.code(), |()| 0);
                    outcomes.push(((topic.clone(), *partition), code));
                }
                outcomes
            } else if let Some(node) = leader {
                send_remote(ctx, node, producer_id, epoch, commit, &targets).await
            } else {
                Vec::new()
            };
            for (target, code) in outcomes {
                if code == 0 || code == ResponseError::UnknownTopicOrPartition.code() {
                    pending.remove(&target);
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline || ctx.stopping.get() {
            return Err(format!(
                "{} partitions still lack their marker",
                pending.len()
            ));
        }
        glommio::timer::sleep(RETRY_PAUSE).await;
    }
}

/// Each partition's leader as this node knows it (None: no leader known yet). For a
/// partition with no replica here, the `attempt`-th replica in turn: whichever leads
/// takes the marker, the others answer NOT_LEADER_OR_FOLLOWER and the next attempt moves on.
async fn leaders_of(
    ctx: &Rc<ShardContext>,
    partitions: &BTreeSet<(String, i32)>,
    attempt: usize,
) -> BTreeMap<Option<u32>, Vec<(String, i32)>> {
    let view = ctx.metadata();
    let me = ctx.config.node_id;
    let mut local = Vec::new();
    let mut by_leader: BTreeMap<Option<u32>, Vec<(String, i32)>> = BTreeMap::new();
    for (topic, partition) in partitions {
        match view.partition(topic, *partition) {
            // Gone: delivered, as far as anyone can read it.
            None => by_leader
                .entry(Some(me))
                .or_default()
                .push((topic.clone(), *partition)),
            Some(record) if record.replicas.is_empty() || record.replicas.contains(&me) => {
                local.push(((topic.clone(), *partition), (record.shard, record.group_id)));
            }
            Some(record) => {
                let replicas = &record.replicas;
                let replica = replicas.get(attempt % replicas.len().max(1)).copied();
                by_leader
                    .entry(replica)
                    .or_default()
                    .push((topic.clone(), *partition));
            }
        }
    }
    let placements: Vec<(u32, u64)> = local.iter().map(|(_, p)| *p).collect();
    let described = describe(ctx, &placements).await;
    for (target, (_, group_id)) in local {
        let leader = described
            .get(&group_id)
            .and_then(|d| d.leader)
            .map(|l| l as u32);
        by_leader.entry(leader).or_default().push(target);
    }
    by_leader
}

/// WriteTxnMarkers to a peer's Kafka listener: each partition's error code.
async fn send_remote(
    ctx: &Rc<ShardContext>,
    node: u32,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    targets: &[(String, i32)],
) -> Vec<((String, i32), i16)> {
    let Some(address) = ctx
        .config
        .cluster
        .node(node)
        .and_then(|n| n.kafka.parse::<SocketAddr>().ok())
    else {
        return Vec::new();
    };
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in targets {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_transaction_result(commit)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partition_indexes(partitions)
                })
                .collect(),
        );
    let request = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
    let exchange = exchange(address, request);
    let timeout = glommio::timer::sleep(REMOTE_TIMEOUT);
    let response =
        match futures::future::select(std::pin::pin!(exchange), std::pin::pin!(timeout)).await {
            futures::future::Either::Left((Ok(response), _)) => response,
            futures::future::Either::Left((Err(error), _)) => {
                tracing::debug!(node, %error, "WriteTxnMarkers to a peer failed");
                return Vec::new();
            }
            futures::future::Either::Right(_) => return Vec::new(),
        };
    response
        .markers
        .into_iter()
        .flat_map(|m| m.topics)
        .flat_map(|t| {
            let name = t.name.to_string();
            t.partitions
                .into_iter()
                .map(move |p| ((name.clone(), p.partition_index), p.error_code))
        })
        .collect()
}

/// One request-response exchange on a fresh connection (markers are rare: one per
/// transaction and leader, so no connection is kept).
async fn exchange(
    address: SocketAddr,
    request: WriteTxnMarkersRequest,
) -> Result<WriteTxnMarkersResponse, String> {
    const VERSION: i16 = 1;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::WriteTxnMarkers as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("chronik-txn-coordinator")));
    let mut body = BytesMut::new();
    header
        .encode(
            &mut body,
            ApiKey::WriteTxnMarkers.request_header_version(VERSION),
        )
        .map_err(|e| e.to_string())?;
    request
        .encode(&mut body, VERSION)
        .map_err(|e| e.to_string())?;
    let mut stream = glommio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await.map_err(|e| e.to_string())?;
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .await
        .map_err(|e| e.to_string())?;
    let size = usize::try_from(i32::from_be_bytes(size)).map_err(|e| e.to_string())?;
    if size > RESPONSE_BYTES_MAX {
        return Err(format!("response of {size} bytes"));
    }
    let mut reply = vec![0u8; size];
    stream
        .read_exact(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = Bytes::from(reply);
    ResponseHeader::decode(
        &mut reply,
        ApiKey::WriteTxnMarkers.response_header_version(VERSION),
    )
    .map_err(|e| e.to_string())?;
    WriteTxnMarkersResponse::decode(&mut reply, VERSION).map_err(|e| e.to_string())
}
