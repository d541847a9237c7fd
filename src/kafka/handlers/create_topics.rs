//! CreateTopics: per-topic validation (name, partitions, replication factor, configs), then
//! one controller change for the valid ones. validate_only checks everything and creates
//! nothing.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use super::call_controller;
use crate::controller::commands::TopicRecord;
use crate::controller::{ControllerRequest, NewTopic};
use crate::kafka::{errors, topic_configs, topic_name};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 2..=7;
const PARTITIONS_MAX: i32 = topic_configs::PARTITIONS_MAX as i32;
fn name_of(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

type Invalid = (ResponseError, String);

fn error_result(name: &str, (error, message): Invalid) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(name_of(name))
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_string(message)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}

fn validate_partitions(ctx: &ShardContext, topic: &CreatableTopic) -> Result<(u32, u32), Invalid> {
    let partitions = match topic.num_partitions {
        -1 => ctx.config.default_partitions as i32,
        n if (1..=PARTITIONS_MAX).contains(&n) => n,
        n => {
            let message = format!("num_partitions must be 1..={PARTITIONS_MAX} or -1, got {n}");
            return Err((ResponseError::InvalidPartitions, message));
        }
    };
    let brokers = ctx.config.cluster.nodes.len() as i32;
    let replication_factor = match topic.replication_factor {
        -1 => ctx.config.default_replication_factor,
        n if i32::from(n) > brokers => {
            let message =
                format!("replication factor {n} is larger than the {brokers} available brokers");
            return Err((ResponseError::InvalidReplicationFactor, message));
        }
        n if n > 0 => n as u32,
        n => {
            let message = format!("replication factor must be positive, got {n}");
            return Err((ResponseError::InvalidReplicationFactor, message));
        }
    };
    if !topic.assignments.is_empty() {
        return Err((
            ResponseError::InvalidRequest,
            "manual replica assignments are not supported".into(),
        ));
    }
    Ok((partitions as u32, replication_factor))
}

fn validate_configs(topic: &CreatableTopic) -> Result<BTreeMap<String, String>, Invalid> {
    let configs: BTreeMap<String, String> = topic
        .configs
        .iter()
        .map(|c| {
            let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
            (c.name.to_string(), value)
        })
        .collect();
    topic_configs::validate_all(&configs)
        .map_err(|reason| (ResponseError::InvalidConfig, reason))?;
    Ok(configs)
}

fn validate(
    ctx: &ShardContext,
    request: &CreateTopicsRequest,
    topic: &CreatableTopic,
) -> Result<NewTopic, Invalid> {
    if request
        .topics
        .iter()
        .filter(|t| t.name == topic.name)
        .count()
        > 1
    {
        return Err((
            ResponseError::InvalidRequest,
            "topic named more than once".into(),
        ));
    }
    let name = topic.name.0.to_string();
    topic_name::validate(&name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
    let (partitions, replication_factor) = validate_partitions(ctx, topic)?;
    let configs = validate_configs(topic)?;
    Ok(NewTopic {
        name,
        partitions,
        replication_factor,
        configs,
    })
}

fn created_result(version: i16, partitions: i32, record: &TopicRecord) -> CreatableTopicResult {
    let configs = record
        .configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_value(Some(StrBytes::from_string(v.clone())))
                .with_config_source(1)
        })
        .collect();
    CreatableTopicResult::default()
        .with_name(name_of(&record.name))
        .with_topic_id(uuid::Uuid::from_slice(&record.topic_id).unwrap_or_default())
        .with_num_partitions(partitions)
        .with_replication_factor(record.replication_factor.max(1) as i16)
        // Per-topic configs in the response exist from v5.
        .with_configs((version >= 5).then_some(configs))
}

pub async fn handle(
    ctx: &Rc<ShardContext>,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let validated: Vec<Result<NewTopic, Invalid>> = request
        .topics
        .iter()
        .map(|t| validate(ctx, &request, t))
        .collect();
    let valid: Vec<NewTopic> = validated
        .iter()
        .filter_map(|v| v.as_ref().ok().cloned())
        .collect();
    let mut outcomes = if valid.is_empty() {
        Vec::new()
    } else {
        let change = ControllerRequest::CreateTopics {
            topics: valid,
            validate_only: request.validate_only,
        };
        call_controller(ctx, change).await
    }
    .into_iter();
    let topics = validated
        .into_iter()
        .zip(&request.topics)
        .map(|(validated, topic)| {
            let name = topic.name.0.to_string();
            let new_topic = match validated {
                Ok(new_topic) => new_topic,
                Err(invalid) => return error_result(&name, invalid),
            };
            match outcomes.next() {
                Some((_, Ok(record))) => {
                    // validate_only creates nothing: report what would have been created.
                    let partitions = if request.validate_only {
                        new_topic.partitions as i32
                    } else {
                        record.partitions.len() as i32
                    };
                    created_result(version, partitions, &record)
                }
                Some((_, Err(error))) => {
                    error_result(&name, (errors::controller_error(&error), error.to_string()))
                }
                // No controller could be reached (an election): retriable.
                None => error_result(
                    &name,
                    (
                        ResponseError::NotController,
                        "no controller is available".into(),
                    ),
                ),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}
