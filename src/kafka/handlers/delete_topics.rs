//! DeleteTopics: by name (v0-v5, and v6 entries with a name) or by topic id (v6). The topic's
//! partition groups go away on every shard and their log stops pinning WAL segments.

use std::ops::RangeInclusive;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use super::call_controller;
use crate::controller::ControllerRequest;
use crate::kafka::errors;
use crate::runtime::context::ShardContext;

pub const VERSIONS: RangeInclusive<i16> = 1..=6;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    _version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let view = ctx.metadata();
    let mut results = Vec::new();
    let mut names = Vec::new();
    let by_name = request.topic_names.iter().map(|n| n.0.to_string());
    let by_state = request.topics.iter().filter_map(|t| match &t.name {
        Some(name) => Some(name.0.to_string()),
        None => {
            let found = view
                .topics
                .values()
                .find(|r| r.topic_id == t.topic_id.as_bytes().as_slice());
            if found.is_none() {
                results.push(
                    DeletableTopicResult::default()
                        .with_topic_id(t.topic_id)
                        .with_error_code(ResponseError::UnknownTopicId.code()),
                );
            }
            found.map(|r| r.name.clone())
        }
    });
    let requested: Vec<String> = by_name.chain(by_state).collect();
    for name in requested {
        if view.topic(&name).is_none() {
            results.push(
                DeletableTopicResult::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name))))
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            );
        } else if !names.contains(&name) {
            names.push(name);
        }
    }
    if !names.is_empty() {
        let request = ControllerRequest::DeleteTopics {
            names: names.clone(),
        };
        let mut outcomes: std::collections::HashMap<_, _> =
            call_controller(ctx, request).await.into_iter().collect();
        for name in names {
            let result = DeletableTopicResult::default()
                .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
            results.push(match outcomes.remove(&name) {
                Some(Ok(record)) => result
                    .with_topic_id(uuid::Uuid::from_slice(&record.topic_id).unwrap_or_default()),
                Some(Err(error)) => result.with_error_code(errors::controller_error(&error).code()),
                // The controller could not be reached or did not answer for it: every topic
                // asked for gets an answer (clients fail on a missing one), and this one is
                // retriable.
                None => result.with_error_code(ResponseError::NotController.code()),
            });
        }
    }
    DeleteTopicsResponse::default().with_responses(results)
}
