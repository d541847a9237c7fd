//! The group coordinator of one shard: the groups of the `__consumer_offsets` partitions this
//! shard leads, loaded from those partitions, with every change written to them first.

use chronik_shards::runtime::shard::wall_clock_ms;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    GroupId, JoinGroupResponse, LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetDeleteRequest, OffsetDeleteResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::protocol::StrBytes;

use chronik_shards::error::ShardError;

use super::group::{Group, GroupSettings, GroupState, JoinRequest, JoinResult, Reply, SyncStep};
use super::partition_log::{self, write_error, Claim, Slots};
use super::records::{encode_batch, encode_batch_of, CommittedOffset, OffsetsRecord};
use super::{FetchedOffset, GroupAnswer, GroupCall, ListedGroup};
use crate::runtime::context::ShardContext;

/// Kafka's `offset.metadata.max.bytes`.
const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// How often sessions and rebalance deadlines are checked.
pub const TICK: Duration = Duration::from_millis(50);

/// The groups of one offsets partition.
type Groups = BTreeMap<String, Group>;

pub struct GroupCoordinator {
    slots: Slots<Groups>,
    settings: GroupSettings,
    started: Instant,
    /// Per partition: writes proposed and not yet applied (see `write_batch`).
    writes_in_flight: BTreeMap<u64, usize>,
}

impl GroupCoordinator {
    pub fn new(settings: GroupSettings) -> Self {
        Self {
            slots: Slots::default(),
            settings,
            started: Instant::now(),
            writes_in_flight: BTreeMap::new(),
        }
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Forgets a partition's groups: they are read back from the log before the next
    /// request (after a write whose outcome is unknown).
    pub(super) fn unload(&mut self, partition: u64) {
        self.slots.partitions.remove(&partition);
    }

    pub(super) fn group_mut(&mut self, partition: u64, group_id: &str) -> Option<&mut Group> {
        self.slots.get_mut(partition)?.get_mut(group_id)
    }

    pub(super) fn group_or_new(&mut self, partition: u64, group_id: &str) -> Option<&mut Group> {
        let settings = self.settings;
        let groups = self.slots.get_mut(partition)?;
        Some(
            groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id.to_string(), settings)),
        )
    }
}

fn text(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// Runs a group request on the shard that owns `partition` (a Raft group id).
pub async fn execute(ctx: &Rc<ShardContext>, partition: u64, call: GroupCall) -> GroupAnswer {
    if let GroupCall::List = call {
        return GroupAnswer::List(list(ctx).await);
    }
    if let Err(error) = ensure_loaded(ctx, partition).await {
        return refuse(call, error);
    }
    match call {
        GroupCall::Join {
            version,
            request,
            client_id,
            client_host,
        } => {
            GroupAnswer::Join(join(ctx, partition, version, request, client_id, client_host).await)
        }
        GroupCall::Sync(request) => GroupAnswer::Sync(sync(ctx, partition, request).await),
        GroupCall::Heartbeat(request) => {
            let mut coordinator = ctx.groups.borrow_mut();
            let now = coordinator.now_ms();
            let code = match coordinator.group_mut(partition, &request.group_id) {
                Some(group) => group.heartbeat(
                    request.generation_id,
                    &request.member_id,
                    request.group_instance_id.as_deref(),
                    now,
                ),
                None => ResponseError::UnknownMemberId.code(),
            };
            GroupAnswer::Heartbeat(code)
        }
        GroupCall::Leave { version, request } => {
            GroupAnswer::Leave(leave(ctx, partition, version, request))
        }
        GroupCall::Commit(request) => GroupAnswer::Commit(commit(ctx, partition, request).await),
        GroupCall::TxnCommit(request) => {
            GroupAnswer::TxnCommit(txn_commit(ctx, partition, request).await)
        }
        GroupCall::FetchOffsets {
            group,
            topics,
            require_stable,
        } => GroupAnswer::FetchOffsets(Ok(fetch_offsets(
            ctx,
            partition,
            &group,
            topics,
            require_stable,
        ))),
        GroupCall::Describe(group) => GroupAnswer::Describe(describe(ctx, partition, group)),
        GroupCall::Delete(group) => GroupAnswer::Delete(delete(ctx, partition, &group).await),
        GroupCall::DeleteOffsets(request) => {
            GroupAnswer::DeleteOffsets(delete_offsets(ctx, partition, request).await)
        }
        call @ (GroupCall::ConsumerHeartbeat { .. } | GroupCall::ConsumerDescribe(_)) => {
            super::consumer_service::execute(ctx, partition, call).await
        }
        GroupCall::List => unreachable!("answered above"),
    }
}

/// The answer to `call` when the coordinator cannot take it (`error`).
pub fn refuse(call: GroupCall, error: ResponseError) -> GroupAnswer {
    let code = error.code();
    match call {
        GroupCall::Join { request, .. } => GroupAnswer::Join(
            JoinGroupResponse::default()
                .with_error_code(code)
                .with_generation_id(-1)
                .with_member_id(request.member_id),
        ),
        GroupCall::Sync(_) => GroupAnswer::Sync(SyncGroupResponse::default().with_error_code(code)),
        GroupCall::Heartbeat(_) => GroupAnswer::Heartbeat(code),
        GroupCall::Leave { .. } => {
            GroupAnswer::Leave(LeaveGroupResponse::default().with_error_code(code))
        }
        GroupCall::Commit(request) => GroupAnswer::Commit(commit_response(&request, |_| code)),
        GroupCall::TxnCommit(request) => {
            GroupAnswer::TxnCommit(txn_commit_response(&request, |_| code))
        }
        GroupCall::FetchOffsets { .. } => GroupAnswer::FetchOffsets(Err(code)),
        GroupCall::Describe(group) => GroupAnswer::Describe(
            DescribedGroup::default()
                .with_group_id(GroupId(text(group)))
                .with_error_code(code),
        ),
        GroupCall::Delete(_) => GroupAnswer::Delete(code),
        GroupCall::DeleteOffsets(_) => {
            GroupAnswer::DeleteOffsets(OffsetDeleteResponse::default().with_error_code(code))
        }
        GroupCall::List => GroupAnswer::List(Vec::new()),
        GroupCall::ConsumerHeartbeat { .. } | GroupCall::ConsumerDescribe(_) => {
            super::consumer_service::refuse(call, error)
        }
    }
}

// ---- leadership and loading ----

/// Makes sure this shard coordinates `partition` for its current leader term, loading the
/// groups from the partition the first time (per term); see `partition_log::leader_term`.
pub async fn ensure_loaded(ctx: &Rc<ShardContext>, partition: u64) -> Result<(), ResponseError> {
    let term = partition_log::leader_term(ctx, partition)?;
    match ctx.groups.borrow_mut().slots.claim(partition, term) {
        Claim::Ready => return Ok(()),
        Claim::Loading => return Err(ResponseError::CoordinatorLoadInProgress),
        Claim::Load => {}
    }
    let (settings, now) = {
        let coordinator = ctx.groups.borrow();
        (coordinator.settings, coordinator.now_ms())
    };
    let mut groups = Groups::new();
    let loaded = partition_log::replay(ctx, partition, |header, record| {
        let Some(key) = &record.key else { return };
        if header.is_control() {
            if let Some(commit) = crate::transactions::markers::marker_is_commit(key) {
                for group in groups.values_mut() {
                    group.settle(header.producer_id, commit);
                }
            }
            return;
        }
        let Some(decoded) = OffsetsRecord::decode(key, record.value.as_ref()) else {
            return;
        };
        match decoded {
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value: Some(committed),
            } if header.is_transactional() => {
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(group, settings))
                    .add_pending(
                        header.producer_id,
                        topic,
                        partition,
                        committed,
                        record.offset,
                    );
            }
            decoded => replay(&mut groups, decoded, record.offset, settings, now),
        }
    })
    .await;
    groups.retain(|_, g| !g.is_forgettable());
    let mut coordinator = ctx.groups.borrow_mut();
    match loaded {
        Ok(()) => {
            let count = groups.len();
            if !coordinator.slots.finish_load(partition, term, groups) {
                return Err(ResponseError::CoordinatorLoadInProgress);
            }
            tracing::info!(partition, term, groups = count, "group coordinator loaded");
            Ok(())
        }
        Err(error) => {
            tracing::warn!(partition, %error, "group coordinator could not load its partition");
            coordinator.slots.partitions.remove(&partition);
            Err(ResponseError::CoordinatorLoadInProgress)
        }
    }
}

fn replay(
    groups: &mut BTreeMap<String, Group>,
    record: OffsetsRecord,
    log_offset: i64,
    settings: GroupSettings,
    now_ms: u64,
) {
    let id = record.group().to_string();
    let group = groups
        .entry(id.clone())
        .or_insert_with(|| Group::new(id, settings));
    match record {
        OffsetsRecord::Offset {
            topic,
            partition,
            value,
            ..
        } => group.apply_offset(topic, partition, value, log_offset),
        OffsetsRecord::Group {
            value: Some(stored),
            ..
        } => group.restore(stored, now_ms),
        OffsetsRecord::Group {
            value: None,
            group: id,
        } => {
            groups.insert(id.clone(), Group::new(id, settings));
        }
        OffsetsRecord::ConsumerGroup { value, .. } => group.restore_consumer(value, now_ms),
    }
}

/// Appends records to the partition as one batch (so they commit or fail together, at
/// consecutive offsets) and waits until they are committed: their base offset.
pub(super) async fn write(
    ctx: &Rc<ShardContext>,
    partition: u64,
    records: &[OffsetsRecord],
) -> Result<i64, ShardError> {
    write_batch(ctx, partition, encode_batch(records, wall_clock_ms())).await
}

/// Appends one batch, counted as in flight until the caller (in the same poll, with no await
/// between) has applied it: cleaning waits for none to be in flight, so its snapshot of the
/// groups holds every committed write.
async fn write_batch(
    ctx: &Rc<ShardContext>,
    partition: u64,
    batch: bytes::Bytes,
) -> Result<i64, ShardError> {
    *ctx.groups
        .borrow_mut()
        .writes_in_flight
        .entry(partition)
        .or_default() += 1;
    let written = partition_log::append(ctx, partition, batch).await;
    if let Some(count) = ctx.groups.borrow_mut().writes_in_flight.get_mut(&partition) {
        *count = count.saturating_sub(1);
    }
    written
}

/// How often (in timer ticks) the coordinator looks at its partitions' size.
const CLEAN_EVERY_TICKS: u64 = 40;

/// Rewrites each loaded partition's live state and drops the older log when the log has
/// grown well past it (`partition_log::start_cleaning`). A partition waits while a group
/// rebalances or holds transactional offsets (those must meet their marker where they are).
fn clean_partitions(ctx: &Rc<ShardContext>) {
    let partitions: Vec<u64> = ctx
        .groups
        .borrow()
        .slots
        .partitions
        .keys()
        .copied()
        .collect();
    for partition in partitions {
        let quiet = |ctx: &ShardContext| {
            let coordinator = ctx.groups.borrow();
            coordinator
                .writes_in_flight
                .get(&partition)
                .copied()
                .unwrap_or(0)
                == 0
        };
        if !quiet(ctx) {
            continue;
        }
        expire_offsets(ctx, partition);
        if !quiet(ctx) {
            continue;
        }
        let live = {
            let mut coordinator = ctx.groups.borrow_mut();
            coordinator
                .slots
                .get_mut(partition)
                .and_then(|groups| live_records(groups))
        };
        if let Some(live) = live {
            partition_log::start_cleaning(ctx, partition, live, ctx.config.coordinator_log_slack);
        }
    }
}

/// Deletes (with tombstones) the offsets empty groups kept past `offsets_retention_ms`. The
/// tombstones are proposed at once, so a commit that comes later lands after them and wins.
fn expire_offsets(ctx: &Rc<ShardContext>, partition: u64) {
    let expired = expired_records(ctx, partition);
    if expired.is_empty() {
        return;
    }
    let batch = encode_batch(&expired, wall_clock_ms());
    let Ok(header) = chronik_shards::partition::batch::BatchHeader::parse(&batch) else {
        return;
    };
    let proposed = ctx.shard.borrow_mut().propose_internal_batch(
        partition,
        &batch,
        &header,
        chronik_shards::runtime::shard::AckWhen::Committed,
    );
    let Ok((base_offset, Some(receiver))) = proposed else {
        return;
    };
    *ctx.groups
        .borrow_mut()
        .writes_in_flight
        .entry(partition)
        .or_default() += 1;
    let ctx = ctx.clone();
    glommio::spawn_local(async move {
        let committed = matches!(receiver.await, Ok(Ok(_)));
        if let Some(count) = ctx.groups.borrow_mut().writes_in_flight.get_mut(&partition) {
            *count = count.saturating_sub(1);
        }
        if !committed {
            return;
        }
        let count = expired.len();
        let mut coordinator = ctx.groups.borrow_mut();
        for (index, record) in expired.into_iter().enumerate() {
            if let OffsetsRecord::Offset {
                group,
                topic,
                partition: topic_partition,
                ..
            } = record
            {
                if let Some(group) = coordinator.group_mut(partition, &group) {
                    let log_offset = base_offset + index as i64;
                    group.apply_offset(topic, topic_partition, None, log_offset);
                }
            }
        }
        tracing::info!(partition, count, "expired the offsets of empty groups");
    })
    .detach();
}

/// The tombstones of the offsets due to expire in the partition's groups.
fn expired_records(ctx: &ShardContext, partition: u64) -> Vec<OffsetsRecord> {
    let retention_ms = ctx.config.offsets_retention_ms;
    let mut coordinator = ctx.groups.borrow_mut();
    let now = coordinator.now_ms();
    let Some(groups) = coordinator.slots.get_mut(partition) else {
        return Vec::new();
    };
    groups
        .values()
        .flat_map(|group| {
            group
                .expired_offsets(now, wall_clock_ms(), retention_ms)
                .into_iter()
                .map(|(topic, partition)| OffsetsRecord::Offset {
                    group: group.id.clone(),
                    topic,
                    partition,
                    value: None,
                })
        })
        .collect()
}

/// Every record the partition's groups need to be rebuilt: each group's last metadata and
/// its committed offsets. None while a group rebalances or has transactional offsets.
fn live_records(groups: &Groups) -> Option<Vec<(bytes::Bytes, Option<bytes::Bytes>)>> {
    let mut live = Vec::new();
    for group in groups.values() {
        let settled = matches!(group.state(), GroupState::Empty | GroupState::Stable);
        if !settled || group.has_pending_transaction() {
            return None;
        }
        if let Some(state) = group.consumer_stored() {
            let record = OffsetsRecord::ConsumerGroup {
                group: group.id.clone(),
                value: Some(state.clone()),
            };
            live.push(record.encode());
        }
        if group.generation_id() > 0 || group.has_classic_members() {
            let record = OffsetsRecord::Group {
                group: group.id.clone(),
                value: Some(group.stored_record(wall_clock_ms())),
            };
            live.push(record.encode());
        }
        for ((topic, partition), stored) in &group.offsets {
            let record = OffsetsRecord::Offset {
                group: group.id.clone(),
                topic: topic.clone(),
                partition: *partition,
                value: Some(stored.committed.clone()),
            };
            live.push(record.encode());
        }
    }
    Some(live)
}

/// The timer: drops partitions this shard no longer leads, expires sessions, completes
/// rebalances whose time is up and stores groups that became empty.
pub async fn run_timer(ctx: Rc<ShardContext>) {
    let mut ticks = 0u64;
    loop {
        glommio::timer::sleep(TICK).await;
        ticks += 1;
        if ticks.is_multiple_of(CLEAN_EVERY_TICKS) {
            clean_partitions(&ctx);
        }
        let mut to_store = Vec::new();
        let mut to_store_consumer = Vec::new();
        {
            let mut coordinator = ctx.groups.borrow_mut();
            let now = coordinator.now_ms();
            coordinator.slots.retain_led(&ctx);
            for (&partition, slot) in &mut coordinator.slots.partitions {
                for group in slot.state.values_mut() {
                    group.tick(now);
                    if group.take_consumer_expired() {
                        if let Some(state) = group.consumer_to_store() {
                            to_store_consumer.push((partition, group.id.clone(), state));
                        }
                    }
                    if group.take_needs_store() {
                        to_store.push((
                            partition,
                            group.id.clone(),
                            group.stored_record(wall_clock_ms()),
                        ));
                    }
                }
                slot.state
                    .retain(|_, g| !g.is_forgettable() || g.state() != GroupState::Empty);
            }
        }
        // Members the timer removed (sessions, revocations past their timeout).
        for (partition, group, state) in to_store_consumer {
            let ctx = ctx.clone();
            glommio::spawn_local(async move {
                let record = OffsetsRecord::ConsumerGroup {
                    group,
                    value: Some(state),
                };
                if let Err(error) = write(&ctx, partition, &[record]).await {
                    tracing::debug!(partition, %error, "consumer group not stored");
                    ctx.groups.borrow_mut().slots.partitions.remove(&partition);
                }
            })
            .detach();
        }
        for (partition, group, stored) in to_store {
            let ctx = ctx.clone();
            glommio::spawn_local(async move {
                let record = OffsetsRecord::Group {
                    group,
                    value: Some(stored),
                };
                if let Err(error) = write(&ctx, partition, &[record]).await {
                    tracing::debug!(partition, %error, "empty group not stored");
                }
            })
            .detach();
        }
    }
}

// ---- membership ----

async fn join(
    ctx: &Rc<ShardContext>,
    partition: u64,
    version: i16,
    request: kafka_protocol::messages::JoinGroupRequest,
    client_id: String,
    client_host: String,
) -> JoinGroupResponse {
    let join_request = JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id,
        client_host,
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member: version >= 4,
    };
    let result = join_and_wait(ctx, partition, &request, join_request).await;
    join_response(version, result)
}

/// Runs the join on the group and waits for its outcome (the rebalance's end, usually).
async fn join_and_wait(
    ctx: &Rc<ShardContext>,
    partition: u64,
    request: &kafka_protocol::messages::JoinGroupRequest,
    join_request: JoinRequest,
) -> JoinResult {
    let (reply, to_store) = {
        let mut coordinator = ctx.groups.borrow_mut();
        let now = coordinator.now_ms();
        match coordinator.group_or_new(partition, &request.group_id) {
            Some(group) => {
                let reply = group.join(join_request, now);
                // A static member that took its old place: stored before it is answered, so a
                // new coordinator knows its new member id (KIP-345).
                let to_store = matches!(reply, Reply::Now(_)) && group.take_needs_store();
                let stored = to_store.then(|| group.stored_record(wall_clock_ms()));
                (reply, stored)
            }
            None => {
                let refused = JoinResult {
                    error: ResponseError::NotCoordinator.code(),
                    generation_id: -1,
                    ..Default::default()
                };
                (Reply::Now(refused), None)
            }
        }
    };
    if let Some(stored) = to_store {
        let record = OffsetsRecord::Group {
            group: request.group_id.to_string(),
            value: Some(stored),
        };
        if let Err(error) = write(ctx, partition, &[record]).await {
            return JoinResult {
                error: write_error(&error).code(),
                generation_id: -1,
                member_id: request.member_id.to_string(),
                ..Default::default()
            };
        }
    }
    match reply {
        Reply::Now(result) => result,
        Reply::Later(receiver) => receiver.await.unwrap_or_else(|_| JoinResult {
            error: ResponseError::NotCoordinator.code(),
            generation_id: -1,
            member_id: request.member_id.to_string(),
            ..Default::default()
        }),
    }
}

fn join_response(version: i16, result: JoinResult) -> JoinGroupResponse {
    let members = result
        .members
        .into_iter()
        .map(|(member_id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(text(member_id))
                .with_group_instance_id(instance.map(text))
                .with_metadata(metadata)
        })
        .collect();
    let response = if version >= 9 {
        JoinGroupResponse::default().with_skip_assignment(result.skip_assignment)
    } else {
        JoinGroupResponse::default()
    };
    response
        .with_error_code(result.error)
        .with_generation_id(result.generation_id)
        .with_protocol_type(result.protocol_type.map(text))
        // Before v7 the protocol name is not nullable.
        .with_protocol_name(Some(text(result.protocol_name.unwrap_or_default())))
        .with_leader(text(result.leader_id))
        .with_member_id(text(result.member_id))
        .with_members(members)
}

async fn sync(
    ctx: &Rc<ShardContext>,
    partition: u64,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let failed = |error: ResponseError| SyncGroupResponse::default().with_error_code(error.code());
    let step = {
        let mut coordinator = ctx.groups.borrow_mut();
        let now = coordinator.now_ms();
        let Some(group) = coordinator.group_mut(partition, &request.group_id) else {
            return failed(ResponseError::UnknownMemberId);
        };
        group.sync(
            request.generation_id,
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.protocol_type.as_deref(),
            request.protocol_name.as_deref(),
            request
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect(),
            now,
        )
    };
    let receiver = match step {
        SyncStep::Reply(Reply::Now(result)) => {
            return sync_response(
                result.error,
                result.protocol_type,
                result.protocol_name,
                result.assignment,
            )
        }
        SyncStep::Reply(Reply::Later(receiver)) => receiver,
        SyncStep::Store {
            generation_id,
            receiver,
        } => {
            let stored = ctx
                .groups
                .borrow_mut()
                .group_mut(partition, &request.group_id)
                .map(|g| g.stored_record(wall_clock_ms()));
            let ok = match stored {
                Some(stored) => {
                    let record = OffsetsRecord::Group {
                        group: request.group_id.to_string(),
                        value: Some(stored),
                    };
                    write(ctx, partition, &[record]).await.is_ok()
                }
                None => false,
            };
            let mut coordinator = ctx.groups.borrow_mut();
            let now = coordinator.now_ms();
            if let Some(group) = coordinator.group_mut(partition, &request.group_id) {
                group.store_finished(generation_id, ok, now);
            }
            receiver
        }
    };
    match receiver.await {
        Ok(result) => sync_response(
            result.error,
            result.protocol_type,
            result.protocol_name,
            result.assignment,
        ),
        Err(_) => failed(ResponseError::NotCoordinator),
    }
}

fn sync_response(
    error: i16,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    assignment: Bytes,
) -> SyncGroupResponse {
    SyncGroupResponse::default()
        .with_error_code(error)
        .with_protocol_type(protocol_type.map(text))
        .with_protocol_name(protocol_name.map(text))
        .with_assignment(assignment)
}

fn leave(
    ctx: &Rc<ShardContext>,
    partition: u64,
    version: i16,
    request: kafka_protocol::messages::LeaveGroupRequest,
) -> LeaveGroupResponse {
    let mut coordinator = ctx.groups.borrow_mut();
    let now = coordinator.now_ms();
    let group = coordinator.group_mut(partition, &request.group_id);
    if version < 3 {
        let code = match group {
            Some(group) => group.leave(&request.member_id, None, now),
            None => ResponseError::UnknownMemberId.code(),
        };
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let Some(group) = group else {
        return LeaveGroupResponse::default()
            .with_error_code(ResponseError::UnknownMemberId.code());
    };
    let members = request
        .members
        .into_iter()
        .map(|member| {
            let code = group.leave(&member.member_id, member.group_instance_id.as_deref(), now);
            MemberResponse::default()
                .with_member_id(member.member_id)
                .with_group_instance_id(member.group_instance_id)
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

// ---- offsets ----

/// Whether (generation, member id, instance id) may commit the group's offsets now; with
/// `anonymous_ok`, a commit naming no generation and no member passes whatever the group.
fn check_committer(
    ctx: &ShardContext,
    partition: u64,
    group_id: &str,
    (generation_id, member_id, instance_id): (i32, &str, Option<&str>),
    anonymous_ok: bool,
) -> Result<(), ResponseError> {
    let mut coordinator = ctx.groups.borrow_mut();
    let now = coordinator.now_ms();
    let group = coordinator
        .group_or_new(partition, group_id)
        .ok_or(ResponseError::NotCoordinator)?;
    if anonymous_ok && generation_id < 0 && member_id.is_empty() {
        return Ok(());
    }
    group.check_commit(generation_id, member_id, instance_id, now)
}

/// OffsetCommit: checked against the group's generation, written, answered once committed.
async fn commit(
    ctx: &Rc<ShardContext>,
    partition: u64,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group_id = request.group_id.to_string();
    let member = (
        request.generation_id_or_member_epoch,
        request.member_id.as_str(),
        request.group_instance_id.as_deref(),
    );
    let checked = check_committer(ctx, partition, &group_id, member, false);
    if let Err(error) = checked {
        return commit_response(&request, |_| error.code());
    }
    let records = offset_records(&group_id, &request);
    let written = write(ctx, partition, &records).await;
    if let Ok(base_offset) = written {
        apply_written(ctx, partition, &group_id, records, base_offset);
    }
    let written_code = written
        .as_ref()
        .map_or_else(|e| write_error(e).code(), |_| 0);
    commit_response(&request, metadata_or(written_code))
}

/// The records of a commit (partitions whose metadata is too large are left out).
fn offset_records(group_id: &str, request: &OffsetCommitRequest) -> Vec<OffsetsRecord> {
    let now = wall_clock_ms();
    let mut records = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            let metadata = p.committed_metadata.as_deref().unwrap_or("");
            if metadata.len() > OFFSET_METADATA_BYTES_MAX {
                continue;
            }
            records.push(OffsetsRecord::Offset {
                group: group_id.to_string(),
                topic: topic.name.to_string(),
                partition: p.partition_index,
                value: Some(CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: metadata.to_string(),
                    commit_timestamp_ms: now,
                }),
            });
        }
    }
    records
}

/// Offset records written from `base_offset` on take effect in the group.
fn apply_written(
    ctx: &Rc<ShardContext>,
    partition: u64,
    group_id: &str,
    records: Vec<OffsetsRecord>,
    base_offset: i64,
) {
    let mut coordinator = ctx.groups.borrow_mut();
    let Some(group) = coordinator.group_mut(partition, group_id) else {
        return;
    };
    for (index, record) in records.into_iter().enumerate() {
        if let OffsetsRecord::Offset {
            topic,
            partition,
            value,
            ..
        } = record
        {
            group.apply_offset(topic, partition, value, base_offset + index as i64);
        }
    }
}

/// An OffsetCommit answer with each partition's code from `code(metadata length)`.
pub fn commit_response(
    request: &OffsetCommitRequest,
    code: impl Fn(usize) -> i16,
) -> OffsetCommitResponse {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let metadata_len = p.committed_metadata.as_ref().map_or(0, |m| m.len());
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code(metadata_len))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// A partition's commit code: OFFSET_METADATA_TOO_LARGE, else how the write went.
fn metadata_or(written_code: i16) -> impl Fn(usize) -> i16 {
    move |metadata_len| {
        if metadata_len > OFFSET_METADATA_BYTES_MAX {
            ResponseError::OffsetMetadataTooLarge.code()
        } else {
            written_code
        }
    }
}

/// The transaction of `producer_id` ended with a marker on this offsets partition: its
/// offset commits take effect (or go) in every group of the partition.
pub fn settle_transaction(ctx: &ShardContext, partition: u64, producer_id: i64, commit: bool) {
    if let Some(groups) = ctx.groups.borrow_mut().slots.get_mut(partition) {
        for group in groups.values_mut() {
            group.settle(producer_id, commit);
        }
    }
}

/// TxnOffsetCommit: offsets written inside the producer's transaction; they count once its
/// commit marker reaches this partition.
async fn txn_commit(
    ctx: &Rc<ShardContext>,
    partition: u64,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group_id = request.group_id.to_string();
    let member = (
        request.generation_id,
        request.member_id.as_str(),
        request.group_instance_id.as_deref(),
    );
    // Old clients send no generation with TxnOffsetCommit: nothing to check it against.
    let checked = check_committer(ctx, partition, &group_id, member, true);
    if let Err(error) = checked {
        return txn_commit_response(&request, |_| error.code());
    }
    let now = wall_clock_ms();
    let records = txn_offset_records(&group_id, &request, now);
    let transaction = Some((request.producer_id.0, request.producer_epoch));
    let batch = encode_batch_of(&records, now, transaction);
    let written = write_batch(ctx, partition, batch).await;
    if let Ok(base_offset) = written {
        let mut coordinator = ctx.groups.borrow_mut();
        if let Some(group) = coordinator.group_mut(partition, &group_id) {
            for (index, record) in records.into_iter().enumerate() {
                if let OffsetsRecord::Offset {
                    topic,
                    partition,
                    value: Some(committed),
                    ..
                } = record
                {
                    let log_offset = base_offset + index as i64;
                    group.add_pending(
                        request.producer_id.0,
                        topic,
                        partition,
                        committed,
                        log_offset,
                    );
                }
            }
        }
    }
    let written_code = written
        .as_ref()
        .map_or_else(|e| write_error(e).code(), |_| 0);
    txn_commit_response(&request, metadata_or(written_code))
}

/// The records of a TxnOffsetCommit (partitions whose metadata is too large left out).
fn txn_offset_records(
    group_id: &str,
    request: &TxnOffsetCommitRequest,
    now: i64,
) -> Vec<OffsetsRecord> {
    request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().filter_map(move |p| {
                let metadata = p.committed_metadata.as_deref().unwrap_or("");
                (metadata.len() <= OFFSET_METADATA_BYTES_MAX).then(|| OffsetsRecord::Offset {
                    group: group_id.to_string(),
                    topic: topic.name.to_string(),
                    partition: p.partition_index,
                    value: Some(CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: metadata.to_string(),
                        commit_timestamp_ms: now,
                    }),
                })
            })
        })
        .collect()
}

/// A TxnOffsetCommit answer with each partition's code from `code(metadata length)`.
pub fn txn_commit_response(
    request: &TxnOffsetCommitRequest,
    code: impl Fn(usize) -> i16,
) -> TxnOffsetCommitResponse {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let metadata_len = p.committed_metadata.as_ref().map_or(0, |m| m.len());
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code(metadata_len))
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

fn fetch_offsets(
    ctx: &Rc<ShardContext>,
    partition: u64,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Vec<FetchedOffset> {
    let mut coordinator = ctx.groups.borrow_mut();
    let group = coordinator.group_mut(partition, group_id);
    let lookup = |topic: &str, index: i32| {
        let stored = group
            .as_ref()
            .and_then(|g| g.offsets.get(&(topic.to_string(), index)));
        let unstable = require_stable
            && group
                .as_ref()
                .is_some_and(|g| g.has_pending_offset(topic, index));
        let error = if unstable {
            ResponseError::UnstableOffsetCommit.code()
        } else {
            0
        };
        match stored {
            Some(stored) => FetchedOffset {
                topic: topic.to_string(),
                partition: index,
                offset: stored.committed.offset,
                leader_epoch: stored.committed.leader_epoch,
                metadata: stored.committed.metadata.clone(),
                error,
            },
            None => FetchedOffset {
                topic: topic.to_string(),
                partition: index,
                offset: -1,
                leader_epoch: -1,
                metadata: String::new(),
                error,
            },
        }
    };
    match topics {
        Some(topics) => topics
            .iter()
            .flat_map(|(topic, partitions)| partitions.iter().map(|&p| lookup(topic, p)))
            .collect(),
        None => {
            let keys: Vec<(String, i32)> = group
                .as_ref()
                .map(|g| g.offsets.keys().cloned().collect())
                .unwrap_or_default();
            keys.iter().map(|(topic, p)| lookup(topic, *p)).collect()
        }
    }
}

async fn delete_offsets(
    ctx: &Rc<ShardContext>,
    partition: u64,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group_id = request.group_id.to_string();
    let subscribed = {
        let mut coordinator = ctx.groups.borrow_mut();
        let Some(group) = coordinator.group_mut(partition, &group_id) else {
            return OffsetDeleteResponse::default()
                .with_error_code(ResponseError::GroupIdNotFound.code());
        };
        if group.state() == GroupState::Dead {
            return OffsetDeleteResponse::default()
                .with_error_code(ResponseError::GroupIdNotFound.code());
        }
        if !group.is_empty() && group.protocol_type() != Some("consumer") {
            return OffsetDeleteResponse::default()
                .with_error_code(ResponseError::NonEmptyGroup.code());
        }
        group.subscribed_topics()
    };
    let mut records = Vec::new();
    for topic in &request.topics {
        if subscribed.contains(topic.name.as_str()) {
            continue;
        }
        for p in &topic.partitions {
            records.push(OffsetsRecord::Offset {
                group: group_id.clone(),
                topic: topic.name.to_string(),
                partition: p.partition_index,
                value: None,
            });
        }
    }
    let written = write(ctx, partition, &records).await;
    if let Ok(base_offset) = written {
        apply_written(ctx, partition, &group_id, records, base_offset);
    }
    let written_code = written
        .as_ref()
        .map_or_else(|e| write_error(e).code(), |_| 0);
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let code = if subscribed.contains(topic.name.as_str()) {
                ResponseError::GroupSubscribedToTopic.code()
            } else {
                written_code
            };
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_partitions(partitions)
                .with_name(topic.name)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

// ---- administration ----

fn describe(ctx: &Rc<ShardContext>, partition: u64, group_id: String) -> DescribedGroup {
    let mut coordinator = ctx.groups.borrow_mut();
    let described = DescribedGroup::default().with_group_id(GroupId(text(group_id.clone())));
    let Some(group) = coordinator.group_mut(partition, &group_id) else {
        return described.with_group_state(text("Dead"));
    };
    let members = group
        .describe_members()
        .into_iter()
        .map(|(id, instance, client_id, host, metadata, assignment)| {
            DescribedGroupMember::default()
                .with_member_id(text(id))
                .with_group_instance_id(instance.map(text))
                .with_client_id(text(client_id))
                .with_client_host(text(host))
                .with_member_metadata(metadata)
                .with_member_assignment(assignment)
        })
        .collect();
    described
        .with_group_state(text(group.state().name()))
        .with_protocol_type(text(group.protocol_type().unwrap_or("")))
        .with_protocol_data(text(group.protocol_name().unwrap_or("")))
        .with_members(members)
}

async fn delete(ctx: &Rc<ShardContext>, partition: u64, group_id: &str) -> i16 {
    let records = {
        let mut coordinator = ctx.groups.borrow_mut();
        let Some(group) = coordinator.group_mut(partition, group_id) else {
            return ResponseError::GroupIdNotFound.code();
        };
        match group.state() {
            GroupState::Dead => return ResponseError::GroupIdNotFound.code(),
            GroupState::Empty if group.consumer.is_empty() => {}
            _ => return ResponseError::NonEmptyGroup.code(),
        }
        let mut records: Vec<OffsetsRecord> = group
            .offsets
            .keys()
            .map(|(topic, p)| OffsetsRecord::Offset {
                group: group_id.to_string(),
                topic: topic.clone(),
                partition: *p,
                value: None,
            })
            .collect();
        records.push(OffsetsRecord::Group {
            group: group_id.to_string(),
            value: None,
        });
        if group.consumer_stored().is_some() {
            records.push(OffsetsRecord::ConsumerGroup {
                group: group_id.to_string(),
                value: None,
            });
        }
        // Dead before the write: no commit can slip in between and be lost with it.
        group.mark_dead();
        records
    };
    let written = write(ctx, partition, &records).await;
    let mut coordinator = ctx.groups.borrow_mut();
    if let Err(error) = written {
        // The log still holds the group: read the partition back before answering again.
        coordinator.slots.partitions.remove(&partition);
        return write_error(&error).code();
    }
    if let Some(groups) = coordinator.slots.get_mut(partition) {
        groups.remove(group_id);
    }
    0
}

/// Every group of the offsets partitions this shard leads (loading them if needed).
async fn list(ctx: &Rc<ShardContext>) -> Vec<ListedGroup> {
    let mut listed = Vec::new();
    for partition in partition_log::led_partitions(ctx, super::OFFSETS_TOPIC) {
        if ensure_loaded(ctx, partition).await.is_err() {
            continue;
        }
        let mut coordinator = ctx.groups.borrow_mut();
        if let Some(groups) = coordinator.slots.get_mut(partition) {
            listed.extend(
                groups
                    .values()
                    .filter(|g| g.state() != GroupState::Dead)
                    .map(|g| match g.consumer.is_empty() {
                        true => ListedGroup {
                            group_id: g.id.clone(),
                            protocol_type: g.protocol_type().unwrap_or("").to_string(),
                            state: g.state().name(),
                            group_type: "classic",
                        },
                        false => ListedGroup {
                            group_id: g.id.clone(),
                            protocol_type: "consumer".into(),
                            state: g.consumer.state(),
                            group_type: "consumer",
                        },
                    }),
            );
        }
    }
    listed
}
