//! DescribeGroups: state, protocol and members of each group (from its coordinator).

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::call_group;
use crate::coordinator::{GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=5;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let name = group_id.to_string();
        let described = if name.is_empty() {
            DescribedGroup::default()
                .with_group_id(group_id)
                .with_error_code(ResponseError::InvalidGroupId.code())
        } else {
            match call_group(ctx, &name, GroupCall::Describe(name.clone())).await {
                GroupAnswer::Describe(described) => described,
                _ => DescribedGroup::default()
                    .with_group_id(group_id)
                    .with_error_code(ResponseError::UnknownServerError.code()),
            }
        };
        // Kafka fills unknown authorized operations with i32::MIN.
        groups.push(described.with_authorized_operations(i32::MIN));
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
