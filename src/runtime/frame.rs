//! What crosses between shards over the bounded glommio channel mesh. A request carries its
//! reply channel; the owner shard executes it and answers on it. If a frame cannot be
//! delivered (the mesh closed at shutdown) the caller sees `RouteError` and answers the client
//! with a retriable error.

use std::sync::Arc;

use bytes::Bytes;
use chronik_shards::error::ShardError;
use chronik_shards::partition::owned_batch::OwnedBatch;
use futures::channel::oneshot;

use crate::controller::{ControllerReply, ControllerRequest};
use crate::metadata::MetadataView;

pub enum ShardRequest {
    /// Record batches for partitions of this shard, proposed in order in one go so they share
    /// a group commit; each answers when committed (unless acks = 0).
    Append {
        appends: Vec<PartitionAppend>,
        acks: i16,
    },
    /// Reads several partitions in order under one byte budget. Each read returns at most
    /// its own `max_bytes`; the first batch found is returned whole even if larger.
    Read {
        reads: Vec<PartitionRead>,
        budget_bytes: usize,
    },
    /// Resolves when any of the groups commits new data, or after `wait_ms`.
    /// Each (group, high watermark the fetch saw): answers at once if any group's high
    /// watermark has moved past it, so a commit between the read and the wait is not missed.
    WaitForData {
        waits: Vec<(u64, i64)>,
        wait_ms: u64,
    },
    ListOffset {
        group_id: u64,
        timestamp: i64,
        /// Latest (-1) is the last stable offset rather than the high watermark.
        read_committed: bool,
    },
    Describe {
        group_ids: Vec<u64>,
    },
    /// OffsetForLeaderEpoch of one partition; `current_leader_epoch` -1 skips the fencing.
    EpochEndOffset {
        group_id: u64,
        leader_epoch: i32,
        current_leader_epoch: i32,
    },
    Metadata(Arc<MetadataView>),
    /// Raft messages from a peer node for groups of this shard.
    Raft(Vec<(u64, raft::eraftpb::Message)>),
    /// Only shard 0 hosts the controller.
    Controller(ControllerRequest),
    /// The producers a partition knows (DescribeProducers), on its leader.
    DescribeProducers {
        group_id: u64,
    },
    /// DeleteRecords on the leader: the new log start (-1: the high watermark).
    DeleteRecords {
        group_id: u64,
        offset: i64,
    },
    /// Bytes held per partition (DescribeLogDirs).
    PartitionSizes {
        group_ids: Vec<u64>,
    },
    /// A transaction marker for a partition this shard leads; answered once committed.
    WriteMarker {
        group_id: u64,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        /// A `__consumer_offsets` partition: its coordinator settles the producer's
        /// transactional offset commits.
        is_offsets_partition: bool,
    },
    /// A group request for the coordinator of one `__consumer_offsets` partition.
    Group {
        partition: u64,
        call: Box<crate::coordinator::GroupCall>,
    },
    /// A request for the transaction coordinator of one `__transaction_state` partition.
    Transaction {
        partition: u64,
        call: Box<crate::transactions::TxnCall>,
    },
}

/// One partition's batch for `ShardRequest::Append`.
#[derive(Debug)]
pub struct PartitionAppend {
    pub group_id: u64,
    /// The batch, patched in place and kept as it is by the owning shard.
    pub batch: OwnedBatch,
    /// acks=all: the in-sync replicas the leader needs, else NOT_ENOUGH_REPLICAS (the
    /// topic's `min.insync.replicas`); 0 for acks 0 and 1.
    pub min_in_sync: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct PartitionRead {
    pub group_id: u64,
    pub offset: i64,
    pub max_bytes: usize,
    /// A follower replica may answer, up to its own commit index (KIP-392 follower fetch).
    pub from_follower: bool,
    /// Only up to the last stable offset, with the aborted transactions read.
    pub read_committed: bool,
}

#[derive(Debug)]
pub struct AppendResult {
    pub base_offset: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone)]
pub struct ReadResult {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub last_stable_offset: i64,
    /// (producer id, first offset) of aborted transactions in what was read (read_committed).
    pub aborted: Vec<(i64, i64)>,
    pub batches: Vec<Bytes>,
    /// The shard's fetch read memory was full, so this read returned less than there was:
    /// the fetch answers now rather than wait for `min_bytes` holding what it has.
    pub cut_short_by_memory: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct ListedOffset {
    pub offset: i64,
    pub timestamp: i64,
    pub leader_epoch: i32,
}

/// Why OffsetForLeaderEpoch cannot answer for a partition.
#[derive(Debug)]
pub enum EpochError {
    Shard(ShardError),
    /// The client knows a newer epoch than this leader (UNKNOWN_LEADER_EPOCH).
    Unknown,
    /// The client's epoch is older than this leader's (FENCED_LEADER_EPOCH).
    Fenced,
}

#[derive(Debug, Clone)]
pub struct PartitionDescription {
    pub leader: Option<u64>,
    pub leader_epoch: i32,
    /// Known on the leader only (empty elsewhere).
    pub in_sync: Vec<u64>,
}

pub enum ShardReply {
    Append(Vec<Result<AppendResult, ShardError>>),
    Read(Vec<Result<ReadResult, ShardError>>),
    Waited,
    ListOffset(Result<ListedOffset, ShardError>),
    Describe(Vec<Option<PartitionDescription>>),
    EpochEndOffset(Result<(i32, i64), EpochError>),
    MetadataApplied,
    Stepped,
    Controller(ControllerReply),
    Group(crate::coordinator::GroupAnswer),
    Marker(Result<(), ShardError>),
    /// (producer id, epoch, last sequence, open transaction's first offset or -1).
    Producers(Result<Vec<(i64, i16, i32, i64)>, ShardError>),
    Sizes(Vec<Option<u64>>),
    /// The log start offset after a DeleteRecords.
    Deleted(Result<i64, ShardError>),
    Transaction(crate::transactions::TxnAnswer),
}

pub struct ShardMessage {
    pub request: ShardRequest,
    pub reply: oneshot::Sender<ShardReply>,
}

#[derive(Debug, thiserror::Error)]
#[error("shard {0} is unreachable (shutting down)")]
pub struct RouteError(pub usize);
