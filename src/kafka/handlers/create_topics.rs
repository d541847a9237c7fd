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
use crate::controller::{ControllerRequest, NewTopic};
use crate::kafka::{errors, topic_name};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 2..=7;
const PARTITIONS_MAX: i32 = 10_000;
/// Topic configs are short settings; the bounds keep the metadata record small.
const CONFIG_VALUE_CHARS_MAX: usize = 1024;
const CONFIGS_PER_TOPIC_MAX: usize = 64;

/// Topic configs we understand, each with a validator of its value.
type ConfigCheck = (&'static str, fn(&str) -> bool);

const KNOWN_CONFIGS: &[ConfigCheck] = &[
    ("retention.ms", |v| v.parse::<i64>().is_ok_and(|n| n >= -1)),
    ("retention.bytes", |v| {
        v.parse::<i64>().is_ok_and(|n| n >= -1)
    }),
    ("max.message.bytes", |v| {
        v.parse::<i64>()
            .is_ok_and(|n| (0..=i32::MAX as i64).contains(&n))
    }),
    ("cleanup.policy", |v| v == "delete"),
    ("segment.bytes", |v| v.parse::<i64>().is_ok_and(|n| n >= 14)),
    ("min.insync.replicas", |v| {
        v.parse::<i64>().is_ok_and(|n| n >= 1)
    }),
    ("compression.type", |v| {
        matches!(
            v,
            "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd"
        )
    }),
    ("message.timestamp.type", |v| v == "CreateTime"),
];

fn error_result(name: &str, error: ResponseError, message: String) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(TopicName(StrBytes::from_string(name.to_string())))
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_string(message)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}

fn validate(
    ctx: &ShardContext,
    topic: &CreatableTopic,
) -> Result<NewTopic, (ResponseError, String)> {
    let name = topic.name.0.to_string();
    topic_name::validate(&name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
    let partitions = match topic.num_partitions {
        -1 => ctx.config.default_partitions as i32,
        n if (1..=PARTITIONS_MAX).contains(&n) => n,
        n => {
            return Err((
                ResponseError::InvalidPartitions,
                format!("num_partitions must be 1..={PARTITIONS_MAX} or -1, got {n}"),
            ))
        }
    };
    match topic.replication_factor {
        -1 | 1 => {}
        n if n > 1 => {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {n} is larger than the 1 available broker"),
            ))
        }
        n => {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!("replication factor must be positive, got {n}"),
            ))
        }
    }
    if !topic.assignments.is_empty() {
        return Err((
            ResponseError::InvalidRequest,
            "manual replica assignments are not supported".into(),
        ));
    }
    if topic.configs.len() > CONFIGS_PER_TOPIC_MAX {
        return Err((
            ResponseError::InvalidConfig,
            format!("more than {CONFIGS_PER_TOPIC_MAX} configs"),
        ));
    }
    let mut configs = BTreeMap::new();
    for config in &topic.configs {
        if config
            .value
            .as_ref()
            .is_some_and(|v| v.len() > CONFIG_VALUE_CHARS_MAX)
        {
            let message = format!(
                "value of {} is longer than {CONFIG_VALUE_CHARS_MAX} characters",
                config.name.as_str()
            );
            return Err((ResponseError::InvalidConfig, message));
        }
        let key = config.name.to_string();
        let value = config
            .value
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default();
        match KNOWN_CONFIGS.iter().find(|(known, _)| *known == key) {
            Some((_, valid)) if valid(&value) => {
                configs.insert(key, value);
            }
            Some(_) => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("invalid value {value:?} for {key}"),
                ))
            }
            None => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("unknown topic config {key}"),
                ))
            }
        }
    }
    Ok(NewTopic {
        name,
        partitions: partitions as u32,
        replication_factor: 1,
        configs,
    })
}

pub async fn handle(
    ctx: &Rc<ShardContext>,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results: Vec<Option<CreatableTopicResult>> = Vec::with_capacity(request.topics.len());
    let mut valid = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let duplicate = request
            .topics
            .iter()
            .filter(|t| t.name == topic.name)
            .count()
            > 1;
        if duplicate {
            results.push(Some(error_result(
                &name,
                ResponseError::InvalidRequest,
                "topic named more than once".into(),
            )));
            continue;
        }
        match validate(ctx, topic) {
            Ok(new_topic) => {
                valid.push(new_topic);
                results.push(None);
            }
            Err((error, message)) => results.push(Some(error_result(&name, error, message))),
        }
    }
    let outcomes = if valid.is_empty() {
        Vec::new()
    } else {
        call_controller(
            ctx,
            ControllerRequest::CreateTopics {
                topics: valid,
                validate_only: request.validate_only,
            },
        )
        .await
    };
    let mut outcomes = outcomes.into_iter();
    let topics = results
        .into_iter()
        .zip(&request.topics)
        .map(|(result, topic)| {
            if let Some(result) = result {
                return result;
            }
            let name = topic.name.0.to_string();
            match outcomes.next() {
                Some((_, Ok(record))) => {
                    let partitions = if request.validate_only {
                        match topic.num_partitions {
                            -1 => ctx.config.default_partitions as i32,
                            n => n,
                        }
                    } else {
                        record.partitions.len() as i32
                    };
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
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_topic_id(uuid::Uuid::from_slice(&record.topic_id).unwrap_or_default())
                        .with_num_partitions(partitions)
                        .with_replication_factor(1)
                        // Per-topic configs in the response exist from v5.
                        .with_configs((version >= 5).then_some(configs))
                }
                Some((_, Err(error))) => {
                    error_result(&name, errors::controller_error(&error), error.to_string())
                }
                None => error_result(
                    &name,
                    ResponseError::RequestTimedOut,
                    "controller did not answer".into(),
                ),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}
