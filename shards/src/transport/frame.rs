//! Framing of the peer protocol:
//!
//! ```text
//!   u32 length (bytes after this field, big endian)
//!   u32 CRC-32 (IEEE, crc32fast) of everything after this field
//!   u8  version (1)
//!   u8  kind
//!   ... payload (a prost message; which one depends on the kind)
//! ```
//!
//! Frames from a peer are untrusted: the length is checked against `FRAME_BYTES_MAX` before
//! anything is buffered, the CRC before the payload is decoded, and an unknown version or
//! kind is an error that closes the connection. Nothing here panics on any input.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

pub const FRAME_VERSION: u8 = 1;
/// The largest frame a node accepts or sends (a pass's messages beyond it go in more frames).
pub const FRAME_BYTES_MAX: usize = 32 << 20;
/// length + crc + version + kind.
pub const FRAME_HEADER_BYTES: usize = 4 + 4 + 1 + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// An `Envelope` of Raft messages of many groups, one way (the sender's stream).
    Raft = 1,
    /// A request to the controller leader (forwarded Kafka admin work); one reply follows on
    /// the same connection.
    ControllerRequest = 2,
    ControllerReply = 3,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Raft),
            2 => Some(Self::ControllerRequest),
            3 => Some(Self::ControllerReply),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Bytes,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("frame shorter than its header")]
    TooShort,
    #[error("frame checksum mismatch")]
    Crc,
    #[error("unsupported frame version {0}")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    Kind(u8),
}

/// Appends one frame holding `payload` to `out`.
pub fn encode(out: &mut BytesMut, kind: FrameKind, payload: &[u8]) -> Result<(), FrameError> {
    let body_len = 4 + 2 + payload.len();
    if body_len + 4 > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(body_len + 4));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[FRAME_VERSION, kind as u8]);
    crc.update(payload);
    out.reserve(4 + body_len);
    out.put_u32(body_len as u32);
    out.put_u32(crc.finalize());
    out.put_u8(FRAME_VERSION);
    out.put_u8(kind as u8);
    out.put_slice(payload);
    Ok(())
}

/// Cuts frames out of a byte stream as it arrives.
#[derive(Default)]
pub struct FrameDecoder {
    buffer: BytesMut,
}

impl FrameDecoder {
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived. An error means the stream is unusable.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([
            self.buffer[0],
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
        ]) as usize;
        if length + 4 > FRAME_BYTES_MAX {
            return Err(FrameError::TooLarge(length + 4));
        }
        if length < FRAME_HEADER_BYTES - 4 {
            return Err(FrameError::TooShort);
        }
        if self.buffer.len() < 4 + length {
            return Ok(None);
        }
        let mut frame = self.buffer.split_to(4 + length).freeze();
        frame.advance(4);
        let crc = frame.get_u32();
        if crc32fast::hash(&frame) != crc {
            return Err(FrameError::Crc);
        }
        let version = frame.get_u8();
        if version != FRAME_VERSION {
            return Err(FrameError::Version(version));
        }
        let kind_byte = frame.get_u8();
        let kind = FrameKind::from_byte(kind_byte).ok_or(FrameError::Kind(kind_byte))?;
        Ok(Some(Frame {
            kind,
            payload: frame,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(kind: FrameKind, payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        encode(&mut out, kind, payload).expect("fits");
        out
    }

    #[test]
    fn frames_survive_any_split_of_the_stream() {
        let mut stream = framed(FrameKind::Raft, b"first");
        stream.extend_from_slice(&framed(FrameKind::ControllerReply, b""));
        stream.extend_from_slice(&framed(FrameKind::Raft, &[7u8; 1000]));
        for chunk in [1, 3, 7, 64, 5000] {
            let mut decoder = FrameDecoder::default();
            let mut frames = Vec::new();
            for piece in stream.chunks(chunk) {
                decoder.extend(piece);
                while let Some(frame) = decoder.next_frame().expect("valid") {
                    frames.push(frame);
                }
            }
            assert_eq!(frames.len(), 3, "chunk {chunk}");
            assert_eq!(&frames[0].payload[..], b"first");
            assert_eq!(frames[1].kind, FrameKind::ControllerReply);
            assert_eq!(frames[2].payload.len(), 1000);
        }
    }

    #[test]
    fn damage_is_refused_not_decoded() {
        let good = framed(FrameKind::Raft, b"payload");
        for position in 4..good.len() {
            let mut bad = good.clone();
            bad[position] ^= 0x40;
            let mut decoder = FrameDecoder::default();
            decoder.extend(&bad);
            assert!(decoder.next_frame().is_err(), "flip at {position} caught");
        }
        let mut huge = FrameDecoder::default();
        huge.extend(&u32::MAX.to_be_bytes());
        assert!(matches!(huge.next_frame(), Err(FrameError::TooLarge(_))));
        let mut short = FrameDecoder::default();
        short.extend(&[0, 0, 0, 2, 1, 2]);
        assert_eq!(short.next_frame(), Err(FrameError::TooShort));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x1234_5678_u64;
        for _ in 0..2000 {
            let mut decoder = FrameDecoder::default();
            let mut bytes = Vec::new();
            for _ in 0..(seed % 64) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                bytes.push((seed >> 33) as u8);
            }
            decoder.extend(&bytes);
            while let Ok(Some(_)) = decoder.next_frame() {}
        }
    }
}
