//! A short smoke run of the load generator (`chronik-load`) against a test broker: every
//! message it reports acknowledged is in the log, in both its closed-loop and open-loop
//! modes, and its consume mode reads them all back. How fast is the benchmarks' business (BENCHMARKS.md), not this test's.

mod common;

use std::process::Command;

use common::{list_offsets, Broker};

/// The value of `"key":number` in the generator's JSON line.
fn field(json: &str, key: &str) -> f64 {
    let start = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} in {json}"))
        + key.len()
        + 3;
    let end = json[start..]
        .find([',', '}'])
        .map_or(json.len(), |i| start + i);
    json[start..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {json}"))
}

fn run_load(broker: &Broker, topic: &str, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_chronik-load"))
        .args(["--bootstrap", &broker.bootstrap(), "--topic", topic])
        .args(["--partitions", "4", "--connections", "2", "--size", "256"])
        .args(["--batch", "10", "--quiet"])
        .args(extra)
        .output()
        .expect("run chronik-load");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "chronik-load failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in {stdout}"))
        .to_string()
}

fn messages_in_log(broker: &Broker, topic: &str) -> i64 {
    (0..4)
        .map(|p| list_offsets(broker.addr(), topic, p, -1).2)
        .sum()
}

#[test]
fn every_acknowledged_message_is_in_the_log() {
    let broker = Broker::start(1);
    let json = run_load(
        &broker,
        "closed-loop",
        &["--messages", "20000", "--acks", "all"],
    );
    assert_eq!(field(&json, "failed_requests"), 0.0, "{json}");
    let acknowledged = field(&json, "messages") as i64;
    assert!(acknowledged >= 20_000, "{json}");
    assert_eq!(messages_in_log(&broker, "closed-loop"), acknowledged);
    assert!(field(&json, "p99_ms") > 0.0, "{json}");

    // Consume mode reads every one of them back.
    let json = run_load(
        &broker,
        "closed-loop",
        &["--mode", "consume", "--seconds", "60"],
    );
    assert_eq!(field(&json, "failed_requests"), 0.0, "{json}");
    assert_eq!(field(&json, "messages") as i64, acknowledged, "{json}");

    // Open loop at a fixed rate for two seconds, acks=1.
    let json = run_load(
        &broker,
        "open-loop",
        &["--rate", "20000", "--seconds", "2", "--acks", "1"],
    );
    assert_eq!(field(&json, "failed_requests"), 0.0, "{json}");
    let acknowledged = field(&json, "messages") as i64;
    assert!(acknowledged > 0, "{json}");
    assert_eq!(messages_in_log(&broker, "open-loop"), acknowledged);
}
