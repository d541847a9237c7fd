//! AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction, so
//! the offsets the producer commits in it (TxnOffsetCommit) get the transaction's marker.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use crate::coordinator::{partition_for, OFFSETS_TOPIC};
use crate::runtime::context::ShardContext;
use crate::transactions::TxnCall;

pub const VERSIONS: RangeInclusive<i16> = 0..=3;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    if let Err(error) = super::ensure_internal_topic(ctx, OFFSETS_TOPIC).await {
        return AddOffsetsToTxnResponse::default().with_error_code(error.code());
    }
    let partitions = ctx
        .metadata()
        .topic(OFFSETS_TOPIC)
        .map_or(1, |t| t.partitions.len());
    let index = partition_for(&request.group_id, partitions) as i32;
    let call = TxnCall::AddPartitions {
        transactional_id: request.transactional_id.to_string(),
        producer_id: request.producer_id.0,
        epoch: request.producer_epoch,
        partitions: vec![(OFFSETS_TOPIC.to_string(), index)],
    };
    let code = super::call_transaction(ctx, call).await.code();
    AddOffsetsToTxnResponse::default().with_error_code(code)
}
