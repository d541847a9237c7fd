//! Start-up and shutdown of a node: one pinned glommio executor per shard, joined by a
//! bounded channel mesh. Shard 0 also hosts the controller. No shard serves clients before it
//! holds the committed metadata, so a client never sees an empty cluster.

pub mod context;
pub mod frame;
pub mod held_memory;
pub mod identity;
pub mod ops;
pub mod peer;

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::io::DmaFile;
use glommio::timer::sleep;
use glommio::{LocalExecutorBuilder, Placement};
use thiserror::Error;

use chronik_shards::runtime::shard::{
    run_pump, wall_clock_ms, GroupSpec, Shard, ShardConfig, ShardRef,
};
use chronik_shards::wal::WalConfig;
use glommio::channels::local_channel::LocalReceiver;

use crate::config::Config;
use crate::controller::state::CONTROLLER_GROUP_ID;
use crate::controller::Controller;
use crate::metadata::MetadataView;
use context::{publish_metadata, NodeShared, ShardContext};
use frame::ShardMessage;

/// Capacity of each shard-to-shard channel: a full channel makes the sender wait.
const CROSS_SHARD_CHANNEL_CAPACITY: usize = 1024;
const STARTUP_WAIT: Duration = Duration::from_secs(60);
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
/// How long the pump's task queue may wait behind other tasks (glommio's preemption tick).
const PUMP_LATENCY: Duration = Duration::from_micros(500);
/// How long another listener must keep answering before start-up refuses the port.
const PORT_HELD_FOR: Duration = Duration::from_secs(3);

#[derive(Debug, Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("shard {0}: {1}")]
    Shard(usize, String),
    #[error("cannot start executor: {0}")]
    Executor(String),
    #[error("data directory {0} is in use by another chronik process")]
    DataDirLocked(String),
    #[error("cannot listen on {0}: {1} (is another broker running there?)")]
    PortInUse(std::net::SocketAddr, std::io::Error),
    #[error("{0}")]
    Identity(String),
}

/// A panic on any shard is a bug that may have left its state half-changed: stop the whole
/// node (every shard drains and syncs) rather than serve on with a dead shard.
fn install_fail_stop(stop: Arc<AtomicBool>) {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        stop.store(true, Ordering::SeqCst);
        default_hook(info);
    }));
}

/// Holds an exclusive lock on the data directory for the life of the process, so two brokers
/// never write the same WAL.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    use std::os::fd::AsRawFd;
    let name = dir.display().to_string();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(|e| StartError::DataDir(name.clone(), e))?;
    // SAFETY: flock on a descriptor we own; no memory is shared with the kernel.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        return Err(StartError::DataDirLocked(name));
    }
    Ok(file)
}

/// Every shard binds the listen address with SO_REUSEPORT, which would also let a second
/// broker share the port silently. If something keeps accepting connections there, refuse.
/// It must keep doing so for a while: a broker killed a moment ago leaves its listening
/// socket open until the kernel tears down its io_uring, and a plain test bind would also
/// trip over the previous run's lingering connections.
fn check_port_free(address: std::net::SocketAddr) -> Result<(), StartError> {
    let mut probe = address;
    if probe.ip().is_unspecified() {
        probe.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let started = Instant::now();
    while started.elapsed() < PORT_HELD_FOR {
        match std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(300)) {
            // A connection to itself (simultaneous open when the kernel picks the target port
            // as the source port) means nobody listens there.
            Ok(stream) if stream.local_addr().ok() == stream.peer_addr().ok() => return Ok(()),
            Ok(_) => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => return Ok(()),
        }
    }
    Err(StartError::PortInUse(
        address,
        std::io::ErrorKind::AddrInUse.into(),
    ))
}

/// Runs the node until `stop` is set; returns once every shard has drained and synced.
pub fn run(config: Config, stop: Arc<AtomicBool>) -> Result<(), StartError> {
    install_fail_stop(stop.clone());
    let data_dir = config.data_dir.display().to_string();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::DataDir(data_dir.clone(), e))?;
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    identity::check_or_write(&config).map_err(StartError::Identity)?;
    check_port_free(config.listen)?;
    if let Some(peer_listen) = config
        .cluster
        .peer_listen
        .filter(|_| config.cluster.is_multi_node())
    {
        check_port_free(peer_listen)?;
    }
    // glommio probes polled-I/O support on the first file it opens; an empty file passes the
    // probe wrongly (virtio disks then fail every read with EOPNOTSUPP). Open a non-empty one
    // first, on the same device.
    std::fs::write(config.data_dir.join("io-probe"), vec![0u8; 4096])
        .map_err(|e| StartError::DataDir(data_dir, e))?;
    let config = Arc::new(config);
    let mesh = MeshBuilder::<ShardMessage, _>::full(config.shards, CROSS_SHARD_CHANNEL_CAPACITY);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut executors = Vec::with_capacity(config.shards);
    let drained = Arc::new(AtomicUsize::new(0));
    let node = Arc::new(NodeShared::new(&config));
    for index in 0..config.shards {
        let (config, mesh, stop, drained, node) = (
            config.clone(),
            mesh.clone(),
            stop.clone(),
            drained.clone(),
            node.clone(),
        );
        // Several nodes on one machine (a dev cluster) pin to different cores.
        let core = (!cores.is_empty()).then(|| cores[(config.first_core + index) % cores.len()]);
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("shard-{index}"))
            .spawn(move || async move {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                let result = run_shard(config, node, mesh, stop.clone(), drained).await;
                if result.is_err() {
                    // Fail-stop: a node missing a shard would time out that shard's
                    // partitions forever; stop every shard and exit non-zero instead.
                    stop.store(true, Ordering::SeqCst);
                }
                result
            })
            .map_err(|e| StartError::Executor(e.to_string()))?;
        executors.push(executor);
    }
    let mut first_error = None;
    for executor in executors {
        match executor.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => first_error = first_error.or(Some(error)),
            Err(error) => {
                first_error = first_error.or(Some(StartError::Executor(error.to_string())))
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The pump runs in a task queue of its own whose latency matters: its WAL writes and fsyncs
/// then complete on glommio's latency ring, which cuts short a run of request handlers so the
/// group commit is answered as soon as it is durable. In the default queue, a burst of
/// requests kept a finished fsync waiting for milliseconds.
fn spawn_pump(
    shard: ShardRef,
    doorbell: glommio::channels::local_channel::LocalReceiver<()>,
    stop: Rc<std::cell::Cell<bool>>,
) -> glommio::Result<glommio::Task<()>, ()> {
    let queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(1000),
        glommio::Latency::Matters(PUMP_LATENCY),
        "pump",
    );
    glommio::spawn_local_into(run_pump(shard, doorbell, stop), queue)
}

async fn run_shard(
    config: Arc<Config>,
    node: Arc<NodeShared>,
    mesh: MeshBuilder<ShardMessage, glommio::channels::channel_mesh::Full>,
    stop: Arc<AtomicBool>,
    drained: Arc<AtomicUsize>,
) -> Result<(), StartError> {
    let (senders, receivers) = mesh
        .join()
        .await
        .map_err(|_| StartError::Shard(0, "channel mesh".into()))?;
    let shard_id = senders.peer_id();
    let fail = |text: String| StartError::Shard(shard_id, text);
    let (shard, doorbell) = open_shard(&config, shard_id).await.map_err(fail)?;
    let pump_stop = Rc::new(std::cell::Cell::new(false));
    let pump = spawn_pump(shard.clone(), doorbell, pump_stop.clone())
        .map_err(|error| StartError::Shard(shard_id, format!("pump task queue: {error}")))?;
    let ctx = Rc::new(ShardContext::new(
        shard_id,
        node,
        config.clone(),
        shard,
        senders,
    ));
    serve_mesh(&ctx, receivers);
    let clustered = config.cluster.is_multi_node();
    let peer_acceptor = start_peer_transport(&ctx).map_err(fail)?;
    if shard_id == 0 {
        start_controller(&ctx).await.map_err(fail)?;
    }
    if !clustered {
        // A cluster of one has its metadata at once; a cluster answers Metadata (brokers
        // from configuration) before its first election, so it does not wait.
        wait_for_metadata(&ctx, &stop).await.map_err(fail)?;
        wait_for_local_leaders(&ctx, &stop).await;
    }
    let retention = glommio::spawn_local(retention_loop(ctx.clone()));
    let group_timer = glommio::spawn_local(crate::coordinator::service::run_timer(ctx.clone()));
    let txn_timer = glommio::spawn_local(crate::transactions::service::run_timer(ctx.clone()));
    let cleaner = glommio::spawn_local(crate::compaction::run_cleaner(ctx.clone()));
    let rebalance = clustered.then(|| glommio::spawn_local(preferred_leader_loop(ctx.clone())));
    let watchdog = clustered.then(|| glommio::spawn_local(peer::failure_detector(ctx.clone())));
    let listener = crate::kafka::server::listen(&ctx)
        .map_err(|e| fail(format!("listen on {}: {e}", config.listen)))?;
    let acceptor = glommio::spawn_local(crate::kafka::server::accept_loop(ctx.clone(), listener));
    tracing::info!(shard = shard_id, listen = %config.listen, "serving Kafka clients");

    while !stop.load(Ordering::Relaxed) {
        sleep(Duration::from_millis(50)).await;
    }
    if let Some(rebalance) = rebalance {
        rebalance.cancel().await;
    }
    if let Some(watchdog) = watchdog {
        watchdog.cancel().await;
    }
    if clustered {
        // Controlled shutdown: hand every group this node leads to a caught-up peer first, so
        // clients only see retriable errors and no election timeout.
        hand_over_leadership(&ctx).await;
    }
    acceptor.cancel().await;
    ctx.stopping.set(true);
    ctx.shard.borrow_mut().wake_all_fetches();
    retention.cancel().await;
    group_timer.cancel().await;
    txn_timer.cancel().await;
    cleaner.cancel().await;
    drain(&ctx, &drained).await;
    // Anything proposed from now on would never be answered: refuse it (retriable).
    ctx.shard.borrow_mut().refuse_proposals();
    pump_stop.set(true);
    pump.await;
    if let Some(peer_acceptor) = peer_acceptor {
        peer_acceptor.cancel().await;
    }
    tracing::info!(shard = shard_id, "stopped");
    Ok(())
}

/// In a cluster: links to every peer for the pump's messages, and the peer listener.
fn start_peer_transport(ctx: &Rc<ShardContext>) -> Result<Option<glommio::Task<()>>, String> {
    let Some(address) = ctx.config.cluster.peer_listen else {
        return Ok(None);
    };
    if !ctx.config.cluster.is_multi_node() {
        return Ok(None);
    }
    let links = peer::PeerLinks::start(ctx);
    ctx.shard
        .borrow_mut()
        .set_message_sink(Box::new(move |messages| links.send(messages)));
    let listener = peer::listen(address).map_err(|e| format!("peer listen on {address}: {e}"))?;
    Ok(Some(glommio::spawn_local(peer::accept_loop(
        ctx.clone(),
        listener,
    ))))
}

/// Opens this shard's WAL (recovering it) after glommio's polled-I/O probe is settled.
async fn open_shard(
    config: &Config,
    shard_id: usize,
) -> Result<(ShardRef, LocalReceiver<()>), String> {
    let probe = config.data_dir.join("io-probe");
    let probe_file = DmaFile::open(&probe)
        .await
        .map_err(|e| format!("io probe {}: {e}", probe.display()))?;
    let _ = probe_file.close().await;
    let shard_config = ShardConfig {
        shard_id,
        replica_id: u64::from(config.node_id),
        wal: WalConfig {
            dir: config.data_dir.join(format!("shard-{shard_id}")),
            segment_bytes_max: config.segment_bytes,
            overlap_min_bytes: config.commit_overlap_bytes,
        },
        tick_interval_ms: config.tick_interval_ms,
        entry_cache_bytes_max: config.entry_cache_bytes_max,
        entry_cache_shard_bytes_max: config.entry_cache_shard_bytes_max,
        entry_cache_unread_ticks: u32::try_from(
            config
                .entry_cache_unread_ms
                .div_ceil(config.tick_interval_ms),
        )
        .unwrap_or(u32::MAX),
        proposal_waiters_max: 100_000,
        fetch_waiters_max: 10_000,
        uncommitted_bytes_max: 256 << 20,
        deterministic_elections: false,
    };
    shard_config.wal.validate()?;
    Shard::open(shard_config).await.map_err(|e| e.to_string())
}

/// No shard serves clients before it holds committed metadata. No time limit: shard 0 may be
/// recovering a much larger WAL; a failed shard 0 sets `stop`, which ends the wait.
async fn wait_for_metadata(ctx: &ShardContext, stop: &AtomicBool) -> Result<(), String> {
    let mut started = Instant::now();
    while !ctx.metadata_installed.get() {
        if stop.load(Ordering::Relaxed) {
            return Err("stopped before the controller published metadata".into());
        }
        if started.elapsed() > STARTUP_WAIT {
            tracing::warn!(
                shard = ctx.shard_id,
                "still waiting for metadata from shard 0"
            );
            started = Instant::now();
        }
        sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Listening starts once this shard's partitions can serve reads again, so a client's first
/// requests after a restart are answered rather than refused with NOT_LEADER_OR_FOLLOWER
/// (`Shard::read_offsets` is what keeps the high watermark right; this only smooths the
/// start). Bounded by `STARTUP_WAIT`, and by a stop.
async fn wait_for_local_leaders(ctx: &ShardContext, stop: &AtomicBool) {
    let started = Instant::now();
    loop {
        let catching_up = ctx.shard.borrow().groups_catching_up();
        if catching_up == 0 || stop.load(Ordering::Relaxed) {
            return;
        }
        if started.elapsed() > STARTUP_WAIT {
            tracing::warn!(
                shard = ctx.shard_id,
                catching_up,
                "serving while some partitions cannot serve reads yet"
            );
            return;
        }
        sleep(Duration::from_millis(2)).await;
    }
}

/// Waits (bounded) for this shard's requests in flight, then keeps answering other shards'
/// requests until every shard has drained its own.
async fn drain(ctx: &ShardContext, drained: &AtomicUsize) {
    let draining = Instant::now();
    while ctx.requests_in_flight.get() > 0 && draining.elapsed() < SHUTDOWN_DRAIN {
        sleep(Duration::from_millis(10)).await;
    }
    drained.fetch_add(1, Ordering::SeqCst);
    let waiting = Instant::now();
    while drained.load(Ordering::SeqCst) < ctx.shard_count() && waiting.elapsed() < SHUTDOWN_DRAIN {
        sleep(Duration::from_millis(5)).await;
    }
}

fn serve_mesh(
    ctx: &Rc<ShardContext>,
    mut receivers: glommio::channels::channel_mesh::Receivers<ShardMessage>,
) {
    for (_peer, receiver) in receivers.streams() {
        let ctx = ctx.clone();
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                let ctx = ctx.clone();
                glommio::spawn_local(execute_for_peer(ctx, message)).detach();
            }
        })
        .detach();
    }
}

/// Runs a request from another shard and answers it. A long-poll wait is abandoned as soon as
/// the asking shard stops listening (its fetch was answered by another shard's news), so
/// waiters do not pile up; other requests always run to the end, as their effects must.
async fn execute_for_peer(ctx: Rc<ShardContext>, message: ShardMessage) {
    let ShardMessage { request, mut reply } = message;
    let abandonable = matches!(request, frame::ShardRequest::WaitForData { .. });
    let execution = ops::execute(ctx, request);
    let answer = if abandonable {
        match futures::future::select(execution, reply.cancellation()).await {
            futures::future::Either::Left((answer, _)) => answer,
            futures::future::Either::Right(_) => return,
        }
    } else {
        execution.await
    };
    let _ = reply.send(answer);
}

/// How long a stopping node waits for its groups to move to peers.
const HAND_OVER_WAIT: Duration = Duration::from_secs(5);
/// How often a node gives groups back to their preferred leaders, and how many at a time.
const PREFERRED_LEADER_INTERVAL: Duration = Duration::from_secs(1);
const PREFERRED_LEADER_TRANSFERS_MAX: usize = 32;

/// Transfers leadership of every group this shard leads to a caught-up follower and waits
/// (bounded) until it leads none; groups without a caught-up follower stay (and their
/// clients see an election after the node is gone).
async fn hand_over_leadership(ctx: &ShardContext) {
    let started = Instant::now();
    ctx.shard.borrow_mut().refuse_leadership();
    loop {
        let led = ctx.shard.borrow().led_groups();
        if led.is_empty() || started.elapsed() > HAND_OVER_WAIT {
            if !led.is_empty() {
                tracing::warn!(
                    shard = ctx.shard_id,
                    groups = led.len(),
                    "still leading some groups at shutdown"
                );
            }
            return;
        }
        {
            let mut shard = ctx.shard.borrow_mut();
            for group_id in led {
                if let Some(to) = shard.caught_up_follower(group_id) {
                    shard.transfer_leader(group_id, to);
                }
            }
        }
        sleep(Duration::from_millis(50)).await;
    }
}

async fn preferred_leader_loop(ctx: Rc<ShardContext>) {
    for round in 1u64.. {
        sleep(PREFERRED_LEADER_INTERVAL).await;
        if round % 10 == 0 {
            let (groups, quiet, led, term) = ctx.shard.borrow().group_summary();
            tracing::debug!(shard = ctx.shard_id, groups, quiet, led, term, "groups");
        }
        let moved = ctx
            .shard
            .borrow_mut()
            .restore_preferred_leaders(PREFERRED_LEADER_TRANSFERS_MAX);
        if moved > 0 {
            tracing::debug!(
                shard = ctx.shard_id,
                moved,
                "moving leadership back to preferred leaders"
            );
        }
    }
}

/// Brings up the controller group on shard 0. A cluster of one initializes its metadata and
/// publishes it before serving; a cluster's controller replica runs `controller_loop`, which
/// initializes a new cluster once a leader exists and publishes each committed change.
async fn start_controller(ctx: &Rc<ShardContext>) -> Result<(), String> {
    let (controller, machine) = Controller::new();
    Shard::preload_recovered_data(&ctx.shard, CONTROLLER_GROUP_ID)
        .await
        .map_err(|e| format!("controller log: {e}"))?;
    ctx.shard
        .borrow_mut()
        .add_group_with_voters(
            GroupSpec::Custom {
                group_id: CONTROLLER_GROUP_ID,
                machine,
            },
            ctx.config.cluster.controller_voters(),
        )
        .map_err(|e| format!("controller group: {e}"))?;
    *ctx.controller.borrow_mut() = Some(controller.clone());
    if ctx.config.cluster.is_multi_node() {
        glommio::spawn_local(controller_loop(ctx.clone(), controller)).detach();
        return Ok(());
    }
    ctx.node
        .set_controller_leader(Some(u64::from(ctx.config.node_id)));
    let started = Instant::now();
    while !ctx.shard.borrow().is_caught_up_leader(CONTROLLER_GROUP_ID) {
        if started.elapsed() > STARTUP_WAIT {
            return Err("controller group did not become leader".into());
        }
        sleep(Duration::from_millis(2)).await;
    }
    let shard_count = controller.state().shard_count;
    if shard_count == 0 {
        controller
            .initialize(ctx, ctx.shard_count() as u32)
            .await
            .map_err(|e| e.to_string())?;
    } else if shard_count as usize != ctx.shard_count() {
        return Err(format!(
            "the data directory was created with {shard_count} shards; start with --shards {shard_count}"
        ));
    }
    let view = MetadataView::from_state(&controller.state());
    publish_metadata(ctx, view).await;
    Ok(())
}

const CONTROLLER_POLL: Duration = Duration::from_millis(5);

/// A cluster's controller replica (shard 0): keeps the node's idea of the controller leader
/// current, initializes a new cluster's metadata from the leader, and publishes every
/// committed change to all shards of this node, leader or follower.
async fn controller_loop(ctx: Rc<ShardContext>, controller: Rc<Controller>) {
    let mut published = 0u64;
    let mut initializing = false;
    loop {
        sleep(CONTROLLER_POLL).await;
        let leader = ctx.shard.borrow().leader_of(CONTROLLER_GROUP_ID);
        ctx.node.set_controller_leader(leader);
        let (initialized, applied, shard_count) = {
            let state = controller.state();
            (
                state.is_initialized(),
                state.applied_index,
                state.shard_count,
            )
        };
        let me = u64::from(ctx.config.node_id);
        if !initialized
            && leader == Some(me)
            && !initializing
            && ctx.shard.borrow().is_caught_up_leader(CONTROLLER_GROUP_ID)
        {
            initializing = true;
            let (ctx, controller) = (ctx.clone(), controller.clone());
            glommio::spawn_local(async move {
                if let Err(error) = controller.initialize(&ctx, ctx.shard_count() as u32).await {
                    tracing::warn!(%error, "cluster initialization not committed; retrying");
                }
            })
            .detach();
        }
        if initialized && applied > published {
            if shard_count as usize != ctx.shard_count() {
                tracing::error!(
                    cluster_shards = shard_count,
                    shards = ctx.shard_count(),
                    "every node of a cluster runs the same number of shards; stopping"
                );
                std::process::exit(2);
            }
            let view = MetadataView::from_state(&controller.state());
            publish_metadata(&ctx, view).await;
            published = applied;
        }
        if !initialized && initializing && leader != Some(me) {
            initializing = false;
        }
    }
}

async fn retention_loop(ctx: Rc<ShardContext>) {
    let interval = Duration::from_millis(ctx.config.retention_check_interval_ms);
    loop {
        sleep(interval).await;
        ctx.shard.borrow_mut().apply_retention(wall_clock_ms());
    }
}
