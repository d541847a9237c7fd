//! kafkajs, an independent client implementation (JavaScript: its own encoders, CRC-32C and
//! record batches), creates and deletes topics, produces with an idempotent producer, plain
//! and gzip, reads offsets by time, and consumes in groups (commit, resume from the commits,
//! two members sharing partitions) against a broker this test starts. librdkafka then reads
//! every message back. `tools/test.sh` installs kafkajs into target/node;
//! `CHRONIK_NODE_MODULES` names another node_modules that has it.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::cluster::Cluster;
use common::{consume_all, Broker};
use rdkafka::message::{Headers, Message};

const MESSAGES: usize = 200;
const PARTITIONS: i32 = 3;
/// Produced by the script's consumer group phase, after the first member committed.
const GROUP_PHASE_MESSAGES: usize = 30;

#[test]
fn kafkajs_admin_and_idempotent_producer() {
    let broker = Broker::start(2);
    run_kafkajs(&broker.bootstrap(), 1, &|| broker.log_tail(40));
}

/// The same against a 3-node cluster, with a replication factor 3 topic.
#[test]
fn kafkajs_against_a_cluster() {
    let cluster = Cluster::start(3, 1);
    run_kafkajs(&cluster.bootstrap(), 3, &|| cluster.logs(20));
}

fn run_kafkajs(bootstrap: &str, replication: u32, logs: &dyn Fn() -> String) {
    let node_modules = std::env::var("CHRONIK_NODE_MODULES").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/node/node_modules").to_string()
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/kafkajs_client.js"
    );
    let output = Command::new("node")
        .arg(script)
        .arg(bootstrap)
        .arg("from-kafkajs")
        .arg(replication.to_string())
        .env("NODE_PATH", &node_modules)
        .env("KAFKAJS_NO_PARTITIONER_WARNING", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run node: {e} (tools/test.sh installs kafkajs)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kafkajs failed ({}).\nstdout:\n{stdout}\nstderr:\n{stderr}\n\
         (kafkajs missing from {node_modules}? run tools/test.sh)\n{}",
        output.status,
        logs()
    );
    let report: HashMap<&str, &str> = stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let expected = [
        ("created", "true"),
        ("doomed_deleted", "true"),
        ("partitions", "3"),
        ("high_watermark_sum", "200"),
        ("low_watermarks", "0,0,0"),
        ("by_timestamp_from_start", "0,0,0"),
        ("group_first_read", "200"),
        ("group_committed_sum", "200"),
        ("group_resumed", "30"),
        ("group_resumed_first", "200"),
        ("group_pair_members", "2"),
        ("group_pair_read", "230"),
        ("tx_read", "10"),
        ("tx_only_committed", "true"),
    ];
    for (name, value) in expected {
        assert_eq!(
            report.get(name).copied(),
            Some(value),
            "{name}\n{stdout}\n{stderr}"
        );
    }

    // Every message is where kafkajs put it (partition n % 3), in order, with its key and
    // headers, whether its batch was gzip-compressed or not.
    let messages = consume_all(
        bootstrap,
        "from-kafkajs",
        PARTITIONS,
        MESSAGES + GROUP_PHASE_MESSAGES,
        Duration::from_secs(30),
    );
    assert_eq!(messages.len(), MESSAGES + GROUP_PHASE_MESSAGES);
    let mut last_n: HashMap<i32, i64> = HashMap::new();
    for message in &messages {
        let value = String::from_utf8_lossy(message.payload().expect("value"));
        let n: i64 = value
            .strip_prefix("kafkajs-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected value {value}"));
        assert_eq!(i64::from(message.partition()), n % i64::from(PARTITIONS));
        assert_eq!(message.key(), Some(format!("key-{n}").as_bytes()));
        let previous = last_n.insert(message.partition(), n);
        assert!(previous.is_none_or(|p| p < n), "order within a partition");
        if n >= MESSAGES as i64 {
            continue; // the group phase's messages carry no headers
        }
        let headers = message.headers().expect("headers");
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("source").as_deref(), Some("kafkajs"));
        assert_eq!(header("n"), Some(n.to_string()));
    }
}
