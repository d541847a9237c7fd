//! Size-prefixed Kafka frames. A frame larger than `request_bytes_max` is refused before any
//! buffer for it is allocated.

use bytes::{BufMut, Bytes, BytesMut};
use futures::io::{AsyncRead, AsyncReadExt};
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
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
