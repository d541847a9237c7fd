//! The transaction coordinator of one shard: the transactional ids of the
//! `__transaction_state` partitions this shard leads.

use chronik_shards::runtime::shard::wall_clock_ms;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use super::markers::write_markers;
use super::records::{decode_key, decode_value, encode_key, encode_value};
use super::state::{EndStep, TxnMetadata, TxnStatus};
use super::{TxnAnswer, TxnCall, TRANSACTION_TIMEOUT_MAX_MS};
use crate::controller::{ControllerReply, ControllerRequest};
use crate::coordinator::partition_log::{self, write_error, Claim, Slots};
use crate::coordinator::records::encode_records;
use crate::runtime::context::ShardContext;

/// How often timeouts and unfinished (prepared) transactions are looked at.
const TIMER: Duration = Duration::from_millis(200);

type Transactions = BTreeMap<String, TxnMetadata>;

#[derive(Default)]
pub struct TxnCoordinator {
    slots: Slots<Transactions>,
    /// Ids with a change in flight: other requests for them wait their turn (retriable
    /// CONCURRENT_TRANSACTIONS), and the timer leaves them alone.
    busy: BTreeSet<String>,
    /// Per partition: state writes proposed and not yet adopted (cleaning waits for none).
    writes_in_flight: BTreeMap<u64, usize>,
}

/// Marks a transactional id busy for as long as it lives.
struct Busy<'a> {
    ctx: &'a ShardContext,
    id: String,
}

impl<'a> Busy<'a> {
    fn take(ctx: &'a ShardContext, id: &str) -> Option<Self> {
        ctx.transactions
            .borrow_mut()
            .busy
            .insert(id.to_string())
            .then(|| Busy {
                ctx,
                id: id.to_string(),
            })
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.ctx.transactions.borrow_mut().busy.remove(&self.id);
    }
}

pub async fn execute(ctx: &Rc<ShardContext>, partition: u64, call: TxnCall) -> TxnAnswer {
    let refuse = |error: ResponseError| refusal(&call, error);
    if let TxnCall::List = call {
        return TxnAnswer::Listed(list(ctx).await);
    }
    if let Err(error) = ensure_loaded(ctx, partition).await {
        return refuse(error);
    }
    if let TxnCall::Describe(id) = &call {
        return TxnAnswer::Described(Ok(current(ctx, partition, id)));
    }
    let Some(_busy) = Busy::take(ctx, call.transactional_id()) else {
        return refuse(ResponseError::ConcurrentTransactions);
    };
    let outcome = match call.clone() {
        TxnCall::Init {
            transactional_id,
            timeout_ms,
        } => {
            return match init(ctx, partition, &transactional_id, timeout_ms).await {
                Ok(meta) => TxnAnswer::Init(0, meta.producer_id, meta.epoch),
                Err(error) => refuse(error),
            }
        }
        TxnCall::AddPartitions {
            transactional_id,
            producer_id,
            epoch,
            partitions,
        } => {
            add_partitions(
                ctx,
                partition,
                &transactional_id,
                producer_id,
                epoch,
                &partitions,
            )
            .await
        }
        TxnCall::End {
            transactional_id,
            producer_id,
            epoch,
            commit,
        } => {
            end(
                ctx,
                partition,
                &transactional_id,
                producer_id,
                epoch,
                commit,
            )
            .await
        }
        TxnCall::Describe(_) | TxnCall::List => unreachable!("answered above"),
    };
    TxnAnswer::Done(outcome.map_or_else(|e| e.code(), |()| 0))
}

/// The answer to `call` when the coordinator cannot take it.
pub fn refusal(call: &TxnCall, error: ResponseError) -> TxnAnswer {
    match call {
        TxnCall::Init { .. } => TxnAnswer::Init(error.code(), -1, -1),
        TxnCall::Describe(_) => TxnAnswer::Described(Err(error.code())),
        TxnCall::List => TxnAnswer::Listed(Vec::new()),
        _ => TxnAnswer::Done(error.code()),
    }
}

/// Every transactional id of the `__transaction_state` partitions this shard leads.
async fn list(ctx: &Rc<ShardContext>) -> Vec<(String, i64, &'static str)> {
    let mut listed = Vec::new();
    for partition in partition_log::led_partitions(ctx, super::TRANSACTION_TOPIC) {
        if ensure_loaded(ctx, partition).await.is_err() {
            continue;
        }
        if let Some(transactions) = ctx.transactions.borrow_mut().slots.get_mut(partition) {
            listed.extend(
                transactions
                    .iter()
                    .map(|(id, meta)| (id.clone(), meta.producer_id, meta.status.name())),
            );
        }
    }
    listed
}

/// Loads the partition's transactional ids for this leader term (see the group coordinator's
/// `ensure_loaded`).
async fn ensure_loaded(ctx: &Rc<ShardContext>, partition: u64) -> Result<(), ResponseError> {
    let term = partition_log::leader_term(ctx, partition)?;
    match ctx.transactions.borrow_mut().slots.claim(partition, term) {
        Claim::Ready => return Ok(()),
        Claim::Loading => return Err(ResponseError::CoordinatorLoadInProgress),
        Claim::Load => {}
    }
    let mut transactions = Transactions::new();
    let loaded = partition_log::replay(ctx, partition, |_, record| {
        let Some(id) = record.key.as_ref().and_then(decode_key) else {
            return;
        };
        match record.value.as_ref().and_then(decode_value) {
            Some(meta) => {
                transactions.insert(id, meta);
            }
            None => {
                transactions.remove(&id);
            }
        }
    })
    .await;
    let mut coordinator = ctx.transactions.borrow_mut();
    match loaded {
        Ok(()) => {
            let count = transactions.len();
            if !coordinator.slots.finish_load(partition, term, transactions) {
                return Err(ResponseError::CoordinatorLoadInProgress);
            }
            tracing::info!(
                partition,
                term,
                ids = count,
                "transaction coordinator loaded"
            );
            Ok(())
        }
        Err(error) => {
            tracing::warn!(partition, %error, "transaction coordinator could not load");
            coordinator.slots.partitions.remove(&partition);
            Err(ResponseError::CoordinatorLoadInProgress)
        }
    }
}

fn current(ctx: &ShardContext, partition: u64, id: &str) -> Option<TxnMetadata> {
    ctx.transactions
        .borrow_mut()
        .slots
        .get_mut(partition)?
        .get(id)
        .cloned()
}

/// Writes `meta` as the id's state (committed through Raft), then adopts it.
async fn store(
    ctx: &Rc<ShardContext>,
    partition: u64,
    id: &str,
    meta: TxnMetadata,
) -> Result<TxnMetadata, ResponseError> {
    let batch = encode_records(
        &[(encode_key(id), Some(encode_value(&meta)))],
        wall_clock_ms(),
        None,
    );
    *ctx.transactions
        .borrow_mut()
        .writes_in_flight
        .entry(partition)
        .or_default() += 1;
    let written = partition_log::append(ctx, partition, batch).await;
    let mut coordinator = ctx.transactions.borrow_mut();
    if let Some(count) = coordinator.writes_in_flight.get_mut(&partition) {
        *count = count.saturating_sub(1);
    }
    written.map_err(|e| write_error(&e))?;
    let transactions = coordinator
        .slots
        .get_mut(partition)
        .ok_or(ResponseError::NotCoordinator)?;
    transactions.insert(id.to_string(), meta.clone());
    Ok(meta)
}

/// Writes the markers of a prepared transaction, then stores it complete. Once the Prepare
/// state is stored the outcome is decided: a failure here leaves it for the timer to finish.
async fn complete(
    ctx: &Rc<ShardContext>,
    partition: u64,
    id: &str,
    prepared: &TxnMetadata,
) -> Result<TxnMetadata, ResponseError> {
    let commit = prepared.status == TxnStatus::PrepareCommit;
    let term = partition_log::leader_term(ctx, partition).ok();
    let still_coordinator =
        || term.is_some() && partition_log::leader_term(ctx, partition).ok() == term;
    let marker = (prepared.producer_id, prepared.epoch, commit);
    if let Err(reason) = write_markers(ctx, marker, &prepared.partitions, still_coordinator).await {
        tracing::warn!(transactional_id = id, %reason, "markers not all written yet");
        return Err(ResponseError::ConcurrentTransactions);
    }
    store(ctx, partition, id, prepared.completed(wall_clock_ms())).await
}

async fn allocate_producer_id(ctx: &Rc<ShardContext>) -> Result<i64, ResponseError> {
    match crate::kafka::handlers::controller_request(ctx, ControllerRequest::AllocateProducerId)
        .await
    {
        Some(ControllerReply::ProducerId(Ok(id))) => Ok(id),
        _ => Err(ResponseError::CoordinatorNotAvailable),
    }
}

/// InitProducerId with a transactional id: a new id gets a producer id; a known one gets
/// its epoch bumped (fencing the previous instance) after its unfinished transaction is
/// aborted (or, if already prepared, finished).
async fn init(
    ctx: &Rc<ShardContext>,
    partition: u64,
    id: &str,
    timeout_ms: i32,
) -> Result<TxnMetadata, ResponseError> {
    if timeout_ms <= 0 || timeout_ms > TRANSACTION_TIMEOUT_MAX_MS {
        return Err(ResponseError::InvalidTransactionTimeout);
    }
    let now = wall_clock_ms();
    let Some(mut meta) = current(ctx, partition, id) else {
        let producer_id = allocate_producer_id(ctx).await?;
        return store(
            ctx,
            partition,
            id,
            TxnMetadata::new(producer_id, timeout_ms, now),
        )
        .await;
    };
    if meta.status == TxnStatus::Ongoing {
        meta = store(ctx, partition, id, meta.fenced_abort(now)).await?;
    }
    if meta.status.is_prepared() {
        meta = complete(ctx, partition, id, &meta).await?;
    }
    match meta.reinitialized(timeout_ms, wall_clock_ms())? {
        Some(next) => store(ctx, partition, id, next).await,
        None => {
            let producer_id = allocate_producer_id(ctx).await?;
            let fresh = TxnMetadata::new(producer_id, timeout_ms, wall_clock_ms());
            store(ctx, partition, id, fresh).await
        }
    }
}

async fn add_partitions(
    ctx: &Rc<ShardContext>,
    partition: u64,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> Result<(), ResponseError> {
    let meta = current(ctx, partition, id).ok_or(ResponseError::InvalidProducerIdMapping)?;
    if let Some(next) = meta.with_partitions(producer_id, epoch, partitions, wall_clock_ms())? {
        store(ctx, partition, id, next).await?;
    }
    Ok(())
}

/// EndTxn: answered once the outcome is decided (the Prepare state stored) and, normally,
/// its markers written; if they could not all be written yet, the timer finishes them and
/// read_committed consumers see the outcome a little later.
async fn end(
    ctx: &Rc<ShardContext>,
    partition: u64,
    id: &str,
    producer_id: i64,
    epoch: i16,
    commit: bool,
) -> Result<(), ResponseError> {
    let meta = current(ctx, partition, id).ok_or(ResponseError::InvalidProducerIdMapping)?;
    let prepared = match meta.ended(producer_id, epoch, commit, wall_clock_ms())? {
        EndStep::AlreadyDone => return Ok(()),
        EndStep::Prepare(prepared) => store(ctx, partition, id, prepared).await?,
    };
    let _ = complete(ctx, partition, id, &prepared).await;
    Ok(())
}

/// How often (in timer ticks) the coordinator looks at its partitions' size.
const CLEAN_EVERY_TICKS: u64 = 10;

/// Rewrites each loaded partition's transactional ids and drops the older log when the log
/// has grown well past them (`partition_log::start_cleaning`); not while a write is in flight.
fn clean_partitions(ctx: &Rc<ShardContext>) {
    let partitions: Vec<u64> = ctx
        .transactions
        .borrow()
        .slots
        .partitions
        .keys()
        .copied()
        .collect();
    for partition in partitions {
        let live = {
            let mut coordinator = ctx.transactions.borrow_mut();
            if coordinator
                .writes_in_flight
                .get(&partition)
                .copied()
                .unwrap_or(0)
                > 0
            {
                continue;
            }
            coordinator.slots.get_mut(partition).map(|transactions| {
                transactions
                    .iter()
                    .map(|(id, meta)| (encode_key(id), Some(encode_value(meta))))
                    .collect::<Vec<_>>()
            })
        };
        if let Some(live) = live {
            partition_log::start_cleaning(ctx, partition, live, ctx.config.coordinator_log_slack);
        }
    }
}

/// Aborts transactions past their timeout (with a bumped epoch, fencing their producer) and
/// finishes prepared ones whose markers are not all written (after a failover, or a
/// delivery that ran out of time).
pub async fn run_timer(ctx: Rc<ShardContext>) {
    let mut ticks = 0u64;
    loop {
        glommio::timer::sleep(TIMER).await;
        ticks += 1;
        if ticks.is_multiple_of(CLEAN_EVERY_TICKS) {
            clean_partitions(&ctx);
        }
        let now = wall_clock_ms();
        let mut work = Vec::new();
        {
            let mut coordinator = ctx.transactions.borrow_mut();
            coordinator.slots.retain_led(&ctx);
            let TxnCoordinator { slots, busy, .. } = &mut *coordinator;
            for (&partition, slot) in &slots.partitions {
                if !slot.loaded {
                    continue;
                }
                for (id, meta) in &slot.state {
                    if busy.contains(id) {
                        continue;
                    }
                    if meta.timed_out(now) || meta.status.is_prepared() {
                        work.push((partition, id.clone(), meta.clone()));
                    }
                }
            }
        }
        for (partition, id, meta) in work {
            let ctx = ctx.clone();
            glommio::spawn_local(async move {
                let Some(_busy) = Busy::take(&ctx, &id) else {
                    return;
                };
                let prepared = if meta.status == TxnStatus::Ongoing {
                    tracing::info!(transactional_id = %id, "aborting a transaction past its timeout");
                    match store(&ctx, partition, &id, meta.fenced_abort(wall_clock_ms())).await {
                        Ok(prepared) => prepared,
                        Err(_) => return,
                    }
                } else {
                    meta
                };
                let _ = complete(&ctx, partition, &id, &prepared).await;
            })
            .detach();
        }
    }
}
