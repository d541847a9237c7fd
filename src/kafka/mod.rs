//! The Kafka front-end: connections, framing, dispatch, one handler per API.

pub mod codec;
pub mod decompress;
pub mod dispatch;
pub mod errors;
pub mod handlers;
pub mod server;
pub mod shared_records;
pub mod topic_configs;
pub mod topic_name;
