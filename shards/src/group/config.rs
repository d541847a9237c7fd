//! Every raft-rs `Config` field set on purpose, validated once.

use raft::{Config, ReadOnlyOption};

/// Ticks are driven by the shard pump every `tick_interval_ms`.
pub const ELECTION_TICKS: usize = 10;
pub const HEARTBEAT_TICKS: usize = 2;

pub fn raft_config(
    replica_id: u64,
    applied: u64,
    uncommitted_bytes_max: u64,
    deterministic_elections: bool,
) -> Result<Config, raft::Error> {
    // [min, max) ticks: one value when the timeout must not be random.
    let (min_election_tick, max_election_tick) = if deterministic_elections {
        (ELECTION_TICKS, ELECTION_TICKS + 1)
    } else {
        (0, 0)
    };
    let config = Config {
        id: replica_id,
        election_tick: ELECTION_TICKS,
        heartbeat_tick: HEARTBEAT_TICKS,
        applied,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        min_election_tick,
        max_election_tick,
        read_only_option: ReadOnlyOption::Safe,
        skip_bcast_commit: false,
        // raft-rs 0.7's batching merges new entries into a queued MsgAppend even when that
        // message carries no entries and a rejection has since moved the follower's next
        // index back: the merged message then claims entries starting at its own previous
        // index, the follower acknowledges an index it does not hold, and a later commit
        // index panics it. Found by the cluster simulation (seed 54); the peer transport
        // batches messages per pass anyway.
        batch_append: false,
        priority: 0,
        max_uncommitted_size: uncommitted_bytes_max,
        max_committed_size_per_ready: 16 << 20,
    };
    config.validate()?;
    Ok(config)
}
