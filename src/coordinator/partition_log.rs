//! What the coordinators (groups, transactions) do with their internal partitions: check
//! that this node leads one, read it back from the start, and append to it with acks=all.
//! Each coordinator keeps its state per partition and per leader term (`Slots`).

use chronik_shards::runtime::shard::wall_clock_ms;
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::{Record, RecordBatchDecoder};

use chronik_shards::error::ShardError;
use chronik_shards::partition::batch::BatchHeader;
use chronik_shards::runtime::shard::{load_pieces, AckWhen};

use crate::runtime::context::ShardContext;

/// How much of the partition one read step loads while a coordinator loads.
const LOAD_READ_BYTES: usize = 1 << 20;

/// The leader term of `partition` if this node leads it and has committed an entry of its
/// term (so everything before is readable). NOT_COORDINATOR when another node leads;
/// COORDINATOR_LOAD_IN_PROGRESS while a new leader is not ready (both retriable).
pub fn leader_term(ctx: &ShardContext, partition: u64) -> Result<i32, ResponseError> {
    let shard = ctx.shard.borrow();
    if shard.leader_of(partition) != Some(u64::from(ctx.config.node_id)) {
        return Err(ResponseError::NotCoordinator);
    }
    if shard.read_offsets(partition).is_err() {
        return Err(ResponseError::CoordinatorLoadInProgress);
    }
    shard
        .leader_epoch(partition)
        .map_err(|_| ResponseError::NotCoordinator)
}

/// The partitions of the internal `topic` that this shard owns and this node leads (the
/// ones whose coordinator runs here).
pub fn led_partitions(ctx: &ShardContext, topic: &str) -> Vec<u64> {
    let view = ctx.metadata();
    let me = u64::from(ctx.config.node_id);
    let shard = ctx.shard.borrow();
    view.topic(topic)
        .map(|topic| {
            topic
                .partitions
                .iter()
                .filter(|p| p.shard as usize == ctx.shard_id)
                .map(|p| p.group_id)
                .filter(|&partition| shard.leader_of(partition) == Some(me))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the partition from its start to the high watermark, handing each record (with its
/// batch's header: transactional batches and markers matter to the coordinators) to `visit`.
pub async fn replay(
    ctx: &Rc<ShardContext>,
    partition: u64,
    mut visit: impl FnMut(&BatchHeader, Record),
) -> Result<(), ShardError> {
    let (mut offset, end) = {
        let shard = ctx.shard.borrow();
        let offsets = shard.read_offsets(partition)?;
        (offsets.log_start_offset(), offsets.high_watermark())
    };
    while offset < end {
        let plan = ctx
            .shard
            .borrow()
            .plan_read(partition, offset, LOAD_READ_BYTES, true)?;
        let batches = load_pieces(plan.pieces).await?;
        if batches.is_empty() {
            break;
        }
        for mut batch in batches {
            let header = BatchHeader::parse(&batch).ok();
            let decoded = RecordBatchDecoder::decode(&mut batch);
            let (Some(header), Ok(set)) = (header, decoded) else {
                tracing::warn!(
                    partition,
                    offset,
                    "skipping an unreadable coordinator batch"
                );
                offset += 1;
                continue;
            };
            offset = offset.max(header.base_offset + header.offset_count());
            for record in set.records {
                visit(&header, record);
            }
        }
    }
    Ok(())
}

/// Appends one batch to the partition and waits until it is committed (replicated and
/// durable): its base offset.
pub async fn append(
    ctx: &Rc<ShardContext>,
    partition: u64,
    batch: Bytes,
) -> Result<i64, ShardError> {
    let header = BatchHeader::parse(&batch)
        .map_err(|_| ShardError::OutcomeUnknown("coordinator batch unreadable"))?;
    let (base_offset, receiver) = ctx.shard.borrow_mut().propose_internal_batch(
        partition,
        &batch,
        &header,
        AckWhen::Committed,
    )?;
    if let Some(receiver) = receiver {
        receiver
            .await
            .map_err(|_| ShardError::OutcomeUnknown("shard stopped while replicating"))??;
    }
    Ok(base_offset)
}

/// Rewrites a coordinator partition's live state at its end, then moves its log start there
/// (a replicated DeleteRecords), once the log holds more than twice the live records plus
/// `slack`: the coordinators keep their internal topics small without log compaction, and a
/// new leader reads back little. `live` is the state's records, taken by the caller just
/// before (no await in between, so no write of theirs slips between the two); nothing
/// happens while a write of theirs is still in flight. Returns whether it started.
pub fn start_cleaning(
    ctx: &Rc<ShardContext>,
    partition: u64,
    live: Vec<(Bytes, Option<Bytes>)>,
    slack: u64,
) -> bool {
    let mut shard = ctx.shard.borrow_mut();
    let Ok(offsets) = shard.read_offsets(partition) else {
        return false;
    };
    let held = (offsets.high_watermark() - offsets.log_start_offset()).max(0) as u64;
    if held <= 2 * live.len() as u64 + slack || !shard.nothing_in_flight(partition).unwrap_or(false)
    {
        return false;
    }
    let now = wall_clock_ms();
    let mut receivers = Vec::new();
    let mut rewrite_start = shard
        .read_offsets(partition)
        .map_or(0, |o| o.high_watermark());
    for (position, chunk) in live.chunks(1000).enumerate() {
        let batch = crate::coordinator::records::encode_records(chunk, now, None);
        let Ok(header) = BatchHeader::parse(&batch) else {
            return false;
        };
        match shard.propose_internal_batch(partition, &batch, &header, AckWhen::Committed) {
            Ok((base_offset, receiver)) => {
                if position == 0 {
                    rewrite_start = base_offset;
                }
                receivers.extend(receiver);
            }
            Err(_) => return false,
        }
    }
    drop(shard);
    let ctx = ctx.clone();
    glommio::spawn_local(async move {
        for receiver in receivers {
            if !matches!(receiver.await, Ok(Ok(_))) {
                return;
            }
        }
        let proposed = ctx
            .shard
            .borrow_mut()
            .propose_delete_before(partition, rewrite_start);
        if let Ok((_, Some(receiver))) = proposed {
            if matches!(receiver.await, Ok(Ok(_))) {
                tracing::info!(
                    partition,
                    log_start = rewrite_start,
                    "coordinator log cleaned"
                );
            }
        }
    })
    .detach();
    true
}

/// The error a coordinator answers when its write failed.
pub fn write_error(error: &ShardError) -> ResponseError {
    match error {
        ShardError::NotLeader { .. } | ShardError::UnknownGroup(_) | ShardError::GroupRemoved => {
            ResponseError::NotCoordinator
        }
        ShardError::RecordTooLarge(_) => ResponseError::InvalidCommitOffsetSize,
        // Retriable: the client sends the same request again.
        _ => ResponseError::CoordinatorNotAvailable,
    }
}

/// A coordinator's state of one partition, valid for one leader term.
pub struct Slot<T> {
    pub term: i32,
    pub loaded: bool,
    pub state: T,
}

/// A coordinator's partitions.
pub struct Slots<T> {
    pub partitions: BTreeMap<u64, Slot<T>>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            partitions: BTreeMap::new(),
        }
    }
}

/// What `Slots::claim` found.
pub enum Claim {
    /// Loaded for this term: go ahead.
    Ready,
    /// Another request is loading it.
    Loading,
    /// Nothing for this term yet: the caller loads it (an old term's state was dropped).
    Load,
}

impl<T: Default> Slots<T> {
    pub fn claim(&mut self, partition: u64, term: i32) -> Claim {
        match self.partitions.get(&partition) {
            Some(slot) if slot.term == term && slot.loaded => Claim::Ready,
            Some(slot) if slot.term == term => Claim::Loading,
            _ => {
                self.partitions.insert(
                    partition,
                    Slot {
                        term,
                        loaded: false,
                        state: T::default(),
                    },
                );
                Claim::Load
            }
        }
    }

    /// Installs what a load of `term` read; false when the partition moved on meanwhile.
    pub fn finish_load(&mut self, partition: u64, term: i32, state: T) -> bool {
        match self.partitions.get_mut(&partition) {
            Some(slot) if slot.term == term && !slot.loaded => {
                slot.state = state;
                slot.loaded = true;
                true
            }
            _ => false,
        }
    }

    pub fn get_mut(&mut self, partition: u64) -> Option<&mut T> {
        self.partitions
            .get_mut(&partition)
            .filter(|s| s.loaded)
            .map(|s| &mut s.state)
    }

    /// Drops partitions this node no longer leads in the same term.
    pub fn retain_led(&mut self, ctx: &ShardContext) {
        let shard = ctx.shard.borrow();
        let me = u64::from(ctx.config.node_id);
        self.partitions.retain(|&partition, slot| {
            shard.leader_of(partition) == Some(me)
                && shard.leader_epoch(partition).ok() == Some(slot.term)
        });
    }
}
