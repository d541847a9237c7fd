//! Kafka partition state on top of a Raft group: record batch headers and the offset index.

pub mod batch;
pub mod offsets;
pub mod producer_state;
pub mod transactions;
