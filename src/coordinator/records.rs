//! The records of `__consumer_offsets`, in Kafka's own formats (so Kafka's tools could read
//! the topic): an offset commit (key version 1, value version 3) and a group's metadata after
//! a rebalance (key version 2, value version 3). A tombstone (no value) deletes either.
//! Decoding is bounded and never panics: a record it cannot read is skipped by the caller.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// A committed offset, as stored and as OffsetFetch answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// One member of a group as stored after a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's state as stored after each rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<StoredMember>,
}

/// What one record of the topic says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        /// None: the offset was deleted.
        value: Option<CommittedOffset>,
    },
    Group {
        group: String,
        /// None: the group was deleted.
        value: Option<StoredGroup>,
    },
    /// A KIP-848 group's members, epochs and assignments (`ConsumerGroup::encode`), in a
    /// format of chronik's own under key version 100, which Kafka does not use.
    ConsumerGroup {
        group: String,
        /// None: the group was deleted.
        value: Option<Bytes>,
    },
}

const OFFSET_KEY_VERSION: i16 = 1;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_KEY_VERSION: i16 = 2;
const GROUP_VALUE_VERSION: i16 = 3;
const CONSUMER_GROUP_KEY_VERSION: i16 = 100;

impl OffsetsRecord {
    pub fn group(&self) -> &str {
        match self {
            OffsetsRecord::Offset { group, .. }
            | OffsetsRecord::Group { group, .. }
            | OffsetsRecord::ConsumerGroup { group, .. } => group,
        }
    }

    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        let mut value = BytesMut::new();
        match self {
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value: committed,
            } => {
                key.put_i16(OFFSET_KEY_VERSION);
                put_string(&mut key, group);
                put_string(&mut key, topic);
                key.put_i32(*partition);
                let Some(committed) = committed else {
                    return (key.freeze(), None);
                };
                value.put_i16(OFFSET_VALUE_VERSION);
                value.put_i64(committed.offset);
                value.put_i32(committed.leader_epoch);
                put_string(&mut value, &committed.metadata);
                value.put_i64(committed.commit_timestamp_ms);
            }
            OffsetsRecord::Group {
                group,
                value: stored,
            } => {
                key.put_i16(GROUP_KEY_VERSION);
                put_string(&mut key, group);
                let Some(stored) = stored else {
                    return (key.freeze(), None);
                };
                encode_group(&mut value, stored);
            }
            OffsetsRecord::ConsumerGroup {
                group,
                value: state,
            } => {
                key.put_i16(CONSUMER_GROUP_KEY_VERSION);
                put_string(&mut key, group);
                return (key.freeze(), state.clone());
            }
        }
        (key.freeze(), Some(value.freeze()))
    }

    /// None for a record of a kind or version this broker does not know.
    pub fn decode(key: &Bytes, value: Option<&Bytes>) -> Option<OffsetsRecord> {
        let mut key = Reader(key.clone());
        match key.i16()? {
            0 | 1 => {
                let group = key.string()?;
                let topic = key.string()?;
                let partition = key.i32()?;
                let value = match value {
                    Some(bytes) => Some(decode_offset(bytes)?),
                    None => None,
                };
                Some(OffsetsRecord::Offset {
                    group,
                    topic,
                    partition,
                    value,
                })
            }
            2 => {
                let group = key.string()?;
                let value = match value {
                    Some(bytes) => Some(decode_group(bytes)?),
                    None => None,
                };
                Some(OffsetsRecord::Group { group, value })
            }
            CONSUMER_GROUP_KEY_VERSION => Some(OffsetsRecord::ConsumerGroup {
                group: key.string()?,
                value: value.cloned(),
            }),
            _ => None,
        }
    }
}

fn encode_group(value: &mut BytesMut, stored: &StoredGroup) {
    value.put_i16(GROUP_VALUE_VERSION);
    put_string(value, &stored.protocol_type);
    value.put_i32(stored.generation_id);
    put_nullable(value, stored.protocol_name.as_deref());
    put_nullable(value, stored.leader_id.as_deref());
    value.put_i64(stored.state_timestamp_ms);
    value.put_i32(stored.members.len() as i32);
    for member in &stored.members {
        put_string(value, &member.member_id);
        put_nullable(value, member.group_instance_id.as_deref());
        put_string(value, &member.client_id);
        put_string(value, &member.client_host);
        value.put_i32(member.rebalance_timeout_ms);
        value.put_i32(member.session_timeout_ms);
        value.put_i32(member.subscription.len() as i32);
        value.put_slice(&member.subscription);
        value.put_i32(member.assignment.len() as i32);
        value.put_slice(&member.assignment);
    }
}

fn decode_offset(bytes: &Bytes) -> Option<CommittedOffset> {
    let mut value = Reader(bytes.clone());
    let version = value.i16()?;
    let offset = value.i64()?;
    let leader_epoch = if version >= 3 { value.i32()? } else { -1 };
    let metadata = value.string()?;
    let commit_timestamp_ms = value.i64()?;
    Some(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn decode_group(bytes: &Bytes) -> Option<StoredGroup> {
    let mut value = Reader(bytes.clone());
    let version = value.i16()?;
    if !(2..=GROUP_VALUE_VERSION).contains(&version) {
        return None;
    }
    let protocol_type = value.string()?;
    let generation_id = value.i32()?;
    let protocol_name = value.nullable()?;
    let leader_id = value.nullable()?;
    let state_timestamp_ms = value.i64()?;
    let count = value.i32()?;
    // Each member takes at least 20 bytes: a count beyond that is corrupt, not allocated.
    if count < 0 || count as usize > value.0.remaining() / 20 + 1 {
        return None;
    }
    let mut members = Vec::with_capacity(count as usize);
    for _ in 0..count {
        members.push(StoredMember {
            member_id: value.string()?,
            group_instance_id: if version >= 3 {
                value.nullable()?
            } else {
                None
            },
            client_id: value.string()?,
            client_host: value.string()?,
            rebalance_timeout_ms: value.i32()?,
            session_timeout_ms: value.i32()?,
            subscription: value.bytes()?,
            assignment: value.bytes()?,
        });
    }
    Some(StoredGroup {
        protocol_type,
        generation_id,
        protocol_name,
        leader_id,
        state_timestamp_ms,
        members,
    })
}

pub(super) fn put_string(buf: &mut BytesMut, text: &str) {
    let len = text.len().min(i16::MAX as usize);
    buf.put_i16(len as i16);
    buf.put_slice(&text.as_bytes()[..len]);
}

pub(super) fn put_nullable(buf: &mut BytesMut, text: Option<&str>) {
    match text {
        Some(text) => put_string(buf, text),
        None => buf.put_i16(-1),
    }
}

/// A cursor that answers None instead of panicking when the bytes run out.
pub(super) struct Reader(pub(super) Bytes);

impl Reader {
    pub(super) fn i16(&mut self) -> Option<i16> {
        (self.0.remaining() >= 2).then(|| self.0.get_i16())
    }
    pub(super) fn i32(&mut self) -> Option<i32> {
        (self.0.remaining() >= 4).then(|| self.0.get_i32())
    }
    fn i64(&mut self) -> Option<i64> {
        (self.0.remaining() >= 8).then(|| self.0.get_i64())
    }
    fn take(&mut self, len: usize) -> Option<Bytes> {
        (self.0.remaining() >= len).then(|| self.0.split_to(len))
    }
    pub(super) fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    pub(super) fn nullable(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        String::from_utf8(self.take(len as usize)?.to_vec())
            .ok()
            .map(Some)
    }
    fn bytes(&mut self) -> Option<Bytes> {
        let len = usize::try_from(self.i32()?).ok()?;
        self.take(len)
    }
}

/// One uncompressed record batch (magic 2) holding `records`, as the coordinator proposes it
/// to its partition; the shard patches the base offset and leader epoch.
pub fn encode_batch(records: &[OffsetsRecord], now_ms: i64) -> Bytes {
    encode_batch_of(records, now_ms, None)
}

/// `encode_batch` inside the transaction of (producer id, epoch): TxnOffsetCommit's records,
/// which count once the transaction's commit marker follows them.
pub fn encode_batch_of(
    records: &[OffsetsRecord],
    now_ms: i64,
    transaction: Option<(i64, i16)>,
) -> Bytes {
    let pairs: Vec<(Bytes, Option<Bytes>)> = records.iter().map(OffsetsRecord::encode).collect();
    encode_records(&pairs, now_ms, transaction)
}

/// One uncompressed batch of (key, value) records, in `transaction` (producer id, epoch) or
/// none; shared by the coordinators' internal topics.
pub fn encode_records(
    pairs: &[(Bytes, Option<Bytes>)],
    now_ms: i64,
    transaction: Option<(i64, i16)>,
) -> Bytes {
    let (producer_id, producer_epoch) = transaction.unwrap_or((-1, -1));
    let records: Vec<Record> = pairs
        .iter()
        .enumerate()
        .map(|(index, (key, value))| Record {
            transactional: transaction.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            // The encoder starts a new batch wherever offset - sequence changes: keep it
            // constant, so the batch's base sequence is -1 (no sequence).
            sequence: index as i32 - 1,
            timestamp: now_ms,
            key: Some(key.clone()),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    // Encoding uncompressed records into memory cannot fail.
    if let Err(error) = RecordBatchEncoder::encode(&mut buf, &records, &options) {
        tracing::error!(%error, "coordinator batch does not encode");
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let offset = OffsetsRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 7,
            value: Some(CommittedOffset {
                offset: 42,
                leader_epoch: 3,
                metadata: "meta".into(),
                commit_timestamp_ms: 1000,
            }),
        };
        let group = OffsetsRecord::Group {
            group: "g".into(),
            value: Some(StoredGroup {
                protocol_type: "consumer".into(),
                generation_id: 5,
                protocol_name: Some("range".into()),
                leader_id: Some("m1".into()),
                state_timestamp_ms: 99,
                members: vec![StoredMember {
                    member_id: "m1".into(),
                    group_instance_id: Some("i1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"assign"),
                }],
            }),
        };
        let tombstone = OffsetsRecord::Group {
            group: "g".into(),
            value: None,
        };
        for record in [offset, group, tombstone] {
            let (key, value) = record.encode();
            assert_eq!(OffsetsRecord::decode(&key, value.as_ref()), Some(record));
        }
    }

    #[test]
    fn truncated_records_decode_to_none() {
        let (key, value) = OffsetsRecord::Group {
            group: "g".into(),
            value: Some(StoredGroup {
                protocol_type: "consumer".into(),
                generation_id: 1,
                protocol_name: None,
                leader_id: None,
                state_timestamp_ms: 0,
                members: Vec::new(),
            }),
        }
        .encode();
        let value = value.expect("a value");
        for len in 0..value.len() {
            assert_eq!(OffsetsRecord::decode(&key, Some(&value.slice(..len))), None);
        }
        assert_eq!(OffsetsRecord::decode(&key.slice(..3), None), None);
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn a_batch_of_offsets_decodes_back() {
        let records: Vec<OffsetsRecord> = [0, 3]
            .into_iter()
            .map(|partition| OffsetsRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition,
                value: Some(CommittedOffset {
                    offset: 10 + i64::from(partition),
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_timestamp_ms: 5,
                }),
            })
            .collect();
        let mut batch = encode_batch(&records, 5);
        let set = RecordBatchDecoder::decode(&mut batch).expect("decodes");
        let decoded: Vec<OffsetsRecord> = set
            .records
            .iter()
            .filter_map(|r| OffsetsRecord::decode(r.key.as_ref()?, r.value.as_ref()))
            .collect();
        assert_eq!(decoded, records);
        let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![0, 1]);
    }
}
