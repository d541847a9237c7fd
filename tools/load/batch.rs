//! The record batches the generator sends: built once, with a valid CRC, and sent again and
//! again (base offset and leader epoch are outside the CRC and the broker assigns both), so
//! producing costs the generator no work per message.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// What every batch holds.
#[derive(Debug, Clone, Copy)]
pub struct BatchShape {
    pub records: usize,
    pub value_bytes: usize,
    /// Keys of 16 bytes (distinct per record of a batch) or none.
    pub keyed: bool,
    pub compression: Compression,
}

/// Bytes that do not compress (a codec on them measures its cost, not a fake ratio).
fn noise(len: usize, seed: u64) -> Bytes {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// One record batch of `shape`, its records timestamped `timestamp_ms`.
pub fn build(shape: BatchShape, seed: u64, timestamp_ms: i64) -> anyhow::Result<Bytes> {
    let records: Vec<Record> = (0..shape.records)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // No producer id: the batch's base sequence is -1, and the encoder keeps records
            // in one batch only while offset - sequence stays the same.
            sequence: i as i32 - 1,
            timestamp: timestamp_ms,
            key: shape
                .keyed
                .then(|| Bytes::from(format!("key-{seed:06}-{i:05}"))),
            value: Some(noise(shape.value_bytes, seed.wrapping_mul(7919) + i as u64)),
            headers: Default::default(),
        })
        .collect();
    let mut encoded = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: shape.compression,
    };
    RecordBatchEncoder::encode(&mut encoded, records.iter(), &options)?;
    Ok(encoded.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn a_batch_holds_its_records_and_decodes() {
        let shape = BatchShape {
            records: 10,
            value_bytes: 100,
            keyed: true,
            compression: Compression::Lz4,
        };
        let mut batch = build(shape, 1, 1_000).expect("batch");
        let header_length = i32::from_be_bytes(batch[8..12].try_into().expect("4 bytes"));
        assert_eq!(header_length as usize + 12, batch.len(), "one batch");
        let set = RecordBatchDecoder::decode(&mut batch).expect("decodes");
        assert_eq!(set.records.len(), 10);
        assert!(set
            .records
            .iter()
            .all(|r| r.value.as_ref().map(Bytes::len) == Some(100)));
        assert_eq!(set.records[9].offset, 9);
    }
}
