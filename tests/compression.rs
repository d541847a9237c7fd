//! Each compression codec: ~1000 messages produced with `compression.codec`, consumed back
//! intact; and the stored batches carry the codec (the broker stores batches as received).

// A test reads as one scenario, top to bottom; the 70-line rule is for the broker.
#![allow(clippy::too_many_lines)]

mod common;

use std::time::Duration;

use common::*;
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;

const N: usize = 1000;

fn payload(codec: &str, i: usize) -> String {
    // Compressible but distinct, with varying lengths.
    format!("{codec}:{i:06}:{}", "abcdefgh".repeat(1 + i % 40))
}

fn codec_round_trip(codec: &str, attr_codec: i16) {
    let broker = Broker::start(2);
    let bs = broker.bootstrap();
    let topic = format!("compressed-{codec}");
    create_topic(broker.addr(), &topic, 2);

    let p = producer(
        &bs,
        &[
            ("acks", "all"),
            ("compression.codec", codec),
            ("linger.ms", "20"),
            ("batch.num.messages", "200"),
        ],
    );
    for i in 0..N {
        let v = payload(codec, i);
        let k = format!("k{i}");
        send_retry(
            &p,
            BaseRecord::to(&topic)
                .partition((i % 2) as i32)
                .key(k.as_bytes())
                .payload(v.as_bytes()),
        );
        p.poll(Duration::ZERO);
    }
    flush(&p, Duration::from_secs(30));
    let deliveries = p.context().results.lock().expect("delivery lock").clone();
    assert_eq!(deliveries.len(), N);
    assert!(
        deliveries.iter().all(|d| d.error.is_none()),
        "{codec}: delivery error {:?}",
        deliveries.iter().find(|d| d.error.is_some())
    );

    let msgs = consume_all(&bs, &topic, 2, N, Duration::from_secs(60));
    assert_eq!(msgs.len(), N, "{codec}: consumed count");
    for part in 0..2i32 {
        let ms: Vec<_> = msgs.iter().filter(|m| m.partition() == part).collect();
        let want: Vec<usize> = (0..N).filter(|i| (i % 2) as i32 == part).collect();
        assert_eq!(ms.len(), want.len(), "{codec}: partition {part} count");
        for (j, (m, &i)) in ms.iter().zip(want.iter()).enumerate() {
            assert_eq!(
                m.offset(),
                j as i64,
                "{codec}: partition {part} offsets in order"
            );
            assert_eq!(
                m.payload(),
                Some(payload(codec, i).as_bytes()),
                "{codec}: partition {part} offset {j} payload"
            );
            assert_eq!(
                m.key(),
                Some(format!("k{i}").as_bytes()),
                "{codec}: key at {part}/{j}"
            );
        }
    }

    // The stored batches are the compressed batches the client sent (not re-encoded),
    // with valid CRCs and offsets covering 0..count.
    for part in 0..2i32 {
        let (err, hw, records) = fetch_raw(broker.addr(), &topic, part, 0, 100, 8 * 1024 * 1024);
        assert_eq!(err, NONE, "{codec}: raw fetch of partition {part}");
        assert_eq!(
            hw,
            (N / 2) as i64,
            "{codec}: high watermark of partition {part}"
        );
        let batches = parse_batches(&records);
        assert!(
            !batches.is_empty(),
            "{codec}: raw fetch returned no batches"
        );
        let mut next = 0i64;
        let mut compressed_records = 0i64;
        for b in &batches {
            assert_eq!(b.magic, 2, "{codec}: magic of batch {b:?}");
            assert!(b.crc_ok, "{codec}: CRC-32C of stored batch is wrong: {b:?}");
            // librdkafka sends a batch uncompressed when compression would not shrink it (a
            // lone small record); any other codec means the broker re-encoded something.
            let stored_codec = b.attributes & 7;
            assert!(
                stored_codec == attr_codec || stored_codec == 0,
                "{codec}: batch stored with another codec: {b:?}"
            );
            if stored_codec == attr_codec {
                compressed_records += b.last_offset_delta as i64 + 1;
            }
            assert_eq!(
                b.base_offset, next,
                "{codec}: batches must be contiguous: {batches:?}"
            );
            next = b.base_offset + b.last_offset_delta as i64 + 1;
        }
        assert_eq!(next, (N / 2) as i64, "{codec}: batches cover all offsets");
        assert!(
            compressed_records * 10 >= (N / 2) as i64 * 9,
            "{codec}: only {compressed_records} of {} records are in {codec} batches: {batches:?}",
            N / 2
        );
        assert!(
            batches.len() < N / 2,
            "{codec}: expected multi-record batches, got {} batches for {} records",
            batches.len(),
            N / 2
        );
    }
}

#[test]
fn gzip() {
    codec_round_trip("gzip", 1);
}

#[test]
fn snappy() {
    codec_round_trip("snappy", 2);
}

#[test]
fn lz4() {
    codec_round_trip("lz4", 3);
}

#[test]
fn zstd() {
    codec_round_trip("zstd", 4);
}
