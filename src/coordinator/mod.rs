//! The group coordinator: consumer groups (Kafka's classic protocol) and their committed
//! offsets, kept in the internal topic `__consumer_offsets`.
//!
//! A group belongs to one partition of that topic (`partition_for`, Kafka's own hash), and
//! its coordinator is whichever node leads that partition's Raft group, on the shard that
//! owns it. Every change (a committed offset, a group's members and assignment after a
//! rebalance, a deletion) is a record appended to the partition and answered once committed,
//! so it is replicated like any topic. A node that becomes leader of the partition (a restart,
//! a failover) reads the partition back before it answers (`service::ensure_loaded`).
//!
//! - `records`: the record formats (Kafka's).
//! - `group`: one group's state machine, pure.
//! - `consumer_group`: the KIP-848 consumer protocol's state machine and assignors, pure.
//! - `service`: the per-shard coordinator: loading, writing, the requests, the timer.
//! - `consumer_service`: ConsumerGroupHeartbeat and ConsumerGroupDescribe on it.

pub mod consumer_group;
pub mod consumer_service;
pub mod group;
pub mod partition_log;
pub mod records;
pub mod service;

use kafka_protocol::messages::{
    heartbeat_request::HeartbeatRequest, join_group_request::JoinGroupRequest,
    leave_group_request::LeaveGroupRequest, offset_commit_request::OffsetCommitRequest,
    offset_delete_request::OffsetDeleteRequest, sync_group_request::SyncGroupRequest,
};

/// The internal topic of committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Topics clients may read but never write (and that Metadata marks internal).
pub fn is_internal_topic(name: &str) -> bool {
    name == OFFSETS_TOPIC || name == "__transaction_state"
}

/// Kafka's `partitionFor`: `abs(groupId.hashCode()) % partitions`, with Java's string hash
/// over UTF-16 code units, so a group lands on the partition Kafka would choose.
pub fn partition_for(group_id: &str, partitions: usize) -> usize {
    let hash = group_id.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    // Kafka's Utils.abs: i32::MIN maps to 0 rather than overflowing.
    (hash & 0x7fff_ffff) as usize % partitions.max(1)
}

/// A group request for the shard that owns the group's offsets partition.
#[derive(Clone)]
pub enum GroupCall {
    Join {
        version: i16,
        request: JoinGroupRequest,
        client_id: String,
        client_host: String,
    },
    Sync(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    Leave {
        version: i16,
        request: LeaveGroupRequest,
    },
    Commit(OffsetCommitRequest),
    TxnCommit(kafka_protocol::messages::TxnOffsetCommitRequest),
    /// None: every committed offset of the group.
    FetchOffsets {
        group: String,
        topics: Option<Vec<(String, Vec<i32>)>>,
        /// v7+: a partition with offsets pending in a transaction answers
        /// UNSTABLE_OFFSET_COMMIT (retriable) instead of its older offset (KIP-447).
        require_stable: bool,
    },
    Describe(String),
    Delete(String),
    DeleteOffsets(OffsetDeleteRequest),
    /// Every group of the offsets partitions this shard leads.
    List,
    /// KIP-848: one member's heartbeat.
    ConsumerHeartbeat {
        request: kafka_protocol::messages::ConsumerGroupHeartbeatRequest,
        client_id: String,
        client_host: String,
    },
    ConsumerDescribe(String),
}

/// What the coordinator answers; errors that concern the whole request are in the
/// responses themselves.
pub enum GroupAnswer {
    Join(kafka_protocol::messages::JoinGroupResponse),
    Sync(kafka_protocol::messages::SyncGroupResponse),
    Heartbeat(i16),
    Leave(kafka_protocol::messages::LeaveGroupResponse),
    Commit(kafka_protocol::messages::OffsetCommitResponse),
    TxnCommit(kafka_protocol::messages::TxnOffsetCommitResponse),
    FetchOffsets(Result<Vec<FetchedOffset>, i16>),
    Describe(kafka_protocol::messages::describe_groups_response::DescribedGroup),
    Delete(i16),
    DeleteOffsets(kafka_protocol::messages::OffsetDeleteResponse),
    List(Vec<ListedGroup>),
    ConsumerHeartbeat(kafka_protocol::messages::ConsumerGroupHeartbeatResponse),
    ConsumerDescribe(kafka_protocol::messages::consumer_group_describe_response::DescribedGroup),
}

/// One partition's committed offset for OffsetFetch (`offset` -1: none).
#[derive(Debug, Clone)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub error: i16,
}

#[derive(Debug, Clone)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
    /// "classic" or "consumer" (KIP-848).
    pub group_type: &'static str,
}

#[cfg(test)]
mod tests {
    use super::partition_for;

    #[test]
    fn partition_matches_kafkas_hash() {
        // Java: "my-group".hashCode() == -1906497762; masked, modulo 50: 36.
        assert_eq!(partition_for("my-group", 50), 36);
        // Negative hash codes are masked, not negated, as Kafka's Utils.abs does.
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("", 16), 0);
    }
}
