//! The `chronik` binary: flags, logging, signals, then the node runtime. No logic here.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};

use chronik::config::{Cli, Config};

/// mimalloc rather than glibc's malloc: the broker allocates and frees a buffer per request
/// and per batch, and glibc spent ~13% of a busy shard in malloc and free, splitting and
/// merging those blocks in one fragmented heap. With mimalloc a shard moves 10-35% more
/// (BENCHMARKS.md, issue 8, 2026-11-27). It is built without transparent huge pages
/// (`no_thp`, Cargo.toml): advised huge pages tripled the produce p99 at a fixed rate.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::load(Cli::parse()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("chronik: {error}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        if let Err(error) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("chronik: cannot handle signal {signal}: {error}");
            return ExitCode::from(2);
        }
    }
    tracing::info!(listen = %config.listen, data_dir = %config.data_dir.display(), shards = config.shards, "starting chronik");
    match chronik::runtime::run(config, stop.clone()) {
        Ok(()) => {
            tracing::info!(
                signalled = stop.load(Ordering::Relaxed),
                "chronik stopped cleanly"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "chronik failed");
            eprintln!("chronik: {error}");
            ExitCode::from(1)
        }
    }
}
