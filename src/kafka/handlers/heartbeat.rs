//! Heartbeat: keeps a member's session alive and tells it when a rebalance began.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::call_group;
use crate::coordinator::{GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=4;

pub async fn handle(ctx: &Rc<ShardContext>, request: HeartbeatRequest) -> HeartbeatResponse {
    if request.group_id.is_empty() {
        return HeartbeatResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    let group_id = request.group_id.to_string();
    let code = match call_group(ctx, &group_id, GroupCall::Heartbeat(request)).await {
        GroupAnswer::Heartbeat(code) => code,
        _ => ResponseError::UnknownServerError.code(),
    };
    HeartbeatResponse::default().with_error_code(code)
}
