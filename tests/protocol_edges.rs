//! Protocol corners where a broker that answers "roughly right" breaks real clients: fetch
//! min_bytes 0, fetch sessions the broker does not keep, InitProducerId for idempotent
//! producers, and auto-creation of a name that collides with an existing topic.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::{
    ApiKey, FetchResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId,
};

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_TOPIC_EXCEPTION: i16 = 17;

/// Kafka answers a fetch with min_bytes 0 at once, even with nothing to return; a broker that
/// waits out max_wait_ms instead stalls every empty poll of a client configured that way.
#[test]
fn fetch_with_min_bytes_zero_answers_at_once() {
    let broker = Broker::start(1);
    let addr = broker.addr();
    create_topic(addr, "min-bytes-zero", 1);
    let version = pick_version(addr, ApiKey::Fetch, (4, 12));
    let request = fetch_request("min-bytes-zero", 0, 0, 20_000, 1 << 20).with_min_bytes(0);
    let started = Instant::now();
    let mut conn = RawConn::connect(addr).expect("connect");
    conn.set_timeout(Duration::from_secs(30)).expect("timeout");
    let response: FetchResponse = conn.typed(&request, version).expect("fetch");
    let took = started.elapsed();
    let partition = &response.responses[0].partitions[0];
    assert_eq!((response.error_code, partition.error_code), (NONE, NONE));
    assert!(
        took < Duration::from_secs(10),
        "min_bytes 0 with max_wait_ms 20000 answered after {took:?}, not at once"
    );
}

/// chronik keeps no fetch sessions and says so (session id 0 in every answer). As in Kafka,
/// epoch 0 or -1 is a full fetch whatever the session id, and continuing a session chronik
/// does not know (any other epoch) is FETCH_SESSION_ID_NOT_FOUND.
#[test]
fn fetch_sessions_are_declined_as_kafka_does() {
    let broker = Broker::start(1);
    let addr = broker.addr();
    create_topic(addr, "sessions", 1);
    let version = pick_version(addr, ApiKey::Fetch, (7, 12));
    let fetch = |session_id: i32, session_epoch: i32| -> FetchResponse {
        let request = fetch_request("sessions", 0, 0, 0, 1 << 20)
            .with_session_id(session_id)
            .with_session_epoch(session_epoch);
        typed_request(addr, &request, version)
    };
    for (session_id, epoch) in [(12_345, 1), (0, 3)] {
        let continued = fetch(session_id, epoch);
        assert_eq!(
            continued.error_code, FETCH_SESSION_ID_NOT_FOUND,
            "session {session_id} epoch {epoch}: {continued:?}"
        );
        assert!(continued.responses.is_empty());
    }
    for (session_id, epoch) in [(0, 0), (0, -1), (12_345, 0), (12_345, -1)] {
        let full = fetch(session_id, epoch);
        let what = format!("session {session_id} epoch {epoch}");
        assert_eq!(full.error_code, NONE, "{what}: {full:?}");
        assert_eq!(full.session_id, 0, "{what}: no session is created");
        assert_eq!(full.responses[0].partitions[0].error_code, NONE, "{what}");
    }
}

/// Without a transactional id, the id and epoch a producer sends are ignored and a fresh id
/// is handed out, as Kafka does: otherwise any client could adopt another producer's id.
#[test]
fn init_producer_id_always_hands_out_a_fresh_id() {
    let broker = Broker::start(1);
    let addr = broker.addr();
    let version = pick_version(addr, ApiKey::InitProducerId, (0, 4));
    let init = |producer_id: i64, epoch: i16| -> InitProducerIdResponse {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch);
        typed_request(addr, &request, version)
    };
    let first = init(-1, -1);
    assert_eq!(first.error_code, NONE, "{first:?}");
    assert!(first.producer_id.0 >= 0);
    assert_eq!(first.producer_epoch, 0);
    // A client claiming the first producer's id (as a KIP-360 epoch bump would).
    let claimed = init(first.producer_id.0, first.producer_epoch);
    assert_eq!(claimed.error_code, NONE, "{claimed:?}");
    assert_ne!(
        claimed.producer_id, first.producer_id,
        "an id is never handed out twice"
    );
    assert_eq!(claimed.producer_epoch, 0);
}

/// Kafka refuses a topic whose name differs from an existing one only by '.' versus '_'
/// (their metric names collide). Auto-creation must say so with INVALID_TOPIC_EXCEPTION,
/// which clients fail on at once, not UNKNOWN_TOPIC_OR_PARTITION, which they retry until
/// their timeout.
#[test]
fn auto_creating_a_colliding_name_is_an_invalid_topic() {
    let broker = Broker::start(1);
    let addr = broker.addr();
    create_topic(addr, "orders.eu", 1);
    let md = metadata(addr, Some(&["orders_eu"]), true);
    assert_eq!(md.topics[0].error_code, INVALID_TOPIC_EXCEPTION, "{md:?}");
    let response = produce_raw(addr, "orders_eu", 0, simple_batch("x", 1, now_ms()), -1);
    assert_eq!(
        produce_result(&response).0,
        INVALID_TOPIC_EXCEPTION,
        "{response:?}"
    );
    assert_eq!(
        topic_in_metadata(addr, "orders_eu"),
        None,
        "nothing was created"
    );
    assert_eq!(topic_in_metadata(addr, "orders.eu"), Some((NONE, 1)));
}
