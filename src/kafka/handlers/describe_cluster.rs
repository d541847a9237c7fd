//! DescribeCluster: the brokers of the static configuration, the controller and the
//! cluster id (what the Java AdminClient's describeCluster shows).

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=1;

pub fn handle(ctx: &Rc<ShardContext>, _request: DescribeClusterRequest) -> DescribeClusterResponse {
    let brokers = ctx
        .config
        .cluster
        .nodes
        .iter()
        .filter_map(|node| {
            let (host, port) = super::metadata::broker_address(ctx, node.id)?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(node.id as i32))
                    .with_host(StrBytes::from_string(host))
                    .with_port(i32::from(port)),
            )
        })
        .collect();
    let controller = ctx
        .node
        .controller_leader()
        .unwrap_or(u64::from(ctx.config.node_id)) as i32;
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(ctx.metadata().cluster_id.clone()))
        .with_controller_id(BrokerId(controller))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(i32::MIN)
}
