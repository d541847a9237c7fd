//! DescribeTransactions: a transactional id's state, producer, timeout and partitions, from
//! its coordinator (TRANSACTIONAL_ID_NOT_FOUND for an id never used).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::runtime::context::ShardContext;
use crate::transactions::{TxnAnswer, TxnCall};

pub const VERSIONS: RangeInclusive<i16> = 0..=0;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(request.transactional_ids.len());
    for id in request.transactional_ids {
        let answer = super::call_transaction(ctx, TxnCall::Describe(id.to_string())).await;
        let state = TransactionState::default().with_transactional_id(id);
        states.push(match answer {
            TxnAnswer::Described(Ok(Some(meta))) => {
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in &meta.partitions {
                    by_topic.entry(topic.clone()).or_default().push(*partition);
                }
                let topics = by_topic
                    .into_iter()
                    .map(|(topic, partitions)| {
                        TopicData::default()
                            .with_topic(TopicName(StrBytes::from_string(topic)))
                            .with_partitions(partitions)
                    })
                    .collect();
                state
                    .with_transaction_state(StrBytes::from_static_str(meta.status.name()))
                    .with_transaction_timeout_ms(meta.timeout_ms)
                    .with_transaction_start_time_ms(meta.start_ms)
                    .with_producer_id(ProducerId(meta.producer_id))
                    .with_producer_epoch(meta.epoch)
                    .with_topics(topics)
            }
            TxnAnswer::Described(Ok(None)) => {
                state.with_error_code(ResponseError::TransactionalIdNotFound.code())
            }
            other => state.with_error_code(other.code()),
        });
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
