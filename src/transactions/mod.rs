//! The transaction coordinator: transactional producers (InitProducerId with a
//! transactional id, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn), their state kept in the
//! internal topic `__transaction_state`, and the commit and abort markers written to every
//! partition of a transaction.
//!
//! A transactional id belongs to one partition of `__transaction_state` (Kafka's hash), and
//! its coordinator is the leader of that partition, as for groups. Every state change is
//! written (and committed) before it takes effect; a new leader reads the partition back and
//! finishes what was prepared. On the partitions, open transactions hold back the last
//! stable offset, and read_committed consumers get the aborted ones to skip
//! (`chronik_shards::partition::transactions`).
//!
//! - `state`: one transactional id's state and transitions, pure.
//! - `records`: the record format (Kafka's).
//! - `markers`: control batches and their delivery to partition leaders.
//! - `service`: the per-shard coordinator: requests, loading, the timeout timer.

pub mod markers;
pub mod records;
pub mod service;
pub mod state;

/// The internal topic of transaction state.
pub const TRANSACTION_TOPIC: &str = "__transaction_state";

/// Kafka's `transaction.max.timeout.ms`: a producer may not ask for more.
pub const TRANSACTION_TIMEOUT_MAX_MS: i32 = 900_000;

/// A transaction request for the shard that owns the id's `__transaction_state` partition.
#[derive(Clone, Debug)]
pub enum TxnCall {
    Init {
        transactional_id: String,
        timeout_ms: i32,
    },
    AddPartitions {
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
    },
    End {
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    },
    Describe(String),
    /// Every transactional id of the partitions this shard leads.
    List,
}

impl TxnCall {
    pub fn transactional_id(&self) -> &str {
        match self {
            TxnCall::Init {
                transactional_id, ..
            }
            | TxnCall::AddPartitions {
                transactional_id, ..
            }
            | TxnCall::End {
                transactional_id, ..
            }
            | TxnCall::Describe(transactional_id) => transactional_id,
            TxnCall::List => "",
        }
    }
}

#[derive(Debug, Clone)]
pub enum TxnAnswer {
    /// InitProducerId: (error code, producer id, epoch).
    Init(i16, i64, i16),
    /// AddPartitions, End: an error code (0: done).
    Done(i16),
    /// Describe: the id's state (None: unknown), or an error code.
    Described(Result<Option<state::TxnMetadata>, i16>),
    /// List: (transactional id, producer id, state).
    Listed(Vec<(String, i64, &'static str)>),
}

impl TxnAnswer {
    /// The answer's error code (0: none).
    pub fn code(&self) -> i16 {
        match self {
            TxnAnswer::Init(code, ..) | TxnAnswer::Done(code) => *code,
            TxnAnswer::Described(Err(code)) => *code,
            TxnAnswer::Described(Ok(_)) | TxnAnswer::Listed(_) => 0,
        }
    }
}
