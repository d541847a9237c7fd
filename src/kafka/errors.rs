//! The only place where internal errors become Kafka error codes. Each mapping says why.

use kafka_protocol::error::ResponseError;

use chronik_shards::error::ShardError;
use chronik_shards::partition::batch::BatchError;

use crate::controller::ControllerError;
use crate::runtime::frame::RouteError;

pub const NONE: i16 = 0;

pub fn shard_error(error: &ShardError) -> ResponseError {
    match error {
        ShardError::UnknownGroup(_) => ResponseError::UnknownTopicOrPartition,
        // Retriable: the client refreshes metadata and retries at the leader.
        ShardError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
        ShardError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        // Raft refused to queue more: back off and retry.
        ShardError::ProposalDropped | ShardError::Overloaded(_) => ResponseError::RequestTimedOut,
        // The topic went away while the request waited.
        ShardError::GroupRemoved => ResponseError::UnknownTopicOrPartition,
        // We cannot prove the write did or did not happen: never report success, and let an
        // idempotent producer retry safely.
        ShardError::OutcomeUnknown(_) => ResponseError::RequestTimedOut,
        ShardError::RecordTooLarge(_) => ResponseError::MessageTooLarge,
        // Retriable: the producer backs off until followers catch up.
        ShardError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        ShardError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        // A newer producer instance took over this producer id.
        ShardError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
        ShardError::Storage(_) => ResponseError::KafkaStorageError,
    }
}

pub fn route_error(_: &RouteError) -> ResponseError {
    // The owning shard is shutting down: the outcome is unknown.
    ResponseError::RequestTimedOut
}

/// Reads (Fetch, ListOffsets): consumers know a fixed set of partition errors, and the Java consumer
/// throws out of `poll()` on REQUEST_TIMED_OUT. A read that cannot be served right now is
/// answered as "not the leader": retriable everywhere; the client refreshes and retries.
pub fn read_error(error: &ShardError) -> ResponseError {
    match shard_error(error) {
        ResponseError::RequestTimedOut => ResponseError::NotLeaderOrFollower,
        other => other,
    }
}

/// The owning shard is stopping: for a read, as Kafka answers during a controlled shutdown.
pub fn read_route_error(_: &RouteError) -> ResponseError {
    ResponseError::NotLeaderOrFollower
}

pub fn batch_error(error: &BatchError) -> ResponseError {
    match error {
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::TooShort
        | BatchError::LengthMismatch { .. }
        | BatchError::CrcMismatch
        | BatchError::RecordCountMismatch { .. } => ResponseError::CorruptMessage,
        // Well-formed bytes that break the batch's own rules, as Kafka answers it.
        BatchError::BadCount => ResponseError::InvalidRecord,
    }
}

pub fn controller_error(error: &ControllerError) -> ResponseError {
    match error {
        ControllerError::TopicAlreadyExists => ResponseError::TopicAlreadyExists,
        ControllerError::UnknownTopic => ResponseError::UnknownTopicOrPartition,
        ControllerError::NameCollision(_) => ResponseError::InvalidTopicException,
        ControllerError::NotCommitted(_) => ResponseError::RequestTimedOut,
        ControllerError::MetadataTooLarge(_) => ResponseError::PolicyViolation,
        ControllerError::NotEnoughBrokers(_) => ResponseError::InvalidReplicationFactor,
        // Retriable: clients refresh metadata and send it again.
        ControllerError::NoController(_) => ResponseError::NotController,
        ControllerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        ControllerError::InvalidConfig(_) => ResponseError::InvalidConfig,
    }
}
