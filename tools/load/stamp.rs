//! End-to-end mode: each batch's first record value starts with the microsecond it was sent
//! (8 bytes, big-endian, since the Unix epoch), so a consumer can tell produce-to-consume
//! latency from the batch alone. Stamping rewrites those 8 bytes and the batch CRC right
//! before the request goes out; nothing else of the pre-built request changes.
//!
//! Works on uncompressed batches only (a compressed batch's values are not in the clear).

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of a batch before its first record (magic v2 header).
const BATCH_HEADER_BYTES: usize = 61;
/// Where the CRC-32C sits, and where the bytes it covers start.
const CRC_AT: usize = 17;
const CRC_FROM: usize = 21;
const STAMP_BYTES: usize = 8;

/// Microseconds since the Unix epoch (the stamp's clock: producer and consumer share it).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A zigzag varint at `at`: (value, bytes it took).
fn varint(bytes: &[u8], at: usize) -> Option<(i64, usize)> {
    let mut raw = 0u64;
    for (i, &byte) in bytes.get(at..)?.iter().take(10).enumerate() {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    None
}

/// Offset in `batch` of its first record's value, when the value holds a stamp.
pub fn first_value_at(batch: &[u8]) -> Option<usize> {
    let mut at = BATCH_HEADER_BYTES;
    let (_, n) = varint(batch, at)?; // record length
    at += n + 1; // and the attributes byte
    let (_, n) = varint(batch, at)?; // timestamp delta
    at += n;
    let (_, n) = varint(batch, at)?; // offset delta
    at += n;
    let (key_length, n) = varint(batch, at)?;
    at += n + usize::try_from(key_length.max(0)).ok()?;
    let (value_length, n) = varint(batch, at)?;
    at += n;
    (value_length >= STAMP_BYTES as i64 && at + STAMP_BYTES <= batch.len()).then_some(at)
}

/// Where to stamp one batch inside a request body.
#[derive(Debug, Clone, Copy)]
pub struct StampSpot {
    /// The batch's bounds in the body.
    pub batch_start: usize,
    pub batch_end: usize,
    /// Its first value's offset in the body.
    pub value_at: usize,
}

/// The stamp spots of `batches`, each found by its bytes in `body` (random payloads make
/// every batch unique).
pub fn spots(body: &[u8], batches: &[bytes::Bytes]) -> anyhow::Result<Vec<StampSpot>> {
    batches
        .iter()
        .map(|batch| {
            let value_in_batch = first_value_at(batch).ok_or_else(|| {
                anyhow::anyhow!("end-to-end mode needs uncompressed values of 8 bytes or more")
            })?;
            let batch_start = body
                .windows(batch.len())
                .position(|window| window == &batch[..])
                .ok_or_else(|| anyhow::anyhow!("a batch is not in its request"))?;
            Ok(StampSpot {
                batch_start,
                batch_end: batch_start + batch.len(),
                value_at: batch_start + value_in_batch,
            })
        })
        .collect()
}

/// Writes `micros` into each spot of `frame` (whose body starts at `body_at`) and seals
/// each batch's CRC again.
pub fn stamp(frame: &mut [u8], body_at: usize, spots: &[StampSpot], micros: u64) {
    for spot in spots {
        let value_at = body_at + spot.value_at;
        frame[value_at..value_at + STAMP_BYTES].copy_from_slice(&micros.to_be_bytes());
        let batch = &mut frame[body_at + spot.batch_start..body_at + spot.batch_end];
        let crc = chronik_shards::partition::batch::crc32c(&batch[CRC_FROM..]);
        batch[CRC_AT..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
    }
}

/// The stamp of a batch as read back, if it has one.
pub fn read(batch: &[u8]) -> Option<u64> {
    let at = first_value_at(batch)?;
    Some(u64::from_be_bytes(
        batch[at..at + STAMP_BYTES].try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build, BatchShape};
    use kafka_protocol::records::{Compression, RecordBatchDecoder};

    #[test]
    fn a_stamped_batch_keeps_a_valid_crc_and_reads_back() {
        for keyed in [false, true] {
            let shape = BatchShape {
                records: 4,
                value_bytes: 64,
                keyed,
                compression: Compression::None,
            };
            let batch = build(shape, 3, 1_000).expect("batch");
            let mut body = vec![7u8; 5];
            body.extend_from_slice(&batch);
            let spots = spots(&body, std::slice::from_ref(&batch)).expect("spots");
            assert_eq!(spots[0].batch_start, 5);
            let mut frame = vec![0u8; 3];
            frame.extend_from_slice(&body);
            stamp(&mut frame, 3, &spots, 1_234_567);
            let stamped = &frame[8..];
            assert_eq!(read(stamped), Some(1_234_567));
            // The decoder checks the CRC.
            let mut bytes = bytes::Bytes::copy_from_slice(stamped);
            let set = RecordBatchDecoder::decode(&mut bytes).expect("valid batch");
            let value = set.records[0].value.clone().expect("value");
            assert_eq!(&value[..8], &1_234_567u64.to_be_bytes());
        }
    }

    #[test]
    fn short_values_have_no_stamp() {
        let shape = BatchShape {
            records: 1,
            value_bytes: 4,
            keyed: false,
            compression: Compression::None,
        };
        let batch = build(shape, 1, 1_000).expect("batch");
        assert!(first_value_at(&batch).is_none());
    }
}
