//! Every raft-rs `Config` field set on purpose, validated once.

use raft::{Config, ReadOnlyOption};

/// Ticks are driven by the shard pump every `tick_interval_ms`.
pub const ELECTION_TICKS: usize = 10;
pub const HEARTBEAT_TICKS: usize = 2;

pub fn raft_config(
    replica_id: u64,
    applied: u64,
    uncommitted_bytes_max: u64,
) -> Result<Config, raft::Error> {
    let config = Config {
        id: replica_id,
        election_tick: ELECTION_TICKS,
        heartbeat_tick: HEARTBEAT_TICKS,
        applied,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        min_election_tick: 0,
        max_election_tick: 0,
        read_only_option: ReadOnlyOption::Safe,
        skip_bcast_commit: false,
        batch_append: true,
        priority: 0,
        max_uncommitted_size: uncommitted_bytes_max,
        max_committed_size_per_ready: 16 << 20,
    };
    config.validate()?;
    Ok(config)
}
