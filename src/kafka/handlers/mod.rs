//! One Kafka API per file, each with its accepted `VERSIONS` first. Shared routing helpers
//! live here.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod api_versions;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_transactions;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use kafka_protocol::error::ResponseError;

use crate::controller::{
    ControllerError, ControllerReply, ControllerRequest, NewTopic, TopicOutcome,
};
use crate::coordinator::service::refuse;
use crate::coordinator::{partition_for, GroupAnswer, GroupCall, OFFSETS_TOPIC};
use crate::kafka::{errors, topic_name};
use crate::runtime::context::ShardContext;
use crate::runtime::frame::{PartitionDescription, ShardReply, ShardRequest};
use crate::transactions::{TxnAnswer, TxnCall, TRANSACTION_TOPIC};

/// The controller always lives on shard 0.
const CONTROLLER_SHARD: usize = 0;

pub async fn call_controller(
    ctx: &Rc<ShardContext>,
    request: ControllerRequest,
) -> Vec<TopicOutcome> {
    match controller_request(ctx, request).await {
        Some(ControllerReply::Topics(outcomes)) => outcomes,
        _ => Vec::new(),
    }
}

/// How long a request waits for a controller leader (an election, a cluster starting) before
/// it is answered with a retriable error. Kafka brokers that forward (KIP-590) wait the same
/// way: clients such as kafkajs do not retry a per-topic NOT_CONTROLLER.
const CONTROLLER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a controller request where the controller leads: on this node's shard 0, or
/// forwarded to the leading node (then answered once this node's metadata has caught up
/// with the change, so the client can use what it created at once). While no controller
/// leads, it waits (bounded by `CONTROLLER_WAIT`) and tries again. None: no controller could
/// be reached (retriable).
pub async fn controller_request(
    ctx: &Rc<ShardContext>,
    request: ControllerRequest,
) -> Option<ControllerReply> {
    let deadline = std::time::Instant::now() + CONTROLLER_WAIT;
    loop {
        let reply = controller_request_once(ctx, request.clone()).await;
        let no_controller = match &reply {
            None => true,
            Some(ControllerReply::Topics(outcomes)) => outcomes
                .iter()
                .all(|(_, o)| matches!(o, Err(ControllerError::NoController(_)))),
            Some(ControllerReply::ProducerId(outcome)) => {
                matches!(outcome, Err(ControllerError::NoController(_)))
            }
        };
        if !no_controller || std::time::Instant::now() >= deadline || ctx.stopping.get() {
            return reply;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn controller_request_once(
    ctx: &Rc<ShardContext>,
    request: ControllerRequest,
) -> Option<ControllerReply> {
    let me = u64::from(ctx.config.node_id);
    let leader = ctx.node.controller_leader();
    if !ctx.config.cluster.is_multi_node() || leader == Some(me) {
        return match ctx
            .call(CONTROLLER_SHARD, ShardRequest::Controller(request))
            .await
        {
            Ok(ShardReply::Controller(reply)) => Some(reply),
            _ => None,
        };
    }
    crate::controller::forward::forward(ctx, leader?, request).await
}

/// Creates the valid, unknown topics among `names` with the broker defaults (auto-creation).
/// Returns the topics the controller refused for good (a name colliding with an existing one
/// by `.` versus `_`), with the error their requests must get instead of "unknown topic",
/// which a client would retry until it times out.
pub async fn auto_create(
    ctx: &Rc<ShardContext>,
    names: impl IntoIterator<Item = String>,
) -> BTreeMap<String, ResponseError> {
    let view = ctx.metadata();
    let missing: BTreeSet<String> = names
        .into_iter()
        .filter(|name| {
            view.topic(name).is_none()
                && topic_name::validate(name).is_ok()
                // Internal topics are created by the broker itself, with their own settings.
                && !crate::coordinator::is_internal_topic(name)
        })
        .collect();
    let mut refused = BTreeMap::new();
    if missing.is_empty() {
        return refused;
    }
    let topics = missing
        .into_iter()
        .map(|name| NewTopic {
            name,
            partitions: ctx.config.default_partitions,
            replication_factor: ctx.config.default_replication_factor,
            configs: BTreeMap::new(),
        })
        .collect();
    for (name, outcome) in call_controller(
        ctx,
        ControllerRequest::CreateTopics {
            topics,
            validate_only: false,
        },
    )
    .await
    {
        match outcome {
            Ok(_) => tracing::info!(topic = %name, "auto-created topic"),
            Err(error @ ControllerError::NameCollision(_)) => {
                refused.insert(name, errors::controller_error(&error));
            }
            Err(error) => tracing::debug!(topic = %name, %error, "auto-create did not create"),
        }
    }
    refused
}

/// Leader and epoch of each group, asked of the shards that own them.
pub async fn describe(
    ctx: &Rc<ShardContext>,
    placements: &[(u32, u64)],
) -> BTreeMap<u64, PartitionDescription> {
    let mut by_shard: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for &(shard, group_id) in placements {
        by_shard.entry(shard).or_default().push(group_id);
    }
    let calls = by_shard.into_iter().map(|(shard, group_ids)| async move {
        let reply = ctx
            .call(
                shard as usize,
                ShardRequest::Describe {
                    group_ids: group_ids.clone(),
                },
            )
            .await;
        match reply {
            Ok(ShardReply::Describe(descriptions)) => {
                group_ids.into_iter().zip(descriptions).collect::<Vec<_>>()
            }
            _ => Vec::new(),
        }
    });
    let mut described = BTreeMap::new();
    for pairs in futures::future::join_all(calls).await {
        for (group_id, description) in pairs {
            if let Some(description) = description {
                described.insert(group_id, description);
            }
        }
    }
    described
}

/// Creates an internal topic (`__consumer_offsets`, `__transaction_state`) if it does not
/// exist yet (the first FindCoordinator, as Kafka does), with the broker's replication factor
/// and no retention: its records stay until they are deleted or overwritten.
pub async fn ensure_internal_topic(
    ctx: &Rc<ShardContext>,
    name: &str,
) -> Result<(), ResponseError> {
    if ctx.metadata().topic(name).is_some() {
        return Ok(());
    }
    // As in Kafka: the log cleaner keeps the latest record of each key, and nothing expires
    // by age or size.
    let configs = [("cleanup.policy", "compact")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let topics = vec![NewTopic {
        name: name.to_string(),
        partitions: ctx.config.offsets_topic_partitions,
        replication_factor: ctx.config.default_replication_factor,
        configs,
    }];
    let outcomes = call_controller(
        ctx,
        ControllerRequest::CreateTopics {
            topics,
            validate_only: false,
        },
    )
    .await;
    match outcomes.first() {
        Some((_, Ok(_))) | Some((_, Err(ControllerError::TopicAlreadyExists))) => {
            tracing::info!(topic = name, "created an internal topic");
            Ok(())
        }
        Some((_, Err(error))) => {
            tracing::warn!(%error, topic = name, "cannot create an internal topic");
            Err(ResponseError::CoordinatorNotAvailable)
        }
        None => Err(ResponseError::CoordinatorNotAvailable),
    }
}

/// Where the coordinator of `key` (a group or a transactional id) runs: (shard, Raft group of
/// its partition of the internal `topic`, the partition's replicas).
pub fn internal_partition(
    ctx: &ShardContext,
    topic: &str,
    key: &str,
) -> Result<(usize, u64, Vec<u32>), ResponseError> {
    let view = ctx.metadata();
    let topic = view
        .topic(topic)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let index = partition_for(key, topic.partitions.len());
    let partition = topic
        .partitions
        .get(index)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    Ok((
        partition.shard as usize,
        partition.group_id,
        partition.replicas.clone(),
    ))
}

/// Sends a group request to the coordinator of `group_id` on this node.
pub async fn call_group(ctx: &Rc<ShardContext>, group_id: &str, call: GroupCall) -> GroupAnswer {
    let me = ctx.config.node_id;
    let (shard, partition) = match internal_partition(ctx, OFFSETS_TOPIC, group_id) {
        Ok((_, _, replicas)) if !replicas.is_empty() && !replicas.contains(&me) => {
            return refuse(call, ResponseError::NotCoordinator)
        }
        Ok((shard, partition, _)) => (shard, partition),
        Err(error) => return refuse(call, error),
    };
    let fallback = call.clone();
    match ctx
        .call(
            shard,
            ShardRequest::Group {
                partition,
                call: Box::new(call),
            },
        )
        .await
    {
        Ok(ShardReply::Group(answer)) => answer,
        _ => refuse(fallback, ResponseError::CoordinatorNotAvailable),
    }
}

/// Sends a transaction request to the coordinator of its transactional id on this node.
pub async fn call_transaction(ctx: &Rc<ShardContext>, call: TxnCall) -> TxnAnswer {
    let refuse = |error: ResponseError| crate::transactions::service::refusal(&call, error);
    let me = ctx.config.node_id;
    let located = internal_partition(ctx, TRANSACTION_TOPIC, call.transactional_id());
    let (shard, partition) = match located {
        Ok((_, _, replicas)) if !replicas.is_empty() && !replicas.contains(&me) => {
            return refuse(ResponseError::NotCoordinator)
        }
        Ok((shard, partition, _)) => (shard, partition),
        Err(error) => return refuse(error),
    };
    let request = ShardRequest::Transaction {
        partition,
        call: Box::new(call.clone()),
    };
    match ctx.call(shard, request).await {
        Ok(ShardReply::Transaction(answer)) => answer,
        _ => refuse(ResponseError::CoordinatorNotAvailable),
    }
}
