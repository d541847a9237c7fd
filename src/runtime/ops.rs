//! Executes a `ShardRequest` on the shard that owns its data.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use glommio::timer::Timer;
use kafka_protocol::records::RecordBatchDecoder;

use chronik_shards::error::ShardError;
use chronik_shards::partition::batch::BatchHeader;
use chronik_shards::partition::offsets::RetentionLimits;
use chronik_shards::runtime::shard::{
    load_pieces, AckWhen, CommitReceiver, GroupSpec, ReadPlan, Shard,
};

use super::context::ShardContext;
use super::frame::{
    AppendResult, EpochError, ListedOffset, PartitionAppend, PartitionDescription, PartitionRead,
    ReadResult, ShardReply, ShardRequest,
};
use crate::kafka::decompress::decompress_bounded;
use crate::metadata::{MetadataView, TopicSettings};

pub fn execute(
    ctx: Rc<ShardContext>,
    request: ShardRequest,
) -> LocalBoxFuture<'static, ShardReply> {
    async move {
        match request {
            ShardRequest::Append { appends, acks } => {
                ShardReply::Append(append_many(&ctx, appends, acks).await)
            }
            ShardRequest::Read {
                reads,
                budget_bytes,
            } => ShardReply::Read(read_many(&ctx, &reads, budget_bytes).await),
            ShardRequest::WaitForData { waits, wait_ms } => {
                wait_for_data(&ctx, &waits, wait_ms).await;
                ShardReply::Waited
            }
            ShardRequest::ListOffset {
                group_id,
                timestamp,
                read_committed,
            } => {
                ShardReply::ListOffset(list_offset(&ctx, group_id, timestamp, read_committed).await)
            }
            ShardRequest::Describe { group_ids } => {
                ShardReply::Describe(describe(&ctx, &group_ids))
            }
            ShardRequest::EpochEndOffset {
                group_id,
                leader_epoch,
                current_leader_epoch,
            } => ShardReply::EpochEndOffset(epoch_end_offset(
                &ctx,
                group_id,
                leader_epoch,
                current_leader_epoch,
            )),
            ShardRequest::Metadata(view) => {
                install_metadata(&ctx, view);
                ShardReply::MetadataApplied
            }
            ShardRequest::Raft(messages) => {
                ctx.shard.borrow_mut().step_all(messages);
                ShardReply::Stepped
            }
            ShardRequest::DescribeProducers { group_id } => {
                ShardReply::Producers(ctx.shard.borrow().describe_producers(group_id))
            }
            ShardRequest::DeleteRecords { group_id, offset } => {
                ShardReply::Deleted(delete_records(&ctx, group_id, offset).await)
            }
            ShardRequest::PartitionSizes { group_ids } => {
                ShardReply::Sizes(ctx.shard.borrow().partition_sizes(&group_ids))
            }
            ShardRequest::WriteMarker {
                group_id,
                producer_id,
                epoch,
                commit,
                is_offsets_partition,
            } => {
                let marker = (producer_id, epoch, commit);
                ShardReply::Marker(write_marker(&ctx, group_id, marker, is_offsets_partition).await)
            }
            ShardRequest::Transaction { partition, call } => ShardReply::Transaction(
                crate::transactions::service::execute(&ctx, partition, *call).await,
            ),
            ShardRequest::Group { partition, call } => ShardReply::Group(
                crate::coordinator::service::execute(&ctx, partition, *call).await,
            ),
            ShardRequest::Controller(request) => run_controller(&ctx, request).await,
        }
    }
    .boxed_local()
}

/// Appends a transaction marker (producer id, epoch, commit) to a partition this shard
/// leads; on an offsets partition, its coordinator then settles the producer's offsets.
async fn write_marker(
    ctx: &Rc<ShardContext>,
    group_id: u64,
    (producer_id, epoch, commit): (i64, i16, bool),
    is_offsets_partition: bool,
) -> Result<(), ShardError> {
    if is_offsets_partition {
        // The groups must be loaded to settle the producer's offsets when the marker lands;
        // while they load, the coordinator retries the marker.
        crate::coordinator::service::ensure_loaded(ctx, group_id)
            .await
            .map_err(|_| ShardError::OutcomeUnknown("the group coordinator is loading"))?;
    }
    let batch = crate::transactions::markers::control_batch(producer_id, epoch, commit, 0);
    let header = BatchHeader::parse(&batch)
        .map_err(|_| ShardError::OutcomeUnknown("control batch unreadable"))?;
    let proposal = ctx.shard.borrow_mut().propose_internal_batch(
        group_id,
        &batch,
        &header,
        AckWhen::Committed,
    );
    finish_append(ctx, group_id, proposal).await?;
    if is_offsets_partition {
        crate::coordinator::service::settle_transaction(ctx, group_id, producer_id, commit);
    }
    Ok(())
}

/// DeleteRecords: the new log start once committed on a quorum.
async fn delete_records(ctx: &ShardContext, group_id: u64, offset: i64) -> Result<i64, ShardError> {
    let (_, receiver) = ctx
        .shard
        .borrow_mut()
        .propose_delete_before(group_id, offset)?;
    if let Some(receiver) = receiver {
        receiver
            .await
            .map_err(|_| ShardError::OutcomeUnknown("shard stopped while replicating"))??;
    }
    Ok(ctx.shard.borrow().offsets(group_id)?.log_start_offset())
}

/// Only shard 0 runs the controller; anywhere else the request is refused (retriable).
async fn run_controller(
    ctx: &Rc<ShardContext>,
    request: crate::controller::ControllerRequest,
) -> ShardReply {
    let controller = ctx.controller.borrow().clone();
    match controller {
        Some(controller) => ShardReply::Controller(controller.handle(ctx, request).await),
        None => {
            let error =
                crate::controller::ControllerError::NotCommitted("not the controller shard".into());
            ShardReply::Controller(crate::controller::refuse(request, error))
        }
    }
}

async fn append_many(
    ctx: &ShardContext,
    appends: Vec<PartitionAppend>,
    acks: i16,
) -> Vec<Result<AppendResult, ShardError>> {
    // Propose everything first (one borrow, request order), then wait for the commits.
    let proposed: Vec<_> = {
        let mut shard = ctx.shard.borrow_mut();
        appends
            .into_iter()
            .map(|append| {
                let group_id = append.group_id;
                let proposal = (|| {
                    let header = BatchHeader::parse(&append.batch)
                        .map_err(|_| ShardError::OutcomeUnknown("batch header unreadable"))?;
                    check_in_sync(&shard, &append)?;
                    let ack = match acks {
                        0 => AckWhen::Never,
                        1 => AckWhen::LeaderDurable,
                        _ => AckWhen::Committed,
                    };
                    shard.propose_owned_batch(group_id, append.batch, &header, ack)
                })();
                (group_id, proposal)
            })
            .collect()
    };
    let mut results = Vec::with_capacity(proposed.len());
    for (group_id, proposal) in proposed {
        results.push(finish_append(ctx, group_id, proposal).await);
    }
    results
}

/// `min.insync.replicas` for acks=all: a leader that sees fewer replicas in sync refuses the
/// batch (NOT_ENOUGH_REPLICAS, retriable) instead of waiting on a quorum it may not get.
fn check_in_sync(shard: &Shard, append: &PartitionAppend) -> Result<(), ShardError> {
    if append.min_in_sync <= 1 {
        return Ok(());
    }
    match shard.group_status(append.group_id) {
        Some(status) if status.leader.is_some() && !status.in_sync.is_empty() => {
            if status.in_sync.len() < append.min_in_sync {
                return Err(ShardError::NotEnoughReplicas {
                    in_sync: status.in_sync.len(),
                    required: append.min_in_sync,
                });
            }
            Ok(())
        }
        // Not the leader (or unknown): proposing answers that.
        _ => Ok(()),
    }
}

async fn finish_append(
    ctx: &ShardContext,
    group_id: u64,
    proposal: Result<(i64, Option<CommitReceiver>), ShardError>,
) -> Result<AppendResult, ShardError> {
    let (base_offset, receiver) = proposal?;
    if let Some(receiver) = receiver {
        receiver
            .await
            .map_err(|_| ShardError::OutcomeUnknown("shard stopped while replicating"))??;
    }
    let log_start_offset = ctx
        .shard
        .borrow()
        .offsets(group_id)
        .map_or(-1, |o| o.log_start_offset());
    Ok(AppendResult {
        base_offset,
        log_start_offset,
    })
}

/// Reads partitions sharing `budget_bytes`: memory per request stays within the budget plus
/// one whole batch (the first found, which Kafka requires to be returned whole), and what
/// the shard's answers hold from WAL reads within `fetch_read_bytes_max` (`HeldMemory`). The plans
/// are made in order, each within what the partitions before it left of the budget; then all
/// partitions load at once, so a fetch from disk keeps several reads in flight (one at a time
/// left the disk idle between them: 70% of its read bandwidth).
async fn read_many(
    ctx: &ShardContext,
    reads: &[PartitionRead],
    budget_bytes: usize,
) -> Vec<Result<ReadResult, ShardError>> {
    let mut remaining = budget_bytes;
    let mut first_whole = true;
    let mut memory_room = ctx.read_memory.room();
    let mut plans = Vec::with_capacity(reads.len());
    for read in reads {
        let mut plan = plan_one(ctx, read, remaining, first_whole);
        let cut_short_by_memory = plan.as_ref().is_ok_and(|p| p.disk_bytes() > memory_room);
        if cut_short_by_memory {
            // The shard's answers already hold what WAL reads may: read only what fits
            // (still the one whole batch Kafka requires if the answer has none yet).
            plan = plan_one(ctx, read, remaining.min(memory_room), first_whole);
        }
        if let Ok(plan) = &plan {
            remaining = remaining.saturating_sub(plan.bytes());
            memory_room = memory_room.saturating_sub(plan.disk_bytes());
            first_whole &= plan.pieces.is_empty();
        }
        let reservation = plan
            .as_ref()
            .ok()
            .map(ReadPlan::disk_bytes)
            .filter(|&bytes| bytes > 0)
            .map(|bytes| ctx.read_memory.reserve(bytes));
        plans.push((plan, reservation, cut_short_by_memory));
    }
    futures::future::join_all(plans.into_iter().map(
        |(plan, reservation, cut_short_by_memory)| async move {
            let plan = plan?;
            let from_disk: Vec<bool> = plan.pieces.iter().map(|p| p.is_from_disk()).collect();
            let batches = load_pieces(plan.pieces).await?;
            debug_assert_eq!(from_disk.len(), batches.len(), "one batch per piece");
            let batches = batches
                .into_iter()
                .zip(from_disk)
                .map(|(batch, from_disk)| match from_disk {
                    true => ctx.read_memory.hold(batch),
                    false => batch,
                })
                .collect();
            drop(reservation); // the batches hold the memory now
            Ok(ReadResult {
                high_watermark: plan.high_watermark,
                log_start_offset: plan.log_start_offset,
                last_stable_offset: plan.last_stable_offset,
                aborted: plan.aborted,
                batches,
                cut_short_by_memory,
            })
        },
    ))
    .await
}

fn plan_one(
    ctx: &ShardContext,
    read: &PartitionRead,
    remaining: usize,
    first_whole: bool,
) -> Result<ReadPlan, ShardError> {
    ctx.shard.borrow().plan_read_isolated(
        read.group_id,
        read.offset,
        read.max_bytes.min(remaining),
        first_whole,
        read.from_follower,
        read.read_committed,
    )
}

async fn wait_for_data(ctx: &ShardContext, waits: &[(u64, i64)], wait_ms: u64) {
    let mut waiters = Vec::with_capacity(waits.len());
    let overloaded = {
        let mut shard = ctx.shard.borrow_mut();
        let mut overloaded = false;
        for &(group_id, seen_high_watermark) in waits {
            // Checked under the same borrow as the registration: no commit can slip between.
            // A partition that cannot be read now answers at once too (with its error).
            let available = shard
                .read_offsets(group_id)
                .map_or(true, |o| o.high_watermark() > seen_high_watermark);
            if available {
                return;
            }
            match shard.fetch_waiter(group_id) {
                Ok(waiter) => waiters.push(waiter),
                Err(_) => overloaded = true,
            }
        }
        overloaded
    };
    if overloaded {
        // Too many waiters: poll again shortly instead of queueing without bound.
        glommio::timer::sleep(Duration::from_millis(
            wait_ms.min(FETCH_POLL_WHEN_OVERLOADED_MS),
        ))
        .await;
        return;
    }
    if waiters.is_empty() {
        return;
    }
    let any = futures::future::select_all(waiters);
    let timeout = Timer::new(Duration::from_millis(wait_ms));
    futures::future::select(any, std::pin::pin!(timeout)).await;
}

/// How often a long poll re-checks when the partition's waiter list is full.
const FETCH_POLL_WHEN_OVERLOADED_MS: u64 = 50;

/// Bounds on decoding a batch to find a record by timestamp (a larger batch answers with its
/// base offset).
const LIST_OFFSETS_DECODE_RECORDS_MAX: i32 = 100_000;
const LIST_OFFSETS_DECODE_BYTES_MAX: usize = 4 << 20;
/// Past this, a batch is answered by its base offset instead (a compression bomb stops here).
/// Decompression runs on the shard's thread, so the cap also bounds how long one ListOffsets
/// can hold up the shard's other work (a few ms at 16 MiB).
const LIST_OFFSETS_DECOMPRESSED_BYTES_MAX: usize = 16 << 20;

/// Which batch (and in it, which record) answers a ListOffsets timestamp.
enum Lookup {
    Done(ListedOffset),
    /// The first record at or after `timestamp` inside the batch at `base_offset`.
    InBatch {
        base_offset: i64,
        timestamp: i64,
        leader_epoch: i32,
    },
}

async fn list_offset(
    ctx: &ShardContext,
    group_id: u64,
    timestamp: i64,
    read_committed: bool,
) -> Result<ListedOffset, ShardError> {
    if read_committed && timestamp == -1 {
        return last_stable(ctx, group_id);
    }
    let (base_offset, timestamp, leader_epoch) = match find_listed_batch(ctx, group_id, timestamp)?
    {
        Lookup::Done(listed) => return Ok(listed),
        Lookup::InBatch {
            base_offset,
            timestamp,
            leader_epoch,
        } => (base_offset, timestamp, leader_epoch),
    };
    let plan = ctx
        .shard
        .borrow()
        .plan_read(group_id, base_offset, 1, true)?;
    let mut batch = match plan.pieces.into_iter().next() {
        Some(piece) => piece.load().await?,
        None => {
            return Ok(ListedOffset {
                offset: -1,
                timestamp: -1,
                leader_epoch,
            })
        }
    };
    // Decoding (and decompressing) a stored batch is only ever done here, off the hot path,
    // and only for batches small enough that the work stays bounded.
    let decodable = BatchHeader::parse(&batch).is_ok_and(|h| {
        h.record_count <= LIST_OFFSETS_DECODE_RECORDS_MAX
            && batch.len() <= LIST_OFFSETS_DECODE_BYTES_MAX
    });
    let found = if decodable {
        let bounded = |records: &mut Bytes, codec| {
            decompress_bounded(records, codec, LIST_OFFSETS_DECOMPRESSED_BYTES_MAX)
                .map_err(anyhow::Error::from)
        };
        match RecordBatchDecoder::decode_with_custom_compression(&mut batch, Some(bounded)) {
            Ok(set) => set
                .records
                .into_iter()
                .find(|r| r.timestamp >= timestamp)
                .map(|r| (r.offset, r.timestamp)),
            Err(_) => None,
        }
    } else {
        None
    };
    let (offset, record_timestamp) = found.unwrap_or((base_offset, timestamp));
    Ok(ListedOffset {
        offset,
        timestamp: record_timestamp,
        leader_epoch,
    })
}

/// ListOffsets latest for read_committed consumers: the last stable offset.
fn last_stable(ctx: &ShardContext, group_id: u64) -> Result<ListedOffset, ShardError> {
    let shard = ctx.shard.borrow();
    Ok(ListedOffset {
        offset: shard.last_stable_offset(group_id)?,
        timestamp: -1,
        leader_epoch: shard.leader_epoch(group_id)?,
    })
}

fn find_listed_batch(
    ctx: &ShardContext,
    group_id: u64,
    timestamp: i64,
) -> Result<Lookup, ShardError> {
    let shard = ctx.shard.borrow();
    let offsets = shard.read_offsets(group_id)?;
    let leader_epoch = shard.leader_epoch(group_id)?;
    let listed = |offset, timestamp| {
        Lookup::Done(ListedOffset {
            offset,
            timestamp,
            leader_epoch,
        })
    };
    Ok(match timestamp {
        // -4 is the earliest offset in local storage: all of ours is local.
        -2 | -4 => listed(offsets.log_start_offset(), -1),
        -1 => listed(offsets.high_watermark(), -1),
        // -5 is the latest offset in tiered storage: there is none.
        -5 => listed(-1, -1),
        // The record with the largest timestamp: the first one reaching its batch's maximum.
        -3 => match offsets.max_timestamp_batch() {
            Some(batch) => Lookup::InBatch {
                base_offset: batch.base_offset,
                timestamp: batch.max_timestamp,
                leader_epoch,
            },
            None => listed(-1, -1),
        },
        t => match offsets.offset_for_timestamp(t) {
            Some(batch) => Lookup::InBatch {
                base_offset: batch.base_offset,
                timestamp: t,
                leader_epoch,
            },
            None => listed(-1, -1),
        },
    })
}

fn epoch_end_offset(
    ctx: &ShardContext,
    group_id: u64,
    leader_epoch: i32,
    current_leader_epoch: i32,
) -> Result<(i32, i64), EpochError> {
    let shard = ctx.shard.borrow();
    let current = shard.leader_epoch(group_id).map_err(EpochError::Shard)?;
    if current_leader_epoch >= 0 && current_leader_epoch > current {
        return Err(EpochError::Unknown);
    }
    if current_leader_epoch >= 0 && current_leader_epoch < current {
        return Err(EpochError::Fenced);
    }
    shard
        .epoch_end_offset(group_id, leader_epoch)
        .map_err(EpochError::Shard)
}

fn describe(ctx: &ShardContext, group_ids: &[u64]) -> Vec<Option<PartitionDescription>> {
    let shard = ctx.shard.borrow();
    group_ids
        .iter()
        .map(|&group_id| {
            let status = shard.group_status(group_id)?;
            Some(PartitionDescription {
                leader: status.leader,
                leader_epoch: status.term as i32,
                in_sync: status.in_sync,
            })
        })
        .collect()
}

/// Applies a metadata snapshot on this shard: groups with a replica here come to life, groups
/// of deleted topics go. Any committed prefix of the metadata is safe to apply: a group is
/// only removed once the metadata shows it deleted (`MetadataView::group_deleted`), never
/// because a node that is behind does not know it yet.
pub fn install_metadata(ctx: &ShardContext, view: Arc<MetadataView>) {
    let defaults = ctx.topic_defaults();
    let me = ctx.config.node_id;
    let mut shard = ctx.shard.borrow_mut();
    let mut wanted = std::collections::BTreeMap::new();
    for topic in view.topics.values() {
        let settings = TopicSettings::of(topic, defaults);
        let retention = match settings.deletes_old_data {
            true => RetentionLimits {
                retention_ms: settings.retention_ms,
                retention_bytes: settings.retention_bytes,
            },
            false => RetentionLimits {
                retention_ms: -1,
                retention_bytes: -1,
            },
        };
        for partition in topic.partitions.iter().filter(|p| {
            p.shard as usize == ctx.shard_id && (p.replicas.is_empty() || p.replicas.contains(&me))
        }) {
            // Metadata from before clusters: the partition's only replica is this node.
            let voters: Vec<u64> = if partition.replicas.is_empty() {
                vec![u64::from(me)]
            } else {
                partition.replicas.iter().map(|&n| u64::from(n)).collect()
            };
            wanted.insert(partition.group_id, (retention, voters));
        }
    }
    let deleted: Vec<u64> = shard
        .group_ids()
        .into_iter()
        .chain(shard.recovered_group_ids())
        .filter(|&group_id| view.group_deleted(group_id))
        .collect();
    for group_id in deleted {
        tracing::info!(
            shard = ctx.shard_id,
            group_id,
            "removing the group of a deleted topic"
        );
        shard.remove_group(group_id);
    }
    for (&group_id, (retention, voters)) in &wanted {
        if shard.has_group(group_id) {
            shard.set_retention(group_id, *retention);
        } else if let Err(error) = shard.add_group_with_voters(
            GroupSpec::Partition {
                group_id,
                retention: *retention,
            },
            voters.clone(),
        ) {
            tracing::error!(group_id, %error, "cannot start partition group");
        }
    }
    if !ctx.metadata_installed.get() {
        shard.mark_groups_installed();
        ctx.metadata_installed.set(true);
    }
    drop(shard);
    ctx.set_metadata(view);
}
