//! AlterConfigs and IncrementalAlterConfigs of topics: validated against the config table
//! (INVALID_CONFIG names the key), committed by the controller, in effect on every replica
//! as soon as its metadata has it (retention, limits), and kept across restarts. Broker
//! settings come from the configuration file and are read-only here.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::call_controller;
use super::describe_configs::{BROKER_RESOURCE, TOPIC_RESOURCE};
use crate::controller::{ConfigChange, ConfigOp, ControllerRequest};
use crate::kafka::{errors, topic_configs};
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=2;
pub const INCREMENTAL_VERSIONS: RangeInclusive<i16> = 0..=1;

type Outcome = Result<(), (ResponseError, String)>;

pub async fn handle(ctx: &Rc<ShardContext>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let changes = resource
            .configs
            .iter()
            .filter_map(|c| {
                Some(ConfigChange {
                    key: c.name.to_string(),
                    op: ConfigOp::Set,
                    value: c.value.as_ref()?.to_string(),
                })
            })
            .collect();
        let outcome = alter(
            ctx,
            resource.resource_type,
            &resource.resource_name,
            changes,
            true,
            request.validate_only,
        )
        .await;
        let (code, message) = split(outcome);
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub async fn handle_incremental(
    ctx: &Rc<ShardContext>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let changes: Result<Vec<ConfigChange>, (ResponseError, String)> = resource
            .configs
            .iter()
            .map(|c| incremental_change(c.name.as_str(), c.config_operation, c.value.as_deref()))
            .collect();
        let outcome = match changes {
            Ok(changes) => {
                alter(
                    ctx,
                    resource.resource_type,
                    &resource.resource_name,
                    changes,
                    false,
                    request.validate_only,
                )
                .await
            }
            Err(error) => Err(error),
        };
        let (code, message) = split(outcome);
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

fn incremental_change(
    key: &str,
    operation: i8,
    value: Option<&str>,
) -> Result<ConfigChange, (ResponseError, String)> {
    let op = ConfigOp::from_code(operation).ok_or_else(|| {
        (
            ResponseError::InvalidRequest,
            format!("unknown config operation {operation} for {key}"),
        )
    })?;
    let is_list =
        topic_configs::find(key).is_some_and(|c| matches!(c.kind, topic_configs::ConfigType::List));
    if matches!(op, ConfigOp::Append | ConfigOp::Subtract) && !is_list {
        return Err((
            ResponseError::InvalidConfig,
            format!("{key} is not a list: APPEND and SUBTRACT do not apply"),
        ));
    }
    Ok(ConfigChange {
        key: key.to_string(),
        op,
        value: value.unwrap_or_default().to_string(),
    })
}

async fn alter(
    ctx: &Rc<ShardContext>,
    resource_type: i8,
    name: &str,
    changes: Vec<ConfigChange>,
    replace: bool,
    validate_only: bool,
) -> Outcome {
    match resource_type {
        TOPIC_RESOURCE => {}
        BROKER_RESOURCE => {
            return Err((
                ResponseError::InvalidRequest,
                "broker settings come from the configuration file and are read-only".into(),
            ))
        }
        other => {
            return Err((
                ResponseError::InvalidRequest,
                format!("resource type {other} has no configs here (topics: 2)"),
            ))
        }
    }
    let request = ControllerRequest::AlterConfigs {
        name: name.to_string(),
        changes,
        replace,
        validate_only,
    };
    match call_controller(ctx, request).await.into_iter().next() {
        Some((_, Ok(_))) => Ok(()),
        Some((_, Err(error))) => Err((errors::controller_error(&error), error.to_string())),
        None => Err((
            ResponseError::NotController,
            "no controller answered; retry".into(),
        )),
    }
}

fn split(outcome: Outcome) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((error, message)) => (error.code(), Some(StrBytes::from_string(message))),
    }
}
