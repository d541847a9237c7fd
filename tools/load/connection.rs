//! One producing connection: a writer that sends pre-encoded Produce requests (keeping up to
//! `in_flight` unanswered, and in open-loop mode on a fixed schedule), and a reader that
//! matches the answers in order and records each request's latency for all its records.
//!
//! Open loop: a request's latency counts from when it was due, not from when it went out, so
//! a broker that stalls the generator cannot hide its stall (no coordinated omission).
//! Closed loop: it counts from when the request could go out (an answer freed its place),
//! not from when the writer began to wait for that place.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::{ApiKey, ProduceResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::stamp::{self, StampSpot};

/// The largest answer the generator accepts (a Fetch answer carries up to 50 MiB).
const RESPONSE_BYTES_MAX: usize = 64 << 20;

/// What one connection sends.
pub struct ConnectionPlan {
    pub addr: SocketAddr,
    /// The encoded ProduceRequest body, sent again and again.
    pub body: Bytes,
    pub version: i16,
    pub records_per_request: u64,
    pub bytes_per_request: u64,
    pub acks: i16,
    pub in_flight: usize,
    /// Open loop: one request every `interval`; None sends as fast as answers allow.
    pub interval: Option<Duration>,
    /// Stop after this many requests (None: until `Totals::stop_producing`).
    pub requests: Option<u64>,
    /// End-to-end mode: where each request's batches get their send-time stamp.
    pub stamps: Option<Vec<StampSpot>>,
}

/// Counters and latencies of every connection.
pub struct Totals {
    /// Producers send no more requests (those in flight are still answered).
    pub stop_producing: AtomicBool,
    /// Consumers stop.
    pub stop: AtomicBool,
    pub acked_records: AtomicU64,
    pub acked_bytes: AtomicU64,
    pub failed_requests: AtomicU64,
    /// Microseconds, from due time to answer, one count per record.
    pub latency_us: Mutex<Histogram<u64>>,
    /// What consumers read (consume and end-to-end modes).
    pub consumed_records: AtomicU64,
    pub consumed_bytes: AtomicU64,
    /// Consume mode: microseconds from asking to answer, one count per record. End-to-end
    /// mode: from a batch's send-time stamp to the moment a consumer holds it.
    pub consumed_latency_us: Mutex<Histogram<u64>>,
    pub first_failure: Mutex<Option<String>>,
}

impl Totals {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            stop_producing: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            acked_records: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            failed_requests: AtomicU64::new(0),
            latency_us: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
            consumed_records: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            consumed_latency_us: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
            first_failure: Mutex::new(None),
        })
    }

    pub fn fail(&self, why: String) {
        self.failed_requests.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_failure.lock().expect("failure lock");
        first.get_or_insert(why);
    }
}

fn header(plan: &ConnectionPlan, correlation_id: i32) -> anyhow::Result<BytesMut> {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(plan.version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("chronik-load")));
    let mut frame = BytesMut::with_capacity(64 + plan.body.len());
    frame.extend_from_slice(&[0; 4]);
    header.encode(
        &mut frame,
        ApiKey::Produce.request_header_version(plan.version),
    )?;
    Ok(frame)
}

/// Starts the connection's threads; the returned handle finishes when it has sent its
/// requests (or was stopped) and every answer is in.
pub fn start(plan: ConnectionPlan, totals: Arc<Totals>) -> anyhow::Result<JoinHandle<()>> {
    let stream = TcpStream::connect(plan.addr)?;
    stream.set_nodelay(true)?;
    let reading = stream.try_clone()?;
    // A request goes out only with a place, of which there are `in_flight`; the reader
    // gives a place back once the request's answer is in. Each request sent and not yet
    // answered waits in `sent` as (correlation id, due time), which the places bound.
    let in_flight = plan.in_flight.max(1);
    let (places, free_places) = sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        places.send(()).expect("room for every place");
    }
    let (sent, answered) = channel::<(i32, Instant)>();
    let reader = (plan.acks != 0).then(|| {
        let (totals, plan_version) = (totals.clone(), plan.version);
        let (records, bytes) = (plan.records_per_request, plan.bytes_per_request);
        std::thread::spawn(move || {
            read_answers(
                reading,
                answered,
                places,
                plan_version,
                records,
                bytes,
                &totals,
            )
        })
    });
    Ok(std::thread::spawn(move || {
        let slots = Slots { free_places, sent };
        if let Err(error) = send_requests(stream, &plan, &slots, &totals) {
            totals.fail(format!("sending: {error}"));
        }
        drop(slots);
        if let Some(reader) = reader {
            let _ = reader.join();
        }
    }))
}

/// The writer's side of the in-flight bound.
struct Slots {
    /// One `()` for each request that may still go out unanswered.
    free_places: Receiver<()>,
    /// Requests sent, oldest first, for the reader to match answers against.
    sent: Sender<(i32, Instant)>,
}

fn send_requests(
    mut stream: TcpStream,
    plan: &ConnectionPlan,
    slots: &Slots,
    totals: &Totals,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut sent = 0u64;
    while !totals.stop_producing.load(Ordering::Relaxed) && plan.requests.is_none_or(|n| sent < n) {
        let due = match plan.interval {
            Some(interval) => {
                let due = started + interval.mul_f64(sent as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                Some(due)
            }
            None => None,
        };
        if plan.acks != 0 {
            // Blocks while `in_flight` requests wait for their answers.
            slots.free_places.recv()?;
        }
        let due = due.unwrap_or_else(Instant::now);
        let correlation_id = (sent % i32::MAX as u64) as i32;
        let mut frame = header(plan, correlation_id)?;
        let body_at = frame.len();
        frame.extend_from_slice(&plan.body);
        if let Some(spots) = &plan.stamps {
            stamp::stamp(&mut frame, body_at, spots, stamp::now_micros());
        }
        let length = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&length.to_be_bytes());
        if plan.acks != 0 {
            slots.sent.send((correlation_id, due))?;
        }
        stream.write_all(&frame)?;
        if plan.acks == 0 {
            totals
                .acked_records
                .fetch_add(plan.records_per_request, Ordering::Relaxed);
            totals
                .acked_bytes
                .fetch_add(plan.bytes_per_request, Ordering::Relaxed);
        }
        sent += 1;
    }
    Ok(())
}

/// One length-prefixed answer frame (the correlation id and what follows).
pub fn read_frame(stream: &mut TcpStream) -> anyhow::Result<Bytes> {
    read_frame_into(stream, &mut BytesMut::new())
}

/// As `read_frame`, cut from `buffer`: once the previous answer is dropped, the next one
/// reuses its memory, so large Fetch answers do not fault in fresh pages every time (that
/// made the generator, not the broker, the limit when consuming from the broker's cache).
pub fn read_frame_into(stream: &mut TcpStream, buffer: &mut BytesMut) -> anyhow::Result<Bytes> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length)?;
    let length = usize::try_from(i32::from_be_bytes(length))?;
    anyhow::ensure!(length <= RESPONSE_BYTES_MAX, "a {length}-byte answer");
    buffer.clear();
    buffer.resize(length, 0);
    stream.read_exact(&mut buffer[..])?;
    Ok(buffer.split().freeze())
}

/// The first error a Produce answer holds, if any.
fn answer_error(mut payload: Bytes, version: i16, correlation_id: i32) -> Option<String> {
    let header = match ResponseHeader::decode(
        &mut payload,
        ApiKey::Produce.response_header_version(version),
    ) {
        Ok(header) => header,
        Err(error) => return Some(format!("undecodable answer header: {error}")),
    };
    if header.correlation_id != correlation_id {
        return Some(format!(
            "answer {} where {correlation_id} was due",
            header.correlation_id
        ));
    }
    let response = match ProduceResponse::decode(&mut payload, version) {
        Ok(response) => response,
        Err(error) => return Some(format!("undecodable answer: {error}")),
    };
    let code = response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .map(|p| p.error_code)
        .find(|&code| code != 0)?;
    Some(format!("error code {code}"))
}

fn read_answers(
    mut stream: TcpStream,
    answered: Receiver<(i32, Instant)>,
    places: SyncSender<()>,
    version: i16,
    records: u64,
    bytes: u64,
    totals: &Totals,
) {
    while let Ok((correlation_id, due)) = answered.recv() {
        let payload = match read_frame(&mut stream) {
            Ok(payload) => payload,
            Err(error) => {
                totals.fail(format!("reading: {error}"));
                return;
            }
        };
        let latency_us = due.elapsed().as_micros().max(1) as u64;
        // The writer may have stopped already; then nobody needs the place.
        let _ = places.send(());
        if payload.remaining() < 4 {
            totals.fail("a short answer".into());
            continue;
        }
        if let Some(why) = answer_error(payload, version, correlation_id) {
            totals.fail(why);
            continue;
        }
        // Counted under the histogram's lock, so that the end of a warm-up (which takes it)
        // sees counts and percentiles agree.
        let mut histogram = totals.latency_us.lock().expect("histogram lock");
        totals.acked_records.fetch_add(records, Ordering::Relaxed);
        totals.acked_bytes.fetch_add(bytes, Ordering::Relaxed);
        let _ = histogram.record_n(latency_us, records);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ResponseHeader;
    use std::net::TcpListener;

    /// The answer to the Produce request whose correlation id is `correlation_id`.
    fn answer(correlation_id: i32, version: i16) -> Vec<u8> {
        let mut body = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut body, ApiKey::Produce.response_header_version(version))
            .expect("header encodes");
        ProduceResponse::default()
            .encode(&mut body, version)
            .expect("answer encodes");
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        frame
    }

    /// A server that answers the oldest request only when no further one arrives within a
    /// pause: returns the most requests it ever saw unanswered.
    fn count_unanswered(listener: TcpListener, version: i16) -> usize {
        let (mut stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let (mut unanswered, mut most) = (std::collections::VecDeque::new(), 0);
        loop {
            let mut length = [0u8; 4];
            match stream.read_exact(&mut length) {
                Ok(()) => {
                    let mut frame = vec![0u8; i32::from_be_bytes(length) as usize];
                    stream.read_exact(&mut frame).expect("frame");
                    // api key, api version, then the correlation id.
                    let id = i32::from_be_bytes(frame[4..8].try_into().expect("4 bytes"));
                    unanswered.push_back(id);
                    most = most.max(unanswered.len());
                    continue;
                }
                // Nothing more came within the pause: the client waits for an answer.
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return most,
            }
            let Some(id) = unanswered.pop_front() else {
                return most;
            };
            stream.write_all(&answer(id, version)).expect("answer");
        }
    }

    #[test]
    fn a_connection_keeps_exactly_in_flight_requests_unanswered() {
        for in_flight in [1, 3] {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("address");
            let version = 9;
            let server = std::thread::spawn(move || count_unanswered(listener, version));
            let plan = ConnectionPlan {
                addr,
                body: Bytes::from_static(b"not a real produce body"),
                version,
                records_per_request: 1,
                bytes_per_request: 1,
                acks: -1,
                in_flight,
                interval: None,
                requests: Some(8),
                stamps: None,
            };
            let totals = Arc::new(Totals::new().expect("totals"));
            start(plan, totals.clone())
                .expect("connects")
                .join()
                .expect("joins");
            assert_eq!(totals.failed_requests.load(Ordering::Relaxed), 0);
            assert_eq!(totals.acked_records.load(Ordering::Relaxed), 8);
            assert_eq!(
                server.join().expect("server"),
                in_flight,
                "in flight {in_flight}"
            );
        }
    }
}
