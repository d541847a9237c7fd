//! The peer transport's glommio half (the frame codec and wire types are pure, in
//! `chronik_shards::transport`). Each shard keeps one outbound TCP connection to every other
//! node and sends, per pump pass, one frame holding all its groups' Raft messages for that
//! node. Every shard also accepts peers' connections (SO_REUSEPORT on the peer address) and
//! routes each group's messages to the shard that owns the group on this node.
//!
//! Bounded everywhere: a link queues at most `LINK_QUEUE_MESSAGES_MAX` messages and drops
//! beyond it (Raft resends what matters), a link that cannot connect drops its queue and
//! retries with backoff, and a slow peer only ever fills its own link's queue, never the pump.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::sleep;
use prost::Message as _;
use raft::eraftpb::Message;

use chronik_shards::runtime::shard::Outgoing;
use chronik_shards::transport::frame::{self, FrameDecoder, FrameKind};
use chronik_shards::transport::wire::WireMessage;
use chronik_shards::transport::{Envelope, FrameError, GroupMessages};

use super::context::ShardContext;
use super::frame::ShardRequest;
use crate::controller::forward;

/// Messages a link holds for a peer that is slow or away; beyond this they are dropped.
const LINK_QUEUE_MESSAGES_MAX: usize = 65_536;
/// The payload of one frame is cut well below the frame limit.
const FRAME_PAYLOAD_TARGET_BYTES: usize = 8 << 20;
const _: () = assert!(FRAME_PAYLOAD_TARGET_BYTES < chronik_shards::transport::FRAME_BYTES_MAX / 2);
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// A link with nothing to send sends an empty frame this often, so its peer knows this node
/// is alive even while every group is quiet.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(100);
/// A peer silent for this long is suspected: the groups it votes in wake up and run their
/// elections (or check-quorum) as usual.
const LIVENESS_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How often a shard looks at its peers' health.
const DETECTOR_INTERVAL: Duration = Duration::from_millis(20);
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
const READ_CHUNK_BYTES: usize = 256 << 10;
/// How long a forwarded controller request may take end to end.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// One shard's outbound link to one peer node.
struct Link {
    node_id: u64,
    address: SocketAddr,
    queue: RefCell<VecDeque<Outgoing>>,
    dropped: Cell<u64>,
    wake: LocalSender<()>,
}

/// A shard's links to every other node; `sink` is what the shard's pump calls.
pub struct PeerLinks {
    links: BTreeMap<u64, Rc<Link>>,
}

impl PeerLinks {
    /// Starts one sender task per peer node.
    pub fn start(ctx: &Rc<ShardContext>) -> Rc<PeerLinks> {
        let mut links = BTreeMap::new();
        for node in &ctx.config.cluster.nodes {
            if node.id == ctx.config.node_id {
                continue;
            }
            let (wake, woken) = local_channel::new_bounded(1);
            let link = Rc::new(Link {
                node_id: u64::from(node.id),
                address: node.peer,
                queue: RefCell::new(VecDeque::new()),
                dropped: Cell::new(0),
                wake,
            });
            glommio::spawn_local(run_link(link.clone(), ctx.clone(), woken)).detach();
            links.insert(link.node_id, link);
        }
        Rc::new(PeerLinks { links })
    }

    /// Queues a pass's messages on their links (called by the pump, with the shard borrowed).
    pub fn send(&self, messages: Vec<Outgoing>) {
        let mut woken = Vec::new();
        for (group_id, message) in messages {
            let Some(link) = self.links.get(&message.to) else {
                continue;
            };
            let mut queue = link.queue.borrow_mut();
            if queue.len() >= LINK_QUEUE_MESSAGES_MAX {
                link.dropped.set(link.dropped.get() + 1);
                continue;
            }
            queue.push_back((group_id, message));
            if !woken.contains(&link.node_id) {
                woken.push(link.node_id);
            }
        }
        for node_id in woken {
            if let Some(link) = self.links.get(&node_id) {
                let _ = link.wake.try_send(());
            }
        }
    }
}

async fn run_link(link: Rc<Link>, ctx: Rc<ShardContext>, woken: LocalReceiver<()>) {
    let from_node = u64::from(ctx.config.node_id);
    let mut backoff = RECONNECT_BACKOFF_MIN;
    loop {
        match TcpStream::connect(link.address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                backoff = RECONNECT_BACKOFF_MIN;
                if let Err(error) = send_frames(&link, from_node, stream, &woken).await {
                    tracing::debug!(peer = link.node_id, %error, "peer link closed");
                }
            }
            Err(error) => {
                let error = std::io::Error::from(error);
                if is_refused(&error) {
                    ctx.node.mark_lost(link.node_id);
                }
                tracing::debug!(peer = link.node_id, %error, "cannot reach peer");
            }
        }
        // What was queued for a peer we cannot reach is stale by the time we do: Raft
        // resends from its own state.
        link.queue.borrow_mut().clear();
        sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

async fn send_frames(
    link: &Link,
    from_node: u64,
    mut stream: TcpStream,
    woken: &LocalReceiver<()>,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    loop {
        out.clear();
        if link.queue.borrow().is_empty() {
            let wake = std::pin::pin!(woken.recv());
            let quiet = std::pin::pin!(glommio::timer::Timer::new(LIVENESS_INTERVAL));
            match futures::future::select(wake, quiet).await {
                futures::future::Either::Left((None, _)) => return Ok(()),
                futures::future::Either::Left((Some(()), _)) => continue,
                futures::future::Either::Right(_) => {
                    // Nothing to say for a while: an empty frame says "alive".
                    let alive = Envelope {
                        from_node,
                        groups: Vec::new(),
                    };
                    frame::encode(&mut out, FrameKind::Raft, &alive.encode_to_vec())
                        .map_err(std::io::Error::other)?;
                }
            }
        }
        while !link.queue.borrow().is_empty() {
            let envelope = take_envelope(&mut link.queue.borrow_mut(), from_node);
            frame::encode(&mut out, FrameKind::Raft, &envelope.encode_to_vec())
                .map_err(std::io::Error::other)?;
        }
        stream.write_all(&out).await?;
    }
}

/// Takes queued messages, in order, up to about one frame's worth, grouped by Raft group.
fn take_envelope(queue: &mut VecDeque<Outgoing>, from_node: u64) -> Envelope {
    let mut groups: Vec<GroupMessages> = Vec::new();
    let mut bytes = 0usize;
    while let Some((group_id, message)) = queue.pop_front() {
        let wire = WireMessage::from_raft(message);
        bytes += wire.encoded_len();
        match groups.last_mut() {
            Some(last) if last.group_id == group_id => last.messages.push(wire),
            _ => groups.push(GroupMessages {
                group_id,
                messages: vec![wire],
            }),
        }
        if bytes >= FRAME_PAYLOAD_TARGET_BYTES {
            break;
        }
    }
    Envelope { from_node, groups }
}

// ---- the receiving side ----

pub fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).map_err(std::io::Error::from)
}

pub async fn accept_loop(ctx: Rc<ShardContext>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve_peer(ctx.clone(), stream)).detach();
            }
            Err(error) => {
                tracing::warn!(%error, "peer accept failed");
                sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("undecodable payload: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("frame from unknown node {0}")]
    UnknownNode(u64),
}

/// Reads a peer's frames until it closes or sends something invalid (then the connection
/// is dropped; the peer reconnects). Nothing a peer sends can panic this node.
async fn serve_peer(ctx: Rc<ShardContext>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut sender = None;
    if let Err(error) = read_frames(&ctx, &mut stream, &mut sender).await {
        tracing::info!(%peer, %error, "closing peer connection");
    }
    drop(stream);
    // A peer's stream ended: if its peer port now refuses connections, the process is gone
    // (a crash closes its sockets at once), and its partitions need new leaders now.
    if let Some(node) = sender {
        if probe_refused(&ctx, node).await {
            tracing::info!(node, "peer is gone (its peer port refuses connections)");
            ctx.node.mark_lost(node);
        }
    }
}

fn is_refused(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::ConnectionRefused
        || error.raw_os_error() == Some(libc::ECONNREFUSED)
}

/// Whether `node`'s peer port refuses a connection right now.
async fn probe_refused(ctx: &ShardContext, node: u64) -> bool {
    let Some(address) = u32::try_from(node)
        .ok()
        .and_then(|id| ctx.config.cluster.node(id))
        .map(|n| n.peer)
    else {
        return false;
    };
    let connect = std::pin::pin!(TcpStream::connect(address));
    let timeout = std::pin::pin!(glommio::timer::Timer::new(PROBE_TIMEOUT));
    match futures::future::select(connect, timeout).await {
        futures::future::Either::Left((Err(error), _)) => is_refused(&error.into()),
        _ => false,
    }
}

/// Each shard's view of its peers' health: a peer found gone for certain (`mark_lost`) has
/// its groups' leadership moved at once (`Shard::campaign_for_lost_leader`); a peer silent
/// for `LIVENESS_TIMEOUT` wakes the quiet groups it votes in, so Raft's own timers and
/// check-quorum take over.
pub async fn failure_detector(ctx: Rc<ShardContext>) {
    let peers = ctx.node.peer_ids();
    let mut losses_seen: BTreeMap<u64, u64> =
        peers.iter().map(|&p| (p, ctx.node.losses(p))).collect();
    let mut silent: std::collections::BTreeSet<u64> = Default::default();
    loop {
        sleep(DETECTOR_INTERVAL).await;
        for &peer in &peers {
            let losses = ctx.node.losses(peer);
            if losses > losses_seen[&peer] {
                losses_seen.insert(peer, losses);
                let mut shard = ctx.shard.borrow_mut();
                let moved = shard.campaign_for_lost_leader(peer);
                shard.wake_groups_with(peer);
                if moved > 0 {
                    tracing::info!(
                        shard = ctx.shard_id,
                        peer,
                        moved,
                        "electing new leaders for a lost peer's groups"
                    );
                }
            }
            if ctx.node.silent_for(peer) > LIVENESS_TIMEOUT {
                if silent.insert(peer) {
                    tracing::info!(
                        shard = ctx.shard_id,
                        peer,
                        "peer is silent; waking its groups"
                    );
                }
                // Groups may have gone quiet again meanwhile; keep them awake while it is away.
                ctx.shard.borrow_mut().wake_groups_with(peer);
            } else {
                silent.remove(&peer);
            }
        }
    }
}

async fn read_frames(
    ctx: &Rc<ShardContext>,
    stream: &mut TcpStream,
    sender: &mut Option<u64>,
) -> Result<(), PeerError> {
    let mut decoder = FrameDecoder::default();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        decoder.extend(&chunk[..read]);
        while let Some(frame) = decoder.next_frame()? {
            match frame.kind {
                FrameKind::Raft => {
                    let envelope = Envelope::decode(frame.payload)?;
                    let from = envelope.from_node;
                    deliver(ctx, envelope).await?;
                    ctx.node.heard_from(from);
                    *sender = Some(from);
                }
                FrameKind::ControllerRequest => {
                    let reply = forward::serve(ctx, &frame.payload).await;
                    let mut out = BytesMut::new();
                    frame::encode(&mut out, FrameKind::ControllerReply, &reply)?;
                    stream.write_all(&out).await?;
                }
                FrameKind::ControllerReply => return Err(FrameError::Kind(3).into()),
            }
        }
    }
}

/// Routes an envelope's messages to the shards owning their groups on this node. A message
/// must come from the node that sent the envelope and be addressed to this node.
async fn deliver(ctx: &Rc<ShardContext>, envelope: Envelope) -> Result<(), PeerError> {
    let from = envelope.from_node;
    let me = u64::from(ctx.config.node_id);
    let known = u32::try_from(from)
        .ok()
        .and_then(|id| ctx.config.cluster.node(id));
    if known.is_none() || from == me {
        return Err(PeerError::UnknownNode(from));
    }
    let view = ctx.metadata();
    let mut per_shard: BTreeMap<usize, Vec<(u64, Message)>> = BTreeMap::new();
    for group in envelope.groups {
        let Some(shard) = view.shard_of(group.group_id) else {
            continue;
        };
        for wire in group.messages {
            if wire.from != from || wire.to != me {
                continue;
            }
            if let Some(message) = wire.into_raft() {
                per_shard
                    .entry(shard)
                    .or_default()
                    .push((group.group_id, message));
            }
        }
    }
    for (shard, messages) in per_shard {
        if shard == ctx.shard_id {
            let mut local = ctx.shard.borrow_mut();
            for (group_id, message) in messages {
                local.step(group_id, message);
            }
        } else if shard < ctx.shard_count() {
            // The owner shard's mesh queue is bounded: a full one slows this connection.
            let _ = ctx.call(shard, ShardRequest::Raft(messages)).await;
        }
    }
    Ok(())
}

/// Sends one forwarded controller request to `address` and returns the reply's payload.
pub async fn forward_request(address: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await?;
        let _ = stream.set_nodelay(true);
        let mut out = BytesMut::new();
        frame::encode(&mut out, FrameKind::ControllerRequest, payload)
            .map_err(std::io::Error::other)?;
        stream.write_all(&out).await?;
        let mut decoder = FrameDecoder::default();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            if let Some(frame) = decoder.next_frame().map_err(std::io::Error::other)? {
                if frame.kind != FrameKind::ControllerReply {
                    return Err(std::io::Error::other("unexpected frame kind"));
                }
                return Ok(frame.payload.to_vec());
            }
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            decoder.extend(&chunk[..read]);
        }
    };
    let timeout = glommio::timer::Timer::new(FORWARD_TIMEOUT);
    match futures::future::select(std::pin::pin!(exchange), std::pin::pin!(timeout)).await {
        futures::future::Either::Left((result, _)) => result,
        futures::future::Either::Right(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_groups_consecutive_messages_and_stops_near_the_frame_target() {
        let mut queue = VecDeque::new();
        for group_id in [5, 5, 6, 5] {
            let message = Message {
                to: 2,
                from: 1,
                ..Message::default()
            };
            queue.push_back((group_id, message));
        }
        let envelope = take_envelope(&mut queue, 1);
        let shape: Vec<(u64, usize)> = envelope
            .groups
            .iter()
            .map(|g| (g.group_id, g.messages.len()))
            .collect();
        assert_eq!(shape, vec![(5, 2), (6, 1), (5, 1)]);
        assert!(queue.is_empty());
    }
}
