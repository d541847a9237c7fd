//! chronik: a Kafka-compatible streaming broker. This crate is the Kafka front-end, the
//! configuration, the controller (cluster metadata) and the node runtime that starts one
//! shard per core; the shards themselves (WAL, Raft groups) live in `chronik-shards`.

pub mod compaction;
pub mod config;
pub mod controller;
pub mod coordinator;
pub mod kafka;
pub mod metadata;
pub mod runtime;
pub mod transactions;
