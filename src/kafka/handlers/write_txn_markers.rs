//! WriteTxnMarkers: a transaction coordinator on another node asks this node, the leader of
//! some of a transaction's partitions, to append their commit or abort markers.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use crate::runtime::context::ShardContext;
use crate::transactions::markers::write_local;

pub const VERSIONS: RangeInclusive<i16> = 1..=1;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let mut markers = Vec::with_capacity(request.markers.len());
    for marker in request.markers {
        let mut topics = Vec::with_capacity(marker.topics.len());
        for topic in marker.topics {
            let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
            for partition in topic.partition_indexes {
                let written = write_local(
                    ctx,
                    &topic.name,
                    partition,
                    marker.producer_id.0,
                    marker.producer_epoch,
                    marker.transaction_result,
                )
                .await;
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(partition)
                        .with_error_code(written.map_or_else(|e| e.code(), |()| 0)),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(markers)
}
