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
/// A frame at least this large is read into an allocation of its own instead of being cut
/// from the shared buffer: the body is then its allocation's only owner, so the produce path
/// can hand its record batches to the log without copying them (`handlers::produce`).
pub const OWN_ALLOCATION_FRAME_BYTES_MIN: usize = 64 << 10;
/// After such a frame the next size is read with only this much read-ahead, so that a large
/// frame following it arrives in its own allocation rather than in the shared buffer.
const READ_AHEAD_AFTER_LARGE_FRAME_BYTES: usize = 4 << 10;

/// A request frame's body. `own_allocation`: the bytes are their allocation's whole, so
/// whoever holds the last reference to them holds all of that memory and nothing more.
pub struct FrameBody {
    pub bytes: Bytes,
    pub own_allocation: bool,
}

/// A connection's request reader: reads from the socket straight into the unused capacity
/// of one buffer (no zeroing first, which cost 6% of the broker's CPU under produce load),
/// as much as has arrived, and cuts whole frames from it. Successive frames share the
/// buffer's allocation, so reading neither allocates per request nor faults in fresh pages.
pub struct FrameReader<R> {
    reader: R,
    socket: RawFd,
    buffer: BytesMut,
    last_frame_large: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// `reader` is the read half of the connection whose descriptor is `socket`.
    pub fn new(reader: R, socket: RawFd) -> Self {
        Self {
            reader,
            socket,
            buffer: BytesMut::with_capacity(READ_BUFFER_BYTES),
            last_frame_large: false,
        }
    }

    /// The size of the next request frame, read from its 4-byte prefix; the body is not read
    /// yet, so the caller can wait for room for it first (as Kafka's memory pool does). A
    /// frame larger than `request_bytes_max` is refused before room for it is reserved.
    pub async fn next_frame_size(&mut self, request_bytes_max: usize) -> Result<usize, FrameError> {
        let read_ahead = if self.last_frame_large {
            READ_AHEAD_AFTER_LARGE_FRAME_BYTES
        } else {
            READ_AHEAD_BYTES_MAX
        };
        self.fill_to(4, true, read_ahead).await?;
        let size = i64::from(i32::from_be_bytes(
            self.buffer[..4].try_into().expect("4 bytes"),
        ));
        if size < REQUEST_HEADER_BYTES_MIN as i64 || size > request_bytes_max as i64 {
            return Err(FrameError::BadSize(size));
        }
        Ok(size as usize)
    }

    /// The body of the frame whose size `next_frame_size` returned (without its prefix).
    /// A large frame not yet read whole comes in an allocation of its own (see
    /// `OWN_ALLOCATION_FRAME_BYTES_MIN`).
    pub async fn frame_body(&mut self, size: usize) -> Result<FrameBody, FrameError> {
        let frame_bytes = 4 + size;
        self.last_frame_large = size >= OWN_ALLOCATION_FRAME_BYTES_MIN;
        if self.last_frame_large && self.buffer.len() < frame_bytes {
            let bytes = self.body_in_own_allocation(size).await?;
            return Ok(FrameBody {
                bytes,
                own_allocation: true,
            });
        }
        self.fill_to(frame_bytes, false, READ_AHEAD_BYTES_MAX)
            .await?;
        let mut frame = self.buffer.split_to(frame_bytes);
        frame.advance(4);
        Ok(FrameBody {
            bytes: frame.freeze(),
            own_allocation: false,
        })
    }

    /// Moves what the shared buffer holds of the body into a new allocation of exactly its
    /// size and reads the rest straight into it, nothing past the frame's end.
    async fn body_in_own_allocation(&mut self, size: usize) -> Result<Bytes, FrameError> {
        let mut body = BytesMut::with_capacity(size);
        body.extend_from_slice(&self.buffer[4..]);
        self.buffer.clear();
        while body.len() < size {
            let missing = size - body.len();
            if receive(&mut self.reader, self.socket, &mut body, missing).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        Ok(body.freeze())
    }

    /// Reads until the buffer holds `wanted` bytes, and at most `read_ahead` past them. A
    /// connection closed before any byte of a frame (`at_frame_start`) is `Closed`; in the
    /// middle of one, an error.
    async fn fill_to(
        &mut self,
        wanted: usize,
        at_frame_start: bool,
        read_ahead: usize,
    ) -> Result<(), FrameError> {
        while self.buffer.len() < wanted {
            let had = self.buffer.len();
            if self.read_some(wanted, read_ahead).await? == 0 {
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
    async fn read_some(&mut self, wanted: usize, read_ahead: usize) -> std::io::Result<usize> {
        // Room for the rest of the frame, and not so little that reads turn small.
        let needed = wanted.saturating_sub(self.buffer.len()).max(1);
        if self.buffer.capacity() - self.buffer.len() < needed.max(READ_SLICE_BYTES_MIN) {
            self.buffer.reserve(needed.max(READ_BUFFER_BYTES));
        }
        receive(
            &mut self.reader,
            self.socket,
            &mut self.buffer,
            needed + read_ahead,
        )
        .await
    }
}

/// One read of at most `read_max` bytes, whatever has arrived, into the unused capacity of
/// `buffer` (which must have some). Returns 0 at the end of the stream.
async fn receive<R: AsyncRead + Unpin>(
    reader: &mut R,
    socket: RawFd,
    buffer: &mut BytesMut,
    read_max: usize,
) -> std::io::Result<usize> {
    loop {
        let spare = buffer.spare_capacity_mut();
        let read_len = spare.len().min(read_max);
        let spare = &mut spare[..read_len];
        // SAFETY: recv writes at most `spare.len()` bytes into the buffer's unused capacity,
        // which it owns; nothing reads that memory before `advance_mut` below marks exactly
        // the bytes recv wrote as filled.
        let read = unsafe {
            libc::recv(
                socket,
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if let Ok(read) = usize::try_from(read) {
            // SAFETY: recv initialised `read` bytes of the unused capacity.
            unsafe { buffer.advance_mut(read) };
            return Ok(read);
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::Interrupted => continue,
            // Nothing has arrived: wait for it with an ordinary read of one byte, then take
            // the rest without waiting.
            std::io::ErrorKind::WouldBlock => {
                let mut first = [0u8; 1];
                let read = reader.read(&mut first).await?;
                buffer.extend_from_slice(&first[..read]);
                return Ok(read);
            }
            _ => return Err(error),
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
