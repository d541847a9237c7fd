//! Size-prefixed Kafka frames. A frame larger than `request_bytes_max` is refused before any
//! buffer for it is allocated.

use crate::kafka::shared_records::{SegmentedBuf, SharedRecords};
use bytes::{BufMut, Bytes, BytesMut};
use futures::io::{AsyncRead, AsyncReadExt};
use kafka_protocol::messages::FetchResponse;
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::buf::ByteBufMut as _;
use kafka_protocol::protocol::Encodable;

/// Smallest request: api key, api version, correlation id.
pub const REQUEST_HEADER_BYTES_MIN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes is outside the allowed size")]
    BadSize(i64),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// What a connection's read buffer starts with; frames are cut from it one after another,
/// and its allocation is reused once the frames cut from it are dropped.
pub const READ_BUFFER_BYTES: usize = 1 << 20;

/// Reads one request frame, cut from the connection's `buffer`: successive frames share one
/// allocation, so reading a request neither allocates nor faults in fresh pages (a profile
/// showed a fresh zeroed buffer per request costing more CPU than the rest of produce).
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    request_bytes_max: usize,
) -> Result<Bytes, FrameError> {
    let mut size = [0u8; 4];
    if let Err(error) = reader.read_exact(&mut size).await {
        return Err(if error.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            error.into()
        });
    }
    let size = i32::from_be_bytes(size) as i64;
    if size < REQUEST_HEADER_BYTES_MIN as i64 || size > request_bytes_max as i64 {
        return Err(FrameError::BadSize(size));
    }
    debug_assert!(buffer.is_empty(), "every frame was cut off");
    buffer.reserve(size as usize);
    buffer.resize(size as usize, 0);
    reader.read_exact(&mut buffer[..]).await?;
    Ok(buffer.split().freeze())
}

/// Encodes a response frame: size, header (at the API's header version), body.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, String> {
    let mut buffer = BytesMut::with_capacity(256);
    buffer.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut buffer, api_key.response_header_version(version))
        .map_err(|e| format!("response header: {e}"))?;
    body.encode(&mut buffer, version)
        .map_err(|e| format!("{api_key:?} v{version} response: {e}"))?;
    let size = (buffer.len() - 4) as i32;
    buffer[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buffer.freeze())
}

/// Encodes a Fetch response frame whose records fields may be placeholders of `shared`: the
/// frame as segments (size, encoded bytes and the shared batches in order), written one
/// after the other. Falls back to copying the batches if a placeholder was not replaced.
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    mut response: FetchResponse,
    shared: &SharedRecords,
) -> Result<Vec<Bytes>, String> {
    let api_key = ApiKey::Fetch;
    if !shared.is_empty() {
        let mut buffer = SegmentedBuf::new(shared);
        let header = ResponseHeader::default().with_correlation_id(correlation_id);
        header
            .encode(&mut buffer, api_key.response_header_version(version))
            .map_err(|e| format!("response header: {e}"))?;
        response
            .encode(&mut buffer, version)
            .map_err(|e| format!("Fetch v{version} response: {e}"))?;
        let size = buffer.offset() as i32;
        if let Some(mut segments) = buffer.finish() {
            segments.insert(0, Bytes::copy_from_slice(&size.to_be_bytes()));
            return Ok(segments);
        }
        tracing::warn!("a Fetch placeholder was not replaced: copying the records instead");
        for partition in response
            .responses
            .iter_mut()
            .flat_map(|t| &mut t.partitions)
        {
            if let Some(records) = partition
                .records
                .as_ref()
                .and_then(|r| shared.concatenated(r))
            {
                partition.records = Some(records);
            }
        }
    }
    let body = ResponseKind::Fetch(response);
    encode_response(api_key, version, correlation_id, &body).map(|frame| vec![frame])
}
