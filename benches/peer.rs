//! Replication between nodes, without the network:
//! - `peer_frame_codec`: the peer transport's CPU per frame. Encode is raft-rs `Message` →
//!   `WireMessage::from_raft` → `Envelope` (grouped per Raft group, as `take_envelope` in
//!   src/runtime/peer.rs) → prost → `frame::encode` (length, CRC, kind); decode is the
//!   receiving side: `FrameDecoder::extend`/`next_frame` → prost → `into_raft`. Two frames:
//!   one AppendEntries of 16 entries of 16 KiB (16 KiB batches of 1 KiB records), and the
//!   heartbeats of 1000 groups in one envelope.
//! - `propose_to_commit_3_replicas`: three in-process replicas (real `Shard`s, each on its own
//!   in-memory `SimDisk`) of one partition. The leader takes K 16 KiB batches with acks=all;
//!   then every replica runs a pump pass and what they sent is delivered to the others, in
//!   rounds, until the leader has acknowledged all K. `codec` carries the messages through
//!   the frame codec above (as `sim::cluster` does), `direct` hands them over as they are.
//!   What is left is the CPU of replicating a batch across a quorum, with disk and network
//!   taken out (no fsync, no TCP, no wake-ups: all three run on this thread).
//!
//! Run: `cargo bench --bench peer`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chronik_shards::partition::batch::BatchHeader;
use chronik_shards::partition::offsets::RetentionLimits;
use chronik_shards::runtime::shard::{
    AckWhen, CommitReceiver, GroupSpec, Shard, ShardConfig, ShardRef,
};
use chronik_shards::sim::{run_pass, SimDisk};
use chronik_shards::transport::frame::{self, FrameDecoder, FrameKind};
use chronik_shards::transport::wire::WireMessage;
use chronik_shards::transport::{Envelope, GroupMessages};
use chronik_shards::wal::WalConfig;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use futures::executor::block_on;
use prost::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};

const GROUP: u64 = 1;
const REPLICAS: u64 = 3;
/// A Kafka batch of 16 records of 1 KiB.
const BATCH_BYTES: usize = 16 << 10;
const APPEND_ENTRIES: usize = 16;
const HEARTBEAT_GROUPS: u64 = 1000;
/// Rounds (a pass on every replica, then delivery) for proposals to commit; about 3 are
/// needed (leader appends, followers persist and answer, leader commits and applies).
const COMMIT_ROUNDS_MAX: usize = 64;
/// Rounds for the first leader to be elected and catch up; a tick every `TICK_EVERY_ROUNDS`.
const ELECTION_ROUNDS_MAX: usize = 1_000;
const TICK_EVERY_ROUNDS: usize = 4;

// ---- the peer frame codec ----

fn append_entries() -> Message {
    let entries: Vec<Entry> = (0..APPEND_ENTRIES as u64)
        .map(|i| Entry {
            term: 7,
            index: 1001 + i,
            data: Bytes::from(vec![(i % 251) as u8; BATCH_BYTES]),
            ..Entry::default()
        })
        .collect();
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgAppend);
    message.to = 2;
    message.from = 1;
    message.term = 7;
    message.log_term = 7;
    message.index = 1000;
    message.commit = 990;
    message.set_entries(entries.into());
    message
}

/// One heartbeat to node 2 for each of `groups` groups, as a leader of them all sends.
fn heartbeats(groups: u64) -> Vec<(u64, Message)> {
    (0..groups)
        .map(|group_id| {
            let mut message = Message::default();
            message.set_msg_type(MessageType::MsgHeartbeat);
            message.to = 2;
            message.from = 1;
            message.term = 7;
            message.commit = 1_000 + group_id;
            (group_id, message)
        })
        .collect()
}

/// Appends one frame of `messages` from `from_node` to `out`, grouped per Raft group as the
/// peer link does (its `out` buffer is reused from frame to frame).
fn encode_frame(out: &mut BytesMut, from_node: u64, messages: Vec<(u64, Message)>) {
    let mut groups: Vec<GroupMessages> = Vec::new();
    for (group_id, message) in messages {
        let wire = WireMessage::from_raft(message);
        match groups.last_mut() {
            Some(last) if last.group_id == group_id => last.messages.push(wire),
            _ => groups.push(GroupMessages {
                group_id,
                messages: vec![wire],
            }),
        }
    }
    let envelope = Envelope { from_node, groups };
    frame::encode(out, FrameKind::Raft, &envelope.encode_to_vec()).expect("frame fits");
}

/// The (group, message) pairs of one frame, as the receiving node decodes them.
fn decode_frame(bytes: &[u8]) -> (u64, Vec<(u64, Message)>) {
    let mut decoder = FrameDecoder::default();
    decoder.extend(bytes);
    let frame = decoder
        .next_frame()
        .expect("intact")
        .expect("a whole frame");
    assert_eq!(frame.kind, FrameKind::Raft);
    let envelope = Envelope::decode(frame.payload).expect("the envelope decodes");
    let mut messages = Vec::new();
    for group in envelope.groups {
        for wire in group.messages {
            let message = wire.into_raft().expect("a peer message");
            messages.push((group.group_id, message));
        }
    }
    (envelope.from_node, messages)
}

fn frame_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("peer_frame_codec");
    let frames = [
        ("append_16x16KiB", vec![(GROUP, append_entries())]),
        ("heartbeats_1000_groups", heartbeats(HEARTBEAT_GROUPS)),
    ];
    for (name, messages) in frames {
        let mut out = BytesMut::new();
        encode_frame(&mut out, 1, messages.clone());
        let encoded = out.split().freeze();
        assert_eq!(decode_frame(&encoded), (1, messages.clone()), "round trip");
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter_batched(
                || messages.clone(),
                |messages| {
                    out.clear();
                    encode_frame(&mut out, 1, messages);
                    out.len()
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| decode_frame(black_box(&encoded)))
        });
    }
    group.finish();
}

// ---- propose to commit on three replicas ----

/// What a replica's shard sent, waiting for delivery.
type Outbox = Rc<RefCell<Vec<(u64, Message)>>>;

#[derive(Clone, Copy)]
enum Delivery {
    /// Messages handed to the target shard as they are.
    Direct,
    /// Through the peer frame codec: one frame per (sender, target) and round.
    Codec,
}

impl Delivery {
    fn name(self) -> &'static str {
        match self {
            Delivery::Direct => "direct",
            Delivery::Codec => "codec",
        }
    }
}

fn replica_config(replica_id: u64) -> ShardConfig {
    ShardConfig {
        shard_id: 0,
        replica_id,
        wal: WalConfig {
            dir: "/bench/wal".into(),
            segment_bytes_max: 4 << 20,
            overlap_min_bytes: chronik_shards::wal::OVERLAP_MIN_BYTES_DEFAULT,
        },
        tick_interval_ms: 10,
        entry_cache_bytes_max: 4 << 20,
        entry_cache_shard_bytes_max: 64 << 20,
        entry_cache_unread_ticks: 10,
        proposal_waiters_max: 100_000,
        fetch_waiters_max: 10,
        uncommitted_bytes_max: 256 << 20,
        deterministic_elections: false,
    }
}

/// One replica of the partition (voters 1, 2, 3: replica 1 is the preferred leader and
/// campaigns at once). It keeps only its newest 8 MiB, so memory stays bounded however long
/// criterion runs.
fn open_replica(replica_id: u64, outbox: Outbox) -> ShardRef<SimDisk> {
    let config = replica_config(replica_id);
    let (shard, _doorbell) = block_on(Shard::open_on(SimDisk::default(), config)).expect("opens");
    let spec = GroupSpec::Partition {
        group_id: GROUP,
        retention: RetentionLimits {
            retention_ms: -1,
            retention_bytes: 8 << 20,
        },
    };
    let voters: Vec<u64> = (1..=REPLICAS).collect();
    let mut replica = shard.borrow_mut();
    replica.set_message_sink(Box::new(move |messages| {
        outbox.borrow_mut().extend(messages)
    }));
    replica.add_group_with_voters(spec, voters).expect("group");
    replica.finish_group_install();
    drop(replica);
    shard
}

struct Replicas {
    /// Replica id `i + 1` at index `i`.
    shards: Vec<ShardRef<SimDisk>>,
    outboxes: Vec<Outbox>,
    delivery: Delivery,
}

impl Replicas {
    fn start(delivery: Delivery) -> Replicas {
        let outboxes: Vec<Outbox> = (0..REPLICAS).map(|_| Outbox::default()).collect();
        let shards = (1..=REPLICAS)
            .zip(&outboxes)
            .map(|(replica_id, outbox)| open_replica(replica_id, outbox.clone()))
            .collect();
        Replicas {
            shards,
            outboxes,
            delivery,
        }
    }

    /// A pump pass on every replica, then everything they sent is delivered.
    fn round(&self) {
        for shard in &self.shards {
            block_on(run_pass(shard)).expect("the simulated disk does not fail");
        }
        for (index, outbox) in self.outboxes.iter().enumerate() {
            let messages = std::mem::take(&mut *outbox.borrow_mut());
            if !messages.is_empty() {
                self.deliver(index as u64 + 1, messages);
            }
        }
    }

    fn deliver(&self, from: u64, messages: Vec<(u64, Message)>) {
        let mut per_target: BTreeMap<u64, Vec<(u64, Message)>> = BTreeMap::new();
        for (group_id, message) in messages {
            assert_ne!(message.to, from, "a replica never sends to itself");
            per_target
                .entry(message.to)
                .or_default()
                .push((group_id, message));
        }
        for (to, messages) in per_target {
            let messages = match self.delivery {
                Delivery::Direct => messages,
                Delivery::Codec => {
                    let mut frame = BytesMut::new();
                    encode_frame(&mut frame, from, messages);
                    let (sender, messages) = decode_frame(&frame);
                    assert_eq!(sender, from);
                    messages
                }
            };
            let mut target = self.shards[(to - 1) as usize].borrow_mut();
            for (group_id, message) in messages {
                target.step(group_id, message);
            }
        }
    }

    /// Runs rounds (ticking now and then) until a replica leads and has applied its log;
    /// returns its index.
    fn elect(&self) -> usize {
        for round in 0..ELECTION_ROUNDS_MAX {
            if round % TICK_EVERY_ROUNDS == TICK_EVERY_ROUNDS - 1 {
                for shard in &self.shards {
                    shard.borrow_mut().tick();
                }
            }
            self.round();
            let leader = self
                .shards
                .iter()
                .position(|s| s.borrow().is_caught_up_leader(GROUP));
            if let Some(leader) = leader {
                return leader;
            }
        }
        panic!("no leader after {ELECTION_ROUNDS_MAX} rounds");
    }

    /// Rounds until every receiver has answered with success.
    fn commit(&self, mut pending: Vec<CommitReceiver>) {
        for _ in 0..COMMIT_ROUNDS_MAX {
            self.round();
            pending.retain_mut(|receiver| match receiver.try_recv() {
                Ok(None) => true,
                Ok(Some(Ok(_))) => false,
                Ok(Some(Err(error))) => panic!("proposal failed: {error}"),
                Err(_) => panic!("proposal dropped"),
            });
            if pending.is_empty() {
                return;
            }
        }
        panic!("not committed within {COMMIT_ROUNDS_MAX} rounds");
    }

    fn apply_retention(&self) {
        for shard in &self.shards {
            shard.borrow_mut().apply_retention(0);
        }
    }
}

/// A 16 KiB Kafka batch with one record and no producer id (no sequence checks).
fn kafka_batch() -> Vec<u8> {
    let mut batch = vec![0u8; BATCH_BYTES];
    let length = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    batch[16] = 2;
    batch[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // no producer id
    batch[57..61].copy_from_slice(&1i32.to_be_bytes());
    batch
}

fn propose_to_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("propose_to_commit_3_replicas");
    // 100 samples of the 16-batch case (about 1 ms each) would need more than 3 s.
    group.sample_size(50);
    let batch = kafka_batch();
    let header = BatchHeader::parse(&batch).expect("header");
    for delivery in [Delivery::Direct, Delivery::Codec] {
        let replicas = Replicas::start(delivery);
        let leader = replicas.shards[replicas.elect()].clone();
        for batches in [1usize, 16] {
            group.throughput(Throughput::Bytes((batches * batch.len()) as u64));
            let id = BenchmarkId::new(delivery.name(), batches);
            group.bench_function(id, |b| {
                b.iter(|| {
                    let pending: Vec<CommitReceiver> = (0..batches)
                        .map(|_| {
                            let proposed = leader.borrow_mut().propose_batch(
                                GROUP,
                                &batch,
                                &header,
                                AckWhen::Committed,
                            );
                            let (_, receiver) = proposed.expect("leader");
                            receiver.expect("acks=all waits")
                        })
                        .collect();
                    replicas.commit(pending);
                    replicas.apply_retention();
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = frame_codec, propose_to_commit
}
criterion_main!(benches);
