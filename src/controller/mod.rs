//! The controller: the cluster metadata's Raft group and the commands that change it. It lives
//! on shard 0; other shards reach it over the mesh. Changes are serialized (one at a time),
//! committed through Raft, applied by `state::MetadataState`, then published to every shard
//! before the request is answered, so a client that created a topic can use it at once.

pub mod commands;
pub mod forward;
pub mod state;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use chronik_shards::error::ShardError;
use chronik_shards::group::StateMachine;
use glommio::sync::Semaphore;
use prost::Message;

use commands::{
    AllocateProducerIds, AlterTopicConfigs, Command, CreatePartitions, CreateTopic, DeleteTopic,
    InitCluster, MetadataSnapshot, TopicRecord,
};
use state::{MetadataState, CONTROLLER_GROUP_ID};

use crate::runtime::context::ShardContext;

#[derive(Clone)]
pub enum ControllerRequest {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    AllocateProducerId,
    /// Changes a topic's configs: `replace` (AlterConfigs) starts from no overrides,
    /// otherwise (IncrementalAlterConfigs) from the current ones.
    AlterConfigs {
        name: String,
        changes: Vec<ConfigChange>,
        replace: bool,
        validate_only: bool,
    },
    CreatePartitions {
        name: String,
        count: u32,
        validate_only: bool,
    },
}

/// One config operation, as IncrementalAlterConfigs names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOp {
    Set = 0,
    Delete = 1,
    /// Adds to a list value (cleanup.policy).
    Append = 2,
    /// Removes from a list value.
    Subtract = 3,
}

impl ConfigOp {
    pub fn from_code(code: i8) -> Option<ConfigOp> {
        Some(match code {
            0 => ConfigOp::Set,
            1 => ConfigOp::Delete,
            2 => ConfigOp::Append,
            3 => ConfigOp::Subtract,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    pub key: String,
    pub op: ConfigOp,
    pub value: String,
}

/// A topic's configs after `changes` (lists are comma-separated, as Kafka writes them).
pub fn apply_config_changes(
    current: &BTreeMap<String, String>,
    changes: &[ConfigChange],
    replace: bool,
) -> BTreeMap<String, String> {
    let mut configs = if replace {
        BTreeMap::new()
    } else {
        current.clone()
    };
    for change in changes {
        let list = |configs: &BTreeMap<String, String>| -> Vec<String> {
            configs
                .get(&change.key)
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        match change.op {
            ConfigOp::Set => {
                configs.insert(change.key.clone(), change.value.clone());
            }
            ConfigOp::Delete => {
                configs.remove(&change.key);
            }
            ConfigOp::Append => {
                let mut items = list(&configs);
                for item in change.value.split(',').filter(|s| !s.is_empty()) {
                    if !items.iter().any(|i| i == item) {
                        items.push(item.to_string());
                    }
                }
                configs.insert(change.key.clone(), items.join(","));
            }
            ConfigOp::Subtract => {
                let removed: Vec<&str> = change.value.split(',').collect();
                let items: Vec<String> = list(&configs)
                    .into_iter()
                    .filter(|i| !removed.contains(&i.as_str()))
                    .collect();
                if items.is_empty() {
                    configs.remove(&change.key);
                } else {
                    configs.insert(change.key.clone(), items.join(","));
                }
            }
        }
    }
    configs
}

#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ControllerError {
    #[error("topic already exists")]
    TopicAlreadyExists,
    #[error("unknown topic")]
    UnknownTopic,
    #[error(
        "topic name collides with existing topic {0} ('.' and '_' are interchangeable in metrics)"
    )]
    NameCollision(String),
    #[error("the controller could not commit the change: {0}")]
    NotCommitted(String),
    #[error("the change would make the cluster metadata larger than {0} bytes")]
    MetadataTooLarge(usize),
    #[error("the replication factor is larger than the {0} brokers")]
    NotEnoughBrokers(u32),
    /// No controller leader can take the change now (an election, a cluster not yet
    /// initialized): retriable, as Kafka's NOT_CONTROLLER.
    #[error("no controller is available: {0}")]
    NoController(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidConfig(String),
}

pub type TopicOutcome = (String, Result<TopicRecord, ControllerError>);

pub enum ControllerReply {
    Topics(Vec<TopicOutcome>),
    ProducerId(Result<i64, ControllerError>),
}

/// Answers every part of `request` with `error` (no controller could take it).
pub fn refuse(request: ControllerRequest, error: ControllerError) -> ControllerReply {
    let names = match request {
        ControllerRequest::CreateTopics { topics, .. } => {
            topics.into_iter().map(|t| t.name).collect()
        }
        ControllerRequest::DeleteTopics { names } => names,
        ControllerRequest::AlterConfigs { name, .. }
        | ControllerRequest::CreatePartitions { name, .. } => vec![name],
        ControllerRequest::AllocateProducerId => return ControllerReply::ProducerId(Err(error)),
    };
    ControllerReply::Topics(names.into_iter().map(|n| (n, Err(error.clone()))).collect())
}

/// The Raft state machine half, registered with the shard.
struct MetadataMachine(Rc<RefCell<MetadataState>>);

impl StateMachine for MetadataMachine {
    fn apply(&mut self, index: u64, data: &[u8]) {
        match Command::decode(data) {
            Ok(command) => self.0.borrow_mut().apply(index, command),
            // Entries are CRC-checked on disk; an undecodable one is a bug of ours, and
            // skipping it on every replica alike keeps them identical.
            Err(error) => {
                tracing::error!(index, %error, "controller entry does not decode; skipped")
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.0.borrow().encode_snapshot()
    }

    fn restore(&mut self, state: &[u8]) {
        match MetadataSnapshot::decode(state) {
            Ok(snapshot) => *self.0.borrow_mut() = MetadataState::from_snapshot(snapshot),
            Err(error) => tracing::error!(%error, "controller snapshot does not decode"),
        }
    }
}

pub struct Controller {
    state: Rc<RefCell<MetadataState>>,
    /// One change at a time: validation sees the state every earlier change left.
    serial: Semaphore,
}

fn normalized(name: &str) -> String {
    name.replace('.', "_")
}

impl Controller {
    pub fn new() -> (Rc<Controller>, Box<dyn StateMachine>) {
        let state = Rc::new(RefCell::new(MetadataState::default()));
        let controller = Rc::new(Controller {
            state: state.clone(),
            serial: Semaphore::new(1),
        });
        (controller, Box::new(MetadataMachine(state)))
    }

    pub fn state(&self) -> std::cell::Ref<'_, MetadataState> {
        self.state.borrow()
    }

    async fn commit(&self, ctx: &ShardContext, command: Command) -> Result<(), ControllerError> {
        // The whole metadata is written as one WAL record at every checkpoint, so it must stay
        // well inside a segment; refuse before proposing rather than fail at the next roll.
        let metadata_bytes_max = (ctx.config.segment_bytes / 8) as usize;
        let projected = self.state.borrow().to_snapshot().encoded_len() + command.encoded_len();
        if projected > metadata_bytes_max {
            return Err(ControllerError::MetadataTooLarge(metadata_bytes_max));
        }
        let receiver = ctx
            .shard
            .borrow_mut()
            .propose(CONTROLLER_GROUP_ID, command.encode_to_vec())
            .map_err(|e| match e {
                ShardError::NotLeader { .. } => ControllerError::NoController(e.to_string()),
                e => ControllerError::NotCommitted(e.to_string()),
            })?;
        match receiver.await {
            Ok(Ok(_index)) => Ok(()),
            Ok(Err(error)) => Err(ControllerError::NotCommitted(error.to_string())),
            Err(_) => Err(ControllerError::NotCommitted("shard stopped".into())),
        }
    }

    /// Initializes a new cluster's metadata (first start of the data directory).
    pub async fn initialize(
        &self,
        ctx: &ShardContext,
        shard_count: u32,
    ) -> Result<(), ControllerError> {
        let cluster_id = uuid::Uuid::new_v4().simple().to_string();
        let init = InitCluster {
            cluster_id,
            shard_count,
            node_ids: ctx.config.cluster.node_ids(),
        };
        self.commit(
            ctx,
            Command {
                init: Some(init),
                ..Command::default()
            },
        )
        .await
    }

    pub async fn handle(
        &self,
        ctx: &Rc<ShardContext>,
        request: ControllerRequest,
    ) -> ControllerReply {
        let Ok(_permit) = self.serial.acquire_permit(1).await else {
            return ControllerReply::Topics(Vec::new());
        };
        if !self.state.borrow().is_initialized() {
            let error = ControllerError::NoController("the cluster is not initialized yet".into());
            return refuse(request, error);
        }
        let outcomes = match request {
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => {
                let mut outcomes = Vec::with_capacity(topics.len());
                for topic in topics {
                    let outcome = self.create_topic(ctx, &topic, validate_only).await;
                    outcomes.push((topic.name, outcome));
                }
                outcomes
            }
            ControllerRequest::AllocateProducerId => {
                return ControllerReply::ProducerId(self.allocate_producer_id(ctx).await);
            }
            ControllerRequest::DeleteTopics { names } => {
                let mut outcomes = Vec::with_capacity(names.len());
                for name in names {
                    let outcome = self.delete_topic(ctx, &name).await;
                    outcomes.push((name, outcome));
                }
                outcomes
            }
            ControllerRequest::AlterConfigs {
                name,
                changes,
                replace,
                validate_only,
            } => {
                let outcome = self
                    .alter_configs(ctx, &name, &changes, replace, validate_only)
                    .await;
                vec![(name, outcome)]
            }
            ControllerRequest::CreatePartitions {
                name,
                count,
                validate_only,
            } => {
                let outcome = self
                    .create_partitions(ctx, &name, count, validate_only)
                    .await;
                vec![(name, outcome)]
            }
        };
        if outcomes.iter().any(|(_, outcome)| outcome.is_ok()) {
            let view = crate::metadata::MetadataView::from_state(&self.state.borrow());
            crate::runtime::context::publish_metadata(ctx, view).await;
        }
        ControllerReply::Topics(outcomes)
    }

    async fn allocate_producer_id(&self, ctx: &ShardContext) -> Result<i64, ControllerError> {
        let allocate = AllocateProducerIds { count: 1 };
        self.commit(
            ctx,
            Command {
                allocate_producer_ids: Some(allocate),
                ..Command::default()
            },
        )
        .await?;
        // Changes are serialized, so the id just reserved is the one before the new next id.
        Ok(self.state.borrow().next_producer_id as i64 - 1)
    }

    fn check_new_name(&self, name: &str) -> Result<(), ControllerError> {
        let state = self.state.borrow();
        if state.topics.contains_key(name) {
            return Err(ControllerError::TopicAlreadyExists);
        }
        let wanted = normalized(name);
        if let Some(existing) = state
            .topics
            .keys()
            .find(|existing| normalized(existing) == wanted)
        {
            return Err(ControllerError::NameCollision(existing.clone()));
        }
        Ok(())
    }

    async fn create_topic(
        &self,
        ctx: &ShardContext,
        topic: &NewTopic,
        validate_only: bool,
    ) -> Result<TopicRecord, ControllerError> {
        self.check_new_name(&topic.name)?;
        let brokers = self.state.borrow().node_ids.len().max(1) as u32;
        if topic.replication_factor > brokers {
            return Err(ControllerError::NotEnoughBrokers(brokers));
        }
        let create = CreateTopic {
            name: topic.name.clone(),
            topic_id: uuid::Uuid::new_v4().as_bytes().to_vec(),
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            configs: topic.configs.clone(),
        };
        if validate_only {
            return Ok(TopicRecord {
                name: create.name,
                topic_id: create.topic_id,
                partitions: Vec::new(),
                configs: create.configs,
                replication_factor: create.replication_factor,
            });
        }
        self.commit(
            ctx,
            Command {
                create_topic: Some(create),
                ..Command::default()
            },
        )
        .await?;
        let state = self.state.borrow();
        state
            .topics
            .get(&topic.name)
            .cloned()
            .ok_or(ControllerError::TopicAlreadyExists)
    }

    fn existing_topic(&self, name: &str) -> Result<TopicRecord, ControllerError> {
        self.state
            .borrow()
            .topics
            .get(name)
            .cloned()
            .ok_or(ControllerError::UnknownTopic)
    }

    async fn alter_configs(
        &self,
        ctx: &ShardContext,
        name: &str,
        changes: &[ConfigChange],
        replace: bool,
        validate_only: bool,
    ) -> Result<TopicRecord, ControllerError> {
        let mut topic = self.existing_topic(name)?;
        let configs = apply_config_changes(&topic.configs, changes, replace);
        if let Err(reason) = crate::kafka::topic_configs::validate_all(&configs) {
            return Err(ControllerError::InvalidConfig(reason));
        }
        if validate_only {
            topic.configs = configs;
            return Ok(topic);
        }
        let alter = AlterTopicConfigs {
            name: name.to_string(),
            configs,
        };
        self.commit(
            ctx,
            Command {
                alter_configs: Some(alter),
                ..Command::default()
            },
        )
        .await?;
        self.existing_topic(name)
    }

    async fn create_partitions(
        &self,
        ctx: &ShardContext,
        name: &str,
        count: u32,
        validate_only: bool,
    ) -> Result<TopicRecord, ControllerError> {
        let topic = self.existing_topic(name)?;
        let current = topic.partitions.len() as u32;
        if count <= current {
            return Err(ControllerError::InvalidPartitions(format!(
                "topic {name} has {current} partitions; the new count must be larger, got {count}"
            )));
        }
        if count > crate::kafka::topic_configs::PARTITIONS_MAX {
            return Err(ControllerError::InvalidPartitions(format!(
                "at most {} partitions per topic",
                crate::kafka::topic_configs::PARTITIONS_MAX
            )));
        }
        if validate_only {
            return Ok(topic);
        }
        let grow = CreatePartitions {
            name: name.to_string(),
            count,
        };
        self.commit(
            ctx,
            Command {
                create_partitions: Some(grow),
                ..Command::default()
            },
        )
        .await?;
        self.existing_topic(name)
    }

    async fn delete_topic(
        &self,
        ctx: &ShardContext,
        name: &str,
    ) -> Result<TopicRecord, ControllerError> {
        let existing = self
            .state
            .borrow()
            .topics
            .get(name)
            .cloned()
            .ok_or(ControllerError::UnknownTopic)?;
        let delete = DeleteTopic {
            name: name.to_string(),
        };
        self.commit(
            ctx,
            Command {
                delete_topic: Some(delete),
                ..Command::default()
            },
        )
        .await?;
        Ok(existing)
    }
}

#[cfg(test)]
mod config_change_tests {
    use super::*;

    fn change(key: &str, op: ConfigOp, value: &str) -> ConfigChange {
        ConfigChange {
            key: key.into(),
            op,
            value: value.into(),
        }
    }

    #[test]
    fn set_delete_append_subtract_and_replace() {
        let current: BTreeMap<String, String> = [
            ("retention.ms".to_string(), "1000".to_string()),
            ("cleanup.policy".to_string(), "delete".to_string()),
        ]
        .into();
        let incremental = apply_config_changes(
            &current,
            &[
                change("retention.ms", ConfigOp::Delete, ""),
                change("max.message.bytes", ConfigOp::Set, "500"),
                change("cleanup.policy", ConfigOp::Append, "compact,delete"),
            ],
            false,
        );
        assert_eq!(incremental.get("retention.ms"), None);
        assert_eq!(incremental["max.message.bytes"], "500");
        assert_eq!(incremental["cleanup.policy"], "delete,compact");
        let subtracted = apply_config_changes(
            &incremental,
            &[change(
                "cleanup.policy",
                ConfigOp::Subtract,
                "delete,compact",
            )],
            false,
        );
        assert_eq!(subtracted.get("cleanup.policy"), None, "an empty list goes");
        let replaced = apply_config_changes(
            &current,
            &[change("segment.ms", ConfigOp::Set, "60000")],
            true,
        );
        assert_eq!(
            replaced.len(),
            1,
            "AlterConfigs forgets what it does not name"
        );
    }
}
