//! Decompression of stored record batches with a hard cap on the output.
//!
//! The broker stores batches compressed, as the producer sent them, and decompresses only
//! where it must look inside one (ListOffsets by timestamp). A batch is client input: a few
//! megabytes of gzip or zstd can expand to gigabytes, and a snappy block can declare any
//! length it likes. Every codec here stops at `limit` bytes of output and fails instead of
//! allocating more.

use std::io::Read;

use bytes::{Buf, Bytes};
use kafka_protocol::records::Compression;

#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("decompressed batch exceeds {0} bytes")]
    TooLarge(usize),
    #[error("corrupt {codec:?} data: {reason}")]
    Corrupt { codec: Compression, reason: String },
}

const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Xerial framing that Kafka's Java client puts around snappy blocks.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = XERIAL_MAGIC.len() + 8;

/// Decompresses `data` (a batch's records section) into at most `limit` bytes.
pub fn decompress_bounded(
    data: &Bytes,
    codec: Compression,
    limit: usize,
) -> Result<Bytes, DecompressError> {
    let corrupt = |reason: String| DecompressError::Corrupt { codec, reason };
    match codec {
        Compression::None => {
            if data.len() > limit {
                return Err(DecompressError::TooLarge(limit));
            }
            Ok(data.clone())
        }
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(data.as_ref()), limit)
            .map_err(|e| e.or_corrupt(codec)),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(data.as_ref())
                .map_err(|e| corrupt(e.to_string()))?;
            // The frame header names the window the decoder allocates: cap it too (16 MiB
            // covers every standard level; only --ultra levels go beyond).
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| corrupt(e.to_string()))?;
            read_bounded(decoder, limit).map_err(|e| e.or_corrupt(codec))
        }
        Compression::Lz4 => {
            let decoder = lz4::Decoder::new(data.as_ref()).map_err(|e| corrupt(e.to_string()))?;
            read_bounded(decoder, limit).map_err(|e| e.or_corrupt(codec))
        }
        Compression::Snappy => snappy_bounded(data, limit),
    }
}

/// What went wrong while reading a decoder: too much output, or an I/O (format) error.
enum ReadError {
    TooLarge(usize),
    Format(std::io::Error),
}

impl ReadError {
    fn or_corrupt(self, codec: Compression) -> DecompressError {
        match self {
            ReadError::TooLarge(limit) => DecompressError::TooLarge(limit),
            ReadError::Format(e) => DecompressError::Corrupt {
                codec,
                reason: e.to_string(),
            },
        }
    }
}

fn read_bounded(reader: impl Read, limit: usize) -> Result<Bytes, ReadError> {
    let mut out = Vec::new();
    // One byte over the limit tells "exactly at the limit" from "more than the limit".
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(ReadError::Format)?;
    if out.len() > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(out.into())
}

/// Raw snappy, or Xerial-framed blocks (`[u32 length][raw snappy block]...`). Each block's
/// declared length is checked against what is left of the limit before anything is allocated.
fn snappy_bounded(data: &Bytes, limit: usize) -> Result<Bytes, DecompressError> {
    let corrupt = |reason: String| DecompressError::Corrupt {
        codec: Compression::Snappy,
        reason,
    };
    let mut out = Vec::new();
    let decode_block = |block: &[u8], out: &mut Vec<u8>| {
        let length = snap::raw::decompress_len(block).map_err(|e| corrupt(e.to_string()))?;
        if length > limit - out.len() {
            return Err(DecompressError::TooLarge(limit));
        }
        let start = out.len();
        out.resize(start + length, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(())
    };
    if !data.starts_with(XERIAL_MAGIC) {
        decode_block(data, &mut out)?;
        return Ok(out.into());
    }
    let mut rest = data
        .get(XERIAL_HEADER_BYTES..)
        .ok_or_else(|| corrupt("truncated xerial header".into()))?;
    while rest.has_remaining() {
        if rest.remaining() < 4 {
            return Err(corrupt("truncated block length".into()));
        }
        let block_bytes = rest.get_u32() as usize;
        let block = rest
            .get(..block_bytes)
            .ok_or_else(|| corrupt("truncated block".into()))?;
        decode_block(block, &mut out)?;
        rest.advance(block_bytes);
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const LIMIT: usize = 1 << 20;

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).expect("gzip");
        encoder.finish().expect("gzip").into()
    }

    fn xerial(blocks: &[&[u8]]) -> Bytes {
        let mut out = XERIAL_MAGIC.to_vec();
        out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        for block in blocks {
            let compressed = snap::raw::Encoder::new()
                .compress_vec(block)
                .expect("snappy");
            out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
            out.extend_from_slice(&compressed);
        }
        out.into()
    }

    #[test]
    fn every_codec_round_trips_below_the_limit() {
        let data = b"records of a batch, repeated ".repeat(1000);
        let zstd = zstd::encode_all(&data[..], 1).expect("zstd");
        let mut lz4 = lz4::EncoderBuilder::new()
            .build(Vec::new())
            .expect("lz4 encoder");
        lz4.write_all(&data).expect("lz4");
        let (lz4, result) = lz4.finish();
        result.expect("lz4 finish");
        let snappy_raw = snap::raw::Encoder::new().compress_vec(&data).expect("snap");
        let cases = [
            (Compression::None, Bytes::from(data.clone())),
            (Compression::Gzip, gzip(&data)),
            (Compression::Zstd, zstd.into()),
            (Compression::Lz4, lz4.into()),
            (Compression::Snappy, snappy_raw.into()),
            (
                Compression::Snappy,
                xerial(&[&data[..10_000], &data[10_000..]]),
            ),
        ];
        for (codec, compressed) in cases {
            let out = decompress_bounded(&compressed, codec, LIMIT).expect("decompresses");
            assert_eq!(out.as_ref(), &data[..], "{codec:?}");
        }
    }

    #[test]
    fn output_over_the_limit_is_refused() {
        let zeros = vec![0u8; LIMIT + 1];
        let zstd = zstd::encode_all(&zeros[..], 1).expect("zstd");
        let cases = [
            (Compression::None, Bytes::from(zeros.clone())),
            (Compression::Gzip, gzip(&zeros)),
            (Compression::Zstd, zstd.into()),
            (
                Compression::Snappy,
                xerial(&[&zeros[..LIMIT / 2], &zeros[LIMIT / 2..]]),
            ),
        ];
        for (codec, compressed) in cases {
            let result = decompress_bounded(&compressed, codec, LIMIT);
            assert!(
                matches!(result, Err(DecompressError::TooLarge(LIMIT))),
                "{codec:?}: {result:?}"
            );
        }
        // Exactly at the limit is fine.
        let at_limit = gzip(&zeros[..LIMIT]);
        let out = decompress_bounded(&at_limit, Compression::Gzip, LIMIT).expect("at the limit");
        assert_eq!(out.len(), LIMIT);
    }

    #[test]
    fn a_zstd_frame_asking_for_a_huge_window_is_refused() {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
        encoder.window_log(27).expect("window");
        encoder.include_contentsize(false).expect("no content size");
        // Data whose repeats lie far apart, so the frame needs its large window.
        let block: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7919 % 251) as u8).collect();
        for _ in 0..40 {
            encoder.write_all(&block).expect("zstd");
        }
        let frame = Bytes::from(encoder.finish().expect("zstd"));
        let result = decompress_bounded(&frame, Compression::Zstd, 64 << 20);
        assert!(
            matches!(result, Err(DecompressError::Corrupt { .. })),
            "{:?}",
            result.map(|b| b.len())
        );
    }

    #[test]
    fn a_snappy_block_declaring_a_huge_length_allocates_nothing() {
        // Varint length 2^32 - 1, then no data.
        let forged = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        let result = decompress_bounded(&forged, Compression::Snappy, LIMIT);
        assert!(result.is_err(), "{result:?}");
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        let garbage = Bytes::from_static(b"\x00\x01\x02 not compressed at all");
        for codec in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Lz4,
            Compression::Snappy,
        ] {
            let result = decompress_bounded(&garbage, codec, LIMIT);
            assert!(
                matches!(result, Err(DecompressError::Corrupt { .. })),
                "{codec:?}: {result:?}"
            );
        }
    }
}
