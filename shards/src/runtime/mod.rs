//! The per-core runtime: the shard (WAL + Raft groups + pump).

pub mod shard;

#[cfg(test)]
pub(crate) mod tests;
