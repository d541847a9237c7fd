//! CreatePartitions: grows a topic; the new partitions are placed like a new topic's (manual
//! assignments are refused). Existing partitions, and so the partition of existing keys'
//! records, do not move.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::call_controller;
use crate::controller::ControllerRequest;
use crate::kafka::errors;
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 0..=3;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let outcome = if topic.assignments.is_some() {
            Err((
                ResponseError::InvalidReplicaAssignment,
                "manual replica assignments are not supported".to_string(),
            ))
        } else if topic.count <= 0 {
            Err((
                ResponseError::InvalidPartitions,
                format!("partition count must be positive, got {}", topic.count),
            ))
        } else {
            let request = ControllerRequest::CreatePartitions {
                name: topic.name.to_string(),
                count: topic.count as u32,
                validate_only: request.validate_only,
            };
            match call_controller(ctx, request).await.into_iter().next() {
                Some((_, Ok(_))) => Ok(()),
                Some((_, Err(error))) => Err((errors::controller_error(&error), error.to_string())),
                None => Err((
                    ResponseError::NotController,
                    "no controller answered".into(),
                )),
            }
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic.name);
        results.push(match outcome {
            Ok(()) => result,
            Err((error, message)) => result
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
