//! SyncGroup: the leader hands in the assignment; every member gets its part once stored.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::call_group;
use crate::coordinator::{GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=5;

pub async fn handle(ctx: &Rc<ShardContext>, request: SyncGroupRequest) -> SyncGroupResponse {
    if request.group_id.is_empty() {
        return SyncGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    let group_id = request.group_id.to_string();
    match call_group(ctx, &group_id, GroupCall::Sync(request)).await {
        GroupAnswer::Sync(response) => response,
        _ => SyncGroupResponse::default().with_error_code(ResponseError::UnknownServerError.code()),
    }
}
