//! LeaveGroup: members leave at once instead of waiting for their sessions to expire (v3+:
//! several at once, by member or instance id).

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::call_group;
use crate::coordinator::{GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=5;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    version: i16,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    if request.group_id.is_empty() {
        return LeaveGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    let group_id = request.group_id.to_string();
    match call_group(ctx, &group_id, GroupCall::Leave { version, request }).await {
        GroupAnswer::Leave(response) => response,
        _ => {
            LeaveGroupResponse::default().with_error_code(ResponseError::UnknownServerError.code())
        }
    }
}
