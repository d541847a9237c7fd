//! Size-prefixed Kafka frames. A frame larger than `request_bytes_max` is refused before any
//! buffer for it is allocated.

use crate::kafka::shared_records::{SegmentedBuf, SharedRecords};
use std::os::fd::RawFd;

use bytes::{Buf, BufMut, Bytes, BytesMut};
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

/// What a connection's read buffer takes at a time: frames are cut from it one after
/// another, and a read may bring several pipelined requests at once.
pub const READ_BUFFER_BYTES: usize = 256 << 10;
/// Less room than this left in the buffer: take a new one before reading.
const READ_SLICE_BYTES_MIN: usize = 64 << 10;
/// How far past the bytes it waits for one read may go. Bytes read ahead are held before the
/// shard's request budget has counted them, so this bounds, per connection, what the budget
/// does not see; pipelined small requests still arrive several to a read.
pub const READ_AHEAD_BYTES_MAX: usize = 256 << 10;

/// A connection's request reader: reads from the socket straight into the unused capacity
/// of one buffer (no zeroing first, which cost 6% of the broker's CPU under produce load),
/// as much as has arrived, and cuts whole frames from it. Successive frames share the
/// buffer's allocation, so reading neither allocates per request nor faults in fresh pages.
pub struct FrameReader<R> {
    reader: R,
    socket: RawFd,
    buffer: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// `reader` is the read half of the connection whose descriptor is `socket`.
    pub fn new(reader: R, socket: RawFd) -> Self {
        Self {
            reader,
            socket,
            buffer: BytesMut::with_capacity(READ_BUFFER_BYTES),
        }
    }

    /// The size of the next request frame, read from its 4-byte prefix; the body is not read
    /// yet, so the caller can wait for room for it first (as Kafka's memory pool does). A
    /// frame larger than `request_bytes_max` is refused before room for it is reserved.
    pub async fn next_frame_size(&mut self, request_bytes_max: usize) -> Result<usize, FrameError> {
        self.fill_to(4, true).await?;
        let size = i64::from(i32::from_be_bytes(
            self.buffer[..4].try_into().expect("4 bytes"),
        ));
        if size < REQUEST_HEADER_BYTES_MIN as i64 || size > request_bytes_max as i64 {
            return Err(FrameError::BadSize(size));
        }
        Ok(size as usize)
    }

    /// The body of the frame whose size `next_frame_size` returned (without its prefix).
    pub async fn frame_body(&mut self, size: usize) -> Result<Bytes, FrameError> {
        let frame_bytes = 4 + size;
        self.fill_to(frame_bytes, false).await?;
        let mut frame = self.buffer.split_to(frame_bytes);
        frame.advance(4);
        Ok(frame.freeze())
    }

    /// Reads until the buffer holds `wanted` bytes. A connection closed before any byte of
    /// a frame (`at_frame_start`) is `Closed`; in the middle of one, an error.
    async fn fill_to(&mut self, wanted: usize, at_frame_start: bool) -> Result<(), FrameError> {
        while self.buffer.len() < wanted {
            let had = self.buffer.len();
            if self.read_some(wanted).await? == 0 {
                return Err(if at_frame_start && had == 0 {
                    FrameError::Closed
                } else {
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()
                });
            }
        }
        Ok(())
    }

    /// One read: whatever has arrived, into the buffer's unused capacity (at least enough
    /// for `wanted` bytes in all). Returns 0 at the end of the stream.
    async fn read_some(&mut self, wanted: usize) -> std::io::Result<usize> {
        // Room for the rest of the frame, and not so little that reads turn small.
        let needed = wanted.saturating_sub(self.buffer.len()).max(1);
        if self.buffer.capacity() - self.buffer.len() < needed.max(READ_SLICE_BYTES_MIN) {
            self.buffer.reserve(needed.max(READ_BUFFER_BYTES));
        }
        let read_max = needed + READ_AHEAD_BYTES_MAX;
        loop {
            let spare = self.buffer.spare_capacity_mut();
            let read_len = spare.len().min(read_max);
            let spare = &mut spare[..read_len];
            // SAFETY: recv writes at most `spare.len()` bytes into the buffer's unused
            // capacity, which it owns; nothing reads that memory before `advance_mut` below
            // marks exactly the bytes recv wrote as filled.
            let read = unsafe {
                libc::recv(
                    self.socket,
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if let Ok(read) = usize::try_from(read) {
                // SAFETY: recv initialised `read` bytes of the unused capacity.
                unsafe { self.buffer.advance_mut(read) };
                return Ok(read);
            }
            let error = std::io::Error::last_os_error();
            match error.kind() {
                std::io::ErrorKind::Interrupted => continue,
                // Nothing has arrived: wait for it with an ordinary read of one byte, then
                // take the rest without waiting.
                std::io::ErrorKind::WouldBlock => {
                    let mut first = [0u8; 1];
                    let read = self.reader.read(&mut first).await?;
                    self.buffer.extend_from_slice(&first[..read]);
                    return Ok(read);
                }
                _ => return Err(error),
            }
        }
    }
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
