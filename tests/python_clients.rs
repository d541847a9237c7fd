//! The Python clients people use most, confluent-kafka, kafka-python (idempotent by default)
//! and aiokafka, produce, consume and consume in a consumer group (commit, resume from the
//! commit) against a broker this test starts. `tools/test.sh` installs them into target/python;
//! `CHRONIK_PYTHON` names another interpreter that has them.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::process::Command;

use common::cluster::Cluster;
use common::Broker;

#[test]
fn confluent_kafka_and_kafka_python_round_trip() {
    let broker = Broker::start(2);
    run_python_clients(&broker.bootstrap(), &|| broker.log_tail(40));
}

/// The same against a 3-node cluster: the topics they auto-create are replicated 3 times.
#[test]
fn python_clients_against_a_cluster() {
    let cluster = Cluster::start(3, 1);
    run_python_clients(&cluster.bootstrap(), &|| cluster.logs(20));
}

fn run_python_clients(bootstrap: &str, logs: &dyn Fn() -> String) {
    let python = std::env::var("CHRONIK_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/python/bin/python");
        if std::path::Path::new(venv).exists() {
            venv.to_string()
        } else {
            "python3".to_string()
        }
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/python_clients.py"
    );
    let output = Command::new(&python)
        .arg(script)
        .arg(bootstrap)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python}: {e} (tools/test.sh installs the Python clients)")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Python clients failed ({}).\nstdout:\n{stdout}\nstderr:\n{stderr}\n\
         (missing modules? run tools/test.sh, which installs kafka-python and confluent-kafka)\n{}",
        output.status,
        logs()
    );
    assert!(
        stdout.contains("confluent-kafka: 200 messages round-tripped"),
        "{stdout}"
    );
    for client in [
        "kafka-python",
        "confluent-kafka group",
        "kafka-python group",
        "aiokafka group",
    ] {
        assert!(
            stdout.contains(&format!("{client}: 200 messages round-tripped")),
            "{client}\n{stdout}"
        );
    }
    assert!(
        stdout.contains("confluent-kafka transactions: 20 messages round-tripped"),
        "{stdout}"
    );
}
