//! AddPartitionsToTxn (the client versions, v0-3): the partitions a transactional producer
//! is about to write to join its transaction, so the coordinator knows where its markers go.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use crate::runtime::context::ShardContext;
use crate::transactions::TxnCall;

/// v4+ are broker-to-broker (KIP-890 verification), not implemented.
pub const VERSIONS: RangeInclusive<i16> = 0..=3;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let view = ctx.metadata();
    let mut partitions = Vec::new();
    let mut unknown = false;
    for topic in &request.v3_and_below_topics {
        for &partition in &topic.partitions {
            unknown |= view.partition(&topic.name, partition).is_none();
            partitions.push((topic.name.to_string(), partition));
        }
    }
    let code = if unknown {
        None
    } else {
        let call = TxnCall::AddPartitions {
            transactional_id: request.v3_and_below_transactional_id.to_string(),
            producer_id: request.v3_and_below_producer_id.0,
            epoch: request.v3_and_below_producer_epoch,
            partitions,
        };
        Some(super::call_transaction(ctx, call).await.code())
    };
    // With an unknown partition nothing is added: it gets UNKNOWN_TOPIC_OR_PARTITION, the
    // others OPERATION_NOT_ATTEMPTED, as in Kafka.
    let results = request
        .v3_and_below_topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|&partition| {
                    let code = code.unwrap_or_else(|| {
                        if view.partition(&topic.name, partition).is_none() {
                            ResponseError::UnknownTopicOrPartition.code()
                        } else {
                            ResponseError::OperationNotAttempted.code()
                        }
                    });
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(partition)
                        .with_partition_error_code(code)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic.name.clone())
                .with_results_by_partition(partitions)
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}
