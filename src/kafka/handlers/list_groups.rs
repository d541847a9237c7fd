//! ListGroups: the groups this node coordinates, from every shard, filtered by state (v4+)
//! and type (v5+; every group here is "classic").

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::coordinator::{GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;
use crate::runtime::frame::{ShardReply, ShardRequest};

pub const VERSIONS: RangeInclusive<i16> = 0..=5;

pub async fn handle(ctx: &Rc<ShardContext>, request: ListGroupsRequest) -> ListGroupsResponse {
    let calls = (0..ctx.shard_count()).map(|shard| {
        ctx.call(
            shard,
            ShardRequest::Group {
                partition: 0,
                call: Box::new(GroupCall::List),
            },
        )
    });
    let wanted_state = |state: &str| {
        request.states_filter.is_empty()
            || request
                .states_filter
                .iter()
                .any(|s| s.eq_ignore_ascii_case(state))
    };
    let wanted_type = |group_type: &str| {
        request.types_filter.is_empty()
            || request
                .types_filter
                .iter()
                .any(|t| t.eq_ignore_ascii_case(group_type))
    };
    let mut groups = Vec::new();
    for reply in futures::future::join_all(calls).await {
        let Ok(ShardReply::Group(GroupAnswer::List(listed))) = reply else {
            continue;
        };
        groups.extend(
            listed
                .into_iter()
                .filter(|g| wanted_type(g.group_type) && wanted_state(g.state))
                .map(|g| {
                    ListedGroup::default()
                        .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                        .with_protocol_type(StrBytes::from_string(g.protocol_type))
                        .with_group_state(StrBytes::from_static_str(g.state))
                        .with_group_type(StrBytes::from_static_str(g.group_type))
                }),
        );
    }
    ListGroupsResponse::default().with_groups(groups)
}
