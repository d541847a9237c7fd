//! Topic and broker configs and partition growth through librdkafka's AdminClient (and raw
//! IncrementalAlterConfigs, which it does not expose): described with sources, altered with
//! validation that names the key, in effect at once and after a restart.

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::time::Duration;

use common::*;
use futures::executor::block_on;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::BaseRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

/// (value, source) of one config of a topic; the source as its Debug name (rdkafka's
/// `ConfigSource` is neither Copy nor Clone).
fn topic_config(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    key: &str,
) -> (String, String) {
    let described =
        block_on(admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new()))
            .expect("describe configs");
    let resource = described[0].as_ref().expect("topic described");
    let entry = resource.get(key).unwrap_or_else(|| panic!("{key} listed"));
    (
        entry.value.clone().unwrap_or_default(),
        format!("{:?}", entry.source),
    )
}

/// IncrementalAlterConfigs of one topic config: (error code, message).
fn incremental(
    addr: std::net::SocketAddr,
    topic: &str,
    key: &str,
    op: i8,
    value: &str,
) -> (i16, String) {
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_string(key.to_string()))
                .with_config_operation(op)
                .with_value(Some(StrBytes::from_string(value.to_string())))]),
    ]);
    let response: IncrementalAlterConfigsResponse = typed_request(addr, &request, 1);
    let result = &response.responses[0];
    (
        result.error_code,
        result
            .error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

/// AlterConfigs of one topic config: (error code, message).
fn alter_raw(addr: std::net::SocketAddr, topic: &str, key: &str, value: &str) -> (i16, String) {
    use kafka_protocol::messages::alter_configs_request::{self, AlterConfigsRequest};
    use kafka_protocol::messages::AlterConfigsResponse;
    let request = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(StrBytes::from_string(key.to_string()))
                .with_value(Some(StrBytes::from_string(value.to_string())))]),
    ]);
    let response: AlterConfigsResponse = typed_request(addr, &request, 1);
    let result = &response.responses[0];
    (
        result.error_code,
        result
            .error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

fn produce_one(bootstrap: &str, topic: &str, bytes: usize) -> Option<String> {
    let producer = producer(
        bootstrap,
        &[("acks", "all"), ("message.max.bytes", "100000")],
    );
    let payload = vec![b'x'; bytes];
    send_retry(
        &producer,
        BaseRecord::to(topic).partition(0).payload(&payload[..]),
    );
    flush(&producer, Duration::from_secs(30));
    let results = producer.context().results.lock().expect("results").clone();
    results[0].error.clone()
}

#[test]
fn topic_configs_are_described_altered_validated_and_kept() {
    let mut broker = Broker::start(1);
    let bootstrap = broker.bootstrap();
    let admin = admin(&bootstrap);
    let options = AdminOptions::new();
    let created = block_on(admin.create_topics(
        &[NewTopic::new("conf", 1, TopicReplication::Fixed(1)).set("retention.ms", "3600000")],
        &options,
    ))
    .expect("create");
    assert!(created[0].is_ok(), "{created:?}");

    // The override and the defaults, each with its source.
    assert_eq!(
        topic_config(&admin, "conf", "retention.ms"),
        ("3600000".into(), "DynamicTopic".to_string())
    );
    assert_eq!(
        topic_config(&admin, "conf", "cleanup.policy"),
        ("delete".into(), "Default".to_string())
    );
    assert_eq!(
        topic_config(&admin, "conf", "max.message.bytes"),
        ("1048588".into(), "Default".to_string())
    );

    // Broker settings are listed, read-only.
    let described = block_on(admin.describe_configs(&[ResourceSpecifier::Broker(1)], &options))
        .expect("describe broker");
    let broker_configs = described[0].as_ref().expect("broker described");
    let partitions = broker_configs
        .get("num.partitions")
        .expect("num.partitions");
    assert_eq!(partitions.value.as_deref(), Some("1"));
    assert!(partitions.is_read_only);

    // AlterConfigs replaces the overrides: retention.ms goes back to the default.
    let altered = block_on(admin.alter_configs(
        &[AlterConfig::new(ResourceSpecifier::Topic("conf")).set("max.message.bytes", "1000")],
        &options,
    ))
    .expect("alter");
    assert!(altered[0].is_ok(), "{altered:?}");
    assert_eq!(topic_config(&admin, "conf", "max.message.bytes").0, "1000");
    assert_eq!(topic_config(&admin, "conf", "retention.ms").1, "Default");
    // In effect at once: a 2000-byte record is too large now.
    let refused = produce_one(&bootstrap, "conf", 2000).expect("refused");
    assert!(refused.contains("too large"), "{refused}");

    // Invalid values and unknown keys are refused with INVALID_CONFIG naming the key.
    // (rdkafka's alter_configs drops per-resource errors, so this one is sent raw.)
    let addr = broker.addr();
    let (code, message) = alter_raw(addr, "conf", "retention.ms", "soon");
    assert_eq!(code, 40, "INVALID_CONFIG: {message}");
    assert!(message.contains("retention.ms"), "{message}");
    assert_eq!(topic_config(&admin, "conf", "max.message.bytes").0, "1000");
    let (code, message) = incremental(addr, "conf", "no.such.config", 0, "1");
    assert_eq!(code, 40, "INVALID_CONFIG: {message}");
    assert!(message.contains("no.such.config"), "{message}");
    let (code, message) = incremental(addr, "conf", "retention.ms", 2, "1");
    assert_eq!(code, 40, "APPEND to a non-list: {message}");

    // IncrementalAlterConfigs keeps the other overrides.
    assert_eq!(
        incremental(addr, "conf", "retention.bytes", 0, "1048576").0,
        0
    );
    assert_eq!(topic_config(&admin, "conf", "max.message.bytes").0, "1000");
    assert_eq!(topic_config(&admin, "conf", "retention.bytes").0, "1048576");
    assert_eq!(incremental(addr, "conf", "retention.bytes", 1, "").0, 0);
    assert_eq!(topic_config(&admin, "conf", "retention.bytes").1, "Default");

    // After a restart the change is still there and still enforced.
    drop(admin);
    broker.restart();
    let admin = self::admin(&bootstrap);
    assert_eq!(
        topic_config(&admin, "conf", "max.message.bytes"),
        ("1000".into(), "DynamicTopic".to_string())
    );
    assert!(produce_one(&bootstrap, "conf", 2000).is_some());
    assert!(produce_one(&bootstrap, "conf", 100).is_none());
}

#[test]
fn partitions_can_be_added_but_never_removed() {
    let broker = Broker::start(2);
    let bootstrap = broker.bootstrap();
    let admin = admin(&bootstrap);
    let options = AdminOptions::new();
    let created = block_on(admin.create_topics(
        &[NewTopic::new("grow", 2, TopicReplication::Fixed(1))],
        &options,
    ))
    .expect("create");
    assert!(created[0].is_ok(), "{created:?}");
    let grown = block_on(admin.create_partitions(&[NewPartitions::new("grow", 5)], &options))
        .expect("create partitions");
    assert!(grown[0].is_ok(), "{grown:?}");
    let shrunk = block_on(admin.create_partitions(&[NewPartitions::new("grow", 3)], &options))
        .expect("create partitions");
    assert!(
        matches!(&shrunk[0], Err((_, RDKafkaErrorCode::InvalidPartitions))),
        "{shrunk:?}"
    );
    // The new partitions take records and serve them.
    let producer = producer(&bootstrap, &[("acks", "all")]);
    for partition in 0..5 {
        send_retry(
            &producer,
            BaseRecord::to("grow")
                .partition(partition)
                .payload(b"v".as_slice()),
        );
    }
    flush(&producer, Duration::from_secs(30));
    let results = producer.context().results.lock().expect("results").clone();
    assert!(results.iter().all(|d| d.error.is_none()), "{results:?}");
    let messages = consume_all(&bootstrap, "grow", 5, 5, Duration::from_secs(30));
    assert_eq!(messages.len(), 5);
}

#[test]
fn records_below_an_offset_are_deleted_for_good() {
    use rdkafka::consumer::Consumer;
    use rdkafka::{Offset, TopicPartitionList};
    let mut broker = Broker::start(1);
    let bootstrap = broker.bootstrap();
    let producer = producer(&bootstrap, &[("acks", "all"), ("linger.ms", "0")]);
    for i in 0..100 {
        let payload = format!("r{i}");
        send_retry(
            &producer,
            BaseRecord::to("trimmed")
                .partition(0)
                .payload(payload.as_bytes()),
        );
        producer.poll(Duration::ZERO);
    }
    flush(&producer, Duration::from_secs(30));
    let admin = admin(&bootstrap);
    let delete = |offset: Offset| {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset("trimmed", 0, offset)
            .expect("offset");
        let result = block_on(admin.delete_records(&list, &AdminOptions::new())).expect("delete");
        let element = &result.elements()[0];
        (element.offset(), element.error())
    };
    assert_eq!(delete(Offset::Offset(40)), (Offset::Offset(40), Ok(())));
    let low_watermark = |bootstrap: &str| {
        consumer(bootstrap, &[])
            .fetch_watermarks("trimmed", 0, Duration::from_secs(10))
            .expect("watermarks")
    };
    assert_eq!(low_watermark(&bootstrap), (40, 100));
    let messages = consume_all(&bootstrap, "trimmed", 1, 60, Duration::from_secs(30));
    assert_eq!(messages.len(), 60);
    assert_eq!(rdkafka::Message::offset(&messages[0]), 40);
    // Going back is a no-op; beyond the high watermark is out of range.
    assert_eq!(delete(Offset::Offset(10)).0, Offset::Offset(40));
    assert!(delete(Offset::Offset(500)).1.is_err());

    drop(admin);
    broker.restart();
    assert_eq!(low_watermark(&bootstrap), (40, 100));
    let admin = self::admin(&bootstrap);
    let mut list = TopicPartitionList::new();
    list.add_partition_offset("trimmed", 0, Offset::End)
        .expect("offset");
    let result = block_on(admin.delete_records(&list, &AdminOptions::new())).expect("delete");
    assert_eq!(result.elements()[0].offset(), Offset::Offset(100));
    assert_eq!(low_watermark(&bootstrap), (100, 100));
}
