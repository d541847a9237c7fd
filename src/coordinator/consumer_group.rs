//! The consumer group protocol of KIP-848 (ConsumerGroupHeartbeat), pure: the coordinator
//! assigns partitions itself, and each member moves to a new assignment on its own, without a
//! group-wide barrier. A member first gives up the partitions it must lose; only then does it
//! take the ones it gains, and a partition another member still holds is handed over once
//! that member lets it go. No partition is ever owned by two members at once.
//!
//! The group epoch counts changes of membership, subscriptions and topic partitions; the
//! target assignment is computed for it by the assignor (`uniform`, sticky, or `range`). A
//! member's epoch reaches the target's once it has revoked what it must.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;

use super::records::{put_nullable, put_string, Reader};

/// Topic name -> partitions.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// The assignors offered (`group.consumer.assignors`), the default first.
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    /// The epoch before the last bump: a member whose heartbeat response was lost may still
    /// use it.
    pub previous_epoch: i32,
    pub subscribed: BTreeSet<String>,
    pub assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// What the member has been told it owns.
    pub assigned: Assignment,
    /// What it was told to give up and has not yet confirmed giving up.
    pub revoking: Assignment,
    pub session_deadline_ms: u64,
    /// Set while the member has partitions to revoke: it is removed if it has not by then.
    pub revocation_deadline_ms: Option<u64>,
}

/// What one heartbeat says, topics by name (the handler maps topic ids).
#[derive(Debug, Clone, Default)]
pub struct HeartbeatInput {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed: Option<Vec<String>>,
    pub assignor: Option<String>,
    /// The partitions the member owns now (sent with every full heartbeat).
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatOutput {
    pub member_id: String,
    pub member_epoch: i32,
    /// The member's assignment, when it changed or the member needs to hear it again.
    pub assignment: Option<Assignment>,
}

#[derive(Debug, Clone, Copy)]
pub struct ConsumerGroupSettings {
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: i32,
    pub max_size: usize,
}

#[derive(Debug, Default)]
pub struct ConsumerGroup {
    pub group_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target_epoch: i32,
    pub target: BTreeMap<String, Assignment>,
    /// Partition counts of the subscribed topics when the target was computed.
    topic_partitions: BTreeMap<String, i32>,
}

fn count(assignment: &Assignment) -> usize {
    assignment.values().map(BTreeSet::len).sum()
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(topic, partitions)| {
            let rest: BTreeSet<i32> = match b.get(topic) {
                Some(other) => partitions.difference(other).copied().collect(),
                None => partitions.clone(),
            };
            (!rest.is_empty()).then(|| (topic.clone(), rest))
        })
        .collect()
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(topic, partitions)| {
            let both: BTreeSet<i32> = partitions.intersection(b.get(topic)?).copied().collect();
            (!both.is_empty()).then(|| (topic.clone(), both))
        })
        .collect()
}

fn union(a: &Assignment, b: &Assignment) -> Assignment {
    let mut all = a.clone();
    for (topic, partitions) in b {
        all.entry(topic.clone()).or_default().extend(partitions);
    }
    all
}

fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    minus(a, b).is_empty()
}

impl ConsumerGroup {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kafka's names: empty, assigning (a new target is being computed), reconciling (some
    /// member has not reached the target), stable.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.target_epoch < self.group_epoch {
            "Assigning"
        } else if self.members.iter().any(|(id, m)| {
            m.epoch != self.target_epoch
                || !m.revoking.is_empty()
                || self
                    .target
                    .get(id)
                    .map_or(!m.assigned.is_empty(), |t| *t != m.assigned)
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The assignor the group uses: the one members ask for most (ties: the default order).
    pub fn assignor(&self) -> &'static str {
        ASSIGNORS
            .iter()
            .copied()
            .max_by_key(|name| {
                let votes = self
                    .members
                    .values()
                    .filter(|m| m.assignor.as_deref() == Some(name))
                    .count();
                (
                    votes,
                    std::cmp::Reverse(ASSIGNORS.iter().position(|n| n == name)),
                )
            })
            .unwrap_or(ASSIGNORS[0])
    }

    /// One ConsumerGroupHeartbeat. `partitions_of` gives a topic's partition count (None: no
    /// such topic). `new_member_id` is used when a member joins without an id (v0).
    pub fn heartbeat(
        &mut self,
        input: HeartbeatInput,
        partitions_of: &dyn Fn(&str) -> Option<i32>,
        new_member_id: impl FnOnce() -> String,
        settings: ConsumerGroupSettings,
        now_ms: u64,
    ) -> Result<HeartbeatOutput, ResponseError> {
        if input.member_epoch == -1 || input.member_epoch == -2 {
            if !self.members.contains_key(&input.member_id) {
                return Err(ResponseError::UnknownMemberId);
            }
            self.remove_member(&input.member_id);
            return Ok(HeartbeatOutput {
                member_id: input.member_id,
                member_epoch: input.member_epoch,
                assignment: None,
            });
        }
        let member_id = if input.member_epoch == 0 {
            self.join(&input, new_member_id, settings)?
        } else {
            self.check_epoch(&input)?;
            input.member_id.clone()
        };
        let full = input.owned.is_some() || input.member_epoch == 0;
        let member = self.members.get_mut(&member_id).expect("joined or checked");
        member.session_deadline_ms = now_ms + settings.session_timeout_ms;
        member.rebalance_timeout_ms = input.rebalance_timeout_ms;
        member.rack_id = input.rack_id.clone().or(member.rack_id.take());
        if input.assignor.is_some() {
            member.assignor = input.assignor.clone();
        }
        let mut bump = false;
        if let Some(topics) = &input.subscribed {
            let topics: BTreeSet<String> = topics.iter().cloned().collect();
            if topics != member.subscribed {
                member.subscribed = topics;
                bump = true;
            }
        }
        if let Some(owned) = &input.owned {
            // What the member no longer owns is released for others.
            member.revoking = intersect(&member.revoking, owned);
        }
        if bump || input.member_epoch == 0 {
            self.group_epoch += 1;
        }
        self.refresh_target(partitions_of);
        let changed = self.reconcile(&member_id, now_ms);
        let member = &self.members[&member_id];
        Ok(HeartbeatOutput {
            member_id,
            member_epoch: member.epoch,
            assignment: (changed || full).then(|| member.assigned.clone()),
        })
    }

    fn join(
        &mut self,
        input: &HeartbeatInput,
        new_member_id: impl FnOnce() -> String,
        settings: ConsumerGroupSettings,
    ) -> Result<String, ResponseError> {
        if input.subscribed.as_ref().is_none_or(Vec::is_empty) && input.member_epoch == 0 {
            return Err(ResponseError::InvalidRequest);
        }
        if input
            .assignor
            .as_deref()
            .is_some_and(|a| !ASSIGNORS.contains(&a))
        {
            return Err(ResponseError::UnsupportedAssignor);
        }
        // A static member that comes back replaces its previous incarnation.
        if let Some(instance) = &input.instance_id {
            let previous: Vec<String> = self
                .members
                .iter()
                .filter(|(id, m)| {
                    m.instance_id.as_ref() == Some(instance) && **id != input.member_id
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in previous {
                self.remove_member(&id);
            }
        }
        let member_id = if input.member_id.is_empty() {
            new_member_id()
        } else {
            input.member_id.clone()
        };
        if !self.members.contains_key(&member_id) && self.members.len() >= settings.max_size {
            return Err(ResponseError::GroupMaxSizeReached);
        }
        // A member rejoining with epoch 0 starts over: it owns nothing.
        self.members.insert(
            member_id.clone(),
            ConsumerMember {
                instance_id: input.instance_id.clone(),
                rack_id: input.rack_id.clone(),
                client_id: input.client_id.clone(),
                client_host: input.client_host.clone(),
                epoch: 0,
                previous_epoch: 0,
                subscribed: BTreeSet::new(),
                assignor: None,
                rebalance_timeout_ms: input.rebalance_timeout_ms,
                assigned: Assignment::new(),
                revoking: Assignment::new(),
                session_deadline_ms: 0,
                revocation_deadline_ms: None,
            },
        );
        Ok(member_id)
    }

    /// A heartbeat must carry the member's epoch, or the one before when it only confirms
    /// what it owns (its last response was lost).
    fn check_epoch(&self, input: &HeartbeatInput) -> Result<(), ResponseError> {
        let member = self
            .members
            .get(&input.member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if input.member_epoch == member.epoch {
            return Ok(());
        }
        let owned_known = input
            .owned
            .as_ref()
            .is_some_and(|owned| is_subset(owned, &member.assigned));
        if input.member_epoch == member.previous_epoch && owned_known {
            return Ok(());
        }
        Err(ResponseError::FencedMemberEpoch)
    }

    /// Whether `member_id` may commit offsets with `epoch` (OffsetCommit's generation).
    pub fn check_commit(&self, member_id: &str, epoch: i32) -> Result<(), ResponseError> {
        let member = self
            .members
            .get(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if epoch != member.epoch {
            return Err(ResponseError::StaleMemberEpoch);
        }
        Ok(())
    }

    pub fn remove_member(&mut self, member_id: &str) {
        if self.members.remove(member_id).is_some() {
            self.target.remove(member_id);
            self.group_epoch += 1;
        }
    }

    /// Members whose session ended, or who kept partitions past their rebalance timeout.
    pub fn expire(&mut self, now_ms: u64) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.session_deadline_ms <= now_ms
                    || m.revocation_deadline_ms.is_some_and(|d| d <= now_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.remove_member(id);
        }
        gone
    }

    /// Computes a new target when the group epoch moved or a subscribed topic's partition
    /// count changed.
    fn refresh_target(&mut self, partitions_of: &dyn Fn(&str) -> Option<i32>) {
        let topics: BTreeSet<&String> = self.members.values().flat_map(|m| &m.subscribed).collect();
        let counts: BTreeMap<String, i32> = topics
            .into_iter()
            .filter_map(|t| Some((t.clone(), partitions_of(t)?)))
            .collect();
        if counts != self.topic_partitions {
            self.topic_partitions = counts;
            self.group_epoch += 1;
        }
        if self.target_epoch == self.group_epoch {
            return;
        }
        let subscriptions: BTreeMap<String, BTreeSet<String>> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.subscribed.clone()))
            .collect();
        self.target = match self.assignor() {
            "range" => assign_range(&subscriptions, &self.topic_partitions),
            _ => assign_uniform(&subscriptions, &self.topic_partitions, &self.target),
        };
        self.target_epoch = self.group_epoch;
    }

    /// Partitions some member other than `member_id` owns or is still giving up.
    fn held_by_others(&self, member_id: &str) -> Assignment {
        self.members
            .iter()
            .filter(|(id, _)| id.as_str() != member_id)
            .fold(Assignment::new(), |held, (_, m)| {
                union(&held, &union(&m.assigned, &m.revoking))
            })
    }

    /// Moves one member toward its target: first it revokes what it must lose (keeping its
    /// epoch), then it takes the new epoch with every target partition nobody else holds,
    /// and later the rest as others release them. Returns whether its assignment changed.
    fn reconcile(&mut self, member_id: &str, now_ms: u64) -> bool {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held = self.held_by_others(member_id);
        let target_epoch = self.target_epoch;
        let member = self.members.get_mut(member_id).expect("member exists");
        let before = member.assigned.clone();
        let to_revoke = minus(&member.assigned, &target);
        if !to_revoke.is_empty() {
            member.assigned = intersect(&member.assigned, &target);
            member.revoking = union(&member.revoking, &to_revoke);
        }
        if member.revoking.is_empty() {
            member.revocation_deadline_ms = None;
            if member.epoch != target_epoch {
                member.previous_epoch = member.epoch;
                member.epoch = target_epoch;
            }
            let free = minus(&target, &held);
            member.assigned = union(&member.assigned, &free);
        } else if member.revocation_deadline_ms.is_none() {
            member.revocation_deadline_ms =
                Some(now_ms + member.rebalance_timeout_ms.max(0) as u64);
        }
        member.assigned != before
    }

    pub fn describe(&self) -> Vec<(&String, &ConsumerMember, Assignment)> {
        self.members
            .iter()
            .map(|(id, m)| (id, m, self.target.get(id).cloned().unwrap_or_default()))
            .collect()
    }
}

// ---- storage ----

const STATE_VERSION: i16 = 0;

fn put_assignment(buf: &mut BytesMut, assignment: &Assignment) {
    buf.put_i32(assignment.len() as i32);
    for (topic, partitions) in assignment {
        put_string(buf, topic);
        buf.put_i32(partitions.len() as i32);
        partitions.iter().for_each(|&p| buf.put_i32(p));
    }
}

fn read_assignment(reader: &mut Reader) -> Option<Assignment> {
    let topics = reader.i32()?;
    let mut assignment = Assignment::new();
    for _ in 0..topics.max(0) {
        let topic = reader.string()?;
        let count = reader.i32()?;
        let mut partitions = BTreeSet::new();
        for _ in 0..count.max(0) {
            partitions.insert(reader.i32()?);
        }
        assignment.insert(topic, partitions);
    }
    Some(assignment)
}

impl ConsumerGroup {
    /// What survives a failover: epochs, members (without their session deadlines) and
    /// assignments, current and target.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(STATE_VERSION);
        buf.put_i32(self.group_epoch);
        buf.put_i32(self.target_epoch);
        buf.put_i32(self.topic_partitions.len() as i32);
        for (topic, count) in &self.topic_partitions {
            put_string(&mut buf, topic);
            buf.put_i32(*count);
        }
        buf.put_i32(self.members.len() as i32);
        for (id, m) in &self.members {
            put_string(&mut buf, id);
            put_nullable(&mut buf, m.instance_id.as_deref());
            put_nullable(&mut buf, m.rack_id.as_deref());
            put_string(&mut buf, &m.client_id);
            put_string(&mut buf, &m.client_host);
            buf.put_i32(m.epoch);
            buf.put_i32(m.previous_epoch);
            buf.put_i32(m.rebalance_timeout_ms);
            put_nullable(&mut buf, m.assignor.as_deref());
            buf.put_i32(m.subscribed.len() as i32);
            m.subscribed.iter().for_each(|t| put_string(&mut buf, t));
            put_assignment(&mut buf, &m.assigned);
            put_assignment(&mut buf, &m.revoking);
            put_assignment(&mut buf, self.target.get(id).unwrap_or(&Assignment::new()));
        }
        buf.freeze()
    }

    /// `encode`'s bytes back; every member's session starts over at `now_ms`. None for bytes
    /// that do not decode (the group then starts empty: its members join again).
    pub fn decode(bytes: &Bytes, now_ms: u64, session_timeout_ms: u64) -> Option<Self> {
        let mut reader = Reader(bytes.clone());
        if reader.i16()? != STATE_VERSION {
            return None;
        }
        let mut group = ConsumerGroup {
            group_epoch: reader.i32()?,
            target_epoch: reader.i32()?,
            ..ConsumerGroup::default()
        };
        for _ in 0..reader.i32()?.max(0) {
            let topic = reader.string()?;
            group.topic_partitions.insert(topic, reader.i32()?);
        }
        for _ in 0..reader.i32()?.max(0) {
            let id = reader.string()?;
            let mut member = ConsumerMember {
                instance_id: reader.nullable()?,
                rack_id: reader.nullable()?,
                client_id: reader.string()?,
                client_host: reader.string()?,
                epoch: reader.i32()?,
                previous_epoch: reader.i32()?,
                rebalance_timeout_ms: reader.i32()?,
                assignor: reader.nullable()?,
                subscribed: BTreeSet::new(),
                assigned: Assignment::new(),
                revoking: Assignment::new(),
                session_deadline_ms: now_ms + session_timeout_ms,
                revocation_deadline_ms: None,
            };
            for _ in 0..reader.i32()?.max(0) {
                member.subscribed.insert(reader.string()?);
            }
            member.assigned = read_assignment(&mut reader)?;
            member.revoking = read_assignment(&mut reader)?;
            if !member.revoking.is_empty() {
                member.revocation_deadline_ms =
                    Some(now_ms + member.rebalance_timeout_ms.max(0) as u64);
            }
            group
                .target
                .insert(id.clone(), read_assignment(&mut reader)?);
            group.members.insert(id, member);
        }
        Some(group)
    }
}

/// Every member with nothing assigned yet.
fn empty_target(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<String, Assignment> {
    subscriptions
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect()
}

/// The members subscribed to `topic`, in id order.
fn subscribers<'a>(
    subscriptions: &'a BTreeMap<String, BTreeSet<String>>,
    topic: &str,
) -> Vec<&'a String> {
    subscriptions
        .iter()
        .filter(|(_, topics)| topics.contains(topic))
        .map(|(m, _)| m)
        .collect()
}

/// `uniform`: every topic's partitions spread evenly over the members subscribed to it,
/// each keeping what it had as far as that stays even (sticky).
fn assign_uniform(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut target = empty_target(subscriptions);
    for (topic, &partitions) in topics {
        let members = subscribers(subscriptions, topic);
        if members.is_empty() {
            continue;
        }
        let base = partitions as usize / members.len();
        let mut extra = partitions as usize % members.len();
        let mut owner: BTreeMap<i32, &String> = BTreeMap::new();
        let mut counts: BTreeMap<&String, usize> = members.iter().map(|m| (*m, 0)).collect();
        // Keep previous owners up to their share.
        for member in &members {
            let kept = previous
                .get(*member)
                .and_then(|a| a.get(topic))
                .into_iter()
                .flatten()
                .filter(|&&p| p < partitions);
            for &partition in kept {
                let count = counts[member];
                let allowed = count < base || (count == base && extra > 0);
                if !allowed {
                    break;
                }
                if count == base {
                    extra -= 1;
                }
                owner.insert(partition, member);
                *counts.get_mut(member).expect("counted") += 1;
            }
        }
        // Hand the rest to whoever holds least.
        let unowned: Vec<i32> = (0..partitions).filter(|p| !owner.contains_key(p)).collect();
        for partition in unowned {
            let member = *counts
                .iter()
                .min_by_key(|(m, c)| (**c, **m))
                .map(|(m, _)| m)
                .expect("members is not empty");
            owner.insert(partition, member);
            *counts.get_mut(member).expect("counted") += 1;
        }
        for (partition, member) in owner {
            let assignment = target.get_mut(member).expect("a member");
            assignment
                .entry(topic.clone())
                .or_default()
                .insert(partition);
        }
    }
    target
}

/// `range`: for every topic, its members in id order get contiguous ranges of partitions.
fn assign_range(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut target = empty_target(subscriptions);
    for (topic, &partitions) in topics {
        let members = subscribers(subscriptions, topic);
        if members.is_empty() {
            continue;
        }
        let base = partitions as usize / members.len();
        let extra = partitions as usize % members.len();
        let mut next = 0i32;
        for (index, member) in members.into_iter().enumerate() {
            let share = (base + usize::from(index < extra)) as i32;
            let assignment = target.get_mut(member).expect("a member");
            assignment
                .entry(topic.clone())
                .or_default()
                .extend(next..next + share);
            next += share;
        }
    }
    target
        .values_mut()
        .for_each(|a| a.retain(|_, p| !p.is_empty()));
    target
}

/// The assignment's size, for logs and descriptions.
pub fn partitions_in(assignment: &Assignment) -> usize {
    count(assignment)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: ConsumerGroupSettings = ConsumerGroupSettings {
        session_timeout_ms: 45_000,
        heartbeat_interval_ms: 5_000,
        max_size: 100,
    };

    fn topics(name: &str) -> Option<i32> {
        (name == "t").then_some(6)
    }

    fn join(group: &mut ConsumerGroup, id: &str) -> HeartbeatOutput {
        let input = HeartbeatInput {
            member_id: id.into(),
            member_epoch: 0,
            subscribed: Some(vec!["t".into()]),
            rebalance_timeout_ms: 1_000,
            owned: Some(Assignment::new()),
            ..Default::default()
        };
        group
            .heartbeat(input, &topics, || unreachable!(), SETTINGS, 0)
            .unwrap()
    }

    fn beat(
        group: &mut ConsumerGroup,
        id: &str,
        epoch: i32,
        owned: &Assignment,
    ) -> HeartbeatOutput {
        let input = HeartbeatInput {
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: 1_000,
            owned: Some(owned.clone()),
            ..Default::default()
        };
        group
            .heartbeat(input, &topics, || unreachable!(), SETTINGS, 0)
            .unwrap()
    }

    fn no_partition_twice(group: &ConsumerGroup) {
        let mut seen = BTreeSet::new();
        for member in group.members.values() {
            for (topic, partitions) in union(&member.assigned, &member.revoking) {
                for p in partitions {
                    assert!(seen.insert((topic.clone(), p)), "{topic}-{p} owned twice");
                }
            }
        }
    }

    #[test]
    fn a_second_member_gets_partitions_only_after_the_first_revokes_them() {
        let mut group = ConsumerGroup::default();
        let a = join(&mut group, "a");
        assert_eq!(partitions_in(a.assignment.as_ref().unwrap()), 6);
        let a_owned = a.assignment.unwrap();
        let b = join(&mut group, "b");
        assert_eq!(
            partitions_in(b.assignment.as_ref().unwrap()),
            0,
            "a still owns everything"
        );
        no_partition_twice(&group);
        // a learns it must give up three partitions; its epoch waits for that.
        let a2 = beat(&mut group, "a", a.member_epoch, &a_owned);
        let kept = a2.assignment.unwrap();
        assert_eq!(partitions_in(&kept), 3);
        assert_eq!(a2.member_epoch, a.member_epoch, "revoking first");
        no_partition_twice(&group);
        // a confirms; it moves to the new epoch, and b gets the released partitions.
        let a3 = beat(&mut group, "a", a2.member_epoch, &kept);
        assert_eq!(a3.member_epoch, group.target_epoch);
        let b2 = beat(&mut group, "b", b.member_epoch, &Assignment::new());
        assert_eq!(partitions_in(b2.assignment.as_ref().unwrap()), 3);
        no_partition_twice(&group);
        assert_eq!(group.state(), "Stable");
    }

    #[test]
    fn stale_epochs_are_fenced_and_leaving_frees_partitions() {
        let mut group = ConsumerGroup::default();
        let a = join(&mut group, "a");
        let input = HeartbeatInput {
            member_id: "a".into(),
            member_epoch: a.member_epoch + 5,
            ..Default::default()
        };
        let fenced = group.heartbeat(input, &topics, || unreachable!(), SETTINGS, 0);
        assert_eq!(fenced, Err(ResponseError::FencedMemberEpoch));
        let b = join(&mut group, "b");
        let leave = HeartbeatInput {
            member_id: "a".into(),
            member_epoch: -1,
            ..Default::default()
        };
        group
            .heartbeat(leave, &topics, || unreachable!(), SETTINGS, 0)
            .unwrap();
        let b2 = beat(&mut group, "b", b.member_epoch, &Assignment::new());
        assert_eq!(partitions_in(b2.assignment.as_ref().unwrap()), 6);
    }

    #[test]
    fn the_stored_state_reads_back() {
        let mut group = ConsumerGroup::default();
        let a = join(&mut group, "a");
        join(&mut group, "b");
        beat(
            &mut group,
            "a",
            a.member_epoch,
            a.assignment.as_ref().unwrap(),
        );
        let restored = ConsumerGroup::decode(&group.encode(), 1_000, 45_000).unwrap();
        assert_eq!(restored.encode(), group.encode());
        assert_eq!(restored.members["a"].session_deadline_ms, 46_000);
        assert!(
            restored.members["a"].revocation_deadline_ms.is_some(),
            "a is revoking"
        );
        assert_eq!(restored.state(), group.state());
    }

    #[test]
    fn uniform_is_sticky_and_range_is_contiguous() {
        let subs: BTreeMap<String, BTreeSet<String>> = ["a", "b", "c"]
            .iter()
            .map(|m| (m.to_string(), BTreeSet::from(["t".to_string()])))
            .collect();
        let topics = BTreeMap::from([("t".to_string(), 7)]);
        let first = assign_uniform(&subs, &topics, &BTreeMap::new());
        let sizes: Vec<usize> = first.values().map(count).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 7);
        assert!(sizes.iter().all(|&s| s == 2 || s == 3));
        let mut fewer = subs.clone();
        fewer.remove("c");
        let second = assign_uniform(&fewer, &topics, &first);
        for member in ["a", "b"] {
            assert!(
                is_subset(&first[member], &second[member]),
                "{member} keeps its partitions"
            );
        }
        let range = assign_range(&subs, &topics);
        assert_eq!(range["a"]["t"], BTreeSet::from([0, 1, 2]));
        assert_eq!(range["c"]["t"], BTreeSet::from([5, 6]));
    }
}
