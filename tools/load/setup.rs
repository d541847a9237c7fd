//! Before the load: the topic (created when missing), its partitions' leaders, the split of
//! partitions over connections, and the Produce request body each connection sends.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use crate::batch::{self, BatchShape};
use crate::connection::read_frame;

/// Produce v9: flexible, topics by name; every broker since Kafka 2.8 takes it.
pub const PRODUCE_VERSION: i16 = 9;
const CREATE_TOPICS_VERSION: i16 = 5;
const METADATA_VERSION: i16 = 9;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const LIST_OFFSETS_VERSION: i16 = 5;
/// ListOffsets' timestamp meaning "the log end".
const LATEST_TIMESTAMP: i64 = -1;

/// One request and its answer on a fresh connection.
fn call<R: Request>(addr: &str, request: &R, version: i16) -> anyhow::Result<R::Response>
where
    R::Response: Decodable + HeaderVersion,
{
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[0; 4]);
    RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("chronik-load")))
        .encode(&mut frame, R::header_version(version))?;
    request.encode(&mut frame, version)?;
    let length = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&length.to_be_bytes());
    stream.write_all(&frame)?;
    let mut payload = read_frame(&mut stream)?;
    ResponseHeader::decode(&mut payload, R::Response::header_version(version))?;
    R::Response::decode(&mut payload, version)
}

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)])
        .with_timeout_ms(30_000);
    let response: CreateTopicsResponse = call(bootstrap, &request, CREATE_TOPICS_VERSION)?;
    let code = response.topics.first().map_or(0, |t| t.error_code);
    anyhow::ensure!(
        code == 0 || code == TOPIC_ALREADY_EXISTS,
        "cannot create {topic}: error {code}"
    );
    Ok(())
}

/// Each partition's leader address, once every partition has one (at most 30 s).
pub fn leaders(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<BTreeMap<i32, SocketAddr>> {
    let bootstrap = bootstrap.split(',').next().unwrap_or(bootstrap).to_string();
    create_topic(&bootstrap, topic, partitions)?;
    let request =
        MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response: MetadataResponse = call(&bootstrap, &request, METADATA_VERSION)?;
        let brokers: BTreeMap<i32, String> = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        let found: BTreeMap<i32, SocketAddr> = response
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter_map(|p| {
                let address = brokers.get(&p.leader_id.0)?;
                Some((p.partition_index, address.to_socket_addrs().ok()?.next()?))
            })
            .collect();
        if !found.is_empty() && found.len() == response.topics[0].partitions.len() {
            return Ok(found);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{topic} has partitions without a leader"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Splits the partitions over about `connections` connections, each to one leader: every
/// leader gets connections in proportion to its partitions (at least one).
pub fn split(
    leaders: &BTreeMap<i32, SocketAddr>,
    connections: usize,
) -> Vec<(SocketAddr, Vec<i32>)> {
    let mut by_leader: BTreeMap<SocketAddr, Vec<i32>> = BTreeMap::new();
    for (&partition, &leader) in leaders {
        by_leader.entry(leader).or_default().push(partition);
    }
    let total = leaders.len().max(1);
    let mut split = Vec::new();
    for (leader, partitions) in by_leader {
        let share = (connections * partitions.len() / total).clamp(1, partitions.len());
        let mut groups = vec![Vec::new(); share];
        for (i, partition) in partitions.into_iter().enumerate() {
            groups[i % share].push(partition);
        }
        split.extend(groups.into_iter().map(|g| (leader, g)));
    }
    split
}

/// A Produce request body with one batch for each of `partitions`, and those batches.
pub fn produce_body(
    topic: &str,
    partitions: &[i32],
    shape: BatchShape,
    acks: i16,
    seed: u64,
) -> anyhow::Result<(Bytes, Vec<Bytes>)> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let partition_data = partitions
        .iter()
        .map(|&index| {
            let batch = batch::build(shape, seed * 1_000 + index as u64, now_ms)?;
            Ok(PartitionProduceData::default()
                .with_index(index)
                .with_records(Some(batch)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let batches = partition_data
        .iter()
        .filter_map(|p| p.records.clone())
        .collect();
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(partition_data)]);
    let mut body = BytesMut::new();
    request.encode(&mut body, PRODUCE_VERSION)?;
    Ok((body.freeze(), batches))
}

/// Each partition's log end offset now (where a consumer that only wants new records
/// starts).
pub fn log_ends(
    addr: SocketAddr,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&index| {
                        ListOffsetsPartition::default()
                            .with_partition_index(index)
                            .with_timestamp(LATEST_TIMESTAMP)
                    })
                    .collect(),
            )]);
    let response: ListOffsetsResponse = call(&addr.to_string(), &request, LIST_OFFSETS_VERSION)?;
    response
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            anyhow::ensure!(
                p.error_code == 0,
                "log end of partition {}: error {}",
                p.partition_index,
                p.error_code
            );
            Ok((p.partition_index, p.offset))
        })
        .collect()
}
