//! ApiVersions: the versions of every API we implement, from the dispatch table.

use std::ops::RangeInclusive;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

use crate::kafka::dispatch::supported_apis;

pub const VERSIONS: RangeInclusive<i16> = 0..=3;

pub fn handle() -> ApiVersionsResponse {
    let api_keys = supported_apis()
        .iter()
        .map(|(key, versions)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*versions.start())
                .with_max_version(*versions.end())
        })
        .collect();
    // Tagged fields keep their defaults so they are omitted (librdkafka 2.0 mis-parses them).
    ApiVersionsResponse::default().with_api_keys(api_keys)
}

/// The v0-shaped answer to an ApiVersions request at a version we do not speak.
pub fn unsupported_version() -> ApiVersionsResponse {
    handle().with_error_code(ResponseError::UnsupportedVersion.code())
}
