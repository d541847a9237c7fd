//! On-disk WAL record format: pure encode/decode, no I/O.
//!
//! ```text
//! offset  size  field
//!      0     4  payload_len  (u32 LE)
//!      4     4  crc          (crc32fast over bytes 0..4 and 8..HEADER_BYTES+payload_len)
//!      8     8  group_id     (u64 LE)
//!     16     1  kind         (RecordKind, never 0)
//!     17     4  segment tag  (u32 LE, `segment_tag` of the segment written; 0 in records
//!                             written before tags existed)
//!     21     3  reserved     (zero)
//!     24     …  payload
//! ```
//! Records are packed back to back. A header whose kind byte is 0 marks the end of the written
//! log: new segments read as zeros and recovery zeroes everything after the last valid record.
//! A segment file reused after retention (`Wal::remove_segments`) still holds the records of
//! its earlier use after the end: their tag is another segment's, so a scan stops there
//! (`ScanStop::Stale`) instead of taking them for records of this one.

use thiserror::Error;

pub const HEADER_BYTES: usize = 24;
/// Upper bound for one record's payload. A Kafka batch is at most `message.max.bytes` (1 MiB by
/// default, configurable up to this) plus the entry header.
pub const PAYLOAD_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A Raft log entry: `EntryHeader` followed by the entry data.
    Entry = 1,
    /// A Raft HardState: term, vote, commit.
    HardState = 2,
    /// The group's log now starts after `index`: everything at or below it is compacted.
    /// Payload: `SnapshotMeta` followed by the state machine's snapshot bytes.
    Snapshot = 3,
    /// The group no longer exists on this shard (its topic was deleted).
    GroupRemoved = 4,
    /// A follower installed its leader's snapshot: every entry of the group before this
    /// record is gone and its log starts after `index`. Payload as for `Snapshot`.
    SnapshotInstalled = 5,
    /// The first record of every segment entered by a roll (group id 0, no group's): the
    /// previous segment's end (u64 LE), so recovery knows exactly where that one stops.
    SegmentStart = 6,
    /// The last record of every segment left by a roll (group id 0, empty).
    SegmentEnd = 7,
    /// Fills a group commit up to a block boundary (group id 0, zeros), so the next commit
    /// shares no block with it and may be written while it is still in flight.
    Padding = 8,
}

impl RecordKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Entry),
            2 => Some(Self::HardState),
            3 => Some(Self::Snapshot),
            4 => Some(Self::GroupRemoved),
            5 => Some(Self::SnapshotInstalled),
            6 => Some(Self::SegmentStart),
            7 => Some(Self::SegmentEnd),
            8 => Some(Self::Padding),
            _ => None,
        }
    }
}

/// Why a scan stopped before the end of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ScanStop {
    #[error("end of written log (zero header)")]
    End,
    #[error("record header is cut short")]
    TornHeader,
    #[error("record payload is cut short")]
    TornPayload,
    #[error("record length {0} is over the limit")]
    BadLength(u32),
    #[error("unknown record kind {0}")]
    BadKind(u8),
    #[error("crc mismatch")]
    BadCrc,
    #[error("record of the file's earlier use as another segment")]
    Stale,
}

/// The segment tag in the header of the record at the start of `record`.
pub fn tag_of(record: &[u8]) -> u32 {
    read_u32(record, 17)
}

/// The tag records of `segment` carry: never 0 (the tag of untagged records).
pub fn segment_tag(segment: u64) -> u32 {
    assert!(segment > 0, "segments are numbered from 1");
    ((segment - 1) % u64::from(u32::MAX)) as u32 + 1
}

/// One decoded record, borrowing its payload from the scanned buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub group_id: u64,
    pub kind: RecordKind,
    pub payload: &'a [u8],
}

pub fn encoded_len(payload_len: usize) -> usize {
    HEADER_BYTES + payload_len
}

/// Where records are appended: a plain `Vec` in tests and tools, the WAL's block-aligned
/// `WriteBuffer` on the produce path.
pub trait RecordSink {
    fn written_len(&self) -> usize;
    fn put(&mut self, bytes: &[u8]);
    /// The bytes appended since length `start`, to seal a record in place.
    fn appended_since(&mut self, start: usize) -> &mut [u8];
}

impl RecordSink for Vec<u8> {
    fn written_len(&self) -> usize {
        self.len()
    }

    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn appended_since(&mut self, start: usize) -> &mut [u8] {
        &mut self[start..]
    }
}

impl RecordSink for super::write_buffer::WriteBuffer {
    fn written_len(&self) -> usize {
        self.len()
    }

    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn appended_since(&mut self, start: usize) -> &mut [u8] {
        self.tail_mut(start)
    }
}

/// Appends one record to `target`. The payload is given in parts so callers need not join them.
/// The CRC is taken over the copy, not the source: the copy is what is written, and it is
/// in cache by then (taking it over the source first measured ~4x slower).
pub fn encode(
    target: &mut impl RecordSink,
    tag: u32,
    group_id: u64,
    kind: RecordKind,
    payload: &[&[u8]],
) {
    let payload_len: usize = payload.iter().map(|p| p.len()).sum();
    assert!(
        payload_len <= PAYLOAD_BYTES_MAX,
        "record payload over PAYLOAD_BYTES_MAX"
    );
    let mut header = [0u8; HEADER_BYTES];
    header[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[8..16].copy_from_slice(&group_id.to_le_bytes());
    header[16] = kind as u8;
    header[17..21].copy_from_slice(&tag.to_le_bytes());
    let start = target.written_len();
    target.put(&header);
    for part in payload {
        target.put(part);
    }
    let record = target.appended_since(start);
    let crc = record_crc(record);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    debug_assert!(decode(record, tag).is_ok());
}

fn record_crc(record: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[0..4]);
    hasher.update(&record[8..]);
    hasher.finalize()
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(raw)
}

pub(crate) fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Decodes the record at the start of `buf`, written to the segment tagged `tag`, returning it
/// and its encoded length.
pub fn decode(buf: &[u8], tag: u32) -> Result<(RecordRef<'_>, usize), ScanStop> {
    if buf.len() < HEADER_BYTES {
        // A zero tail shorter than a header is the end of the log too.
        return Err(if buf.iter().all(|&b| b == 0) {
            ScanStop::End
        } else {
            ScanStop::TornHeader
        });
    }
    let kind_byte = buf[16];
    if kind_byte == 0 {
        return Err(ScanStop::End);
    }
    let kind = RecordKind::from_byte(kind_byte).ok_or(ScanStop::BadKind(kind_byte))?;
    let payload_len = read_u32(buf, 0);
    if payload_len as usize > PAYLOAD_BYTES_MAX {
        return Err(ScanStop::BadLength(payload_len));
    }
    let total = HEADER_BYTES + payload_len as usize;
    if buf.len() < total {
        return Err(ScanStop::TornPayload);
    }
    let record = &buf[..total];
    if record_crc(record) != read_u32(buf, 4) {
        return Err(ScanStop::BadCrc);
    }
    let record_tag = read_u32(buf, 17);
    if record_tag != tag && record_tag != 0 {
        return Err(ScanStop::Stale);
    }
    let group_id = read_u64(buf, 8);
    Ok((
        RecordRef {
            group_id,
            kind,
            payload: &record[HEADER_BYTES..],
        },
        total,
    ))
}

/// Result of scanning a buffer: the records of the valid prefix and where and why it ends.
#[derive(Debug)]
pub struct Scan<'a> {
    pub records: Vec<(usize, RecordRef<'a>)>,
    pub valid_bytes: usize,
    pub stop: ScanStop,
}

/// Scans records of the segment tagged `tag` from the start of `buf` until the first invalid
/// or missing one.
pub fn scan(buf: &[u8], tag: u32) -> Scan<'_> {
    let mut records = Vec::new();
    let mut position = 0;
    loop {
        match decode(&buf[position..], tag) {
            Ok((record, len)) => {
                records.push((position, record));
                position += len;
            }
            Err(stop) => {
                return Scan {
                    records,
                    valid_bytes: position,
                    stop,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn sample_log(count: usize) -> (Vec<u8>, Vec<usize>) {
        let mut log = Vec::new();
        let mut ends = Vec::new();
        for i in 0..count {
            let payload = vec![(i as u8) | 0x80; 1 + (i * 37) % 300]; // last byte never zero
            encode(&mut log, 3, i as u64 % 5, RecordKind::Entry, &[&payload]);
            ends.push(log.len());
        }
        (log, ends)
    }

    #[test]
    fn round_trip() {
        let mut log = Vec::new();
        encode(&mut log, 3, 7, RecordKind::HardState, &[b"abc", b"de"]);
        let (record, len) = decode(&log, 3).expect("valid record");
        assert_eq!(len, log.len());
        assert_eq!(record.group_id, 7);
        assert_eq!(record.kind, RecordKind::HardState);
        assert_eq!(record.payload, b"abcde");
    }

    #[test]
    fn every_cut_keeps_exactly_the_whole_prefix() {
        let (log, ends) = sample_log(40);
        for cut in 0..=log.len() {
            let mut disk = log[..cut].to_vec();
            disk.resize(log.len() + 4096, 0); // preallocated zeros after the cut
            let scan = scan(&disk, 3);
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            assert_eq!(scan.records.len(), whole, "cut at {cut}");
            assert_eq!(
                scan.valid_bytes,
                if whole == 0 { 0 } else { ends[whole - 1] }
            );
        }
    }

    #[test]
    fn corruption_anywhere_stops_at_the_damaged_record() {
        let (log, ends) = sample_log(30);
        let seed: u64 = std::env::var("CHRONIK_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(7);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..2000 {
            let at = rng.random_range(0..log.len());
            let mut disk = log.clone();
            disk[at] ^= rng.random_range(1..=255u8);
            disk.resize(log.len() + 512, 0);
            let scan = scan(&disk, 3);
            let damaged = ends
                .iter()
                .position(|&end| end > at)
                .expect("inside the log");
            assert_eq!(scan.records.len(), damaged, "seed {seed}: flip at {at}");
        }
    }

    #[test]
    fn records_of_an_earlier_use_of_the_file_end_the_scan() {
        // Segment 3's records over what the file held as segment 1: the rest of segment 1's
        // records are valid, but tagged for segment 1.
        let mut stale = Vec::new();
        for i in 0..20u8 {
            encode(
                &mut stale,
                segment_tag(1),
                1,
                RecordKind::Entry,
                &[&[i | 1; 100]],
            );
        }
        let mut log = Vec::new();
        for i in 0..5u8 {
            encode(
                &mut log,
                segment_tag(3),
                1,
                RecordKind::Entry,
                &[&[i | 1; 60]],
            );
        }
        let mut disk = stale.clone();
        disk[..log.len()].copy_from_slice(&log);
        let reused = scan(&disk, segment_tag(3));
        assert_eq!(reused.records.len(), 5);
        assert_eq!(reused.valid_bytes, log.len());
        // Where the new records end on an old record's boundary, that record is stale.
        let boundary = (HEADER_BYTES + 100) * 2;
        let mut disk = stale.clone();
        let mut fresh = Vec::new();
        encode(
            &mut fresh,
            segment_tag(3),
            1,
            RecordKind::Entry,
            &[&[9; 100]],
        );
        encode(
            &mut fresh,
            segment_tag(3),
            1,
            RecordKind::Entry,
            &[&[9; 100]],
        );
        assert_eq!(fresh.len(), boundary);
        disk[..boundary].copy_from_slice(&fresh);
        let on_boundary = scan(&disk, segment_tag(3));
        assert_eq!(
            (on_boundary.records.len(), on_boundary.stop),
            (2, ScanStop::Stale)
        );
        // Records written before tags existed are read in any segment.
        let mut untagged = Vec::new();
        encode(&mut untagged, 0, 1, RecordKind::Entry, &[b"old"]);
        assert!(decode(&untagged, segment_tag(8)).is_ok());
        assert_eq!(segment_tag(1), 1);
        assert_ne!(segment_tag(u64::from(u32::MAX) + 1), 0);
    }
}
