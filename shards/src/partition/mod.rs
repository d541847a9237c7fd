//! Kafka partition state on top of a Raft group: record batch headers and the offset index.

pub mod batch;
pub mod offsets;
pub mod owned_batch;
pub mod producer_state;
pub mod transactions;
