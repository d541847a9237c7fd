//! Errors of the shard layer. Only the Kafka layer maps them to Kafka error codes.

use thiserror::Error;

use crate::wal::WalError;

#[derive(Debug, Error)]
pub enum ShardError {
    #[error("group {0} is not on this shard")]
    UnknownGroup(u64),
    #[error("this replica is not the leader of group {group_id}")]
    NotLeader { group_id: u64, leader: Option<u64> },
    #[error("offset {offset} is outside [{log_start_offset}, {high_watermark}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        high_watermark: i64,
    },
    #[error("raft dropped the proposal (too much uncommitted data or no leader)")]
    ProposalDropped,
    #[error("too many requests are waiting on group {0}")]
    Overloaded(u64),
    #[error("the group was removed")]
    GroupRemoved,
    #[error("the outcome is unknown: {0}")]
    OutcomeUnknown(&'static str),
    #[error("out of order sequence number: expected {expected}, got {got}")]
    OutOfOrderSequence { expected: i32, got: i32 },
    #[error("producer epoch {got} is older than the current epoch {current}")]
    ProducerFenced { current: i16, got: i16 },
    #[error("{in_sync} replicas in sync, min.insync.replicas is {required}")]
    NotEnoughReplicas { in_sync: usize, required: usize },
    #[error("batch of {0} bytes is larger than a WAL record may be")]
    RecordTooLarge(usize),
    #[error("storage: {0}")]
    Storage(#[from] WalError),
}
