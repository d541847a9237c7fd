//! The shard's write-ahead log: one per shard, shared by every Raft group the shard owns.
//!
//! Owned by exactly one shard; nothing here is `Send`. Records are appended to an in-memory
//! pending buffer; `take_flush_job` turns everything pending into 4 KiB-aligned O_DIRECT writes,
//! one per touched segment, each durable when it completes (O_DSYNC on real files; `fdatasync`
//! after it where the disk needs one) (group commit: one durable write covers every group of
//! the shard). The partially filled last block is kept in memory and rewritten by the next flush
//! with the same bytes in front, so a torn rewrite can only damage records that were never
//! acknowledged.
//!
//! Segments are preallocated files named `<seq>.wal` that roll at `segment_bytes_max`. A record
//! never spans two segments. The next segment is made ready ahead, beside the group commits
//! (`take_prepare_job`): creating one (allocate, fsync, fsync of the directory) took 2–5 ms
//! under load on the CI machine, a stall of every commit waiting behind the roll. Preferably
//! the spare is the file of a segment retention released, whose blocks are already written
//! (commits into it need no extent conversion); its old records carry another segment's tag
//! (see `record`), so they never read as this one's. Until the roll writes its first record, a
//! spare holds no record of its own, so recovery treats it as never written. Every roll ends
//! the old segment with `SegmentEnd` and starts the new one with `SegmentStart` (the old
//! one's end): recovery holds older segments to both.

pub mod disk;
pub mod record;
pub mod recovery;
pub mod write_buffer;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use futures::channel::oneshot;
use thiserror::Error;

pub use disk::Disk;
use disk::{DiskFile, DmaDisk};

use record::{RecordKind, ScanStop};
use recovery::{RecoveredLog, Recovery, RecoveryError};
use write_buffer::WriteBuffer;

pub const BLOCK_BYTES: u64 = 4096;
const READ_CHUNK_BYTES: u64 = 4 << 20;
const _: () = assert!(READ_CHUNK_BYTES.is_multiple_of(BLOCK_BYTES));

#[derive(Debug, Error)]
pub enum WalError {
    #[error("wal i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("wal recovery: {0}")]
    Recovery(#[from] RecoveryError),
    #[error("wal record at segment {segment} position {position} is damaged: {stop}")]
    Damaged {
        segment: u64,
        position: u64,
        stop: ScanStop,
    },
    #[error("wal segment {0} is gone (reclaimed by retention)")]
    SegmentGone(u64),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a record sits on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalLocation {
    pub segment: u64,
    pub position: u64,
    pub record_bytes: u32,
}

#[derive(Debug, Clone)]
pub struct WalConfig {
    pub dir: PathBuf,
    pub segment_bytes_max: u64,
    /// A group commit at least this large ends on a block boundary (a `Padding` record), so
    /// the next one may be written while it is still in flight; and the pump starts that next
    /// one once this much more is waiting (see `Wal::flush_may_start`). Two writes in flight
    /// is what a latency-bound disk (one whose cache flush dominates) needs for its bandwidth;
    /// the padding costs at most 3% of a commit this large.
    pub overlap_min_bytes: usize,
}

/// `WalConfig::overlap_min_bytes` unless configured otherwise: 128 KiB took 6-17% more than
/// 256 KiB with 4 requests of 16 KiB in flight per connection (BENCHMARKS.md, midday).
pub const OVERLAP_MIN_BYTES_DEFAULT: usize = 128 << 10;
/// Group commits in flight at once, at most.
const FLUSHES_IN_FLIGHT_MAX: usize = 2;

impl WalConfig {
    pub fn validate(&self) -> Result<(), String> {
        let min = 16 * BLOCK_BYTES;
        if self.segment_bytes_max < min || !self.segment_bytes_max.is_multiple_of(BLOCK_BYTES) {
            return Err(format!(
                "segment_bytes_max must be a multiple of 4096 and at least {min}"
            ));
        }
        if self.overlap_min_bytes == 0 {
            return Err("overlap_min_bytes must be positive".into());
        }
        Ok(())
    }

    /// The largest record that fits a segment, leaving room for the checkpoint after a roll.
    pub fn record_bytes_max(&self) -> usize {
        (self.segment_bytes_max / 2) as usize
    }
}

/// Records queued for one segment, laid out exactly as the group commit writes them: `bytes`
/// starts at the block-aligned file position `base`, so a chunk for the active segment
/// begins with the tail block already on disk, and the flush writes the chunk's own buffer
/// (no copy of the records between append and write).
struct PendingChunk {
    segment: u64,
    base: u64,
    bytes: WriteBuffer,
}

impl PendingChunk {
    /// The file position the next record lands at.
    fn end(&self) -> u64 {
        self.base + self.bytes.len() as u64
    }
}

pub struct Wal<D: Disk = DmaDisk> {
    config: WalConfig,
    disk: D,
    segments: BTreeMap<u64, Rc<D::File>>,
    active_segment: u64,
    /// Logical end of flushed data in the active segment.
    write_position: u64,
    /// Bytes from `align_down(write_position)` to `write_position`, already on disk.
    tail_block: Vec<u8>,
    /// Capacity for the next pending chunk: a little over the last one's size, so a chunk
    /// rarely outgrows its buffer (growing copies it once).
    next_chunk_capacity: usize,
    pending: Vec<PendingChunk>,
    /// Per segment, per group: the highest Raft index it holds. A segment can be deleted once
    /// every group has compacted past its entry there.
    segment_entry_max: BTreeMap<u64, BTreeMap<u64, u64>>,
    /// Group commits taken and not completed yet (completed in the order taken).
    flushes_in_flight: usize,
    /// The newest commit in flight ends on a block boundary and opens no segment: the next
    /// one writes no block of it and needs no file it creates, so it may run beside it.
    newest_flush_overlappable: bool,
    /// A segment was opened (or the log recovered) and has no checkpoint yet: the shard must
    /// write one before older segments may be reclaimed.
    checkpoint_owed: bool,
    /// Segment holding a complete checkpoint that is queued (the flush job carries it on,
    /// and it counts once that commit completes).
    checkpoint_pending: Option<u64>,
    /// Newest segment with a durable, complete checkpoint: only older segments can go.
    checkpointed_segment: u64,
    /// The next segment, being prepared or ready (see `take_prepare_job`).
    spare: Option<Spare<D>>,
    /// Files of reclaimed segments kept to be reused as spares, under names recovery does
    /// not read (`<segment>.free`): their blocks are written, so commits into them overwrite
    /// rather than convert allocated extents (see `take_prepare_job`).
    reusable: Vec<(PathBuf, Rc<D::File>)>,
    /// Segments holding records written before segment tags: never reused, since their
    /// stale records would read as valid in any segment.
    untagged_segments: BTreeSet<u64>,
}

/// A segment prepared ahead of the roll into it: the flush that rolls takes `ready` and waits
/// for the preparation to finish (usually long done), so only one task ever writes the file.
struct Spare<D: Disk> {
    segment: u64,
    ready: oneshot::Receiver<Result<Rc<D::File>, WalError>>,
}

/// Makes the next segment ready ahead of need; run beside the group commits.
pub struct PrepareJob<D: Disk = DmaDisk> {
    segment: u64,
    path: PathBuf,
    source: SpareSource<D>,
    segment_bytes_max: u64,
    disk: D,
    done: oneshot::Sender<Result<Rc<D::File>, WalError>>,
}

/// A group commit ready to run: aligned writes, each durable before the next starts.
pub struct FlushJob<D: Disk = DmaDisk> {
    writes: Vec<FlushWrite<D>>,
    segment_bytes_max: u64,
    dir: PathBuf,
    disk: D,
    /// The segment whose checkpoint this commit makes durable.
    checkpoint: Option<u64>,
    /// Taken while another commit is in flight, and it rolls into another segment: it may
    /// start only once that one completed (recovery holds a segment written only after the
    /// one before it is durable).
    must_follow_previous: bool,
}

struct FlushWrite<D: Disk> {
    segment: u64,
    file: SegmentFile<D>,
    position: u64,
    bytes: WriteBuffer,
}

/// Where a spare segment's file comes from.
enum SpareSource<D: Disk> {
    Create,
    /// A released segment's file, kept under `kept` (see `Wal::reusable`).
    Reuse {
        kept: PathBuf,
        file: Rc<D::File>,
    },
}

/// Where a flush write's segment comes from.
enum SegmentFile<D: Disk> {
    Open(Rc<D::File>),
    /// The spare prepared for this segment, once its preparation is done.
    Prepared(oneshot::Receiver<Result<Rc<D::File>, WalError>>),
    /// No spare: the flush creates the segment itself.
    Create,
}

/// Files the flush created; handed back with `Wal::complete_flush`.
pub struct FlushDone<D: Disk = DmaDisk> {
    created: Vec<(u64, Rc<D::File>)>,
    checkpoint: Option<u64>,
}

/// Bounds of a new pending chunk's first capacity (half again the last chunk's size, so
/// that steady load never grows a chunk: growing copies it, and with 256 partitions' 4 MiB
/// requests a 4 MiB bound cost a third of the throughput; 64 MiB raised the peak memory of
/// `tests/overload.rs` past its bound). Write buffers come from the
/// shard's io_uring arena (glommio's `io_memory`, 10 MiB; larger ones from the heap), so they
/// are not kept between flushes: the arena already reuses memory that is faulted in.
const CHUNK_CAPACITY_MIN: usize = 64 << 10;
const CHUNK_CAPACITY_MAX: usize = 16 << 20;

/// The first capacity of the chunk after one of `last_len` bytes: half again the largest
/// recent chunk. It follows a rising size at once and a falling one slowly (an eighth per
/// commit), because with two commits in flight sizes alternate, and sizing by the last one
/// alone grew (and so copied) every other chunk.
fn next_chunk_capacity(previous_capacity: usize, last_len: usize) -> usize {
    (last_len + last_len / 2)
        .max(previous_capacity - previous_capacity / 8)
        .clamp(CHUNK_CAPACITY_MIN, CHUNK_CAPACITY_MAX)
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.wal"))
}

/// Where a reclaimed segment's file waits to be reused (`Wal::reusable`).
fn reusable_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.free"))
}

/// How many reclaimed segment files a WAL keeps for reuse (the rest are deleted): enough for
/// what retention frees between two checks at a few hundred MiB/s with 64 MiB segments, and
/// a bound on the disk kept past retention.
const REUSABLE_SEGMENTS_MAX: usize = 16;

/// The kept files of reclaimed segments left by the last run: reused as they are when their
/// size is the segment size (and within the bound), deleted otherwise.
async fn load_reusable<D: Disk>(
    disk: &D,
    dir: &Path,
    segment_bytes_max: u64,
) -> Result<Vec<(PathBuf, Rc<D::File>)>, WalError> {
    let mut reusable = Vec::new();
    let mut removed = false;
    for name in disk.list(dir).map_err(io_error(dir))? {
        if !name.ends_with(".free") {
            continue;
        }
        let path = dir.join(&name);
        let file = disk.open(&path, false).await.map_err(io_error(&path))?;
        let size = file.size().await.map_err(io_error(&path))?;
        if size == segment_bytes_max && reusable.len() < REUSABLE_SEGMENTS_MAX {
            reusable.push((path, Rc::new(file)));
        } else {
            disk.remove(&path).map_err(io_error(&path))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(disk, dir).await?;
    }
    Ok(reusable)
}

fn align_down(value: u64) -> u64 {
    value - value % BLOCK_BYTES
}

fn align_up(value: u64) -> u64 {
    value.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

async fn open_segment<D: Disk>(
    disk: &D,
    path: &Path,
    create: bool,
    size: u64,
) -> Result<D::File, WalError> {
    let file = disk.open(path, create).await.map_err(io_error(path))?;
    if create {
        file.allocate(size).await.map_err(io_error(path))?;
        file.sync().await.map_err(io_error(path))?;
        sync_dir(disk, path.parent().unwrap_or(Path::new("."))).await?;
    }
    Ok(file)
}

/// Makes a created or removed file name durable.
async fn sync_dir<D: Disk>(disk: &D, dir: &Path) -> Result<(), WalError> {
    disk.sync_dir(dir).await.map_err(io_error(dir))
}

async fn read_whole<F: DiskFile>(file: &F, path: &Path) -> Result<Vec<u8>, WalError> {
    let size = file.size().await.map_err(io_error(path))?;
    let mut content = Vec::with_capacity(size as usize);
    let mut position = 0;
    while position < size {
        let length = READ_CHUNK_BYTES.min(size - position);
        let chunk = file
            .read_at(position, length as usize)
            .await
            .map_err(io_error(path))?;
        if chunk.is_empty() {
            break;
        }
        content.extend_from_slice(&chunk);
        position += chunk.len() as u64;
    }
    Ok(content)
}

/// Segment numbers present in `dir`, oldest first.
fn list_segments<D: Disk>(disk: &D, dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut sequence: Vec<u64> = disk
        .list(dir)
        .map_err(io_error(dir))?
        .iter()
        .filter_map(|name| name.strip_suffix(".wal")?.parse().ok())
        .collect();
    sequence.sort_unstable();
    Ok(sequence)
}

/// Renames the kept file `kept` to the segment `path`. The rename is durable before anything
/// is written into the file (else a crash could leave the new records under the old name),
/// and so is the one that kept it (`Wal::remove_segments` does not sync the directory).
async fn reuse_file<D: Disk>(disk: &D, kept: &Path, path: &Path) -> Result<(), WalError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(disk, dir).await?;
    disk.rename(kept, path).map_err(io_error(kept))?;
    sync_dir(disk, dir).await
}

/// Whether none of `segments` holds a record: each was created (or prepared ahead) but never
/// written to. A segment is written only after the one before it is synced.
async fn segments_unwritten<D: Disk>(
    disk: &D,
    dir: &Path,
    segments: &[u64],
) -> Result<bool, WalError> {
    for &segment in segments {
        let path = segment_path(dir, segment);
        let file = disk.open(&path, false).await.map_err(io_error(&path))?;
        let content = read_whole(&file, &path).await?;
        if record::decode(&content, record::segment_tag(segment)).is_ok() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// How a segment begins, which says where the one before it must end.
enum SegmentOpening {
    /// It holds no record of its own: never written to (a spare, or a reused file).
    Unwritten,
    /// Entered by a roll, whose `SegmentStart` record gives the previous segment's end.
    AfterRoll { previous_end: u64 },
    /// Written before segments began with `SegmentStart`: the previous segment ends at a
    /// zero header with only zeros after it.
    Untagged,
    /// Not the previous segment's successor (retention removed the one between).
    Unchecked,
}

/// How the segment after `segment` (the first of `later`) begins, as far as the end of
/// `segment` is concerned.
async fn next_opening<D: Disk>(
    disk: &D,
    dir: &Path,
    segment: u64,
    later: &[u64],
) -> Result<SegmentOpening, WalError> {
    let Some(&next) = later.first() else {
        return Ok(SegmentOpening::Unwritten);
    };
    Ok(match segment_opening(disk, dir, next).await? {
        // Retention removed the segment in between: the end it gives is that one's.
        SegmentOpening::AfterRoll { .. } if next != segment + 1 => SegmentOpening::Unchecked,
        opening => opening,
    })
}

/// Whether `segment` (scanned into `scan`) is the last one written, checking the end of an
/// older one. It must end exactly where the next one says it did, with its `SegmentEnd`
/// record (or, written before segments said so, at a zero header with zeros after it).
/// Anything else means a block was lost or zeroed under acknowledged records: refuse instead
/// of silently skipping them.
fn is_last_written(
    opening: &SegmentOpening,
    segment: u64,
    untagged: bool,
    scan: &record::Scan<'_>,
    content: &[u8],
) -> Result<bool, WalError> {
    let damaged = || WalError::Damaged {
        segment,
        position: scan.valid_bytes as u64,
        stop: scan.stop,
    };
    let zero_end =
        || scan.stop == ScanStop::End && content[scan.valid_bytes..].iter().all(|&b| b == 0);
    let marked_end = || {
        scan.records
            .last()
            .is_some_and(|(_, last)| last.kind == RecordKind::SegmentEnd)
    };
    let ends_well = match *opening {
        SegmentOpening::Unwritten => return Ok(true),
        SegmentOpening::AfterRoll { previous_end } => {
            scan.valid_bytes as u64 == previous_end && (marked_end() || zero_end())
        }
        SegmentOpening::Untagged => zero_end(),
        // Retention removed the segment in between, whose start gave this one's end.
        SegmentOpening::Unchecked => marked_end() || (untagged && zero_end()),
    };
    if !ends_well {
        return Err(damaged());
    }
    Ok(false)
}

/// Reads just enough of `segment` to tell how it begins.
async fn segment_opening<D: Disk>(
    disk: &D,
    dir: &Path,
    segment: u64,
) -> Result<SegmentOpening, WalError> {
    let path = segment_path(dir, segment);
    let file = disk.open(&path, false).await.map_err(io_error(&path))?;
    let tag = record::segment_tag(segment);
    let first_block = file
        .read_at(0, BLOCK_BYTES as usize)
        .await
        .map_err(io_error(&path))?;
    let whole;
    let mut content: &[u8] = &first_block;
    if record::decode(content, tag) == Err(ScanStop::TornPayload) {
        whole = read_whole(&file, &path).await?;
        content = &whole;
    }
    Ok(match record::decode(content, tag) {
        Ok((first, _)) if first.kind == RecordKind::SegmentStart => match first.payload.get(..8) {
            Some(end) => SegmentOpening::AfterRoll {
                previous_end: record::read_u64(end, 0),
            },
            None => SegmentOpening::Untagged,
        },
        Ok(_) => SegmentOpening::Untagged,
        Err(_) => SegmentOpening::Unwritten,
    })
}

/// Removes the segments after the end of the log. A segment is written to only after the one
/// before it is synced, so a torn record can only be followed by segments never written to;
/// anything else is corruption, and the broker refuses to start rather than drop acknowledged
/// data that follows it.
async fn drop_unwritten_segments<D: Disk>(
    disk: &D,
    dir: &Path,
    later: &[u64],
    segment: u64,
    scan: &record::Scan<'_>,
) -> Result<(), WalError> {
    if !segments_unwritten(disk, dir, later).await? {
        return Err(WalError::Damaged {
            segment,
            position: scan.valid_bytes as u64,
            stop: scan.stop,
        });
    }
    for &later_segment in later {
        let path = segment_path(dir, later_segment);
        disk.remove(&path).map_err(io_error(&path))?;
    }
    if !later.is_empty() {
        sync_dir(disk, dir).await?;
    }
    Ok(())
}

impl Wal<DmaDisk> {
    /// Opens (or creates) the WAL on real files; see `open_on`.
    pub async fn open(config: WalConfig) -> Result<(Wal, RecoveredLog), WalError> {
        Wal::open_on(DmaDisk, config).await
    }
}

impl<D: Disk> Wal<D> {
    /// Opens (or creates) the WAL in `config.dir`, recovering every group's durable state.
    /// The log is cut at the first torn record and everything after it is zeroed, so the
    /// remains of a torn write can never reappear later.
    pub async fn open_on(disk: D, config: WalConfig) -> Result<(Wal<D>, RecoveredLog), WalError> {
        disk.create_dir_all(&config.dir)
            .map_err(io_error(&config.dir))?;
        let sequence = list_segments(&disk, &config.dir)?;
        let mut recovery = Recovery::default();
        let mut segments = BTreeMap::new();
        let mut untagged_segments = BTreeSet::new();
        let mut end = None;
        for (position_in_sequence, &segment) in sequence.iter().enumerate() {
            let path = segment_path(&config.dir, segment);
            let file = open_segment(&disk, &path, false, config.segment_bytes_max).await?;
            let content = read_whole(&file, &path).await?;
            let scan = record::scan(&content, record::segment_tag(segment));
            for &(position, rec) in &scan.records {
                recovery.apply(segment, position as u64, rec)?;
            }
            if !scan.records.is_empty() && record::tag_of(&content) == 0 {
                untagged_segments.insert(segment);
            }
            recovery.release_committed_data();
            segments.insert(segment, Rc::new(file));
            let later = &sequence[position_in_sequence + 1..];
            let opening = next_opening(&disk, &config.dir, segment, later).await?;
            let untagged = untagged_segments.contains(&segment);
            if !is_last_written(&opening, segment, untagged, &scan, &content)? {
                continue;
            }
            // The last written segment: its end is wherever its records stop (a torn write,
            // zeros, or what a reused file held before).
            if !matches!(scan.stop, ScanStop::End | ScanStop::Stale) {
                tracing::warn!(segment, valid_bytes = scan.valid_bytes, stop = %scan.stop,
                    "wal: torn or damaged tail, cutting the log here");
            }
            drop_unwritten_segments(&disk, &config.dir, later, segment, &scan).await?;
            let tail_start = align_down(scan.valid_bytes as u64) as usize;
            let tail_block = content[tail_start..scan.valid_bytes].to_vec();
            end = Some((segment, scan.valid_bytes as u64, tail_block));
            break;
        }
        let recovered = recovery.finish()?;
        let reusable = load_reusable(&disk, &config.dir, config.segment_bytes_max).await?;
        let mut wal = Wal {
            segment_entry_max: recovered.segment_entry_max.clone(),
            config,
            disk,
            segments,
            active_segment: 1,
            write_position: 0,
            tail_block: Vec::new(),
            next_chunk_capacity: CHUNK_CAPACITY_MIN,
            pending: Vec::new(),
            flushes_in_flight: 0,
            newest_flush_overlappable: false,
            checkpoint_owed: true,
            checkpoint_pending: None,
            checkpointed_segment: 0,
            spare: None,
            reusable,
            untagged_segments,
        };
        wal.continue_at(end).await?;
        Ok((wal, recovered))
    }

    /// Makes the recovered end of the log (or a first segment) the place appends continue.
    async fn continue_at(&mut self, end: Option<(u64, u64, Vec<u8>)>) -> Result<(), WalError> {
        match end {
            Some((segment, valid_bytes, tail_block)) => {
                self.segment_entry_max.retain(|&s, _| s <= segment);
                self.segments.retain(|&s, _| s <= segment);
                self.active_segment = segment;
                self.write_position = valid_bytes;
                self.tail_block = tail_block;
                self.zero_after_end().await
            }
            None => {
                let path = segment_path(&self.config.dir, 1);
                let file =
                    open_segment(&self.disk, &path, true, self.config.segment_bytes_max).await?;
                self.segments.insert(1, Rc::new(file));
                Ok(())
            }
        }
    }

    /// Zeroes the active segment after the last valid record: the partial block is rewritten
    /// with zeros after the data, and the rest is punched out (reads as zeros).
    async fn zero_after_end(&mut self) -> Result<(), WalError> {
        let path = segment_path(&self.config.dir, self.active_segment);
        let file = self.segments[&self.active_segment].clone();
        let size = file.size().await.map_err(io_error(&path))?;
        let block_start = align_down(self.write_position);
        let block_end = align_up(self.write_position);
        if block_end > block_start {
            let mut block =
                WriteBuffer::with_capacity(BLOCK_BYTES as usize, self.disk.allocate_aligned());
            block.extend_from_slice(&self.tail_block);
            file.write_at(block_start, block.into_blocks())
                .await
                .map_err(io_error(&path))?;
        }
        if size > block_end {
            file.deallocate(block_end, size - block_end)
                .await
                .map_err(io_error(&path))?;
        }
        file.sync().await.map_err(io_error(&path))?;
        Ok(())
    }

    pub fn config(&self) -> &WalConfig {
        &self.config
    }

    /// Queues one record. Returns where it will land and whether it opened a new segment (the
    /// caller then writes a checkpoint of every group into it, see `Shard::checkpoint`).
    pub fn append(
        &mut self,
        group_id: u64,
        kind: RecordKind,
        payload: &[&[u8]],
    ) -> (WalLocation, bool) {
        let payload_len: usize = payload.iter().map(|p| p.len()).sum();
        let record_bytes = record::encoded_len(payload_len);
        assert!(
            record_bytes <= self.config.record_bytes_max(),
            "record larger than a segment allows"
        );
        let (segment, position) = match self.pending.last() {
            Some(chunk) => (chunk.segment, chunk.end()),
            None => (self.active_segment, self.write_position),
        };
        // Room is always left for the `SegmentEnd` record a roll writes.
        let end_bytes = record::encoded_len(0) as u64;
        let rolled = position + record_bytes as u64 + end_bytes > self.config.segment_bytes_max;
        if rolled {
            self.checkpoint_owed = true;
            // The segment ends with a record that says so, and the next starts with where it
            // ended: recovery holds an older segment to both (a reused file holds older
            // records after the end, so zeros cannot tell).
            let mut previous_end = position;
            if position + end_bytes <= self.config.segment_bytes_max {
                if self.pending.is_empty() {
                    self.push_continuation_chunk(segment, position);
                }
                let chunk = self.pending.last_mut().expect("a chunk was just ensured");
                let tag = record::segment_tag(segment);
                record::encode(&mut chunk.bytes, tag, 0, RecordKind::SegmentEnd, &[]);
                previous_end = chunk.end();
            }
            let mut bytes = self.new_chunk_buffer();
            let tag = record::segment_tag(segment + 1);
            let previous_end = previous_end.to_le_bytes();
            record::encode(
                &mut bytes,
                tag,
                0,
                RecordKind::SegmentStart,
                &[&previous_end],
            );
            self.pending.push(PendingChunk {
                segment: segment + 1,
                base: 0,
                bytes,
            });
        } else if self.pending.is_empty() {
            self.push_continuation_chunk(segment, position);
        }
        let chunk = self.pending.last_mut().expect("a chunk was just ensured");
        let location = WalLocation {
            segment: chunk.segment,
            position: chunk.end(),
            record_bytes: record_bytes as u32,
        };
        let tag = record::segment_tag(chunk.segment);
        record::encode(&mut chunk.bytes, tag, group_id, kind, payload);
        assert!(location.position + record_bytes as u64 <= self.config.segment_bytes_max);
        (location, rolled)
    }

    /// The first chunk after a flush continues the active segment: it starts with the partial
    /// block already on disk, which the flush rewrites with the same bytes.
    fn push_continuation_chunk(&mut self, segment: u64, position: u64) {
        let mut bytes = self.new_chunk_buffer();
        bytes.extend_from_slice(&self.tail_block);
        self.pending.push(PendingChunk {
            segment,
            base: align_down(position),
            bytes,
        });
    }

    /// Notes that `segment` holds entry `index` of `group_id` (retention input).
    pub fn note_entry(&mut self, location: WalLocation, group_id: u64, index: u64) {
        let slot = self
            .segment_entry_max
            .entry(location.segment)
            .or_default()
            .entry(group_id)
            .or_default();
        *slot = (*slot).max(index);
    }

    pub fn checkpoint_owed(&self) -> bool {
        self.checkpoint_owed
    }

    /// The shard has appended a complete checkpoint of every group after the last roll.
    /// The segment the next record lands in (a checkpoint records it before it starts).
    pub fn tail_segment(&self) -> u64 {
        self.pending
            .last()
            .map_or(self.active_segment, |c| c.segment)
    }

    /// A checkpoint begun in `started_in` is fully appended. It counts only if it did not
    /// cross into another segment; if it did, that roll owes a new one in the new segment.
    pub fn note_checkpoint_written(&mut self, started_in: u64) {
        if self.tail_segment() == started_in {
            self.checkpoint_pending = Some(started_in);
            self.checkpoint_owed = false;
        } else {
            assert!(
                self.checkpoint_owed,
                "a roll during the checkpoint owes another one"
            );
        }
    }

    /// Whether any segment still holds entries of `group_id`.
    pub fn holds_entries_of(&self, group_id: u64) -> bool {
        self.segment_entry_max
            .values()
            .any(|groups| groups.contains_key(&group_id))
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending.iter().map(|c| c.bytes.len()).sum()
    }

    /// Whether a group commit may be taken now: none is in flight, or one is that the next
    /// cannot disturb (it ends on a block boundary and opens no segment).
    pub fn flush_may_start(&self) -> bool {
        self.flushes_in_flight == 0
            || (self.flushes_in_flight < FLUSHES_IN_FLIGHT_MAX && self.newest_flush_overlappable)
    }

    /// Turns everything pending into one group commit; see `flush_may_start`. Commits are
    /// completed (`complete_flush`) in the order they were taken.
    pub fn take_flush_job(&mut self) -> Option<FlushJob<D>> {
        assert!(
            self.flush_may_start(),
            "a group commit overlaps one it may not"
        );
        if self.pending.is_empty() {
            return None;
        }
        if self.pending_bytes() >= self.config.overlap_min_bytes {
            self.pad_to_block();
        }
        let previous_in_flight = self.flushes_in_flight > 0;
        let mut writes = Vec::with_capacity(self.pending.len());
        for chunk in std::mem::take(&mut self.pending) {
            let file = if chunk.segment == self.active_segment {
                assert_eq!(chunk.base, align_down(self.write_position));
                assert!(chunk.bytes.as_slice().starts_with(&self.tail_block));
                let file = self.segments.get(&chunk.segment).cloned();
                SegmentFile::Open(file.expect("the active segment is open"))
            } else {
                assert_eq!(chunk.segment, self.active_segment + 1);
                assert_eq!(chunk.base, 0);
                match self.spare.take_if(|spare| spare.segment == chunk.segment) {
                    Some(spare) => SegmentFile::Prepared(spare.ready),
                    None => SegmentFile::Create,
                }
            };
            assert!(
                self.spare
                    .as_ref()
                    .is_none_or(|s| s.segment > chunk.segment),
                "a spare is prepared for a segment not written yet"
            );
            self.next_chunk_capacity =
                next_chunk_capacity(self.next_chunk_capacity, chunk.bytes.len());
            self.active_segment = chunk.segment;
            self.write_position = chunk.end();
            let tail_start = (align_down(self.write_position) - chunk.base) as usize;
            self.tail_block.clear();
            self.tail_block
                .extend_from_slice(&chunk.bytes.as_slice()[tail_start..]);
            writes.push(FlushWrite {
                segment: chunk.segment,
                file,
                position: chunk.base,
                bytes: chunk.bytes,
            });
        }
        let opens_segment = writes
            .iter()
            .any(|w| !matches!(w.file, SegmentFile::Open(_)));
        self.flushes_in_flight += 1;
        self.newest_flush_overlappable = self.tail_block.is_empty() && !opens_segment;
        Some(FlushJob {
            writes,
            segment_bytes_max: self.config.segment_bytes_max,
            dir: self.config.dir.clone(),
            disk: self.disk.clone(),
            checkpoint: self.checkpoint_pending.take(),
            must_follow_previous: previous_in_flight && opens_segment,
        })
    }

    /// Ends the pending records on a block boundary with a `Padding` record, when that still
    /// leaves room for the segment's `SegmentEnd` (see `append`).
    fn pad_to_block(&mut self) {
        let Some(chunk) = self.pending.last_mut() else {
            return;
        };
        let end = chunk.end();
        let header_bytes = record::encoded_len(0) as u64;
        let mut padding = align_up(end) - end;
        if padding == 0 {
            return;
        }
        if padding < header_bytes {
            padding += BLOCK_BYTES;
        }
        if end + padding + header_bytes > self.config.segment_bytes_max {
            return;
        }
        const ZEROS: [u8; 2 * BLOCK_BYTES as usize] = [0; 2 * BLOCK_BYTES as usize];
        let tag = record::segment_tag(chunk.segment);
        let zeros = &ZEROS[..(padding - header_bytes) as usize];
        record::encode(&mut chunk.bytes, tag, 0, RecordKind::Padding, &[zeros]);
        debug_assert!(chunk.end().is_multiple_of(BLOCK_BYTES));
    }

    /// Readies the segment after the last one written or queued, when none is being prepared
    /// or ready: a kept file of a reclaimed segment is renamed to it at once (its blocks are
    /// written, so the group commits into it need no extent conversion: on ext4, a journal
    /// commit inside every O_DSYNC write into merely allocated space); otherwise the returned
    /// job creates it. Run the job beside the group commits: the flush that rolls into that
    /// segment waits for it (and creates the segment itself if the preparation failed).
    pub fn take_prepare_job(&mut self) -> Option<PrepareJob<D>> {
        if self.spare.is_some() {
            return None;
        }
        let segment = self.tail_segment() + 1;
        let path = segment_path(&self.config.dir, segment);
        let (done, ready) = oneshot::channel();
        self.spare = Some(Spare { segment, ready });
        // A kept file renamed to `path`, else a new one.
        let source = match self.reusable.pop() {
            Some((kept, file)) => SpareSource::Reuse { kept, file },
            None => SpareSource::Create,
        };
        Some(PrepareJob {
            segment,
            path,
            source,
            segment_bytes_max: self.config.segment_bytes_max,
            disk: self.disk.clone(),
            done,
        })
    }

    /// The oldest commit in flight completed (the caller completes them in order).
    pub fn complete_flush(&mut self, done: FlushDone<D>) {
        assert!(self.flushes_in_flight > 0, "a commit completes once");
        self.flushes_in_flight -= 1;
        for (segment, file) in done.created {
            self.segments.insert(segment, file);
        }
        if let Some(segment) = done.checkpoint {
            self.checkpointed_segment = self.checkpointed_segment.max(segment);
        }
    }

    fn new_chunk_buffer(&self) -> WriteBuffer {
        WriteBuffer::with_capacity(self.next_chunk_capacity, self.disk.allocate_aligned())
    }

    /// Reads back one record and returns its payload, checking its CRC again.
    pub fn reader(&self, location: WalLocation) -> Result<RecordReader<D>, WalError> {
        let file = self
            .segments
            .get(&location.segment)
            .cloned()
            .ok_or(WalError::SegmentGone(location.segment))?;
        Ok(RecordReader {
            file,
            location,
            path: segment_path(&self.config.dir, location.segment),
        })
    }

    /// Segments that no group needs any more: every group has compacted past all of its
    /// entries there. `compacted_index(group)` is the group's durable compaction point
    /// (u64::MAX for a removed group). Only segments older than the newest durable checkpoint
    /// are candidates, so the state they held is restated in a later segment.
    pub fn reclaimable_segments(&self, compacted_index: impl Fn(u64) -> u64) -> Vec<u64> {
        self.segments
            .keys()
            .copied()
            .filter(|&segment| segment < self.checkpointed_segment)
            .filter(|segment| {
                self.segment_entry_max.get(segment).is_none_or(|groups| {
                    groups
                        .iter()
                        .all(|(&group, &max)| max <= compacted_index(group))
                })
            })
            .collect()
    }

    pub fn remove_segments(&mut self, segments: &[u64]) -> Result<(), WalError> {
        for segment in segments {
            assert!(
                *segment < self.checkpointed_segment,
                "only checkpointed-over segments go"
            );
            let file = self.segments.remove(segment);
            self.segment_entry_max.remove(segment);
            let untagged = self.untagged_segments.remove(segment);
            let path = segment_path(&self.config.dir, *segment);
            match file {
                Some(file) if !untagged && self.reusable.len() < REUSABLE_SEGMENTS_MAX => {
                    let kept = reusable_path(&self.config.dir, *segment);
                    self.disk.rename(&path, &kept).map_err(io_error(&path))?;
                    self.reusable.push((kept, file));
                }
                _ => self.disk.remove(&path).map_err(io_error(&path))?,
            }
        }
        // Not synced here (a directory sync waits for a journal commit, and this runs on the
        // shard's thread): a crash may bring a released segment back, which recovery reads
        // as what it was, and the next spare's preparation syncs the directory anyway.
        Ok(())
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes of the log on disk (whole segments), for metrics and tests.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.len() as u64 * self.config.segment_bytes_max
    }
}

impl<D: Disk> FlushJob<D> {
    pub fn bytes(&self) -> usize {
        self.writes.iter().map(|w| w.bytes.len()).sum()
    }

    /// Whether this commit may start only once the one before it completed.
    pub fn must_follow_previous(&self) -> bool {
        self.must_follow_previous
    }

    /// Runs the writes in order. Each segment's write is durable (O_DSYNC, or synced after
    /// it) before the next one starts, so a later segment never holds data while an earlier
    /// one has a hole.
    pub async fn run(self) -> Result<FlushDone<D>, WalError> {
        let mut created = Vec::new();
        for write in self.writes {
            // Named only when needed (creating the file, or an error): formatting the path
            // for every commit showed in the profile.
            let path = || segment_path(&self.dir, write.segment);
            let file = match write.file {
                SegmentFile::Open(file) => file,
                SegmentFile::Prepared(ready) => {
                    let file = match ready.await {
                        Ok(Ok(file)) => file,
                        // The preparation said why it failed; try once more, as without one.
                        Ok(Err(_)) | Err(oneshot::Canceled) => Rc::new(
                            open_segment(&self.disk, &path(), true, self.segment_bytes_max).await?,
                        ),
                    };
                    created.push((write.segment, file.clone()));
                    file
                }
                SegmentFile::Create => {
                    let file =
                        open_segment(&self.disk, &path(), true, self.segment_bytes_max).await?;
                    let file = Rc::new(file);
                    created.push((write.segment, file.clone()));
                    file
                }
            };
            let blocks = write.bytes.into_blocks();
            let length = blocks.len();
            let written = file
                .write_at(write.position, blocks)
                .await
                .map_err(|source| WalError::Io {
                    path: path(),
                    source,
                })?;
            if written != length {
                return Err(WalError::Io {
                    path: path(),
                    source: std::io::Error::other(format!(
                        "short write: {written} of {length} bytes"
                    )),
                });
            }
            if !self.disk.writes_are_durable() {
                file.sync().await.map_err(|source| WalError::Io {
                    path: path(),
                    source,
                })?;
            }
        }
        Ok(FlushDone {
            created,
            checkpoint: self.checkpoint,
        })
    }
}

impl<D: Disk> PrepareJob<D> {
    /// Creates the segment (or renames a kept file to it) and makes it durable, then hands it
    /// to the flush that rolls into it. On failure the flush creates the segment itself (or
    /// opens the file renamed to it: its records are another segment's).
    pub async fn run(self) {
        let started = std::time::Instant::now();
        let reused = matches!(self.source, SpareSource::Reuse { .. });
        let result = match self.source {
            SpareSource::Create => {
                open_segment(&self.disk, &self.path, true, self.segment_bytes_max)
                    .await
                    .map(Rc::new)
            }
            SpareSource::Reuse { kept, file } => reuse_file(&self.disk, &kept, &self.path)
                .await
                .map(|()| file),
        };
        match &result {
            Ok(_) => tracing::debug!(
                segment = self.segment,
                reused,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "wal: next segment prepared"
            ),
            Err(error) => tracing::warn!(
                segment = self.segment,
                %error,
                "wal: could not prepare the next segment; the roll will create it"
            ),
        }
        // The receiver is gone only when the WAL is.
        let _ = self.done.send(result);
    }
}

/// A pending read of one record; holds the file open even if retention removes it meanwhile.
pub struct RecordReader<D: Disk = DmaDisk> {
    file: Rc<D::File>,
    location: WalLocation,
    path: PathBuf,
}

/// Records further apart than this are read with separate I/Os rather than one that also
/// reads the bytes between them (other groups' records): at most this much is read and
/// thrown away per record, against an I/O saved (an O_DIRECT read is 4 KiB at least).
const RUN_GAP_BYTES_MAX: u64 = 32 << 10;
/// The longest single read a run of records makes.
const RUN_BYTES_MAX: u64 = 8 << 20;

impl<D: Disk> RecordReader<D> {
    pub async fn read_payload(self) -> Result<Bytes, WalError> {
        let mut payloads = read_run(vec![self]).await?;
        Ok(payloads.pop().expect("one record, one payload"))
    }

    fn end(&self) -> u64 {
        self.location.position + u64::from(self.location.record_bytes)
    }

    /// Whether `next` can be read by the same I/O as a run from `run_start` to `self`: the
    /// same segment, after `self` and close to it, and the run stays within bounds.
    pub fn can_extend_run(&self, run_start: u64, next: &RecordReader<D>) -> bool {
        next.location.segment == self.location.segment
            && next.location.position >= self.end()
            && next.location.position - self.end() <= RUN_GAP_BYTES_MAX
            && next.end() - run_start <= RUN_BYTES_MAX
    }

    pub fn position(&self) -> u64 {
        self.location.position
    }

    pub fn location(&self) -> WalLocation {
        self.location
    }
}

/// Reads records of one segment, ascending and close together (see `can_extend_run`), with
/// one I/O, checks each record's CRC again, and returns their payloads. Each payload is
/// copied out, so what a fetch holds is what it returns, not the gaps read along with it.
pub async fn read_run<D: Disk>(run: Vec<RecordReader<D>>) -> Result<Vec<Bytes>, WalError> {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return Ok(Vec::new());
    };
    let start = first.location.position;
    let length = (last.end() - start) as usize;
    let raw = first
        .file
        .read_at(start, length)
        .await
        .map_err(io_error(&first.path))?;
    let span: &[u8] = &raw;
    let mut payloads = Vec::with_capacity(run.len());
    for reader in &run {
        let WalLocation {
            segment,
            position,
            record_bytes,
        } = reader.location;
        assert_eq!(
            segment, first.location.segment,
            "a run stays in one segment"
        );
        let damaged = |stop| WalError::Damaged {
            segment,
            position,
            stop,
        };
        let offset = (position - start) as usize;
        let bytes = span
            .get(offset..offset + record_bytes as usize)
            .ok_or(damaged(ScanStop::TornPayload))?;
        let tag = record::segment_tag(segment);
        let (record, decoded) = record::decode(bytes, tag).map_err(|stop| match stop {
            // Retention freed the segment and its file was reused meanwhile.
            ScanStop::Stale => WalError::SegmentGone(segment),
            stop => damaged(stop),
        })?;
        assert_eq!(
            decoded, record_bytes as usize,
            "index and disk agree on the record length"
        );
        payloads.push(Bytes::copy_from_slice(record.payload));
    }
    Ok(payloads)
}

#[cfg(test)]
mod tests;
