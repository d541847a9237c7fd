//! OffsetCommit: answered once the offsets are committed in `__consumer_offsets`.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::call_group;
use crate::coordinator::service::commit_response;
use crate::coordinator::{GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;

/// v9 belongs to the KIP-848 protocol (member epochs), which is not implemented.
pub const VERSIONS: RangeInclusive<i16> = 2..=9;

pub async fn handle(ctx: &Rc<ShardContext>, request: OffsetCommitRequest) -> OffsetCommitResponse {
    if request.group_id.is_empty() {
        return commit_response(&request, |_| ResponseError::InvalidGroupId.code());
    }
    let group_id = request.group_id.to_string();
    let fallback = commit_response(&request, |_| ResponseError::UnknownServerError.code());
    match call_group(ctx, &group_id, GroupCall::Commit(request)).await {
        GroupAnswer::Commit(response) => response,
        _ => fallback,
    }
}
