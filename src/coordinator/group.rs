//! One consumer group's state machine (Kafka's classic protocol), pure: no I/O, and time comes
//! in as milliseconds on a monotonic clock. Waiting requests (JoinGroup until the rebalance
//! completes, SyncGroup until the leader's assignment is stored) hold a oneshot receiver; the
//! group answers them when its state moves. Dropping the group (its partition's leadership
//! moved) drops the senders, and the waiters answer NOT_COORDINATOR.
//!
//! States: Empty -> PreparingRebalance (members join) -> CompletingRebalance (the leader
//! assigns) -> Stable; a join, leave or expired session in CompletingRebalance or Stable
//! starts another rebalance. Dead once deleted.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::error::ResponseError;

use super::consumer_group::{ConsumerGroup, ConsumerGroupSettings};

use super::records::{CommittedOffset, StoredGroup, StoredMember};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The names Kafka's DescribeGroups and ListGroups use.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// The broker's group settings (Kafka's `group.*` configs).
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// How long the first rebalance of an empty group waits for more members.
    pub initial_rebalance_delay_ms: u64,
    pub max_size: usize,
    /// KIP-848 groups: `group.consumer.session.timeout.ms`.
    pub consumer_session_timeout_ms: u64,
    /// KIP-848 groups: `group.consumer.heartbeat.interval.ms`, told to every member.
    pub consumer_heartbeat_interval_ms: i32,
}

/// A JoinGroup, decoded.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new member first gets MEMBER_ID_REQUIRED with its id, then joins with it.
    pub require_known_member: bool,
}

#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: String,
    pub member_id: String,
    /// The leader's answer lists every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// A static leader that rejoined a stable group: the assignment stands (v9+ clients
    /// skip computing one; older ones' SyncGroup gets the current one back).
    pub skip_assignment: bool,
}

#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// An answer now, or a receiver for one.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// What SyncGroup needs from the caller.
pub enum SyncStep {
    Reply(Reply<SyncResult>),
    /// The leader's assignment: store the group (`Group::stored_record`), then call
    /// `Group::store_finished` with this generation; the receiver answers the leader.
    Store {
        generation_id: i32,
        receiver: oneshot::Receiver<SyncResult>,
    },
}

#[derive(Debug)]
struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    session_deadline_ms: u64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }
}

/// A committed offset and where in the offsets partition it was written (later writes win,
/// whatever order their commits complete in).
#[derive(Debug, Clone)]
pub struct StoredOffset {
    pub committed: CommittedOffset,
    pub log_offset: i64,
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader_id: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id -> member id (static membership).
    instances: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join (or the deadline).
    pending: BTreeMap<String, u64>,
    rebalance_deadline_ms: u64,
    /// The initial rebalance of an empty group completes no earlier than this.
    delay_until_ms: u64,
    pub offsets: BTreeMap<(String, i32), StoredOffset>,
    /// Offsets committed inside a transaction (TxnOffsetCommit), by producer id: they take
    /// effect when its commit marker reaches this group's partition, and go on abort.
    pending_txn: BTreeMap<i64, Vec<(String, i32, CommittedOffset, i64)>>,
    /// Group metadata to store that no request stores (the group became empty).
    needs_store: bool,
    /// When (monotonic ms) the group last became empty: its offsets expire from then.
    empty_since_ms: u64,
    settings: GroupSettings,
    /// Members of the KIP-848 protocol (ConsumerGroupHeartbeat). A group has members of one
    /// protocol at a time; its offsets are shared.
    pub consumer: ConsumerGroup,
    /// The consumer-protocol state last written to the partition (`consumer_to_store`).
    consumer_stored: Option<Bytes>,
    /// The timer removed consumer-protocol members since `take_consumer_expired`.
    consumer_expired: bool,
}

const NONE: i16 = 0;

fn code(error: ResponseError) -> i16 {
    error.code()
}

fn join_error(error: ResponseError, member_id: &str) -> JoinResult {
    JoinResult {
        error: code(error),
        generation_id: -1,
        member_id: member_id.to_string(),
        ..Default::default()
    }
}

fn sync_error(error: ResponseError) -> SyncResult {
    SyncResult {
        error: code(error),
        ..Default::default()
    }
}

impl Group {
    pub fn new(id: String, settings: GroupSettings) -> Self {
        Self {
            id,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            instances: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            delay_until_ms: 0,
            offsets: BTreeMap::new(),
            pending_txn: BTreeMap::new(),
            needs_store: false,
            empty_since_ms: 0,
            settings,
            consumer: ConsumerGroup::default(),
            consumer_stored: None,
            consumer_expired: false,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.consumer.is_empty()
    }

    /// Whether members of the classic protocol hold the group (or are joining it).
    pub fn has_classic_members(&self) -> bool {
        !self.members.is_empty() || !self.pending.is_empty()
    }

    /// The consumer-protocol settings of the group's coordinator.
    pub fn consumer_settings(&self) -> ConsumerGroupSettings {
        ConsumerGroupSettings {
            session_timeout_ms: self.settings.consumer_session_timeout_ms,
            heartbeat_interval_ms: self.settings.consumer_heartbeat_interval_ms,
            max_size: self.settings.max_size,
        }
    }

    /// The consumer-protocol state to write, when it differs from what was written last
    /// (session deadlines are not part of it, so plain heartbeats write nothing).
    pub fn consumer_to_store(&mut self) -> Option<Bytes> {
        if self.consumer.is_empty() && self.consumer_stored.is_none() {
            return None;
        }
        let state = self.consumer.encode();
        if self.consumer_stored.as_ref() == Some(&state) {
            return None;
        }
        self.consumer_stored = Some(state.clone());
        Some(state)
    }

    pub fn take_consumer_expired(&mut self) -> bool {
        std::mem::take(&mut self.consumer_expired)
    }

    /// The consumer-protocol state as last written (the rewrite of the live state needs it).
    pub fn consumer_stored(&self) -> Option<&Bytes> {
        self.consumer_stored.as_ref()
    }

    /// Replays a stored consumer-protocol state (None: deleted).
    pub fn restore_consumer(&mut self, state: Option<Bytes>, now_ms: u64) {
        let timeout = self.settings.consumer_session_timeout_ms;
        self.consumer = state
            .as_ref()
            .and_then(|bytes| ConsumerGroup::decode(bytes, now_ms, timeout))
            .unwrap_or_default();
        self.consumer_stored = state;
    }

    /// A group with neither members nor offsets need not be kept.
    pub fn is_forgettable(&self) -> bool {
        self.members.is_empty()
            && self.consumer.is_empty()
            && self.pending.is_empty()
            && self.offsets.is_empty()
            && self.pending_txn.is_empty()
    }

    pub fn take_needs_store(&mut self) -> bool {
        std::mem::take(&mut self.needs_store)
    }

    // ---- JoinGroup ----

    pub fn join(&mut self, request: JoinRequest, now_ms: u64) -> Reply<JoinResult> {
        let settings = self.settings;
        let member_id = request.member_id.clone();
        if !self.consumer.is_empty() {
            // The group's members use the consumer protocol (KIP-848).
            return Reply::Now(join_error(
                ResponseError::InconsistentGroupProtocol,
                &member_id,
            ));
        }
        if let Err(error) = self.check_join(&request, &settings) {
            return Reply::Now(join_error(error, &member_id));
        }
        if member_id.is_empty() {
            let new_id = format!("{}-{}", request.client_id, uuid::Uuid::new_v4());
            if let Some(instance) = request.group_instance_id.clone() {
                if let Some(old_id) = self.instances.get(&instance).cloned() {
                    return self.replace_static_member(&old_id, new_id, request, now_ms);
                }
            } else if request.require_known_member {
                if self.members.len() + self.pending.len() >= settings.max_size {
                    return Reply::Now(join_error(ResponseError::GroupMaxSizeReached, ""));
                }
                let deadline = now_ms + request.session_timeout_ms.max(0) as u64;
                self.pending.insert(new_id.clone(), deadline);
                return Reply::Now(join_error(ResponseError::MemberIdRequired, &new_id));
            }
            if self.members.len() + self.pending.len() >= settings.max_size {
                return Reply::Now(join_error(ResponseError::GroupMaxSizeReached, ""));
            }
            return self.add_member(new_id, request, now_ms);
        }
        if self.pending.remove(&member_id).is_some() {
            return self.add_member(member_id, request, now_ms);
        }
        if !self.members.contains_key(&member_id) {
            return Reply::Now(join_error(ResponseError::UnknownMemberId, &member_id));
        }
        if let Some(instance) = &request.group_instance_id {
            if self.instances.get(instance) != Some(&member_id) {
                return Reply::Now(join_error(ResponseError::FencedInstanceId, &member_id));
            }
        }
        self.update_member(member_id, request, now_ms)
    }

    fn check_join(
        &self,
        request: &JoinRequest,
        settings: &GroupSettings,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if request.session_timeout_ms < settings.min_session_timeout_ms
            || request.session_timeout_ms > settings.max_session_timeout_ms
        {
            return Err(ResponseError::InvalidSessionTimeout);
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        if self.members.is_empty() {
            return Ok(());
        }
        if self.protocol_type.as_deref() != Some(request.protocol_type.as_str()) {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        let others = self
            .members
            .iter()
            .filter(|(id, _)| **id != request.member_id);
        let supported_by_all = |name: &str| {
            others
                .clone()
                .all(|(_, m)| m.protocols.iter().any(|(n, _)| n == name))
        };
        if !request.protocols.iter().any(|(n, _)| supported_by_all(n)) {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        Ok(())
    }

    fn add_member(
        &mut self,
        member_id: String,
        request: JoinRequest,
        now_ms: u64,
    ) -> Reply<JoinResult> {
        if let Some(instance) = &request.group_instance_id {
            self.instances.insert(instance.clone(), member_id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        let (sender, receiver) = oneshot::channel();
        self.members.insert(
            member_id,
            Member {
                group_instance_id: request.group_instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocols: request.protocols,
                assignment: Bytes::new(),
                join_waiter: Some(sender),
                sync_waiter: None,
                session_deadline_ms: now_ms + request.session_timeout_ms.max(0) as u64,
            },
        );
        if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now_ms);
        } else {
            self.prepare_rebalance(now_ms);
        }
        Reply::Later(receiver)
    }

    fn update_member(
        &mut self,
        member_id: String,
        request: JoinRequest,
        now_ms: u64,
    ) -> Reply<JoinResult> {
        let is_leader = self.leader_id.as_deref() == Some(member_id.as_str());
        let state = self.state;
        let Some(member) = self.members.get_mut(&member_id) else {
            return Reply::Now(join_error(ResponseError::UnknownMemberId, &member_id));
        };
        let unchanged = member.protocols == request.protocols;
        member.session_deadline_ms = now_ms + request.session_timeout_ms.max(0) as u64;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.client_id = request.client_id;
        member.protocols = request.protocols;
        // A follower that rejoins with what it had (it lost the JoinGroup answer) gets the
        // current generation back instead of a new rebalance.
        let current = match state {
            GroupState::CompletingRebalance => unchanged,
            GroupState::Stable => unchanged && !is_leader,
            _ => false,
        };
        if current {
            return Reply::Now(self.join_result_for(&member_id));
        }
        let (sender, receiver) = oneshot::channel();
        if let Some(member) = self.members.get_mut(&member_id) {
            member.join_waiter = Some(sender);
        }
        if state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now_ms);
        } else {
            self.prepare_rebalance(now_ms);
        }
        Reply::Later(receiver)
    }

    /// A static member came back with a new member id: the old instance is fenced, the new
    /// one takes its place (and, in a stable group with the same subscription, its
    /// assignment, without a rebalance, even when it leads).
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        request: JoinRequest,
        now_ms: u64,
    ) -> Reply<JoinResult> {
        let Some(mut member) = self.members.remove(old_id) else {
            return self.add_member(new_id, request, now_ms);
        };
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(join_error(ResponseError::FencedInstanceId, old_id));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(sync_error(ResponseError::FencedInstanceId));
        }
        let unchanged = member.protocols == request.protocols;
        let was_leader = self.leader_id.as_deref() == Some(old_id);
        if was_leader {
            self.leader_id = Some(new_id.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            self.instances.insert(instance.clone(), new_id.clone());
        }
        member.session_deadline_ms = now_ms + request.session_timeout_ms.max(0) as u64;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.protocols = request.protocols;
        self.members.insert(new_id.clone(), member);
        // Kafka's KIP-345 rule: in a stable group, a static member that comes back with the
        // same subscription takes its old place and assignment, without a rebalance, and the
        // group is stored with its new member id.
        if self.state == GroupState::Stable && unchanged {
            self.needs_store = true;
            let mut result = self.join_result_for(&new_id);
            result.skip_assignment = was_leader;
            return Reply::Now(result);
        }
        let (sender, receiver) = oneshot::channel();
        if let Some(member) = self.members.get_mut(&new_id) {
            member.join_waiter = Some(sender);
        }
        if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now_ms);
        } else {
            self.prepare_rebalance(now_ms);
        }
        Reply::Later(receiver)
    }

    fn prepare_rebalance(&mut self, now_ms: u64) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(sync_error(ResponseError::RebalanceInProgress));
                }
            }
        }
        let initial = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms.max(0) as u64)
            .max()
            .unwrap_or(0);
        self.rebalance_deadline_ms = now_ms + rebalance_timeout;
        self.delay_until_ms = now_ms;
        if initial {
            self.delay_until_ms = now_ms
                + self
                    .settings
                    .initial_rebalance_delay_ms
                    .min(rebalance_timeout);
        }
        self.maybe_complete_join(now_ms);
    }

    fn maybe_complete_join(&mut self, now_ms: u64) {
        if self.state != GroupState::PreparingRebalance || now_ms < self.delay_until_ms {
            return;
        }
        let all_joined =
            self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some());
        if all_joined || now_ms >= self.rebalance_deadline_ms {
            self.complete_join(now_ms);
        }
    }

    fn complete_join(&mut self, now_ms: u64) {
        // Members that did not rejoin in time are out.
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.forget_member(&id);
        }
        self.generation_id = self.generation_id.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader_id = None;
            self.needs_store = true;
            self.empty_since_ms = now_ms;
            return;
        }
        self.protocol_name = self.select_protocol();
        let leader_known = self
            .leader_id
            .as_ref()
            .is_some_and(|id| self.members.contains_key(id));
        if !leader_known {
            self.leader_id = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id);
            if let Some(member) = self.members.get_mut(&id) {
                member.session_deadline_ms = now_ms + member.session_timeout_ms.max(0) as u64;
                if let Some(waiter) = member.join_waiter.take() {
                    let _ = waiter.send(result);
                }
            }
        }
    }

    /// The protocol every member supports that most members list first (Kafka's vote).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(&name))
            {
                *votes.entry(name).or_default() += 1;
            }
        }
        candidates
            .iter()
            .max_by_key(|name| {
                (
                    votes.get(*name).copied().unwrap_or(0),
                    std::cmp::Reverse(*name),
                )
            })
            .map(|name| (*name).clone())
    }

    fn join_result_for(&self, member_id: &str) -> JoinResult {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let is_leader = self.leader_id.as_deref() == Some(member_id);
        let members = if is_leader {
            self.members
                .iter()
                .map(|(id, m)| {
                    (
                        id.clone(),
                        m.group_instance_id.clone(),
                        m.metadata_for(&protocol),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: NONE,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
            skip_assignment: false,
        }
    }

    // ---- SyncGroup, Heartbeat, LeaveGroup ----

    fn check_member(
        &self,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if let Some(instance) = group_instance_id {
            if let Some(owner) = self.instances.get(instance) {
                if owner != member_id {
                    return Err(ResponseError::FencedInstanceId);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation_id != self.generation_id {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now_ms: u64,
    ) -> SyncStep {
        let now = |result| SyncStep::Reply(Reply::Now(result));
        if let Err(error) = self.check_member(generation_id, member_id, group_instance_id) {
            return now(sync_error(error));
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != self.protocol_name.as_deref())
        {
            return now(sync_error(ResponseError::InconsistentGroupProtocol));
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => now(sync_error(ResponseError::UnknownMemberId)),
            GroupState::PreparingRebalance => now(sync_error(ResponseError::RebalanceInProgress)),
            GroupState::Stable => now(self.sync_result_for(member_id)),
            GroupState::CompletingRebalance => {
                let is_leader = self.leader_id.as_deref() == Some(member_id);
                let (sender, receiver) = oneshot::channel();
                if let Some(member) = self.members.get_mut(member_id) {
                    member.sync_waiter = Some(sender);
                    member.session_deadline_ms = now_ms + member.session_timeout_ms.max(0) as u64;
                }
                if !is_leader {
                    return SyncStep::Reply(Reply::Later(receiver));
                }
                let mut assignments: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                for (id, member) in &mut self.members {
                    member.assignment = assignments.remove(id).unwrap_or_default();
                }
                SyncStep::Store {
                    generation_id,
                    receiver,
                }
            }
        }
    }

    /// The leader's assignment of `generation_id` was stored (`ok`) or could not be: the
    /// waiting members get their assignments, or the group rebalances again.
    pub fn store_finished(&mut self, generation_id: i32, ok: bool, now_ms: u64) {
        if self.state != GroupState::CompletingRebalance || generation_id != self.generation_id {
            return;
        }
        if !ok {
            for member in self.members.values_mut() {
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(sync_error(ResponseError::NotCoordinator));
                }
            }
            self.prepare_rebalance(now_ms);
            return;
        }
        self.state = GroupState::Stable;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.sync_result_for(&id);
            if let Some(waiter) = self.members.get_mut(&id).and_then(|m| m.sync_waiter.take()) {
                let _ = waiter.send(result);
            }
        }
    }

    fn sync_result_for(&self, member_id: &str) -> SyncResult {
        SyncResult {
            error: NONE,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    pub fn heartbeat(
        &mut self,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        now_ms: u64,
    ) -> i16 {
        if let Err(error) = self.check_member(generation_id, member_id, group_instance_id) {
            return code(error);
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.session_deadline_ms = now_ms + member.session_timeout_ms.max(0) as u64;
        }
        match self.state {
            GroupState::PreparingRebalance => code(ResponseError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => code(ResponseError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => NONE,
        }
    }

    /// One member leaves: by member id, or by instance id (static members).
    pub fn leave(&mut self, member_id: &str, group_instance_id: Option<&str>, now_ms: u64) -> i16 {
        if self.state == GroupState::Dead {
            return code(ResponseError::CoordinatorNotAvailable);
        }
        let id = match group_instance_id {
            Some(instance) => match self.instances.get(instance) {
                None => return code(ResponseError::UnknownMemberId),
                Some(owner) if !member_id.is_empty() && owner != member_id => {
                    return code(ResponseError::FencedInstanceId)
                }
                Some(owner) => owner.clone(),
            },
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            self.maybe_complete_join(now_ms);
            return NONE;
        }
        if !self.members.contains_key(&id) {
            return code(ResponseError::UnknownMemberId);
        }
        self.remove_member(&id, now_ms);
        NONE
    }

    fn forget_member(&mut self, member_id: &str) {
        if let Some(mut member) = self.members.remove(member_id) {
            if let Some(instance) = &member.group_instance_id {
                if self.instances.get(instance).map(String::as_str) == Some(member_id) {
                    self.instances.remove(instance);
                }
            }
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(join_error(ResponseError::UnknownMemberId, member_id));
            }
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(sync_error(ResponseError::UnknownMemberId));
            }
        }
        if self.leader_id.as_deref() == Some(member_id) {
            self.leader_id = None;
        }
    }

    fn remove_member(&mut self, member_id: &str, now_ms: u64) {
        self.forget_member(member_id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now_ms),
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Expires sessions and pending member ids, and completes a rebalance whose time is up.
    pub fn tick(&mut self, now_ms: u64) {
        for member in self.consumer.expire(now_ms) {
            tracing::info!(group = %self.id, %member, "consumer-protocol member expired");
            self.consumer_expired = true;
        }
        self.pending.retain(|_, deadline| *deadline > now_ms);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none() && m.session_deadline_ms <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(&id, now_ms);
        }
        self.maybe_complete_join(now_ms);
    }

    // ---- offsets ----

    /// Whether a member (or, with generation -1 and no member, an admin or a standalone
    /// consumer of an empty group) may commit offsets now.
    pub fn check_commit(
        &mut self,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        now_ms: u64,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if generation_id < 0 && member_id.is_empty() && self.members.is_empty() {
            return Ok(());
        }
        if !self.consumer.is_empty() {
            // KIP-848 members commit with their member epoch.
            return self.consumer.check_commit(member_id, generation_id);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        self.check_member(generation_id, member_id, group_instance_id)?;
        if let Some(member) = self.members.get_mut(member_id) {
            member.session_deadline_ms = now_ms + member.session_timeout_ms.max(0) as u64;
        }
        Ok(())
    }

    /// Offsets due to expire (Kafka's `offsets.retention.minutes`, KIP-211): all of them
    /// once a group with a protocol has been empty for `retention_ms`; for a group that never
    /// had members (standalone commits), each one `retention_ms` after its commit. A group
    /// with members keeps all of its offsets.
    pub fn expired_offsets(
        &self,
        now_ms: u64,
        now_wall_ms: i64,
        retention_ms: i64,
    ) -> Vec<(String, i32)> {
        if !self.is_empty() || retention_ms < 0 || self.has_pending_transaction() {
            return Vec::new();
        }
        let had_members = self.protocol_type.is_some() || self.generation_id > 0;
        if had_members {
            let empty_for = now_ms.saturating_sub(self.empty_since_ms);
            if empty_for < retention_ms as u64 {
                return Vec::new();
            }
            return self.offsets.keys().cloned().collect();
        }
        self.offsets
            .iter()
            .filter(|(_, o)| o.committed.commit_timestamp_ms < now_wall_ms - retention_ms)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Applies a stored offset (or its deletion) written at `log_offset`.
    pub fn apply_offset(
        &mut self,
        topic: String,
        partition: i32,
        committed: Option<CommittedOffset>,
        log_offset: i64,
    ) {
        let key = (topic, partition);
        if self
            .offsets
            .get(&key)
            .is_some_and(|o| o.log_offset > log_offset)
        {
            return;
        }
        match committed {
            Some(committed) => {
                self.offsets.insert(
                    key,
                    StoredOffset {
                        committed,
                        log_offset,
                    },
                );
            }
            None => {
                self.offsets.remove(&key);
            }
        }
    }

    /// Holds an offset committed in `producer_id`'s transaction until its marker.
    pub fn add_pending(
        &mut self,
        producer_id: i64,
        topic: String,
        partition: i32,
        committed: CommittedOffset,
        log_offset: i64,
    ) {
        self.pending_txn
            .entry(producer_id)
            .or_default()
            .push((topic, partition, committed, log_offset));
    }

    /// The transaction of `producer_id` ended: its offsets take effect, or go.
    pub fn settle(&mut self, producer_id: i64, commit: bool) {
        let Some(pending) = self.pending_txn.remove(&producer_id) else {
            return;
        };
        if commit {
            for (topic, partition, committed, log_offset) in pending {
                self.apply_offset(topic, partition, Some(committed), log_offset);
            }
        }
    }

    /// Whether an offset of (topic, partition) waits for its transaction's marker.
    pub fn has_pending_offset(&self, topic: &str, partition: i32) -> bool {
        self.pending_txn
            .values()
            .flatten()
            .any(|(t, p, _, _)| t == topic && *p == partition)
    }

    pub fn has_pending_transaction(&self) -> bool {
        !self.pending_txn.is_empty()
    }

    /// Topics the members subscribe to (consumer protocol only): OffsetDelete refuses them.
    pub fn subscribed_topics(&self) -> std::collections::BTreeSet<String> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        let mut topics = std::collections::BTreeSet::new();
        if self.protocol_type.as_deref() != Some("consumer") {
            return topics;
        }
        let protocol = self.protocol_name.clone().unwrap_or_default();
        for member in self.members.values() {
            let mut metadata = member.metadata_for(&protocol);
            if metadata.len() < 2 {
                continue;
            }
            let version = i16::from_be_bytes([metadata[0], metadata[1]]);
            let _ = bytes::Buf::get_i16(&mut metadata);
            if let Ok(subscription) =
                ConsumerProtocolSubscription::decode(&mut metadata, version.clamp(0, 3))
            {
                topics.extend(subscription.topics.into_iter().map(|t| t.to_string()));
            }
        }
        topics
    }

    // ---- storage, description ----

    pub fn stored_record(&self, state_timestamp_ms: i64) -> StoredGroup {
        StoredGroup {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone(),
            state_timestamp_ms,
            members: self
                .members
                .iter()
                .map(|(id, m)| StoredMember {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(self.protocol_name.as_deref().unwrap_or("")),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Restores a group from its stored record (a coordinator loading its partition): Stable
    /// with its members, whose sessions start now, or Empty.
    pub fn restore(&mut self, stored: StoredGroup, now_ms: u64) {
        self.generation_id = stored.generation_id;
        self.protocol_type = (!stored.protocol_type.is_empty()).then_some(stored.protocol_type);
        self.protocol_name = stored.protocol_name.clone();
        self.leader_id = stored.leader_id;
        self.members.clear();
        self.instances.clear();
        self.pending.clear();
        let protocol = stored.protocol_name.unwrap_or_default();
        for member in stored.members {
            if let Some(instance) = &member.group_instance_id {
                self.instances
                    .insert(instance.clone(), member.member_id.clone());
            }
            self.members.insert(
                member.member_id,
                Member {
                    group_instance_id: member.group_instance_id,
                    client_id: member.client_id,
                    client_host: member.client_host,
                    session_timeout_ms: member.session_timeout_ms,
                    rebalance_timeout_ms: member.rebalance_timeout_ms,
                    protocols: vec![(protocol.clone(), member.subscription)],
                    assignment: member.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    session_deadline_ms: now_ms + member.session_timeout_ms.max(0) as u64,
                },
            );
        }
        self.state = if self.members.is_empty() {
            // Its offsets' retention counts from its reload (Kafka keeps the time it became
            // empty; this is later, so offsets live a little longer, never shorter).
            self.empty_since_ms = now_ms;
            GroupState::Empty
        } else {
            GroupState::Stable
        };
    }

    /// The group was deleted: every waiter is told, and it takes no more requests.
    pub fn mark_dead(&mut self) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            self.forget_member(&id);
        }
        self.offsets.clear();
        self.pending.clear();
        self.state = GroupState::Dead;
    }

    /// (member id, instance id, client id, client host, metadata, assignment) of each member.
    pub fn describe_members(&self) -> Vec<(String, Option<String>, String, String, Bytes, Bytes)> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .iter()
            .map(|(id, m)| {
                (
                    id.clone(),
                    m.group_instance_id.clone(),
                    m.client_id.clone(),
                    m.client_host.clone(),
                    m.metadata_for(&protocol),
                    m.assignment.clone(),
                )
            })
            .collect()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: GroupSettings = GroupSettings {
        min_session_timeout_ms: 1000,
        max_session_timeout_ms: 60_000,
        initial_rebalance_delay_ms: 100,
        max_size: 10,
        consumer_session_timeout_ms: 45_000,
        consumer_heartbeat_interval_ms: 5_000,
    };

    fn join_request(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            group_instance_id: instance.map(str::to_string),
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 5_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            require_known_member: true,
        }
    }

    fn now(reply: Reply<JoinResult>) -> JoinResult {
        match reply {
            Reply::Now(result) => result,
            Reply::Later(_) => panic!("expected an answer now"),
        }
    }

    fn later(reply: Reply<JoinResult>) -> oneshot::Receiver<JoinResult> {
        match reply {
            Reply::Later(receiver) => receiver,
            Reply::Now(result) => panic!("expected to wait, got {result:?}"),
        }
    }

    fn answered<T>(receiver: &mut oneshot::Receiver<T>) -> T {
        receiver
            .try_recv()
            .expect("not cancelled")
            .expect("answered")
    }

    /// A new member's id (MEMBER_ID_REQUIRED first), and its pending join.
    fn new_member(group: &mut Group, at: u64) -> (String, oneshot::Receiver<JoinResult>) {
        let first = now(group.join(join_request("", None, &["range"]), at));
        assert_eq!(first.error, ResponseError::MemberIdRequired.code());
        let id = first.member_id;
        let receiver = later(group.join(join_request(&id, None, &["range"]), at));
        (id, receiver)
    }

    fn stable_pair() -> (Group, String, String) {
        let mut group = Group::new("g".into(), SETTINGS);
        let (a, mut join_a) = new_member(&mut group, 0);
        let (b, mut join_b) = new_member(&mut group, 0);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        group.tick(50);
        assert!(join_a.try_recv().expect("open").is_none(), "initial delay");
        group.tick(100);
        let (ra, rb) = (answered(&mut join_a), answered(&mut join_b));
        assert_eq!((ra.generation_id, rb.generation_id), (1, 1));
        let leader = ra.leader_id.clone();
        assert_eq!(rb.leader_id, leader);
        let (leader_result, follower_result) = if leader == a { (&ra, &rb) } else { (&rb, &ra) };
        assert_eq!(
            leader_result.members.len(),
            2,
            "the leader sees every member"
        );
        assert!(follower_result.members.is_empty());
        assert_eq!(ra.protocol_name.as_deref(), Some("range"));
        let assignments = vec![
            (a.clone(), Bytes::from_static(b"for-a")),
            (b.clone(), Bytes::from_static(b"for-b")),
        ];
        let follower = if leader == a { &b } else { &a };
        let mut follower_sync = match group.sync(1, follower, None, None, None, vec![], 110) {
            SyncStep::Reply(Reply::Later(receiver)) => receiver,
            _ => panic!("a follower waits for the leader"),
        };
        let SyncStep::Store {
            generation_id,
            receiver: mut leader_sync,
        } = group.sync(1, &leader, None, None, None, assignments, 120)
        else {
            panic!("the leader's assignment is stored first");
        };
        assert!(follower_sync.try_recv().expect("open").is_none());
        group.store_finished(generation_id, true, 130);
        assert_eq!(group.state(), GroupState::Stable);
        let expected = |id: &str| if id == a { "for-a" } else { "for-b" };
        assert_eq!(answered(&mut leader_sync).assignment, expected(&leader));
        assert_eq!(answered(&mut follower_sync).assignment, expected(follower));
        (group, a, b)
    }

    #[test]
    fn two_members_join_sync_and_get_their_assignments() {
        stable_pair();
    }

    #[test]
    fn a_join_in_a_stable_group_starts_a_rebalance_heartbeats_report() {
        let (mut group, a, b) = stable_pair();
        let (c, mut join_c) = new_member(&mut group, 200);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(
            group.heartbeat(1, &a, None, 210),
            ResponseError::RebalanceInProgress.code()
        );
        let mut join_a = later(group.join(join_request(&a, None, &["range"]), 220));
        assert!(
            join_c.try_recv().expect("open").is_none(),
            "b has not rejoined"
        );
        let mut join_b = later(group.join(join_request(&b, None, &["range"]), 230));
        for receiver in [&mut join_a, &mut join_b, &mut join_c] {
            assert_eq!(answered(receiver).generation_id, 2);
        }
        assert_eq!(group.state(), GroupState::CompletingRebalance);
        assert_eq!(
            group.heartbeat(1, &c, None, 240),
            ResponseError::IllegalGeneration.code()
        );
        assert_eq!(group.heartbeat(2, &c, None, 240), 0);
    }

    #[test]
    fn a_member_that_does_not_rejoin_in_time_is_dropped() {
        let (mut group, a, b) = stable_pair();
        assert_eq!(group.leave(&b, None, 200), 0);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        group.tick(300);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        // a never rejoins: at the rebalance deadline (5 s) it is out, the group is empty.
        group.tick(200 + 5_000);
        assert_eq!(group.state(), GroupState::Empty);
        assert!(group.take_needs_store());
        assert_eq!(
            group.heartbeat(2, &a, None, 6_000),
            ResponseError::UnknownMemberId.code()
        );
    }

    #[test]
    fn sessions_expire_without_heartbeats() {
        let (mut group, a, b) = stable_pair();
        group.tick(5_000);
        assert_eq!(group.heartbeat(1, &a, None, 5_000), 0);
        // b's session (10 s from its sync at 110) runs out; a heartbeat in time keeps a.
        group.tick(10_200);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(
            group.heartbeat(1, &b, None, 10_200),
            ResponseError::UnknownMemberId.code()
        );
    }

    #[test]
    fn commits_are_checked_against_the_generation() {
        let (mut group, a, _) = stable_pair();
        assert!(group.check_commit(1, &a, None, 200).is_ok());
        assert_eq!(
            group.check_commit(0, &a, None, 200),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            group.check_commit(1, "stranger", None, 200),
            Err(ResponseError::UnknownMemberId)
        );
        // Standalone commits (generation -1, no member) only for a group without members.
        assert!(group.check_commit(-1, "", None, 200).is_err());
        let mut empty = Group::new("e".into(), SETTINGS);
        assert!(empty.check_commit(-1, "", None, 0).is_ok());
    }

    #[test]
    fn later_writes_win_whatever_order_they_complete_in() {
        let mut group = Group::new("g".into(), SETTINGS);
        let committed = |offset| CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        };
        group.apply_offset("t".into(), 0, Some(committed(20)), 8);
        group.apply_offset("t".into(), 0, Some(committed(10)), 7);
        assert_eq!(group.offsets[&("t".to_string(), 0)].committed.offset, 20);
        group.apply_offset("t".into(), 0, None, 9);
        assert!(group.offsets.is_empty());
    }

    #[test]
    fn a_static_member_rejoining_takes_its_place_and_fences_the_old_id() {
        let mut group = Group::new("g".into(), SETTINGS);
        let mut join = later(group.join(join_request("", Some("i1"), &["range"]), 0));
        group.tick(100);
        let first = answered(&mut join);
        let SyncStep::Store { generation_id, .. } =
            group.sync(1, &first.member_id, Some("i1"), None, None, vec![], 100)
        else {
            panic!("the only member leads");
        };
        group.store_finished(generation_id, true, 100);
        // The same instance restarts with no member id: a new id at once, in the same
        // generation (no rebalance; as the leader it skips assigning), and the old id is fenced.
        let second = now(group.join(join_request("", Some("i1"), &["range"]), 200));
        assert_ne!(second.member_id, first.member_id);
        assert_eq!(second.generation_id, first.generation_id);
        assert!(second.skip_assignment);
        assert_eq!(group.state(), GroupState::Stable);
        assert!(group.take_needs_store(), "the new member id is stored");
        assert_eq!(
            group.heartbeat(second.generation_id, &first.member_id, Some("i1"), 300),
            ResponseError::FencedInstanceId.code()
        );
    }

    #[test]
    fn incompatible_protocols_and_bad_timeouts_are_refused() {
        let (mut group, _, _) = stable_pair();
        let refused = now(group.join(join_request("", None, &["roundrobin"]), 200));
        assert_eq!(
            refused.error,
            ResponseError::InconsistentGroupProtocol.code()
        );
        let mut request = join_request("", None, &["range"]);
        request.session_timeout_ms = 10;
        assert_eq!(
            now(group.join(request, 200)).error,
            ResponseError::InvalidSessionTimeout.code()
        );
    }

    #[test]
    fn a_restored_group_is_stable_with_its_members() {
        let (group, a, b) = stable_pair();
        let stored = group.stored_record(0);
        let mut restored = Group::new("g".into(), SETTINGS);
        restored.restore(stored, 1_000);
        assert_eq!(restored.state(), GroupState::Stable);
        assert_eq!(restored.generation_id(), 1);
        assert_eq!(restored.heartbeat(1, &a, None, 1_100), 0);
        assert_eq!(restored.heartbeat(1, &b, None, 1_100), 0);
    }
}
