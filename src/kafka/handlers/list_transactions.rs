//! ListTransactions: the transactional ids this node coordinates, from every shard, filtered
//! by state and producer id (v0), duration (v1) and id pattern (v2: a regular expression is
//! not supported here, so an id must equal the pattern).

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::runtime::context::ShardContext;
use crate::runtime::frame::{ShardReply, ShardRequest};
use crate::transactions::{TxnAnswer, TxnCall};

pub const VERSIONS: RangeInclusive<i16> = 0..=1;

const KNOWN_STATES: [&str; 6] = [
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
];

pub async fn handle(
    ctx: &Rc<ShardContext>,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let calls = (0..ctx.shard_count()).map(|shard| {
        ctx.call(
            shard,
            ShardRequest::Transaction {
                partition: 0,
                call: Box::new(TxnCall::List),
            },
        )
    });
    let wanted_state = |state: &str| {
        request.state_filters.is_empty() || request.state_filters.iter().any(|s| s == state)
    };
    let wanted_producer = |id: i64| {
        request.producer_id_filters.is_empty()
            || request.producer_id_filters.iter().any(|p| p.0 == id)
    };
    let mut states = Vec::new();
    for reply in futures::future::join_all(calls).await {
        let Ok(ShardReply::Transaction(TxnAnswer::Listed(listed))) = reply else {
            continue;
        };
        states.extend(
            listed
                .into_iter()
                .filter(|(_, producer, state)| wanted_state(state) && wanted_producer(*producer))
                .map(|(id, producer, state)| {
                    TransactionState::default()
                        .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                        .with_producer_id(ProducerId(producer))
                        .with_transaction_state(StrBytes::from_static_str(state))
                }),
        );
    }
    let unknown = request
        .state_filters
        .iter()
        .filter(|s| !KNOWN_STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    ListTransactionsResponse::default()
        .with_transaction_states(states)
        .with_unknown_state_filters(unknown)
}
