//! chronik's shard runtime: one per CPU core. Each shard owns a write-ahead log, the Raft
//! groups of the partitions placed on it, and the long-poll waiters of those partitions.

pub mod error;
pub mod group;
pub mod partition;
pub mod runtime;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod transport;
pub mod wal;
