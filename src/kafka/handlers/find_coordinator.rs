//! FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets` partition,
//! a transactional id's the leader of its `__transaction_state` partition (each topic is
//! created on the first request, as Kafka does). librdkafka also reads this API's presence
//! as "the broker supports LZ4" (its feature map), so it must be advertised.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::BrokerId;
use kafka_protocol::protocol::StrBytes;

use super::{describe, ensure_internal_topic, internal_partition};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=4;

const GROUP_KEY: i8 = 0;
const TRANSACTION_KEY: i8 = 1;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    if version >= 4 {
        // v4+ batches keys; the single-key fields must stay at their defaults.
        let mut coordinators = Vec::with_capacity(request.coordinator_keys.len());
        for key in request.coordinator_keys {
            let located = locate(ctx, request.key_type, &key).await;
            let coordinator = Coordinator::default().with_key(key);
            coordinators.push(match located {
                Ok((node_id, host, port)) => coordinator
                    .with_node_id(BrokerId(node_id))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port),
                Err(error) => coordinator
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_static_str(error_text(error)))),
            });
        }
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match locate(ctx, request.key_type, &request.key).await {
        Ok((node_id, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(node_id))
            .with_host(StrBytes::from_string(host))
            .with_port(port),
        Err(error) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(-1))
            .with_port(-1)
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_static_str(error_text(error)))),
    }
}

fn error_text(error: ResponseError) -> &'static str {
    match error {
        ResponseError::InvalidRequest => "unknown coordinator key type, or an empty group id",
        _ => "the coordinator is not available yet; retry",
    }
}

/// The node coordinating `key`: (node id, host, port).
async fn locate(
    ctx: &Rc<ShardContext>,
    key_type: i8,
    key: &str,
) -> Result<(i32, String, i32), ResponseError> {
    let topic = match key_type {
        GROUP_KEY => crate::coordinator::OFFSETS_TOPIC,
        TRANSACTION_KEY => crate::transactions::TRANSACTION_TOPIC,
        _ => return Err(ResponseError::InvalidRequest),
    };
    if key.is_empty() {
        return Err(ResponseError::InvalidRequest);
    }
    let node = coordinator_of(ctx, topic, key).await?;
    let (host, port) =
        super::metadata::broker_address(ctx, node).ok_or(ResponseError::CoordinatorNotAvailable)?;
    Ok((node as i32, host, i32::from(port)))
}

/// The leader of the key's partition of the internal `topic`: asked of the local replica,
/// else the preferred replica (which answers NOT_COORDINATOR if it does not lead, and the
/// client asks again).
async fn coordinator_of(
    ctx: &Rc<ShardContext>,
    topic: &str,
    key: &str,
) -> Result<u32, ResponseError> {
    ensure_internal_topic(ctx, topic).await?;
    let (shard, partition, replicas) = internal_partition(ctx, topic, key)?;
    let me = ctx.config.node_id;
    if !replicas.is_empty() && !replicas.contains(&me) {
        return replicas
            .first()
            .copied()
            .ok_or(ResponseError::CoordinatorNotAvailable);
    }
    let described = describe(ctx, &[(shard as u32, partition)]).await;
    described
        .get(&partition)
        .and_then(|d| d.leader)
        .map(|leader| leader as u32)
        .ok_or(ResponseError::CoordinatorNotAvailable)
}
