//! ConsumerGroupHeartbeat (KIP-848): joins, heartbeats and leaves of the consumer group
//! protocol, where the coordinator assigns partitions (`coordinator::consumer_group`).

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;

use super::call_group;
use crate::coordinator::{GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;

/// v1 adds subscriptions by regular expression, which are refused with a message.
pub const VERSIONS: RangeInclusive<i16> = 0..=1;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    request: ConsumerGroupHeartbeatRequest,
    client_id: String,
    client_host: String,
) -> ConsumerGroupHeartbeatResponse {
    if request.group_id.is_empty() {
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(ResponseError::InvalidGroupId.code())
            .with_error_message(Some(StrBytes::from_static_str("the group id is empty")));
    }
    let group_id = request.group_id.to_string();
    let call = GroupCall::ConsumerHeartbeat {
        request,
        client_id,
        client_host,
    };
    match call_group(ctx, &group_id, call).await {
        GroupAnswer::ConsumerHeartbeat(response) => response,
        _ => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(ResponseError::UnknownServerError.code()),
    }
}
