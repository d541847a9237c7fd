//! Log compaction (`cleanup.policy=compact`): each shard's cleaner keeps the latest record
//! of every key in the compacted partitions this node leads, and drops tombstones once
//! `delete.retention.ms` has passed and the records of aborted transactions.
//!
//! How it fits a write-ahead log that never rewrites anything: a pass reads the committed,
//! stable prefix of a partition (everything below the last stable offset, less what
//! `min.compaction.lag.ms` keeps back), and proposes what it keeps as *cleaning entries*:
//! ordinary Raft entries, each saying "the batches in offsets `from..to` give way to these",
//! carrying the kept batches at their original offsets. Every replica applies them at commit
//! (`chronik_shards::group::Cleaning`), so all replicas serve the same records; the entries
//! the kept batches came from are then no longer needed, the Raft log is compacted past them
//! and their WAL segments are freed as retention frees them. A follower that falls behind
//! the compaction point gets a snapshot, then the cleaning entries, which are still in the
//! log. The cost: each pass writes the kept records again (and replicates them), like
//! Kafka's cleaner copies the segments it cleans; a partition's cleaned batches are read
//! from the entries that carry them.
//!
//! - `plan`: what a pass keeps, pure.

pub mod plan;

use chronik_shards::runtime::shard::wall_clock_ms;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};

use chronik_shards::error::ShardError;
use chronik_shards::group::encode_cleaning;
use chronik_shards::partition::batch::BatchHeader;
use chronik_shards::runtime::shard::load_pieces;

use crate::controller::commands::TopicRecord;
use crate::kafka::decompress::decompress_bounded;
use crate::kafka::topic_configs::cleanup_policy;
use crate::runtime::context::ShardContext;
use plan::{clean_batch, AbortedTransactions, Horizons, KeptBatch, LatestOffsets};

/// How much one read step of a pass loads.
const READ_BYTES: usize = 4 << 20;
/// Cleaning entries stay about the size of a large produce request (and never hold more
/// than the largest batch a producer may send, besides one such batch).
const ENTRY_BYTES: usize = 1 << 20;
/// Distinct keys one pass tracks (about 40 MiB of map); a partition with more is cleaned
/// over several passes.
const KEYS_MAX: usize = 1 << 20;
/// The largest a batch may decompress to while it is cleaned.
const DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// A compacted topic's cleaning settings.
#[derive(Debug, Clone, Copy)]
pub struct CompactionSettings {
    pub delete_retention_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: i64,
}

impl CompactionSettings {
    /// None for a topic whose cleanup policy does not include `compact`.
    pub fn of(topic: &TopicRecord) -> Option<Self> {
        let (compact, _) = topic
            .configs
            .get("cleanup.policy")
            .and_then(|v| cleanup_policy(v))?;
        if !compact {
            return None;
        }
        let number = |key: &str, default: f64| {
            topic
                .configs
                .get(key)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(default)
        };
        Some(Self {
            delete_retention_ms: number("delete.retention.ms", 86_400_000.0) as i64,
            min_cleanable_dirty_ratio: number("min.cleanable.dirty.ratio", 0.5),
            min_compaction_lag_ms: number("min.compaction.lag.ms", 0.0) as i64,
        })
    }
}

/// The shard's cleaner: every `log_cleaner_backoff_ms`, one pass over each compacted
/// partition it leads that has enough new data.
pub async fn run_cleaner(ctx: Rc<ShardContext>) {
    let backoff = Duration::from_millis(ctx.config.log_cleaner_backoff_ms.max(10));
    // Per partition, where the last pass ended: a pass runs again only past it.
    let mut cleaned_to: HashMap<u64, i64> = HashMap::new();
    loop {
        glommio::timer::sleep(backoff).await;
        for (group_id, settings) in compacted_partitions_led(&ctx) {
            let done = cleaned_to.get(&group_id).copied().unwrap_or(-1);
            match clean_partition(&ctx, group_id, settings, done).await {
                Ok(Some(to)) => {
                    cleaned_to.insert(group_id, to);
                }
                Ok(None) => {}
                Err(error) => tracing::debug!(group_id, %error, "cleaning pass stopped"),
            }
        }
    }
}

fn compacted_partitions_led(ctx: &ShardContext) -> Vec<(u64, CompactionSettings)> {
    let view = ctx.metadata();
    let me = u64::from(ctx.config.node_id);
    let shard = ctx.shard.borrow();
    view.topics
        .values()
        .filter_map(|topic| Some((topic, CompactionSettings::of(topic)?)))
        .flat_map(|(topic, settings)| {
            topic
                .partitions
                .iter()
                .filter(|p| p.shard as usize == ctx.shard_id)
                .filter(|p| shard.leader_of(p.group_id) == Some(me))
                .map(move |p| (p.group_id, settings))
        })
        .collect()
}

/// One pass over a partition, if it is due: returns where it ended.
async fn clean_partition(
    ctx: &Rc<ShardContext>,
    group_id: u64,
    settings: CompactionSettings,
    done: i64,
) -> Result<Option<i64>, ShardError> {
    let now = wall_clock_ms();
    let newest = now.saturating_sub(settings.min_compaction_lag_ms);
    let Some(bounds) = ctx.shard.borrow().cleaning_bounds(group_id, newest)? else {
        return Ok(None);
    };
    let total = bounds.cleaned_bytes + bounds.dirty_bytes;
    let dirty_ratio = bounds.dirty_bytes as f64 / total.max(1) as f64;
    if bounds.to <= done
        || bounds.dirty_bytes == 0
        || dirty_ratio < settings.min_cleanable_dirty_ratio
    {
        return Ok(None);
    }
    let aborted =
        ctx.shard
            .borrow()
            .aborted_transactions(group_id, bounds.log_start_offset, bounds.to)?;
    let (latest, to) =
        map_latest_offsets(ctx, group_id, bounds.log_start_offset, bounds.to, &aborted).await?;
    if to <= bounds.log_start_offset {
        return Ok(None);
    }
    let horizons = Horizons {
        log_start_offset: bounds.log_start_offset,
        tombstones_before: now.saturating_sub(settings.delete_retention_ms),
    };
    let entry_bytes = ENTRY_BYTES.min(ctx.config.message_bytes_max);
    let mut writer = CleaningWriter::new(ctx, group_id, bounds.from, entry_bytes);
    let mut aborted = AbortedTransactions::new(&aborted);
    let mut offset = bounds.log_start_offset;
    while offset < to {
        let batches = read_batches(ctx, group_id, offset, to).await?;
        if batches.is_empty() {
            break;
        }
        for (batch, header, records) in batches {
            offset = header.base_offset + i64::from(header.last_offset_delta) + 1;
            let kept = match records {
                Some(records) if aborted.skips(&header, &records) => KeptBatch::Nothing,
                Some(records) => {
                    clean_batch(&header, records, &latest, horizons).unwrap_or(KeptBatch::Whole)
                }
                None => KeptBatch::Whole,
            };
            writer.add(kept, batch, header.base_offset, offset).await?;
        }
    }
    writer.finish(to).await?;
    tracing::debug!(group_id, to, "partition cleaned");
    Ok(Some(to))
}

/// Pass one: the latest offset of every key below `to` (or below the batch where the map
/// filled, which then becomes the end of the pass).
async fn map_latest_offsets(
    ctx: &Rc<ShardContext>,
    group_id: u64,
    log_start_offset: i64,
    mut to: i64,
    aborted: &[(i64, i64)],
) -> Result<(LatestOffsets, i64), ShardError> {
    let mut latest = LatestOffsets::new(KEYS_MAX);
    let mut aborted = AbortedTransactions::new(aborted);
    let mut offset = log_start_offset;
    'read: while offset < to {
        let batches = read_batches(ctx, group_id, offset, to).await?;
        if batches.is_empty() {
            break;
        }
        for (_, header, records) in batches {
            let Some(records) = records else {
                offset = header.base_offset + i64::from(header.last_offset_delta) + 1;
                continue;
            };
            if aborted.skips(&header, &records) || header.is_control() {
                offset = header.base_offset + i64::from(header.last_offset_delta) + 1;
                continue;
            }
            if !latest.has_room_for(&records) {
                to = header.base_offset;
                break 'read;
            }
            latest.note(&records);
            offset = header.base_offset + i64::from(header.last_offset_delta) + 1;
        }
    }
    Ok((latest, to))
}

/// The committed batches from `offset` that start below `to`, with their records (None for
/// a batch that does not decode: it is kept whole, never guessed at).
async fn read_batches(
    ctx: &Rc<ShardContext>,
    group_id: u64,
    offset: i64,
    to: i64,
) -> Result<Vec<(Bytes, BatchHeader, Option<Vec<Record>>)>, ShardError> {
    let plan = ctx
        .shard
        .borrow()
        .plan_read(group_id, offset, READ_BYTES, true)?;
    let batches = load_pieces(plan.pieces).await?;
    if batches.is_empty() {
        return Err(ShardError::OutcomeUnknown(
            "the partition ended before the pass",
        ));
    }
    let bounded = |records: &mut Bytes, codec| {
        decompress_bounded(records, codec, DECOMPRESSED_BYTES_MAX).map_err(anyhow::Error::from)
    };
    let mut decoded = Vec::with_capacity(batches.len());
    for batch in batches {
        let header = BatchHeader::parse(&batch)
            .map_err(|_| ShardError::OutcomeUnknown("a stored batch lost its header"))?;
        if header.base_offset >= to {
            break;
        }
        let mut bytes = batch.clone();
        let records = RecordBatchDecoder::decode_with_custom_compression(&mut bytes, Some(bounded))
            .ok()
            .map(|set| set.records);
        decoded.push((batch, header, records));
    }
    Ok(decoded)
}

/// Collects kept batches into cleaning entries of about `ENTRY_BYTES` and proposes each,
/// waiting for it to commit before the next (a lost leadership ends the pass).
struct CleaningWriter<'a> {
    ctx: &'a Rc<ShardContext>,
    group_id: u64,
    from: i64,
    batches: Vec<u8>,
    entry_bytes: usize,
}

impl<'a> CleaningWriter<'a> {
    fn new(ctx: &'a Rc<ShardContext>, group_id: u64, from: i64, entry_bytes: usize) -> Self {
        Self {
            ctx,
            group_id,
            from,
            batches: Vec::new(),
            entry_bytes,
        }
    }

    /// Adds what was kept of the batch at `base_offset..next_offset`.
    async fn add(
        &mut self,
        kept: KeptBatch,
        batch: Bytes,
        base_offset: i64,
        next_offset: i64,
    ) -> Result<(), ShardError> {
        let kept = match kept {
            KeptBatch::Whole => batch,
            KeptBatch::Part(part) => part,
            KeptBatch::Nothing => Bytes::new(),
        };
        if !self.batches.is_empty() && self.batches.len() + kept.len() > self.entry_bytes {
            self.propose(base_offset).await?;
        }
        self.batches.extend_from_slice(&kept);
        if self.batches.len() >= self.entry_bytes {
            self.propose(next_offset).await?;
        }
        Ok(())
    }

    async fn finish(mut self, to: i64) -> Result<(), ShardError> {
        if self.from < to {
            self.propose(to).await?;
        }
        Ok(())
    }

    async fn propose(&mut self, to: i64) -> Result<(), ShardError> {
        let data = encode_cleaning(self.from, to, &std::mem::take(&mut self.batches));
        let receiver = self.ctx.shard.borrow_mut().propose(self.group_id, data)?;
        receiver
            .await
            .map_err(|_| ShardError::OutcomeUnknown("the cleaning entry was dropped"))??;
        self.from = to;
        Ok(())
    }
}
