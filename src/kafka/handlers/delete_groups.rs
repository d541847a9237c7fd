//! DeleteGroups: an empty group and its committed offsets go (NON_EMPTY_GROUP otherwise).

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::call_group;
use crate::coordinator::{GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=2;

pub async fn handle(ctx: &Rc<ShardContext>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let name = group_id.to_string();
        let code = if name.is_empty() {
            ResponseError::InvalidGroupId.code()
        } else {
            match call_group(ctx, &name, GroupCall::Delete(name.clone())).await {
                GroupAnswer::Delete(code) => code,
                _ => ResponseError::UnknownServerError.code(),
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
