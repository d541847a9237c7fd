//! Controller requests forwarded between nodes: CreateTopics, DeleteTopics and producer id
//! allocation work on any node; a node whose controller replica does not lead sends the
//! request to the leading node over its peer port (one connection per request: they are
//! rare) and answers once its own metadata has applied the change.

use std::rc::Rc;
use std::time::{Duration, Instant};

use prost::Message;

use super::commands::TopicRecord;
use super::{
    ConfigChange, ConfigOp, ControllerError, ControllerReply, ControllerRequest, NewTopic,
};
use crate::runtime::context::ShardContext;
use crate::runtime::frame::{ShardReply, ShardRequest};

/// How long a node waits for its own metadata to show a change the leader committed.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, PartialEq, prost::Message)]
struct ForwardedRequest {
    #[prost(message, repeated, tag = "1")]
    create: Vec<ForwardedTopic>,
    #[prost(bool, tag = "2")]
    validate_only: bool,
    #[prost(string, repeated, tag = "3")]
    delete: Vec<String>,
    #[prost(bool, tag = "4")]
    allocate_producer_id: bool,
    #[prost(message, optional, tag = "5")]
    alter: Option<ForwardedAlter>,
    #[prost(message, optional, tag = "6")]
    grow: Option<ForwardedGrow>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ForwardedAlter {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bool, tag = "2")]
    replace: bool,
    #[prost(message, repeated, tag = "3")]
    changes: Vec<ForwardedChange>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ForwardedChange {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(int32, tag = "2")]
    op: i32,
    #[prost(string, tag = "3")]
    value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ForwardedGrow {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint32, tag = "2")]
    count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ForwardedTopic {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint32, tag = "2")]
    partitions: u32,
    #[prost(uint32, tag = "3")]
    replication_factor: u32,
    #[prost(btree_map = "string, string", tag = "4")]
    configs: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ForwardedReply {
    #[prost(message, repeated, tag = "1")]
    outcomes: Vec<ForwardedOutcome>,
    #[prost(int64, tag = "2")]
    producer_id: i64,
    #[prost(message, optional, tag = "3")]
    error: Option<ForwardedError>,
    /// The leader's metadata index after the change: the asking node waits for it.
    #[prost(uint64, tag = "4")]
    applied_index: u64,
    #[prost(bool, tag = "5")]
    is_producer_id: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ForwardedOutcome {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    topic: Option<TopicRecord>,
    #[prost(message, optional, tag = "3")]
    error: Option<ForwardedError>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ForwardedError {
    #[prost(uint32, tag = "1")]
    kind: u32,
    #[prost(string, tag = "2")]
    text: String,
}

impl From<&ControllerError> for ForwardedError {
    fn from(error: &ControllerError) -> Self {
        let (kind, text) = match error {
            ControllerError::TopicAlreadyExists => (1, String::new()),
            ControllerError::UnknownTopic => (2, String::new()),
            ControllerError::NameCollision(name) => (3, name.clone()),
            ControllerError::NotCommitted(text) => (4, text.clone()),
            ControllerError::MetadataTooLarge(bytes) => (5, bytes.to_string()),
            ControllerError::NotEnoughBrokers(count) => (6, count.to_string()),
            ControllerError::NoController(text) => (7, text.clone()),
            ControllerError::InvalidPartitions(text) => (8, text.clone()),
            ControllerError::InvalidConfig(text) => (9, text.clone()),
        };
        ForwardedError { kind, text }
    }
}

impl From<ForwardedError> for ControllerError {
    fn from(error: ForwardedError) -> Self {
        match error.kind {
            1 => ControllerError::TopicAlreadyExists,
            2 => ControllerError::UnknownTopic,
            3 => ControllerError::NameCollision(error.text),
            5 => ControllerError::MetadataTooLarge(error.text.parse().unwrap_or(0)),
            6 => ControllerError::NotEnoughBrokers(error.text.parse().unwrap_or(0)),
            7 => ControllerError::NoController(error.text),
            8 => ControllerError::InvalidPartitions(error.text),
            9 => ControllerError::InvalidConfig(error.text),
            _ => ControllerError::NotCommitted(error.text),
        }
    }
}

fn encode_request(request: &ControllerRequest) -> ForwardedRequest {
    let mut forwarded = ForwardedRequest::default();
    match request {
        ControllerRequest::CreateTopics {
            topics,
            validate_only,
        } => {
            forwarded.validate_only = *validate_only;
            forwarded.create = topics
                .iter()
                .map(|t| ForwardedTopic {
                    name: t.name.clone(),
                    partitions: t.partitions,
                    replication_factor: t.replication_factor,
                    configs: t.configs.clone(),
                })
                .collect();
        }
        ControllerRequest::DeleteTopics { names } => forwarded.delete = names.clone(),
        ControllerRequest::AllocateProducerId => forwarded.allocate_producer_id = true,
        ControllerRequest::AlterConfigs {
            name,
            changes,
            replace,
            validate_only,
        } => {
            forwarded.validate_only = *validate_only;
            forwarded.alter = Some(ForwardedAlter {
                name: name.clone(),
                replace: *replace,
                changes: changes
                    .iter()
                    .map(|c| ForwardedChange {
                        key: c.key.clone(),
                        op: c.op as i32,
                        value: c.value.clone(),
                    })
                    .collect(),
            });
        }
        ControllerRequest::CreatePartitions {
            name,
            count,
            validate_only,
        } => {
            forwarded.validate_only = *validate_only;
            forwarded.grow = Some(ForwardedGrow {
                name: name.clone(),
                count: *count,
            });
        }
    }
    forwarded
}

fn decode_request(forwarded: ForwardedRequest) -> ControllerRequest {
    if let Some(alter) = forwarded.alter {
        return ControllerRequest::AlterConfigs {
            name: alter.name,
            replace: alter.replace,
            changes: alter
                .changes
                .into_iter()
                .map(|c| ConfigChange {
                    key: c.key,
                    op: ConfigOp::from_code(c.op as i8).unwrap_or(ConfigOp::Set),
                    value: c.value,
                })
                .collect(),
            validate_only: forwarded.validate_only,
        };
    }
    if let Some(grow) = forwarded.grow {
        return ControllerRequest::CreatePartitions {
            name: grow.name,
            count: grow.count,
            validate_only: forwarded.validate_only,
        };
    }
    if forwarded.allocate_producer_id {
        ControllerRequest::AllocateProducerId
    } else if !forwarded.delete.is_empty() {
        ControllerRequest::DeleteTopics {
            names: forwarded.delete,
        }
    } else {
        ControllerRequest::CreateTopics {
            topics: forwarded
                .create
                .into_iter()
                .map(|t| NewTopic {
                    name: t.name,
                    partitions: t.partitions,
                    replication_factor: t.replication_factor,
                    configs: t.configs,
                })
                .collect(),
            validate_only: forwarded.validate_only,
        }
    }
}

fn encode_reply(reply: &ControllerReply, applied_index: u64) -> ForwardedReply {
    let mut forwarded = ForwardedReply {
        applied_index,
        ..ForwardedReply::default()
    };
    match reply {
        ControllerReply::Topics(outcomes) => {
            forwarded.outcomes = outcomes
                .iter()
                .map(|(name, outcome)| ForwardedOutcome {
                    name: name.clone(),
                    topic: outcome.as_ref().ok().cloned(),
                    error: outcome.as_ref().err().map(ForwardedError::from),
                })
                .collect();
        }
        ControllerReply::ProducerId(outcome) => {
            forwarded.is_producer_id = true;
            match outcome {
                Ok(id) => forwarded.producer_id = *id,
                Err(error) => forwarded.error = Some(error.into()),
            }
        }
    }
    forwarded
}

fn decode_reply(forwarded: ForwardedReply) -> ControllerReply {
    if forwarded.is_producer_id {
        return ControllerReply::ProducerId(match forwarded.error {
            Some(error) => Err(error.into()),
            None => Ok(forwarded.producer_id),
        });
    }
    ControllerReply::Topics(
        forwarded
            .outcomes
            .into_iter()
            .map(|o| {
                let outcome = match (o.topic, o.error) {
                    (_, Some(error)) => Err(error.into()),
                    (Some(topic), None) => Ok(topic),
                    (None, None) => Err(ControllerError::NotCommitted("empty reply".into())),
                };
                (o.name, outcome)
            })
            .collect(),
    )
}

/// Runs a request forwarded by a peer, on this node's controller (shard 0). Returns the
/// encoded reply; undecodable input gets an error reply, never a panic.
pub async fn serve(ctx: &Rc<ShardContext>, payload: &[u8]) -> Vec<u8> {
    let not_leader = || ControllerError::NoController("not the controller leader".into());
    let reply = match ForwardedRequest::decode(payload) {
        Err(_) => ControllerReply::Topics(Vec::new()),
        Ok(forwarded) => {
            let request = decode_request(forwarded);
            let me = u64::from(ctx.config.node_id);
            if ctx.node.controller_leader() != Some(me) {
                super::refuse(request, not_leader())
            } else {
                match ctx.call(0, ShardRequest::Controller(request)).await {
                    Ok(ShardReply::Controller(reply)) => reply,
                    _ => ControllerReply::Topics(Vec::new()),
                }
            }
        }
    };
    encode_reply(&reply, ctx.metadata().applied_index).encode_to_vec()
}

/// Sends `request` to the controller leader `leader` and waits until this node's metadata
/// holds the result. None when the leader cannot be reached.
pub async fn forward(
    ctx: &Rc<ShardContext>,
    leader: u64,
    request: ControllerRequest,
) -> Option<ControllerReply> {
    let address = ctx.config.cluster.node(u32::try_from(leader).ok()?)?.peer;
    let payload = encode_request(&request).encode_to_vec();
    let answer = match crate::runtime::peer::forward_request(address, &payload).await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::info!(leader, %error, "cannot forward to the controller leader");
            return None;
        }
    };
    let reply = ForwardedReply::decode(answer.as_slice()).ok()?;
    let applied_index = reply.applied_index;
    let started = Instant::now();
    while ctx.metadata().applied_index < applied_index && started.elapsed() < CATCH_UP_WAIT {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    Some(decode_reply(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_survive_the_trip() {
        let request = ControllerRequest::CreateTopics {
            topics: vec![NewTopic {
                name: "t".into(),
                partitions: 3,
                replication_factor: 2,
                configs: [("retention.ms".to_string(), "5".to_string())].into(),
            }],
            validate_only: true,
        };
        let bytes = encode_request(&request).encode_to_vec();
        match decode_request(ForwardedRequest::decode(bytes.as_slice()).expect("decodes")) {
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => {
                assert!(validate_only);
                assert_eq!(topics[0].replication_factor, 2);
                assert_eq!(topics[0].configs["retention.ms"], "5");
            }
            _ => panic!("a create request"),
        }
        let reply = ControllerReply::Topics(vec![
            ("a".into(), Err(ControllerError::NameCollision("a_".into()))),
            ("b".into(), Err(ControllerError::TopicAlreadyExists)),
        ]);
        let bytes = encode_reply(&reply, 9).encode_to_vec();
        let decoded = ForwardedReply::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded.applied_index, 9);
        match decode_reply(decoded) {
            ControllerReply::Topics(outcomes) => {
                assert!(
                    matches!(&outcomes[0].1, Err(ControllerError::NameCollision(n)) if n == "a_")
                );
                assert!(matches!(
                    outcomes[1].1,
                    Err(ControllerError::TopicAlreadyExists)
                ));
            }
            _ => panic!("topics"),
        }
        let producer = encode_reply(&ControllerReply::ProducerId(Ok(1234)), 1).encode_to_vec();
        assert!(matches!(
            decode_reply(ForwardedReply::decode(producer.as_slice()).expect("decodes")),
            ControllerReply::ProducerId(Ok(1234))
        ));
    }
}
