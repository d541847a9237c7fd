//! JoinGroup: a member joins (or rejoins) its group; answered when the rebalance completes.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::call_group;
use crate::coordinator::{GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=9;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    version: i16,
    request: JoinGroupRequest,
    client_id: String,
    client_host: String,
) -> JoinGroupResponse {
    if request.group_id.is_empty() {
        return JoinGroupResponse::default()
            .with_error_code(ResponseError::InvalidGroupId.code())
            .with_generation_id(-1)
            .with_member_id(request.member_id);
    }
    let group_id = request.group_id.to_string();
    let call = GroupCall::Join {
        version,
        request,
        client_id,
        client_host,
    };
    match call_group(ctx, &group_id, call).await {
        GroupAnswer::Join(response) => response,
        _ => JoinGroupResponse::default().with_error_code(ResponseError::UnknownServerError.code()),
    }
}
