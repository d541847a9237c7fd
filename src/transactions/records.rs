//! The records of `__transaction_state`, in Kafka's format (TransactionLogKey v0,
//! TransactionLogValue v0): a transactional id's producer id and epoch, its timeout, its
//! status and the partitions of its current transaction. A tombstone deletes the id.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::state::{TxnMetadata, TxnStatus};

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut key = BytesMut::new();
    key.put_i16(0);
    put_string(&mut key, transactional_id);
    key.freeze()
}

pub fn encode_value(meta: &TxnMetadata) -> Bytes {
    let mut value = BytesMut::new();
    value.put_i16(0);
    value.put_i64(meta.producer_id);
    value.put_i16(meta.epoch);
    value.put_i32(meta.timeout_ms);
    value.put_i8(meta.status as i8);
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (topic, partition) in &meta.partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    value.put_i32(by_topic.len() as i32);
    for (topic, partitions) in by_topic {
        put_string(&mut value, topic);
        value.put_i32(partitions.len() as i32);
        for partition in partitions {
            value.put_i32(partition);
        }
    }
    value.put_i64(meta.last_update_ms);
    value.put_i64(meta.start_ms);
    value.freeze()
}

pub fn decode_key(key: &Bytes) -> Option<String> {
    let mut key = key.clone();
    if key.remaining() < 2 || key.get_i16() != 0 {
        return None;
    }
    get_string(&mut key)
}

pub fn decode_value(value: &Bytes) -> Option<TxnMetadata> {
    let mut value = value.clone();
    if value.remaining() < 2 + 8 + 2 + 4 + 1 + 4 || value.get_i16() != 0 {
        return None;
    }
    let producer_id = value.get_i64();
    let epoch = value.get_i16();
    let timeout_ms = value.get_i32();
    let status = TxnStatus::from_code(value.get_i8())?;
    let topics = value.get_i32();
    let mut partitions = BTreeSet::new();
    for _ in 0..topics.max(0) {
        let topic = get_string(&mut value)?;
        if value.remaining() < 4 {
            return None;
        }
        let count = value.get_i32();
        if count < 0 || count as usize > value.remaining() / 4 {
            return None;
        }
        for _ in 0..count {
            partitions.insert((topic.clone(), value.get_i32()));
        }
    }
    if value.remaining() < 16 {
        return None;
    }
    let last_update_ms = value.get_i64();
    let start_ms = value.get_i64();
    Some(TxnMetadata {
        producer_id,
        epoch,
        timeout_ms,
        status,
        partitions,
        start_ms,
        last_update_ms,
    })
}

fn put_string(buf: &mut BytesMut, text: &str) {
    let len = text.len().min(i16::MAX as usize);
    buf.put_i16(len as i16);
    buf.put_slice(&text.as_bytes()[..len]);
}

fn get_string(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = usize::try_from(buf.get_i16()).ok()?;
    if buf.remaining() < len {
        return None;
    }
    String::from_utf8(buf.split_to(len).to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_truncation_is_refused() {
        let meta = TxnMetadata {
            producer_id: 42,
            epoch: 3,
            timeout_ms: 60_000,
            status: TxnStatus::Ongoing,
            partitions: [
                ("a".to_string(), 0),
                ("a".to_string(), 2),
                ("b".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            start_ms: 10,
            last_update_ms: 20,
        };
        let value = encode_value(&meta);
        assert_eq!(decode_value(&value), Some(meta));
        for len in 0..value.len() {
            assert_eq!(decode_value(&value.slice(..len)), None);
        }
        assert_eq!(decode_key(&encode_key("tx-1")).as_deref(), Some("tx-1"));
    }
}
