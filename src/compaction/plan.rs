//! What one cleaning pass keeps, pure: the latest offset of each key, the aborted
//! transactions to skip, and the filtering of one batch. The I/O around it is `super`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::{Bytes, BytesMut};
use chronik_shards::partition::batch::BatchHeader;
use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions};

/// A 128-bit digest of a key (Kafka's cleaner keeps an MD5 of each key the same way): the
/// map's memory does not grow with key sizes, and a collision is out of reach.
fn key_digest(key: &[u8]) -> u128 {
    let half = |salt: u8| {
        let mut hasher = DefaultHasher::new();
        salt.hash(&mut hasher);
        key.hash(&mut hasher);
        hasher.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

/// The latest offset of every key in the range a pass cleans, bounded: a pass that meets
/// more keys than `keys_max` cleans only up to the batch where the map filled (as Kafka's
/// cleaner does when its dedupe buffer is full).
pub struct LatestOffsets {
    latest: HashMap<u128, i64>,
    keys_max: usize,
}

impl LatestOffsets {
    pub fn new(keys_max: usize) -> Self {
        Self {
            latest: HashMap::new(),
            keys_max,
        }
    }

    /// Whether the map can take the batch's keys (already-known keys need no room).
    pub fn has_room_for(&self, records: &[Record]) -> bool {
        let new_keys = records
            .iter()
            .filter_map(|r| r.key.as_deref())
            .filter(|key| !self.latest.contains_key(&key_digest(key)))
            .count();
        self.latest.len() + new_keys <= self.keys_max
    }

    pub fn note(&mut self, records: &[Record]) {
        for record in records {
            if let Some(key) = &record.key {
                let slot = self.latest.entry(key_digest(key)).or_insert(record.offset);
                *slot = (*slot).max(record.offset);
            }
        }
    }

    fn is_latest(&self, key: &[u8], offset: i64) -> bool {
        self.latest
            .get(&key_digest(key))
            .is_none_or(|&latest| latest <= offset)
    }
}

/// The records of aborted transactions, found as a read_committed consumer finds them: a
/// producer's transactional batches are skipped from the first offset of one of its aborted
/// transactions until its abort marker.
pub struct AbortedTransactions {
    /// (first offset, producer id), ascending.
    upcoming: VecDeque<(i64, i64)>,
    open: HashSet<i64>,
}

/// Control record key: version (2 bytes) then type (2 bytes): 0 abort, 1 commit.
fn is_abort_marker(record: &Record) -> bool {
    record
        .key
        .as_deref()
        .is_some_and(|key| key.len() >= 4 && key[2..4] == [0, 0])
}

impl AbortedTransactions {
    /// `aborted`: (producer id, first offset) of the aborted transactions in the range.
    pub fn new(aborted: &[(i64, i64)]) -> Self {
        let mut upcoming: Vec<(i64, i64)> = aborted.iter().map(|&(p, f)| (f, p)).collect();
        upcoming.sort_unstable();
        Self {
            upcoming: upcoming.into(),
            open: HashSet::new(),
        }
    }

    /// Whether the batch holds records of an aborted transaction (its markers never do).
    /// Called for every batch of the range, in order.
    pub fn skips(&mut self, header: &BatchHeader, records: &[Record]) -> bool {
        let last_offset = header.base_offset + i64::from(header.last_offset_delta);
        while let Some(&(first, producer)) = self.upcoming.front() {
            if first > last_offset {
                break;
            }
            self.open.insert(producer);
            self.upcoming.pop_front();
        }
        if header.is_control() {
            if records.iter().any(is_abort_marker) {
                self.open.remove(&header.producer_id);
            }
            return false;
        }
        header.is_transactional() && self.open.contains(&header.producer_id)
    }
}

/// What a pass decides for records other than their key's latest.
#[derive(Debug, Clone, Copy)]
pub struct Horizons {
    /// Records below it are gone already (DeleteRecords or retention moved the log start).
    pub log_start_offset: i64,
    /// A tombstone (a record without a value) timestamped before this is dropped even
    /// when it is its key's latest: `delete.retention.ms` has passed.
    pub tombstones_before: i64,
}

/// What a pass keeps of one batch.
pub enum KeptBatch {
    /// Every record: the batch as it was.
    Whole,
    /// Some records, re-encoded as one batch at their original offsets.
    Part(Bytes),
    Nothing,
}

/// Filters one batch, not aborted, against the pass's latest offsets. Markers and records
/// without a key are always kept (a keyless record has nothing that supersedes it).
pub fn clean_batch(
    header: &BatchHeader,
    records: Vec<Record>,
    latest: &LatestOffsets,
    horizons: Horizons,
) -> anyhow::Result<KeptBatch> {
    if header.is_control() {
        return Ok(KeptBatch::Whole);
    }
    let total = records.len();
    let kept: Vec<Record> = records
        .into_iter()
        .filter(|r| r.offset >= horizons.log_start_offset)
        .filter(|r| match &r.key {
            None => true,
            Some(key) => {
                latest.is_latest(key, r.offset)
                    && (r.value.is_some() || r.timestamp >= horizons.tombstones_before)
            }
        })
        .collect();
    if kept.len() == total {
        return Ok(KeptBatch::Whole);
    }
    if kept.is_empty() {
        return Ok(KeptBatch::Nothing);
    }
    let mut encoded = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: compression_of(header),
    };
    RecordBatchEncoder::encode(&mut encoded, kept.iter(), &options)?;
    let encoded = encoded.freeze();
    // The records of one batch share producer, epoch and flags, so they stay one batch.
    let parsed = BatchHeader::parse(&encoded)?;
    anyhow::ensure!(
        parsed.batch_length as usize + 12 == encoded.len(),
        "kept records of one batch encoded as several"
    );
    Ok(KeptBatch::Part(encoded))
}

fn compression_of(header: &BatchHeader) -> kafka_protocol::records::Compression {
    use kafka_protocol::records::Compression;
    match header.compression() {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{Compression, RecordBatchDecoder, TimestampType};

    fn record(offset: i64, key: &str, value: Option<&str>, timestamp: i64) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: -1,
            timestamp,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        }
    }

    fn batch(records: &[Record], compression: Compression) -> (BatchHeader, Bytes) {
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
        let bytes = buf.freeze();
        (BatchHeader::parse(&bytes).unwrap(), bytes)
    }

    const HORIZONS: Horizons = Horizons {
        log_start_offset: 0,
        tombstones_before: 1_000,
    };

    #[test]
    fn keeps_the_latest_record_of_each_key_at_its_offset() {
        let first = vec![
            record(0, "a", Some("1"), 2_000),
            record(1, "b", Some("1"), 2_000),
            record(2, "a", Some("2"), 2_000),
        ];
        let second = vec![record(3, "b", None, 2_000), record(4, "c", None, 10)];
        let mut latest = LatestOffsets::new(10);
        latest.note(&first);
        latest.note(&second);
        let (header, _) = batch(&first, Compression::Lz4);
        let KeptBatch::Part(kept) = clean_batch(&header, first, &latest, HORIZONS).unwrap() else {
            panic!("a was superseded within the batch, b by the next batch");
        };
        let mut kept_bytes = kept.clone();
        let set = RecordBatchDecoder::decode(&mut kept_bytes).unwrap();
        assert_eq!(
            set.compression,
            Compression::Lz4,
            "the batch keeps its codec"
        );
        let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![2]);
        assert_eq!(BatchHeader::parse(&kept).unwrap().base_offset, 2);
        // b's tombstone is recent and stays; c's is past delete.retention.ms and goes.
        let (header, _) = batch(&second, Compression::None);
        let KeptBatch::Part(kept) = clean_batch(&header, second, &latest, HORIZONS).unwrap() else {
            panic!("the old tombstone goes");
        };
        let mut kept_bytes = kept;
        let set = RecordBatchDecoder::decode(&mut kept_bytes).unwrap();
        assert_eq!(set.records.len(), 1);
        assert_eq!(set.records[0].offset, 3);
        assert!(set.records[0].value.is_none());
    }

    #[test]
    fn whole_and_empty_batches() {
        let only = vec![record(7, "x", Some("v"), 2_000)];
        let mut latest = LatestOffsets::new(10);
        latest.note(&only);
        let (header, _) = batch(&only, Compression::None);
        assert!(matches!(
            clean_batch(&header, only.clone(), &latest, HORIZONS).unwrap(),
            KeptBatch::Whole
        ));
        latest.note(&[record(9, "x", Some("w"), 2_000)]);
        assert!(matches!(
            clean_batch(&header, only, &latest, HORIZONS).unwrap(),
            KeptBatch::Nothing
        ));
    }

    #[test]
    fn the_key_map_is_bounded() {
        let mut latest = LatestOffsets::new(2);
        let two = [record(0, "a", Some("1"), 0), record(1, "b", Some("1"), 0)];
        assert!(latest.has_room_for(&two));
        latest.note(&two);
        assert!(
            latest.has_room_for(&[record(2, "a", Some("2"), 0)]),
            "a known key"
        );
        assert!(!latest.has_room_for(&[record(3, "c", Some("1"), 0)]));
    }

    #[test]
    fn aborted_transactions_are_skipped_until_their_marker() {
        let mut data = record(5, "k", Some("v"), 0);
        data.transactional = true;
        data.producer_id = 42;
        data.producer_epoch = 0;
        data.sequence = 0;
        let (header, _) = batch(std::slice::from_ref(&data), Compression::None);
        let mut marker = data.clone();
        marker.control = true;
        marker.offset = 6;
        marker.key = Some(Bytes::from_static(&[0, 0, 0, 0]));
        marker.value = Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0]));
        let (marker_header, _) = batch(std::slice::from_ref(&marker), Compression::None);
        let mut aborted = AbortedTransactions::new(&[(42, 5)]);
        assert!(aborted.skips(&header, std::slice::from_ref(&data)));
        assert!(!aborted.skips(&marker_header, std::slice::from_ref(&marker)));
        let mut later = data.clone();
        later.offset = 7;
        let (later_header, _) = batch(std::slice::from_ref(&later), Compression::None);
        assert!(
            !aborted.skips(&later_header, &[later]),
            "the next transaction of the producer is not aborted"
        );
    }
}
