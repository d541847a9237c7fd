//! EndTxn: commits or aborts the producer's transaction; answered once the outcome is stored
//! (and normally once every partition has its marker).

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use crate::runtime::context::ShardContext;
use crate::transactions::TxnCall;

/// v4 adds no fields for us; v5 is KIP-890's epoch bump per transaction (not implemented).
pub const VERSIONS: RangeInclusive<i16> = 0..=4;

pub async fn handle(ctx: &Rc<ShardContext>, request: EndTxnRequest) -> EndTxnResponse {
    let call = TxnCall::End {
        transactional_id: request.transactional_id.to_string(),
        producer_id: request.producer_id.0,
        epoch: request.producer_epoch,
        commit: request.committed,
    };
    let code = super::call_transaction(ctx, call).await.code();
    EndTxnResponse::default().with_error_code(code)
}
