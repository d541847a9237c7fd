//! The official Java client (Apache kafka-clients 3.9.1, run from source with JDK 17) with its
//! defaults: admin calls, the default idempotent acks=all producer with every codec, consumer
//! groups (commit, resume, two members), transactions with a read_committed consumer, group
//! administration, DeleteRecords, partition growth; against one broker and a 3-node cluster.
//! `tools/test.sh` installs the JDK and the jars (target/java/lib); `CHRONIK_JAVA_LIBS`
//! names another directory holding them.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::cluster::Cluster;
use common::Broker;

#[test]
fn the_java_client_with_its_defaults() {
    let broker = Broker::start(2);
    run_java_client(&broker.bootstrap(), 1, &|| broker.log_tail(40));
}

#[test]
fn the_java_client_against_a_cluster() {
    let cluster = Cluster::start(3, 1);
    run_java_client(&cluster.bootstrap(), 3, &|| cluster.logs(20));
}

fn run_java_client(bootstrap: &str, replication: u32, logs: &dyn Fn() -> String) {
    let libs = std::env::var("CHRONIK_JAVA_LIBS")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/java/lib").to_string());
    assert!(
        std::path::Path::new(&libs)
            .join("kafka-clients.jar")
            .exists(),
        "no kafka-clients.jar in {libs}: run tools/test.sh, which fetches it"
    );
    let program = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/JavaClient.java");
    let output = Command::new("java")
        .arg("-cp")
        .arg(format!("{libs}/*"))
        .arg(program)
        .arg(bootstrap)
        .arg("from-java")
        .arg(replication.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run java: {e} (tools/test.sh installs JDK 17)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Java client failed ({}).\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        output.status,
        logs()
    );
    let report: HashMap<&str, &str> = stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let brokers = if replication == 1 { "1" } else { "3" };
    let expected = [
        ("brokers", brokers),
        ("cleanup_policy", "delete"),
        ("retention_ms", "86400000"),
        ("produced", "300"),
        ("group_first_read", "300"),
        ("group_resumed", "10"),
        ("group_committed_sum", "310"),
        ("pair_members", "2"),
        ("consumer_protocol_members", "2"),
        ("group_state", "Empty"),
        ("groups_listed", "true"),
        ("group_deleted", "true"),
        ("read_committed", "20"),
        ("low_watermark", "5"),
        ("partitions_after_growth", "4"),
    ];
    for (name, value) in expected {
        assert_eq!(
            report.get(name).copied(),
            Some(value),
            "{name}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
}
