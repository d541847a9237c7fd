//! kcat (librdkafka's command-line client, from apt) as an operator uses it: list the
//! cluster, produce with every codec, consume in a balanced group, and resume in the group
//! after the commits. `tools/test.sh` installs kcat.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Broker;

fn kcat(args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kcat: {e} (tools/test.sh installs it)"));
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).expect("write to kcat");
    }
    drop(stdin);
    let output = child.wait_with_output().expect("kcat ran");
    assert!(
        output.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn kcat_lists_produces_and_consumes_in_a_group() {
    let broker = Broker::start_with(1, &["--group-initial-rebalance-delay-ms", "100"], None);
    let bootstrap = broker.bootstrap();
    let b = bootstrap.as_str();
    let mut sent = Vec::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let lines: Vec<String> = (0..20).map(|i| format!("{codec}-{i}")).collect();
        kcat(
            &["-b", b, "-P", "-t", "kc", "-z", codec],
            Some(&lines.join("\n")),
        );
        sent.extend(lines);
    }
    let listing = kcat(&["-b", b, "-L"], None);
    assert!(
        listing.contains("topic \"kc\" with 1 partitions"),
        "{listing}"
    );

    // `-o beginning` applies to every assignment in a group, so only the first read names it.
    let first = ["-b", b, "-G", "kgroup", "-o", "beginning", "-e", "-q", "kc"];
    let mut read: Vec<String> = kcat(&first, None).lines().map(str::to_string).collect();
    read.sort();
    sent.sort();
    assert_eq!(read, sent);

    kcat(&["-b", b, "-P", "-t", "kc"], Some("more-1\nmore-2"));
    let resumed = kcat(&["-b", b, "-G", "kgroup", "-e", "-q", "kc"], None);
    assert_eq!(resumed.lines().collect::<Vec<_>>(), ["more-1", "more-2"]);
}
