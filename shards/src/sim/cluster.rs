//! A whole cluster in one process, from a seed: three nodes, each a real shard (pump passes,
//! Raft groups, WAL) on its own `SimDisk`, joined by a simulated network that carries the
//! shards' outgoing messages through the real peer codec (envelope, frame, CRC) and delays,
//! reorders, drops and duplicates them, and cuts and heals links. Nodes lose power (their
//! unsynced writes land whole, torn or not at all) and come back from what their disk kept.
//!
//! Checked after every step:
//! - no two replicas lead one group in the same term, and every acknowledged batch was
//!   acknowledged by the only leader of its term;
//! - the committed prefixes of all replicas agree byte for byte (a follower never serves
//!   anything that is not, or will not be, the leader's committed log);
//!
//! and at the end, once the network is healed and the cluster settled: every acknowledged
//! batch is at its offset on every replica, and all replicas hold identical logs.
//! `CHRONIK_SEED=<n>` replays one seed; `CHRONIK_CLUSTER_SEEDS=<n>` runs seeds 1..=n (300 by
//! default, about 5 s); `CHRONIK_SIM_TRACE=1` prints every delivery, crash and boot.
//!
//! The second group keeps little (retention), so replicas that were away come back behind
//! their leader's log start and install snapshots.
//!
//! Its first runs found a raft-rs batching bug that made a follower acknowledge an entry it
//! did not hold (see `group::config`), producers left waiting forever on a deposed leader
//! (`RaftGroup::fail_waiters_if_not_leader`), a snapshot counted applied before it was
//! durable (`PendingPersist::snapshot_index`), and a lost snapshot pausing its follower
//! forever (`RaftGroup::retry_lost_snapshots`).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use raft::eraftpb::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{run_pass, PumpMove, SimDisk, SimPump};
use crate::partition::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::partition::offsets::RetentionLimits;
use crate::runtime::shard::{
    load_pieces, AckWhen, CommitReceiver, GroupSpec, Shard, ShardConfig, ShardRef,
};
use crate::runtime::tests::{batch, for_each_seed};
use crate::transport::frame::{self, FrameDecoder, FrameKind};
use crate::transport::wire::WireMessage;
use crate::transport::{Envelope, GroupMessages};
use crate::wal::WalConfig;
use std::sync::atomic::{AtomicUsize, Ordering};

const NODES: u64 = 3;
const GROUPS: [u64; 2] = [11, 12];
const STEPS: usize = 1_500;
/// Retention of the second group, small enough that compaction runs often.
const RETENTION_BYTES: i64 = 2_000;
/// Steps at the end with the network healed and every node up, for the cluster to settle.
const SETTLE_STEPS: usize = 3_000;

fn trace() -> bool {
    std::env::var_os("CHRONIK_SIM_TRACE").is_some()
}

/// A message on the simulated wire: which link, and the frame bytes as the codec made them.
struct Packet {
    from: u64,
    to: u64,
    frame: Bytes,
}

#[derive(Default)]
struct Network {
    in_flight: VecDeque<Packet>,
    /// Links cut in both directions, as (lower id, higher id).
    cut: BTreeSet<(u64, u64)>,
}

impl Network {
    fn link(a: u64, b: u64) -> (u64, u64) {
        (a.min(b), a.max(b))
    }

    /// Encodes a shard's outgoing messages the way the peer transport does: one envelope
    /// per destination node, framed with length and CRC.
    fn send(&mut self, from: u64, messages: Vec<(u64, Message)>) {
        let mut per_node: BTreeMap<u64, Vec<GroupMessages>> = BTreeMap::new();
        for (group_id, message) in messages {
            let groups = per_node.entry(message.to).or_default();
            groups.push(GroupMessages {
                group_id,
                messages: vec![WireMessage::from_raft(message)],
            });
        }
        for (to, groups) in per_node {
            let envelope = Envelope {
                from_node: from,
                groups,
            };
            let mut out = BytesMut::new();
            frame::encode(&mut out, FrameKind::Raft, &envelope.encode_to_vec())
                .expect("frames fit");
            self.in_flight.push_back(Packet {
                from,
                to,
                frame: out.freeze(),
            });
        }
    }
}

/// Decodes a delivered frame back into (group, message) pairs, as the receiving node does.
fn receive(packet: &Packet) -> Vec<(u64, Message)> {
    let mut decoder = FrameDecoder::default();
    decoder.extend(&packet.frame);
    let frame = decoder
        .next_frame()
        .expect("frames arrive intact")
        .expect("a whole frame");
    let envelope = Envelope::decode(frame.payload).expect("the envelope decodes");
    assert_eq!(envelope.from_node, packet.from);
    let mut messages = Vec::new();
    for group in envelope.groups {
        for wire in group.messages {
            if let Some(message) = wire.into_raft() {
                assert_eq!(message.to, packet.to, "addressed to the receiving node");
                messages.push((group.group_id, message));
            }
        }
    }
    messages
}

/// What a node's shard sent, waiting to be put on the network.
type Outbox = Rc<RefCell<Vec<(u64, Message)>>>;

/// How often a node's pump began a pass beside another, and ended one while the next one's
/// commit was pending (all seeds together; the test asserts both happened).
static PASSES_BEGUN_BESIDE_ANOTHER: AtomicUsize = AtomicUsize::new(0);
static PASSES_ENDED_BEFORE_THE_NEXT_LANDED: AtomicUsize = AtomicUsize::new(0);

struct Node {
    id: u64,
    disk: SimDisk,
    /// None while the node is down.
    shard: Option<ShardRef<SimDisk>>,
    /// Its pump's passes in flight (gone with the node).
    pump: SimPump,
}

/// An acknowledged batch: where it must be, and who acknowledged it in which term.
struct Acknowledged {
    group: u64,
    offset: i64,
    payload: Vec<u8>,
}

struct Pending {
    node: u64,
    group: u64,
    term: u64,
    offset: i64,
    payload: Vec<u8>,
    receiver: CommitReceiver,
}

struct Cluster {
    nodes: Vec<Node>,
    network: Rc<RefCell<Network>>,
    outboxes: Vec<Outbox>,
    pending: Vec<Pending>,
    acknowledged: Vec<Acknowledged>,
    /// (group, term) -> the node that led it.
    leaders: BTreeMap<(u64, u64), u64>,
}

fn shard_config(node: u64) -> ShardConfig {
    ShardConfig {
        shard_id: 0,
        replica_id: node,
        wal: WalConfig {
            dir: "/sim/wal".into(),
            segment_bytes_max: 256 << 10,
            // Small, so commits are often padded and a second pass often runs beside one.
            overlap_min_bytes: 2048,
        },
        tick_interval_ms: 10,
        entry_cache_bytes_max: 16 << 10,
        entry_cache_shard_bytes_max: 64 << 20,
        entry_cache_unread_ticks: 10,
        proposal_waiters_max: 10_000,
        fetch_waiters_max: 10,
        uncommitted_bytes_max: 16 << 20,
        deterministic_elections: true,
    }
}

impl Cluster {
    async fn start() -> Cluster {
        let mut cluster = Cluster {
            nodes: (1..=NODES)
                .map(|id| Node {
                    id,
                    disk: SimDisk::default(),
                    shard: None,
                    pump: SimPump::default(),
                })
                .collect(),
            network: Rc::default(),
            outboxes: (0..NODES).map(|_| Rc::default()).collect(),
            pending: Vec::new(),
            acknowledged: Vec::new(),
            leaders: BTreeMap::new(),
        };
        for index in 0..NODES as usize {
            assert!(cluster.boot(index).await, "a fresh node boots");
        }
        cluster
    }

    /// Opens node `index` from its disk, with every group; false if the power went.
    async fn boot(&mut self, index: usize) -> bool {
        let node = &mut self.nodes[index];
        let Ok((shard, _doorbell)) = Shard::open_on(node.disk.clone(), shard_config(node.id)).await
        else {
            return false;
        };
        let outbox = self.outboxes[index].clone();
        shard
            .borrow_mut()
            .set_message_sink(Box::new(move |messages| {
                outbox.borrow_mut().extend(messages)
            }));
        for (position, &group_id) in GROUPS.iter().enumerate() {
            // Preferred leaders differ per group: voters rotated.
            let mut voters: Vec<u64> = (1..=NODES).collect();
            voters.rotate_left(position % NODES as usize);
            // The second group keeps little (retention), so a replica that was away comes back
            // behind its leader's log start and must install a snapshot.
            let retention_bytes = if position == 0 { -1 } else { RETENTION_BYTES };
            let spec = GroupSpec::Partition {
                group_id,
                retention: RetentionLimits {
                    retention_ms: -1,
                    retention_bytes,
                },
            };
            shard
                .borrow_mut()
                .add_group_with_voters(spec, voters)
                .expect("group starts");
        }
        shard.borrow_mut().mark_groups_installed();
        if trace() {
            for &group in &GROUPS {
                eprintln!(
                    "boot node {} group {group}: {:?}",
                    node.id,
                    shard.borrow().debug_log_state(group)
                );
            }
        }
        node.shard = Some(shard);
        true
    }

    fn crash(&mut self, index: usize, rng: &mut StdRng) {
        let node = &mut self.nodes[index];
        node.pump = SimPump::default();
        if let Some(shard) = node.shard.take() {
            if trace() {
                for &group in &GROUPS {
                    let state = shard.borrow();
                    let status = state.group_status(group);
                    eprintln!(
                        "crash node {} group {group}: {status:?} last {:?}",
                        node.id,
                        state.debug_log_state(group)
                    );
                }
            }
            node.disk.crash_after(0);
            node.disk.restart(rng);
            self.outboxes[index].borrow_mut().clear();
            let id = node.id;
            self.pending.retain(|p| p.node != id);
        }
    }

    /// Moves what the shards sent onto the network.
    fn flush_outboxes(&mut self) {
        for (index, outbox) in self.outboxes.iter().enumerate() {
            let messages = std::mem::take(&mut *outbox.borrow_mut());
            if !messages.is_empty() {
                self.network
                    .borrow_mut()
                    .send(self.nodes[index].id, messages);
            }
        }
    }

    /// Delivers (or loses) one packet, picked at random among the oldest few (reordering).
    fn deliver_one(&mut self, rng: &mut StdRng, lossy: bool) {
        let packet = {
            let mut network = self.network.borrow_mut();
            if network.in_flight.is_empty() {
                return;
            }
            let window = network.in_flight.len().min(if lossy { 8 } else { 1 });
            let position = rng.random_range(0..window);
            let packet = network.in_flight.remove(position).expect("in range");
            if network.cut.contains(&Network::link(packet.from, packet.to)) {
                return;
            }
            if lossy && rng.random_bool(0.05) {
                return;
            }
            if lossy && rng.random_bool(0.03) {
                network.in_flight.push_back(Packet {
                    from: packet.from,
                    to: packet.to,
                    frame: packet.frame.clone(),
                });
            }
            packet
        };
        let Some(shard) = &self.nodes[(packet.to - 1) as usize].shard else {
            return;
        };
        for (group_id, message) in receive(&packet) {
            if trace() {
                eprintln!(
                    "deliver group {group_id} {:?} {}->{} term {} index {} log_term {} commit {} entries {:?} reject {} ctx {}",
                    message.get_msg_type(),
                    message.from,
                    message.to,
                    message.term,
                    message.index,
                    message.log_term,
                    message.commit,
                    message.entries.iter().map(|e| (e.index, e.term, e.data.len())).collect::<Vec<_>>(),
                    message.reject,
                    message.context.len()
                );
            }
            shard.borrow_mut().step(group_id, message);
        }
    }

    fn propose(&mut self, index: usize, rng: &mut StdRng) {
        let node = &self.nodes[index];
        let Some(shard) = &node.shard else {
            return;
        };
        let group = GROUPS[rng.random_range(0..GROUPS.len())];
        let payload: Vec<u8> = (0..rng.random_range(1..600))
            .map(|_| rng.random())
            .collect();
        let data = batch(&payload);
        let header = BatchHeader::parse(&data).expect("header");
        let term = shard.borrow().group_status(group).map_or(0, |s| s.term);
        let proposed = shard
            .borrow_mut()
            .propose_batch(group, &data, &header, AckWhen::Committed);
        if let Ok((offset, Some(receiver))) = proposed {
            self.pending.push(Pending {
                node: node.id,
                group,
                term,
                offset,
                payload,
                receiver,
            });
        }
    }

    /// Acknowledgements that arrived; each must come from the only leader of its term.
    fn collect_acknowledgements(&mut self, at: &str) {
        let mut still = Vec::new();
        for mut pending in self.pending.drain(..) {
            match pending.receiver.try_recv() {
                Ok(Some(Ok(_))) => {
                    let leader = self.leaders.get(&(pending.group, pending.term));
                    assert_eq!(
                        leader,
                        Some(&pending.node),
                        "{at}: group {} term {} acknowledged by node {} but led by {leader:?}",
                        pending.group,
                        pending.term,
                        pending.node
                    );
                    self.acknowledged.push(Acknowledged {
                        group: pending.group,
                        offset: pending.offset,
                        payload: pending.payload,
                    });
                }
                Ok(None) => still.push(pending),
                Ok(Some(Err(_))) | Err(_) => {}
            }
        }
        self.pending = still;
    }

    /// One leader per group and term, ever.
    fn check_leaders(&mut self, at: &str) {
        for node in &self.nodes {
            let Some(shard) = &node.shard else { continue };
            for &group in &GROUPS {
                let Some(status) = shard.borrow().group_status(group) else {
                    continue;
                };
                let leads =
                    status.leader == Some(node.id) && shard.borrow().led_groups().contains(&group);
                if leads {
                    let previous = self.leaders.insert((group, status.term), node.id);
                    assert!(
                        previous.is_none_or(|p| p == node.id),
                        "{at}: group {group} term {}: nodes {previous:?} and {} both lead",
                        status.term,
                        node.id
                    );
                }
            }
        }
    }

    /// The committed batches of `group` on node `index` (what it would serve), by offset.
    async fn committed(&self, index: usize, group: u64) -> Option<BTreeMap<i64, Bytes>> {
        let shard = self.nodes[index].shard.as_ref()?;
        let plan = {
            let state = shard.borrow();
            let is_leader = state.led_groups().contains(&group);
            let log_start = state.offsets(group).ok()?.log_start_offset();
            state
                .plan_read_from(group, log_start, usize::MAX, true, !is_leader)
                .ok()?
        };
        let batches = load_pieces(plan.pieces)
            .await
            .expect("committed data loads");
        Some(
            batches
                .into_iter()
                .map(|b| (BatchHeader::parse(&b).expect("header").base_offset, b))
                .collect(),
        )
    }

    /// Committed prefixes agree: where two replicas both hold an offset as committed, they
    /// hold the same batch.
    async fn check_committed_prefixes(&self, at: &str) {
        for &group in &GROUPS {
            let mut reference: BTreeMap<i64, Bytes> = BTreeMap::new();
            for index in 0..self.nodes.len() {
                let Some(committed) = self.committed(index, group).await else {
                    continue;
                };
                for (offset, batch) in committed {
                    if let Some(existing) = reference.get(&offset) {
                        assert_eq!(
                            existing[BATCH_HEADER_BYTES..],
                            batch[BATCH_HEADER_BYTES..],
                            "{at}: group {group} offset {offset} differs on node {}",
                            index + 1
                        );
                    } else {
                        reference.insert(offset, batch);
                    }
                }
            }
        }
    }

    /// Moves node `index`'s pump on; a power cut there takes the node down. When `busy`, a
    /// few moves of its pump (begin a pass, land a commit, end the oldest pass: see
    /// `SimPump::step`), with packets, proposals and other nodes' steps landing between
    /// them; otherwise (settling) it finishes what is in flight and runs one whole pass.
    async fn pass(&mut self, index: usize, rng: &mut StdRng, busy: bool) {
        let Some(shard) = self.nodes[index].shard.clone() else {
            return;
        };
        let pump = &mut self.nodes[index].pump;
        let result = if busy {
            let mut result = Ok(());
            for _ in 0..rng.random_range(1..=3) {
                match pump.step(&shard, rng, Vec::new).await {
                    Ok(PumpMove::Began {
                        beside_another: true,
                    }) => {
                        PASSES_BEGUN_BESIDE_ANOTHER.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(PumpMove::Ended {
                        next_pending: true, ..
                    }) => {
                        PASSES_ENDED_BEFORE_THE_NEXT_LANDED.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        result = Err(error);
                        break;
                    }
                }
            }
            result
        } else {
            match pump.drain(&shard).await {
                Ok(_) => run_pass(&shard).await,
                Err(error) => Err(error),
            }
        };
        if result.is_err() {
            self.crash(index, rng);
            return;
        }
        let refills = shard.borrow_mut().take_refills();
        for refill in refills {
            crate::runtime::shard::run_refill(shard.clone(), refill).await;
        }
    }
}

async fn step(cluster: &mut Cluster, rng: &mut StdRng, at: &str) {
    let index = rng.random_range(0..NODES as usize);
    match rng.random_range(0..100) {
        0..30 => cluster.deliver_one(rng, true),
        30..50 => cluster.pass(index, rng, true).await,
        50..61 => {
            if let Some(shard) = &cluster.nodes[index].shard {
                shard.borrow_mut().tick();
            }
        }
        61..87 => cluster.propose(index, rng),
        87..90 => {
            if let Some(shard) = &cluster.nodes[index].shard {
                shard.borrow_mut().apply_retention(0);
            }
        }
        90..91 => {
            // Power cut: now, or within the next few disk operations.
            if cluster.nodes[index].shard.is_some() {
                let disk = cluster.nodes[index].disk.clone();
                disk.crash_after(rng.random_range(0..4));
                if rng.random_bool(0.5) {
                    cluster.crash(index, rng);
                }
            }
        }
        91..96 => {
            if cluster.nodes[index].shard.is_none() && !cluster.boot(index).await {
                cluster.crash(index, rng);
            }
        }
        96..98 => {
            let other = rng.random_range(1..=NODES);
            let me = cluster.nodes[index].id;
            if other != me {
                cluster
                    .network
                    .borrow_mut()
                    .cut
                    .insert(Network::link(me, other));
            }
        }
        _ => cluster.network.borrow_mut().cut.clear(),
    }
    for index in 0..NODES as usize {
        if cluster.nodes[index].disk.has_crashed() {
            cluster.crash(index, rng);
        }
    }
    cluster.flush_outboxes();
    cluster.check_leaders(at);
    cluster.collect_acknowledgements(at);
}

/// Heals everything and runs the cluster until it is idle: every node up, every message
/// delivered, ticks and passes everywhere.
async fn settle(cluster: &mut Cluster, rng: &mut StdRng, at: &str) {
    cluster.network.borrow_mut().cut.clear();
    for index in 0..NODES as usize {
        cluster.nodes[index].disk.crash_after(u64::MAX);
        if cluster.nodes[index].shard.is_none() {
            assert!(cluster.boot(index).await, "{at}: node {} boots", index + 1);
        }
    }
    let acknowledged_before = cluster.acknowledged.len();
    for round in 0..SETTLE_STEPS {
        // Once healed, the cluster must serve again: a proposal at each node now and then
        // (only leaders accept), all acknowledged by the end.
        if round % 100 == 50 && round < SETTLE_STEPS / 2 {
            for index in 0..NODES as usize {
                cluster.propose(index, rng);
            }
        }
        for index in 0..NODES as usize {
            cluster.pass(index, rng, false).await;
            if round % 4 == 0 {
                if let Some(shard) = &cluster.nodes[index].shard {
                    shard.borrow_mut().tick();
                }
            }
        }
        cluster.flush_outboxes();
        while !cluster.network.borrow().in_flight.is_empty() {
            cluster.deliver_one(rng, false);
        }
        cluster.flush_outboxes();
        cluster.check_leaders(at);
        cluster.collect_acknowledgements(at);
    }
    assert!(
        cluster.acknowledged.len() > acknowledged_before,
        "{at}: the healed cluster acknowledged nothing"
    );
    assert!(
        cluster.pending.is_empty(),
        "{at}: proposals still unanswered"
    );
}

/// After settling: every replica holds every acknowledged batch at its offset (unless its
/// own retention let go of it), and the same log.
async fn check_converged(cluster: &Cluster, at: &str) {
    for &group in &GROUPS {
        let logs: Vec<BTreeMap<i64, Bytes>> = {
            let mut logs = Vec::new();
            for index in 0..NODES as usize {
                let log = cluster.committed(index, group).await;
                logs.push(log.unwrap_or_else(|| panic!("{at}: node {} has no leader", index + 1)));
            }
            logs
        };
        // Replicas apply retention on their own, so their logs start where each let go;
        // from the latest start on they hold the same batches (the bytes were compared by
        // `check_committed_prefixes`).
        let log_start = |log: &BTreeMap<i64, Bytes>| log.keys().next().copied().unwrap_or(0);
        let common_start = logs.iter().map(log_start).max().unwrap_or(0);
        let offsets_from = |log: &BTreeMap<i64, Bytes>| {
            log.range(common_start..)
                .map(|(o, _)| *o)
                .collect::<Vec<_>>()
        };
        if trace() {
            for (index, node) in cluster.nodes.iter().enumerate() {
                let shard = node.shard.as_ref().expect("up");
                let state = shard.borrow();
                let offsets = state
                    .offsets(group)
                    .ok()
                    .map(|o| (o.log_start_offset(), o.high_watermark(), o.log_end_offset()));
                eprintln!(
                    "final node {} group {group}: log {:?} offsets {offsets:?} status {:?} keys {:?}",
                    index + 1,
                    state.debug_log_state(group),
                    state.group_status(group),
                    logs[index].keys().collect::<Vec<_>>()
                );
            }
        }
        for (index, log) in logs.iter().enumerate() {
            assert_eq!(
                offsets_from(log),
                offsets_from(&logs[0]),
                "{at}: group {group}: node {} holds other offsets than node 1",
                index + 1
            );
        }
        for (index, log) in logs.iter().enumerate() {
            let acknowledged = cluster.acknowledged.iter().filter(|a| a.group == group);
            for acknowledged in acknowledged.filter(|a| a.offset >= log_start(log)) {
                let batch = log.get(&acknowledged.offset).unwrap_or_else(|| {
                    panic!(
                        "{at}: group {group}: acknowledged offset {} is missing on node {}",
                        acknowledged.offset,
                        index + 1
                    )
                });
                assert_eq!(
                    &batch[BATCH_HEADER_BYTES..],
                    acknowledged.payload.as_slice(),
                    "{at}: group {group} offset {}",
                    acknowledged.offset
                );
            }
        }
    }
}

async fn run_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start().await;
    for number in 0..STEPS {
        let at = format!("seed {seed} step {number}");
        step(&mut cluster, &mut rng, &at).await;
        if number % 50 == 0 {
            cluster.check_committed_prefixes(&at).await;
        }
    }
    let at = format!("seed {seed} settled");
    settle(&mut cluster, &mut rng, &at).await;
    cluster.check_committed_prefixes(&at).await;
    check_converged(&cluster, &at).await;
    if std::env::var_os("CHRONIK_SIM_VERBOSE").is_some() {
        let terms: Vec<u64> = cluster.leaders.keys().map(|(_, t)| *t).collect();
        eprintln!(
            "{at}: {} acknowledged, highest term {:?}",
            cluster.acknowledged.len(),
            terms.iter().max()
        );
    }
}

#[test]
fn a_simulated_cluster_keeps_acknowledged_batches_through_faults() {
    let seeds = std::env::var("CHRONIK_CLUSTER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    for_each_seed(1..=seeds, |seed| async move { run_seed(seed).await });
    if std::env::var("CHRONIK_SEED").is_err() {
        for (what, count) in [
            ("a pass begun beside another", &PASSES_BEGUN_BESIDE_ANOTHER),
            (
                "a pass ended before the next one's commit landed",
                &PASSES_ENDED_BEFORE_THE_NEXT_LANDED,
            ),
        ] {
            let count = count.load(Ordering::Relaxed);
            eprintln!("{what}: {count} times");
            assert!(count > 0, "never: {what}");
        }
    }
}
