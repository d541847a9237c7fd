//! `ShardContext`: what request handling on one shard can reach. Routing lives here: a
//! request for a partition on this shard runs in place, one for another shard crosses the
//! bounded channel mesh and its reply comes back on a oneshot.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use glommio::channels::channel_mesh::Senders;

use chronik_shards::runtime::shard::ShardRef;

use super::frame::{RouteError, ShardMessage, ShardReply, ShardRequest};
use crate::config::Config;
use crate::controller::Controller;
use crate::coordinator::service::GroupCoordinator;
use crate::metadata::{MetadataView, TopicSettings};

/// What the shards of one node share (atomics only: shards never lock).
pub struct NodeShared {
    /// The node whose controller replica leads, as shard 0 last saw it (0: unknown).
    controller_leader: AtomicU64,
    started: Instant,
    peers: BTreeMap<u64, PeerHealth>,
}

/// What this node knows of a peer's health (the failure detector's input).
#[derive(Default)]
struct PeerHealth {
    /// When any shard last received a frame from the peer (ms since `started`).
    last_heard_ms: AtomicU64,
    /// How many times the peer was found gone for certain (its peer port refused).
    losses: AtomicU64,
}

impl NodeShared {
    pub fn new(config: &Config) -> Self {
        let peers = config
            .cluster
            .nodes
            .iter()
            .filter(|n| n.id != config.node_id)
            .map(|n| (u64::from(n.id), PeerHealth::default()))
            .collect();
        Self {
            controller_leader: AtomicU64::new(0),
            started: Instant::now(),
            peers,
        }
    }

    pub fn peer_ids(&self) -> Vec<u64> {
        self.peers.keys().copied().collect()
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn heard_from(&self, peer: u64) {
        if let Some(health) = self.peers.get(&peer) {
            health.last_heard_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// How long the peer has been silent (since start when never heard).
    pub fn silent_for(&self, peer: u64) -> Duration {
        let last = self
            .peers
            .get(&peer)
            .map_or(0, |h| h.last_heard_ms.load(Ordering::Relaxed));
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    pub fn mark_lost(&self, peer: u64) {
        if let Some(health) = self.peers.get(&peer) {
            health.losses.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn losses(&self, peer: u64) -> u64 {
        self.peers
            .get(&peer)
            .map_or(0, |h| h.losses.load(Ordering::Relaxed))
    }
    pub fn controller_leader(&self) -> Option<u64> {
        let leader = self.controller_leader.load(Ordering::Relaxed);
        (leader != 0).then_some(leader)
    }

    pub fn set_controller_leader(&self, leader: Option<u64>) {
        self.controller_leader
            .store(leader.unwrap_or(0), Ordering::Relaxed);
    }
}

pub struct ShardContext {
    pub shard_id: usize,
    pub node: Arc<NodeShared>,
    pub config: Arc<Config>,
    pub shard: ShardRef,
    metadata: RefCell<Arc<MetadataView>>,
    pub metadata_installed: Cell<bool>,
    senders: Senders<ShardMessage>,
    pub controller: RefCell<Option<Rc<Controller>>>,
    pub requests_in_flight: Cell<usize>,
    /// Bytes of request frames this shard may hold (`Config::queued_request_bytes_max`):
    /// each request holds its frame's length until it is answered.
    pub request_bytes_budget: Rc<glommio::sync::Semaphore>,
    /// What fetch answers hold in batches read from the WAL (`Config::fetch_read_bytes_max`).
    pub read_memory: super::held_memory::HeldMemory,
    /// Produce request bodies kept alive by the batches cut from them (which the log and its
    /// cache hold without a copy), up to `entry_cache_shard_bytes_max`; past it, batches are
    /// copied out and the body freed. The bound matters where a request's batches leave the
    /// cache at different times: one small batch kept would keep its whole body.
    pub kept_request_bodies: super::held_memory::HeldMemory,
    /// Set at shutdown: connections take no new requests.
    pub stopping: Cell<bool>,
    /// The consumer groups this shard coordinates.
    pub groups: RefCell<GroupCoordinator>,
    /// The transactional ids this shard coordinates.
    pub transactions: RefCell<crate::transactions::service::TxnCoordinator>,
}

impl ShardContext {
    pub fn new(
        shard_id: usize,
        node: Arc<NodeShared>,
        config: Arc<Config>,
        shard: ShardRef,
        senders: Senders<ShardMessage>,
    ) -> Self {
        let group_settings = config.groups;
        let request_bytes_max = config.queued_request_bytes_max as u64;
        let read_memory = super::held_memory::HeldMemory::new(config.fetch_read_bytes_max);
        let kept_request_bodies =
            super::held_memory::HeldMemory::new(config.entry_cache_shard_bytes_max);
        Self {
            shard_id,
            node,
            config,
            shard,
            metadata: RefCell::new(Arc::new(MetadataView::default())),
            metadata_installed: Cell::new(false),
            senders,
            controller: RefCell::new(None),
            requests_in_flight: Cell::new(0),
            request_bytes_budget: Rc::new(glommio::sync::Semaphore::new(request_bytes_max)),
            read_memory,
            kept_request_bodies,
            stopping: Cell::new(false),
            groups: RefCell::new(GroupCoordinator::new(group_settings)),
            transactions: RefCell::default(),
        }
    }

    pub fn metadata(&self) -> Arc<MetadataView> {
        self.metadata.borrow().clone()
    }

    pub fn set_metadata(&self, view: Arc<MetadataView>) {
        let mut current = self.metadata.borrow_mut();
        if view.applied_index >= current.applied_index {
            *current = view;
        }
    }

    pub fn shard_count(&self) -> usize {
        self.config.shards
    }

    pub fn topic_defaults(&self) -> TopicSettings {
        TopicSettings {
            retention_ms: self.config.retention_ms,
            retention_bytes: self.config.retention_bytes,
            message_bytes_max: self.config.message_bytes_max,
            deletes_old_data: true,
        }
    }

    /// Runs `request` on shard `target`: in place when it is this shard, else over the mesh.
    pub async fn call(
        self: &Rc<Self>,
        target: usize,
        request: ShardRequest,
    ) -> Result<ShardReply, RouteError> {
        if target == self.shard_id {
            return Ok(super::ops::execute(self.clone(), request).await);
        }
        let (reply, receiver) = oneshot::channel();
        self.senders
            .send_to(target, ShardMessage { request, reply })
            .await
            .map_err(|_| RouteError(target))?;
        receiver.await.map_err(|_| RouteError(target))
    }
}

/// Hands a new metadata snapshot to every shard and waits until each has applied it.
pub async fn publish_metadata(ctx: &Rc<ShardContext>, view: MetadataView) {
    let view = Arc::new(view);
    let calls =
        (0..ctx.shard_count()).map(|shard| ctx.call(shard, ShardRequest::Metadata(view.clone())));
    for (shard, result) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        if let Err(error) = result {
            tracing::warn!(shard, %error, "metadata not delivered");
        }
    }
}
