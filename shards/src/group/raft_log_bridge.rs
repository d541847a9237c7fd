//! raft-rs logs through `slog`; this drain hands its records to `tracing` (target
//! `chronik_shards::raft`), so `RUST_LOG=chronik_shards::raft=debug` shows elections,
//! transfers and the like (raft-rs's info level; its debug level maps to trace). Records below the enabled level cost a level check only.

use slog::{Drain, Level, OwnedKVList, Record, KV};

pub struct TracingDrain;

/// Collects a record's key-value pairs as `key=value` text.
struct Pairs(String);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let enabled = match record.level() {
            Level::Critical | Level::Error | Level::Warning => {
                tracing::enabled!(target: "chronik_shards::raft", tracing::Level::WARN)
            }
            // raft-rs logs every election and role change at info: per partition, that is
            // debug detail for a broker with thousands of groups.
            Level::Info => tracing::enabled!(target: "chronik_shards::raft", tracing::Level::DEBUG),
            Level::Debug | Level::Trace => {
                tracing::enabled!(target: "chronik_shards::raft", tracing::Level::TRACE)
            }
        };
        if !enabled {
            return Ok(());
        }
        let mut pairs = Pairs(String::new());
        let _ = record.kv().serialize(record, &mut pairs);
        let _ = values.serialize(record, &mut pairs);
        let message = format!("{}{}", record.msg(), pairs.0);
        match record.level() {
            Level::Critical | Level::Error | Level::Warning => {
                tracing::warn!(target: "chronik_shards::raft", "{message}")
            }
            Level::Info => tracing::debug!(target: "chronik_shards::raft", "{message}"),
            Level::Debug | Level::Trace => {
                tracing::trace!(target: "chronik_shards::raft", "{message}")
            }
        }
        Ok(())
    }
}
