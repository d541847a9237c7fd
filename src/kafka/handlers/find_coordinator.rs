//! FindCoordinator: with one broker, it coordinates every group and transactional id.
//! The group and transaction APIs themselves come later; librdkafka also reads this API's
//! presence as "the broker supports LZ4" (its feature map), so it must be advertised.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::BrokerId;
use kafka_protocol::protocol::StrBytes;

use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=4;

pub fn handle(
    ctx: &Rc<ShardContext>,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let node_id = BrokerId(ctx.config.node_id as i32);
    let host = StrBytes::from_string(ctx.config.advertised_host.clone());
    let port = i32::from(ctx.config.advertised_port);
    if version >= 4 {
        // v4+ batches keys; the single-key fields must stay at their defaults.
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(node_id)
                    .with_host(host.clone())
                    .with_port(port)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    FindCoordinatorResponse::default()
        .with_node_id(node_id)
        .with_host(host)
        .with_port(port)
}
