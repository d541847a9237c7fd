//! DescribeConfigs: a topic's configs (its overrides, else the broker's defaults, with their
//! sources and synonyms) and this broker's settings, by Kafka's names.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::topic_configs::{self, ConfigType};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 1..=4;

pub const TOPIC_RESOURCE: i8 = 2;
pub const BROKER_RESOURCE: i8 = 4;

/// Kafka's config sources.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

/// How the answer is shaped for the request's version.
struct Shape {
    version: i16,
    synonyms: bool,
    documentation: bool,
}

pub fn handle(
    ctx: &Rc<ShardContext>,
    version: i16,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let shape = Shape {
        version,
        synonyms: request.include_synonyms,
        documentation: request.include_documentation && version >= 3,
    };
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let wanted = |name: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let described = match resource.resource_type {
                TOPIC_RESOURCE => describe_topic(ctx, &resource.resource_name, &wanted, &shape),
                BROKER_RESOURCE => describe_broker(ctx, &resource.resource_name, &wanted, &shape),
                other => Err((
                    ResponseError::InvalidRequest,
                    format!("resource type {other} has no configs here (topics: 2, brokers: 4)"),
                )),
            };
            match described {
                Ok(configs) => result.with_configs(configs),
                Err((error, message)) => result
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

type Described = Result<Vec<DescribeConfigsResourceResult>, (ResponseError, String)>;

fn describe_topic(
    ctx: &ShardContext,
    name: &str,
    wanted: &dyn Fn(&str) -> bool,
    shape: &Shape,
) -> Described {
    let view = ctx.metadata();
    let Some(topic) = view.topic(name) else {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            format!("unknown topic {name}"),
        ));
    };
    Ok(topic_configs::TOPIC_CONFIGS
        .iter()
        .filter(|c| wanted(c.name))
        .map(|config| {
            let default = topic_configs::default_value(config, &ctx.config);
            let set = topic.configs.get(config.name);
            let mut synonyms = Vec::new();
            if let Some(value) = set {
                synonyms.push(synonym(config.name, value, DYNAMIC_TOPIC_CONFIG));
            }
            synonyms.push(synonym(config.broker_name, &default, DEFAULT_CONFIG));
            let (value, source) = match set {
                Some(value) => (value.clone(), DYNAMIC_TOPIC_CONFIG),
                None => (default, DEFAULT_CONFIG),
            };
            entry(
                config.name,
                value,
                source,
                false,
                config.kind,
                config.doc,
                synonyms,
                shape,
            )
        })
        .collect())
}

fn describe_broker(
    ctx: &ShardContext,
    name: &str,
    wanted: &dyn Fn(&str) -> bool,
    shape: &Shape,
) -> Described {
    // An empty name is the cluster-wide default; every node runs from its own file.
    if !name.is_empty() && name != ctx.config.node_id.to_string() {
        return Err((
            ResponseError::InvalidRequest,
            format!(
                "this is broker {}; ask broker {name} for its configs",
                ctx.config.node_id
            ),
        ));
    }
    Ok(topic_configs::broker_configs(&ctx.config)
        .into_iter()
        .filter(|(key, _, _)| wanted(key))
        .map(|(key, value, kind)| {
            let synonyms = vec![synonym(key, &value, STATIC_BROKER_CONFIG)];
            let doc = "Set in the broker's configuration file or flags (read-only).";
            entry(
                key,
                value,
                STATIC_BROKER_CONFIG,
                true,
                kind,
                doc,
                synonyms,
                shape,
            )
        })
        .collect())
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value.to_string())))
        .with_source(source)
}

#[allow(clippy::too_many_arguments)]
fn entry(
    name: &str,
    value: String,
    source: i8,
    read_only: bool,
    kind: ConfigType,
    doc: &str,
    synonyms: Vec<DescribeConfigsSynonym>,
    shape: &Shape,
) -> DescribeConfigsResourceResult {
    let mut result = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value)))
        .with_read_only(read_only)
        .with_config_source(source);
    if shape.synonyms {
        result = result.with_synonyms(synonyms);
    }
    if shape.version >= 3 {
        result = result.with_config_type(kind as i8);
    }
    if shape.documentation {
        result = result.with_documentation(Some(StrBytes::from_string(doc.to_string())));
    }
    result
}
