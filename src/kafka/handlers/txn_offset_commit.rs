//! TxnOffsetCommit: a transactional producer commits a group's offsets inside its
//! transaction (consume-transform-produce); they count once the transaction commits.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::call_group;
use crate::coordinator::service::txn_commit_response;
use crate::coordinator::{GroupAnswer, GroupCall};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=3;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group_id = request.group_id.to_string();
    let fallback = txn_commit_response(&request, |_| ResponseError::UnknownServerError.code());
    if group_id.is_empty() {
        return txn_commit_response(&request, |_| ResponseError::InvalidGroupId.code());
    }
    match call_group(ctx, &group_id, GroupCall::TxnCommit(request)).await {
        GroupAnswer::TxnCommit(response) => response,
        _ => fallback,
    }
}
