//! A short smoke run of the load generator (`chronik-load`) against a test broker: every
//! message it reports acknowledged is in the log, in both its closed-loop and open-loop
//! modes, and its consume mode reads them all back. Its end-to-end mode sees every message
//! it produced arrive at its consumers, and its percentile files plot. How fast is the benchmarks' business (BENCHMARKS.md), not this test's.

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

/// The JSON lines of a run: one per side (produce, consume or end-to-end).
fn run_load_sides(broker: &Broker, topic: &str, extra: &[&str]) -> Vec<String> {
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
    let lines: Vec<String> = stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(str::to_string)
        .collect();
    assert!(!lines.is_empty(), "no JSON line in {stdout}");
    lines
}

fn run_load(broker: &Broker, topic: &str, extra: &[&str]) -> String {
    run_load_sides(broker, topic, extra).remove(0)
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

    // A warm-up second is written but left out of the figures, percentiles included.
    let histograms = tempfile::tempdir().expect("histogram dir");
    let json = run_load(
        &broker,
        "warmed-up",
        &[
            "--rate",
            "20000",
            "--warmup",
            "1",
            "--seconds",
            "1",
            "--acks",
            "1",
            "--histogram-dir",
            histograms.path().to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(field(&json, "failed_requests"), 0.0, "{json}");
    let counted = field(&json, "messages") as u64;
    let written = messages_in_log(&broker, "warmed-up") as u64;
    assert!(
        counted > 0 && counted < written,
        "counted {counted} of {written}: {json}"
    );
    let hgrm =
        std::fs::read_to_string(histograms.path().join("produce.hgrm")).expect("produce.hgrm");
    assert_eq!(
        total_count(&hgrm),
        counted,
        "the percentiles leave the warm-up out"
    );
}

/// `Total count` from the footer of a percentile file.
fn total_count(hgrm: &str) -> u64 {
    let footer = hgrm
        .lines()
        .find(|line| line.contains("Total count"))
        .unwrap_or_else(|| panic!("no footer in {hgrm}"));
    footer
        .rsplit('=')
        .next()
        .and_then(|n| n.trim().trim_end_matches(']').trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {footer}"))
}

#[test]
fn end_to_end_mode_sees_every_message_arrive_and_its_percentiles_plot() {
    let broker = Broker::start(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let histograms = dir.path().join("h");
    let sides = run_load_sides(
        &broker,
        "end-to-end",
        &[
            "--mode",
            "end-to-end",
            "--messages",
            "20000",
            "--histogram-dir",
            histograms.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(sides.len(), 2, "{sides:?}");
    let (produced, arrived) = (&sides[0], &sides[1]);
    assert!(produced.contains("\"mode\":\"produce\""), "{produced}");
    assert!(arrived.contains("\"mode\":\"end-to-end\""), "{arrived}");
    assert_eq!(field(produced, "failed_requests"), 0.0, "{produced}");
    let acknowledged = field(produced, "messages") as i64;
    assert!(acknowledged >= 20_000, "{produced}");
    assert_eq!(messages_in_log(&broker, "end-to-end"), acknowledged);
    // Every acknowledged message reached a consumer, each with a latency.
    assert_eq!(field(arrived, "messages") as i64, acknowledged, "{arrived}");
    assert!(field(arrived, "p99_ms") > 0.0, "{arrived}");

    let end_to_end = std::fs::read_to_string(histograms.join("end-to-end.hgrm")).expect("file");
    let produce = std::fs::read_to_string(histograms.join("produce.hgrm")).expect("file");
    assert_eq!(total_count(&end_to_end) as i64, acknowledged);
    assert_eq!(total_count(&produce) as i64, acknowledged);

    let svg = dir.path().join("latency.svg");
    let plotted = Command::new(env!("CARGO_BIN_EXE_chronik-plot"))
        .arg("--out")
        .arg(&svg)
        .arg(format!(
            "produced={}",
            histograms.join("produce.hgrm").display()
        ))
        .arg(format!(
            "arrived={}",
            histograms.join("end-to-end.hgrm").display()
        ))
        .status()
        .expect("run chronik-plot");
    assert!(plotted.success());
    let svg = std::fs::read_to_string(svg).expect("svg");
    assert!(svg.starts_with("<svg") && svg.contains("produced") && svg.contains("arrived"));
    assert!(svg.contains("99.9%"), "percentile axis");
}
