//! OffsetForLeaderEpoch against a broker whose leader epoch (its Raft term) moved with a
//! restart: where each epoch ended, the current epoch ending at the log end, and the fencing
//! of a client that knows an older or a newer epoch than the leader.

mod common;

use std::time::Duration;

use common::*;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

/// (error, epoch, end offset) for `epoch`, with the client's idea of the current epoch.
fn epoch_end(broker: &Broker, epoch: i32, current: i32) -> (i16, i32, i64) {
    let version = pick_version(broker.addr(), ApiKey::OffsetForLeaderEpoch, (2, 4));
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(tn("epochs"))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_leader_epoch(epoch)
                .with_current_leader_epoch(current)])]);
    let response: OffsetForLeaderEpochResponse = typed_request(broker.addr(), &request, version);
    let answer = &response.topics[0].partitions[0];
    (answer.error_code, answer.leader_epoch, answer.end_offset)
}

fn leader_epoch(broker: &Broker) -> i32 {
    metadata(broker.addr(), Some(&["epochs"]), false).topics[0].partitions[0].leader_epoch
}

fn produce_ok(broker: &Broker, count: usize) {
    for _ in 0..count {
        let acknowledged = wait_until(Duration::from_secs(10), || {
            let batch = simple_batch("e", 1, now_ms());
            produce_result(&produce_raw(broker.addr(), "epochs", 0, batch, -1)).0 == NONE
        });
        assert!(acknowledged, "produce not acknowledged");
    }
}

#[test]
fn offset_for_leader_epoch_follows_the_terms() {
    let mut broker = Broker::start(1);
    create_topic(broker.addr(), "epochs", 1);
    produce_ok(&broker, 3);
    let first = leader_epoch(&broker);
    broker.restart();
    produce_ok(&broker, 2);
    let second = leader_epoch(&broker);
    assert!(
        second > first,
        "a restart starts a new term ({first} -> {second})"
    );

    assert_eq!(epoch_end(&broker, first, -1), (NONE, first, 3));
    assert_eq!(epoch_end(&broker, second, second), (NONE, second, 5));
    assert_eq!(epoch_end(&broker, second + 1, -1), (NONE, -1, -1));
    assert_eq!(
        epoch_end(&broker, 0, -1),
        (NONE, 0, 0),
        "older than every batch"
    );
    assert_eq!(epoch_end(&broker, first, first).0, FENCED_LEADER_EPOCH);
    assert_eq!(
        epoch_end(&broker, first, second + 1).0,
        UNKNOWN_LEADER_EPOCH
    );
}
