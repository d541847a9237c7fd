//! Raft messages on the wire: prost mirrors of raft-rs's `eraftpb` types, batched per group
//! in an `Envelope`. Converting is field by field; entry data and snapshots stay `Bytes`, so
//! nothing large is copied. A message that does not convert (an unknown message type) is
//! dropped by the receiver: Raft tolerates lost messages.

use bytes::Bytes;
use raft::eraftpb::{
    ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
};

/// One frame's worth of Raft traffic from one node to another.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    #[prost(uint64, tag = "1")]
    pub from_node: u64,
    #[prost(message, repeated, tag = "2")]
    pub groups: Vec<GroupMessages>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupMessages {
    #[prost(uint64, tag = "1")]
    pub group_id: u64,
    #[prost(message, repeated, tag = "2")]
    pub messages: Vec<WireMessage>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WireMessage {
    #[prost(int32, tag = "1")]
    pub msg_type: i32,
    #[prost(uint64, tag = "2")]
    pub to: u64,
    #[prost(uint64, tag = "3")]
    pub from: u64,
    #[prost(uint64, tag = "4")]
    pub term: u64,
    #[prost(uint64, tag = "5")]
    pub log_term: u64,
    #[prost(uint64, tag = "6")]
    pub index: u64,
    #[prost(message, repeated, tag = "7")]
    pub entries: Vec<WireEntry>,
    #[prost(uint64, tag = "8")]
    pub commit: u64,
    #[prost(uint64, tag = "9")]
    pub commit_term: u64,
    #[prost(message, optional, tag = "10")]
    pub snapshot: Option<WireSnapshot>,
    #[prost(uint64, tag = "11")]
    pub request_snapshot: u64,
    #[prost(bool, tag = "12")]
    pub reject: bool,
    #[prost(uint64, tag = "13")]
    pub reject_hint: u64,
    #[prost(bytes = "bytes", tag = "14")]
    pub context: Bytes,
    #[prost(int64, tag = "15")]
    pub priority: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WireEntry {
    #[prost(int32, tag = "1")]
    pub entry_type: i32,
    #[prost(uint64, tag = "2")]
    pub term: u64,
    #[prost(uint64, tag = "3")]
    pub index: u64,
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    pub context: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WireSnapshot {
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
    #[prost(uint64, tag = "2")]
    pub index: u64,
    #[prost(uint64, tag = "3")]
    pub term: u64,
    #[prost(uint64, repeated, tag = "4")]
    pub voters: Vec<u64>,
    #[prost(uint64, repeated, tag = "5")]
    pub learners: Vec<u64>,
}

fn message_type(value: i32) -> Option<MessageType> {
    use MessageType::*;
    Some(match value {
        0 => MsgHup,
        1 => MsgBeat,
        2 => MsgPropose,
        3 => MsgAppend,
        4 => MsgAppendResponse,
        5 => MsgRequestVote,
        6 => MsgRequestVoteResponse,
        7 => MsgSnapshot,
        8 => MsgHeartbeat,
        9 => MsgHeartbeatResponse,
        10 => MsgUnreachable,
        11 => MsgSnapStatus,
        12 => MsgCheckQuorum,
        13 => MsgTransferLeader,
        14 => MsgTimeoutNow,
        15 => MsgReadIndex,
        16 => MsgReadIndexResp,
        17 => MsgRequestPreVote,
        18 => MsgRequestPreVoteResponse,
        _ => return None,
    })
}

/// Message types a peer may send; the rest are local to a node (MsgHup, MsgBeat, MsgPropose,
/// MsgUnreachable, MsgSnapStatus, MsgCheckQuorum) and are refused from the wire.
fn is_peer_message(kind: MessageType) -> bool {
    use MessageType::*;
    matches!(
        kind,
        MsgAppend
            | MsgAppendResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgSnapshot
            | MsgHeartbeat
            | MsgHeartbeatResponse
            | MsgTransferLeader
            | MsgTimeoutNow
            | MsgReadIndex
            | MsgReadIndexResp
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
    )
}

fn entry_type(value: i32) -> Option<EntryType> {
    match value {
        0 => Some(EntryType::EntryNormal),
        1 => Some(EntryType::EntryConfChange),
        2 => Some(EntryType::EntryConfChangeV2),
        _ => None,
    }
}

impl WireMessage {
    pub fn from_raft(mut message: Message) -> Self {
        let entries = message
            .take_entries()
            .into_iter()
            .map(|entry| WireEntry {
                entry_type: entry.get_entry_type() as i32,
                term: entry.term,
                index: entry.index,
                data: entry.data,
                context: entry.context,
            })
            .collect();
        let snapshot = message.has_snapshot().then(|| {
            let mut snapshot = message.take_snapshot();
            let metadata = snapshot.take_metadata();
            let conf_state = metadata.get_conf_state();
            WireSnapshot {
                data: snapshot.data,
                index: metadata.index,
                term: metadata.term,
                voters: conf_state.voters.clone(),
                learners: conf_state.learners.clone(),
            }
        });
        WireMessage {
            msg_type: message.get_msg_type() as i32,
            to: message.to,
            from: message.from,
            term: message.term,
            log_term: message.log_term,
            index: message.index,
            entries,
            commit: message.commit,
            commit_term: message.commit_term,
            snapshot,
            request_snapshot: message.request_snapshot,
            reject: message.reject,
            reject_hint: message.reject_hint,
            context: message.context,
            priority: message.priority,
        }
    }

    /// The raft-rs message, or None when it is not something a peer may send.
    pub fn into_raft(self) -> Option<Message> {
        let kind = message_type(self.msg_type).filter(|&k| is_peer_message(k))?;
        let mut message = Message::default();
        message.set_msg_type(kind);
        message.to = self.to;
        message.from = self.from;
        message.term = self.term;
        message.log_term = self.log_term;
        message.index = self.index;
        message.commit = self.commit;
        message.commit_term = self.commit_term;
        message.request_snapshot = self.request_snapshot;
        message.reject = self.reject;
        message.reject_hint = self.reject_hint;
        message.context = self.context;
        message.priority = self.priority;
        let mut entries = Vec::with_capacity(self.entries.len());
        for wire in self.entries {
            let mut entry = Entry::default();
            entry.set_entry_type(entry_type(wire.entry_type)?);
            entry.term = wire.term;
            entry.index = wire.index;
            entry.data = wire.data;
            entry.context = wire.context;
            entries.push(entry);
        }
        message.set_entries(entries.into());
        if let Some(wire) = self.snapshot {
            let conf_state = ConfState {
                voters: wire.voters,
                learners: wire.learners,
                ..ConfState::default()
            };
            let mut metadata = SnapshotMetadata::default();
            metadata.set_conf_state(conf_state);
            metadata.index = wire.index;
            metadata.term = wire.term;
            let mut snapshot = Snapshot {
                data: wire.data,
                ..Snapshot::default()
            };
            snapshot.set_metadata(metadata);
            message.set_snapshot(snapshot);
        }
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn a_raft_message_round_trips_through_an_envelope() {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgAppend);
        message.to = 2;
        message.from = 1;
        message.term = 7;
        message.commit = 40;
        let entry = Entry {
            term: 7,
            index: 41,
            data: Bytes::from_static(b"batch"),
            ..Entry::default()
        };
        message.set_entries(vec![entry].into());
        let envelope = Envelope {
            from_node: 1,
            groups: vec![GroupMessages {
                group_id: 9,
                messages: vec![WireMessage::from_raft(message.clone())],
            }],
        };
        let decoded = Envelope::decode(envelope.encode_to_vec().as_slice()).expect("decodes");
        let back = decoded.groups[0].messages[0]
            .clone()
            .into_raft()
            .expect("a peer message");
        assert_eq!(back, message);
    }

    #[test]
    fn local_only_message_types_are_refused_from_the_wire() {
        let wire = WireMessage {
            msg_type: MessageType::MsgHup as i32,
            ..Default::default()
        };
        assert!(wire.into_raft().is_none());
        let unknown = WireMessage {
            msg_type: 99,
            ..Default::default()
        };
        assert!(unknown.into_raft().is_none());
    }
}
