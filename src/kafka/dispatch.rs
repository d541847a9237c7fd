//! Request decoding and dispatch: ApiKey -> handler. The supported versions come from each
//! handler's `VERSIONS`, and ApiVersions is built from the same table.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::codec::{encode_fetch_response, encode_response};
use super::handlers;
use crate::runtime::context::ShardContext;

/// (API, versions we accept). Produce advertises v0-v2 as Kafka 4.0 does (KAFKA-18659:
/// librdkafka infers codec support from them) but only v3+ decodes.
pub fn supported_apis() -> &'static [(ApiKey, RangeInclusive<i16>)] {
    &SUPPORTED_APIS
}

/// Built once: every request's decode looks its API up here.
static SUPPORTED_APIS: std::sync::LazyLock<Vec<(ApiKey, RangeInclusive<i16>)>> =
    std::sync::LazyLock::new(|| {
        vec![
            (ApiKey::Produce, handlers::produce::VERSIONS),
            (ApiKey::Fetch, handlers::fetch::VERSIONS),
            (ApiKey::ListOffsets, handlers::list_offsets::VERSIONS),
            (ApiKey::Metadata, handlers::metadata::VERSIONS),
            (ApiKey::ApiVersions, handlers::api_versions::VERSIONS),
            (ApiKey::CreateTopics, handlers::create_topics::VERSIONS),
            (ApiKey::DeleteTopics, handlers::delete_topics::VERSIONS),
            (ApiKey::InitProducerId, handlers::init_producer_id::VERSIONS),
            (
                ApiKey::FindCoordinator,
                handlers::find_coordinator::VERSIONS,
            ),
            (
                ApiKey::OffsetForLeaderEpoch,
                handlers::offset_for_leader_epoch::VERSIONS,
            ),
            (ApiKey::JoinGroup, handlers::join_group::VERSIONS),
            (ApiKey::SyncGroup, handlers::sync_group::VERSIONS),
            (ApiKey::Heartbeat, handlers::heartbeat::VERSIONS),
            (ApiKey::LeaveGroup, handlers::leave_group::VERSIONS),
            (ApiKey::OffsetCommit, handlers::offset_commit::VERSIONS),
            (ApiKey::OffsetFetch, handlers::offset_fetch::VERSIONS),
            (ApiKey::DescribeGroups, handlers::describe_groups::VERSIONS),
            (ApiKey::ListGroups, handlers::list_groups::VERSIONS),
            (ApiKey::DeleteGroups, handlers::delete_groups::VERSIONS),
            (ApiKey::OffsetDelete, handlers::offset_delete::VERSIONS),
            (
                ApiKey::DescribeConfigs,
                handlers::describe_configs::VERSIONS,
            ),
            (ApiKey::AlterConfigs, handlers::alter_configs::VERSIONS),
            (
                ApiKey::IncrementalAlterConfigs,
                handlers::alter_configs::INCREMENTAL_VERSIONS,
            ),
            (
                ApiKey::CreatePartitions,
                handlers::create_partitions::VERSIONS,
            ),
            (
                ApiKey::DescribeCluster,
                handlers::describe_cluster::VERSIONS,
            ),
            (
                ApiKey::AddPartitionsToTxn,
                handlers::add_partitions_to_txn::VERSIONS,
            ),
            (
                ApiKey::AddOffsetsToTxn,
                handlers::add_offsets_to_txn::VERSIONS,
            ),
            (ApiKey::EndTxn, handlers::end_txn::VERSIONS),
            (
                ApiKey::TxnOffsetCommit,
                handlers::txn_offset_commit::VERSIONS,
            ),
            (
                ApiKey::WriteTxnMarkers,
                handlers::write_txn_markers::VERSIONS,
            ),
            (
                ApiKey::DescribeTransactions,
                handlers::describe_transactions::VERSIONS,
            ),
            (
                ApiKey::ListTransactions,
                handlers::list_transactions::VERSIONS,
            ),
            (
                ApiKey::DescribeProducers,
                handlers::describe_producers::VERSIONS,
            ),
            (
                ApiKey::DescribeLogDirs,
                handlers::describe_log_dirs::VERSIONS,
            ),
            (ApiKey::DeleteRecords, handlers::delete_records::VERSIONS),
            (
                ApiKey::ConsumerGroupHeartbeat,
                handlers::consumer_group_heartbeat::VERSIONS,
            ),
            (
                ApiKey::ConsumerGroupDescribe,
                handlers::consumer_group_describe::VERSIONS,
            ),
        ]
    });

pub fn supported_versions(api_key: ApiKey) -> Option<RangeInclusive<i16>> {
    supported_apis()
        .iter()
        .find(|(key, _)| *key == api_key)
        .map(|(_, versions)| versions.clone())
}

pub struct Request {
    /// The client's address, as DescribeGroups reports a member's host.
    pub client_host: String,
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
    /// A Produce request's whole frame, which its record batches are slices of, when it is
    /// its allocation's whole: the handler then cuts the batches from it without copying.
    pub produce_frame: Option<Bytes>,
}

pub enum Decoded {
    Request(Box<Request>),
    /// Answer with these bytes and keep the connection (ApiVersions at an unknown version).
    Immediate(Bytes),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {1} of {0:?}")]
    UnsupportedVersion(ApiKey, i16),
    #[error("malformed {0:?} request: {1}")]
    Malformed(ApiKey, String),
}

/// `own_allocation`: `frame` is the whole of its allocation (`codec::FrameBody`).
pub fn decode(mut frame: Bytes, own_allocation: bool) -> Result<Decoded, DecodeError> {
    let mut peek = frame.clone();
    let raw_key = peek.get_i16();
    let version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let api_key = ApiKey::try_from(raw_key).map_err(|_| DecodeError::UnknownApi(raw_key))?;
    let versions = supported_versions(api_key).ok_or(DecodeError::UnknownApi(raw_key))?;
    if !versions.contains(&version) {
        if api_key == ApiKey::ApiVersions {
            let body = handlers::api_versions::unsupported_version();
            let bytes =
                encode_response(api_key, 0, correlation_id, &ResponseKind::ApiVersions(body))
                    .map_err(|e| DecodeError::Malformed(api_key, e))?;
            return Ok(Decoded::Immediate(bytes));
        }
        return Err(DecodeError::UnsupportedVersion(api_key, version));
    }
    let produce_frame = (api_key == ApiKey::Produce && own_allocation).then(|| frame.clone());
    let mut header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| DecodeError::Malformed(api_key, e.to_string()))?;
    let body = RequestKind::decode(api_key, &mut frame, version)
        .map_err(|e| DecodeError::Malformed(api_key, e.to_string()))?;
    if produce_frame.is_some() {
        // The header's strings are slices of the frame too; the handler needs the frame to
        // be theirs alone once it has taken the batches, so the header gets copies.
        header.client_id = header
            .client_id
            .map(|id| StrBytes::from_string(id.to_string()));
        header.unknown_tagged_fields.clear();
    }
    Ok(Decoded::Request(Box::new(Request {
        client_host: String::new(),
        api_key,
        version,
        header,
        body,
        produce_frame,
    })))
}

/// Handles one request; `None` means no response is sent (produce with acks=0).
/// The span is at debug level: at info, building it for every request (its fields formatted
/// into a string) cost ~2% of a busy broker's CPU.
#[tracing::instrument(level = "debug", skip_all, fields(api = ?request.api_key, version = request.version,
    correlation_id = request.header.correlation_id, shard = ctx.shard_id))]
pub async fn handle(ctx: Rc<ShardContext>, request: Request) -> Reply {
    let Request {
        client_host,
        api_key,
        version,
        header,
        body,
        produce_frame,
    } = request;
    let response = match body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(handlers::api_versions::handle()),
        RequestKind::Metadata(req) => {
            ResponseKind::Metadata(handlers::metadata::handle(&ctx, version, req).await)
        }
        RequestKind::Produce(req) => {
            // acks=0: Kafka sends no response at all.
            match handlers::produce::handle(&ctx, version, req, produce_frame).await {
                Some(response) => ResponseKind::Produce(response),
                None => return Reply::Nothing,
            }
        }
        RequestKind::Fetch(req) => {
            return fetch_reply(&ctx, version, header.correlation_id, req).await;
        }
        RequestKind::ListOffsets(req) => {
            ResponseKind::ListOffsets(handlers::list_offsets::handle(&ctx, version, req).await)
        }
        RequestKind::CreateTopics(req) => {
            ResponseKind::CreateTopics(handlers::create_topics::handle(&ctx, version, req).await)
        }
        RequestKind::DeleteTopics(req) => {
            ResponseKind::DeleteTopics(handlers::delete_topics::handle(&ctx, version, req).await)
        }
        RequestKind::FindCoordinator(req) => ResponseKind::FindCoordinator(
            handlers::find_coordinator::handle(&ctx, version, req).await,
        ),
        RequestKind::InitProducerId(req) => ResponseKind::InitProducerId(
            handlers::init_producer_id::handle(&ctx, version, req).await,
        ),
        RequestKind::OffsetForLeaderEpoch(req) => ResponseKind::OffsetForLeaderEpoch(
            handlers::offset_for_leader_epoch::handle(&ctx, version, req).await,
        ),
        RequestKind::DescribeConfigs(req) => {
            ResponseKind::DescribeConfigs(handlers::describe_configs::handle(&ctx, version, req))
        }
        RequestKind::DescribeCluster(req) => {
            ResponseKind::DescribeCluster(handlers::describe_cluster::handle(&ctx, req))
        }
        body => {
            let client_id = header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            let Some(response) =
                handle_group_and_admin_api(&ctx, version, body, client_id, client_host).await
            else {
                tracing::warn!("decoded an API that has no handler");
                return Reply::Close;
            };
            response
        }
    };
    match encode_response(api_key, version, header.correlation_id, &response) {
        Ok(bytes) => Reply::Send(bytes),
        Err(error) => {
            tracing::error!(%error, "response does not encode");
            Reply::Close
        }
    }
}

/// A Fetch answer as segments: its batches go to the socket uncopied (`shared_records`).
async fn fetch_reply(
    ctx: &Rc<ShardContext>,
    version: i16,
    correlation_id: i32,
    request: kafka_protocol::messages::FetchRequest,
) -> Reply {
    let (response, shared) = handlers::fetch::handle(ctx, version, request).await;
    match encode_fetch_response(version, correlation_id, response, &shared) {
        Ok(segments) => Reply::SendSegments(segments),
        Err(error) => {
            tracing::error!(%error, "response does not encode");
            Reply::Close
        }
    }
}

/// The consumer group APIs, then the others (None: not one we handle).
async fn handle_group_and_admin_api(
    ctx: &Rc<ShardContext>,
    version: i16,
    body: RequestKind,
    client_id: String,
    client_host: String,
) -> Option<ResponseKind> {
    let ctx = ctx.clone();
    Some(match body {
        RequestKind::JoinGroup(req) => ResponseKind::JoinGroup(
            handlers::join_group::handle(&ctx, version, req, client_id, client_host).await,
        ),
        RequestKind::ConsumerGroupHeartbeat(req) => ResponseKind::ConsumerGroupHeartbeat(
            handlers::consumer_group_heartbeat::handle(&ctx, req, client_id, client_host).await,
        ),
        RequestKind::ConsumerGroupDescribe(req) => ResponseKind::ConsumerGroupDescribe(
            handlers::consumer_group_describe::handle(&ctx, req).await,
        ),
        RequestKind::SyncGroup(req) => {
            ResponseKind::SyncGroup(handlers::sync_group::handle(&ctx, req).await)
        }
        RequestKind::Heartbeat(req) => {
            ResponseKind::Heartbeat(handlers::heartbeat::handle(&ctx, req).await)
        }
        RequestKind::LeaveGroup(req) => {
            ResponseKind::LeaveGroup(handlers::leave_group::handle(&ctx, version, req).await)
        }
        RequestKind::OffsetCommit(req) => {
            ResponseKind::OffsetCommit(handlers::offset_commit::handle(&ctx, req).await)
        }
        RequestKind::OffsetFetch(req) => {
            ResponseKind::OffsetFetch(handlers::offset_fetch::handle(&ctx, version, req).await)
        }
        RequestKind::DescribeGroups(req) => {
            ResponseKind::DescribeGroups(handlers::describe_groups::handle(&ctx, req).await)
        }
        RequestKind::ListGroups(req) => {
            ResponseKind::ListGroups(handlers::list_groups::handle(&ctx, req).await)
        }
        RequestKind::DeleteGroups(req) => {
            ResponseKind::DeleteGroups(handlers::delete_groups::handle(&ctx, req).await)
        }
        RequestKind::OffsetDelete(req) => {
            ResponseKind::OffsetDelete(handlers::offset_delete::handle(&ctx, req).await)
        }
        body => return handle_transaction_and_admin_api(&ctx, version, body).await,
    })
}

/// The transaction and admin APIs (None: not one of them).
async fn handle_transaction_and_admin_api(
    ctx: &Rc<ShardContext>,
    version: i16,
    body: RequestKind,
) -> Option<ResponseKind> {
    let ctx = ctx.clone();
    Some(match body {
        RequestKind::AlterConfigs(req) => {
            ResponseKind::AlterConfigs(handlers::alter_configs::handle(&ctx, req).await)
        }
        RequestKind::IncrementalAlterConfigs(req) => ResponseKind::IncrementalAlterConfigs(
            handlers::alter_configs::handle_incremental(&ctx, req).await,
        ),
        RequestKind::AddPartitionsToTxn(req) => ResponseKind::AddPartitionsToTxn(
            handlers::add_partitions_to_txn::handle(&ctx, req).await,
        ),
        RequestKind::AddOffsetsToTxn(req) => {
            ResponseKind::AddOffsetsToTxn(handlers::add_offsets_to_txn::handle(&ctx, req).await)
        }
        RequestKind::EndTxn(req) => {
            ResponseKind::EndTxn(handlers::end_txn::handle(&ctx, req).await)
        }
        RequestKind::TxnOffsetCommit(req) => {
            ResponseKind::TxnOffsetCommit(handlers::txn_offset_commit::handle(&ctx, req).await)
        }
        RequestKind::WriteTxnMarkers(req) => {
            ResponseKind::WriteTxnMarkers(handlers::write_txn_markers::handle(&ctx, req).await)
        }
        RequestKind::DescribeTransactions(req) => ResponseKind::DescribeTransactions(
            handlers::describe_transactions::handle(&ctx, req).await,
        ),
        RequestKind::ListTransactions(req) => {
            ResponseKind::ListTransactions(handlers::list_transactions::handle(&ctx, req).await)
        }
        RequestKind::DescribeProducers(req) => {
            ResponseKind::DescribeProducers(handlers::describe_producers::handle(&ctx, req).await)
        }
        RequestKind::DescribeLogDirs(req) => ResponseKind::DescribeLogDirs(
            handlers::describe_log_dirs::handle(&ctx, version, req).await,
        ),
        RequestKind::DeleteRecords(req) => {
            ResponseKind::DeleteRecords(handlers::delete_records::handle(&ctx, req).await)
        }
        RequestKind::CreatePartitions(req) => {
            ResponseKind::CreatePartitions(handlers::create_partitions::handle(&ctx, req).await)
        }
        _ => return None,
    })
}

/// What the connection does with a request's outcome, in request order.
pub enum Reply {
    Send(Bytes),
    /// One frame in pieces, written in order (a Fetch answer's batches, uncopied).
    SendSegments(Vec<Bytes>),
    /// Produce with acks=0.
    Nothing,
    /// No answer can be given: close, since a skipped answer would pair every later response
    /// with the wrong request (clients match them by order and correlation id).
    Close,
}
