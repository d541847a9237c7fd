//! OffsetDelete: removes committed offsets of topics the group no longer subscribes to.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::call_group;
use crate::coordinator::{GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=0;

pub async fn handle(ctx: &Rc<ShardContext>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    if request.group_id.is_empty() {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::InvalidGroupId.code());
    }
    let group_id = request.group_id.to_string();
    match call_group(ctx, &group_id, GroupCall::DeleteOffsets(request)).await {
        GroupAnswer::DeleteOffsets(response) => response,
        _ => OffsetDeleteResponse::default()
            .with_error_code(ResponseError::UnknownServerError.code()),
    }
}
