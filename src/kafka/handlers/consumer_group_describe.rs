//! ConsumerGroupDescribe (KIP-848): members, their assignments and target assignments, and
//! the group and assignment epochs of consumer-protocol groups.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::DescribedGroup;
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse};

use super::call_group;
use crate::coordinator::{GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=1;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let mut groups = Vec::with_capacity(request.group_ids.len());
    for group_id in request.group_ids {
        let name = group_id.to_string();
        let described = if name.is_empty() {
            DescribedGroup::default()
                .with_group_id(group_id)
                .with_error_code(ResponseError::InvalidGroupId.code())
        } else {
            match call_group(ctx, &name, GroupCall::ConsumerDescribe(name.clone())).await {
                GroupAnswer::ConsumerDescribe(described) => described,
                _ => DescribedGroup::default()
                    .with_group_id(group_id)
                    .with_error_code(ResponseError::UnknownServerError.code()),
            }
        };
        groups.push(described.with_authorized_operations(i32::MIN));
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
