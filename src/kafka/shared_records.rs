//! Fetch answers without copying their records: the batches a fetch returns (cached `Bytes`
//! or runs read from the WAL) go to the socket as they are, beside the encoded rest of the
//! response, instead of being copied once into a partition's records and again into the
//! response frame (a profile of consuming from the cache showed those copies and the page
//! faults of their fresh buffers taking over half of the broker's CPU).
//!
//! How, with an encoder (kafka-protocol's) that knows nothing of this: each partition's
//! records field holds a *placeholder*, a slice of a static zero array whose offset in the
//! array names the partition's batches. The response is encoded into `SegmentedBuf`, which
//! sees the placeholder arrive through `put_slice` and puts the batches there instead of the
//! zeros. If any placeholder was not seen (an encoder that copied it some other way), the
//! answer is encoded again the ordinary way, so zeros can never reach a client.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Room for every placeholder: a partition's records must fit between its offset and the
/// end (else it is copied, as before). Larger than the most one fetch returns (fetch_bytes_max
/// plus one batch), zero-initialised, so it costs no memory until read, and it never is.
const PLACEHOLDER_BYTES: usize = 96 << 20;
static PLACEHOLDERS: [u8; PLACEHOLDER_BYTES] = [0; PLACEHOLDER_BYTES];

/// Batches shorter than this are copied into the encoded frame: a separate write costs more
/// than copying a few KiB.
const SHARED_BYTES_MIN: usize = 4096;

/// The batches of each placeholder handed out, by placeholder number.
#[derive(Default)]
pub struct SharedRecords {
    pieces: Vec<Vec<Bytes>>,
}

impl SharedRecords {
    /// A records field standing for `batches` (placeholder number `pieces.len()`), or the
    /// batches copied together when they are small or do not fit the placeholder space.
    pub fn records(&mut self, batches: Vec<Bytes>) -> Bytes {
        let length: usize = batches.iter().map(Bytes::len).sum();
        let number = self.pieces.len();
        if length < SHARED_BYTES_MIN || number + length > PLACEHOLDER_BYTES {
            return concatenate(&batches);
        }
        self.pieces.push(batches);
        Bytes::from_static(&PLACEHOLDERS[number..number + length])
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The placeholder `slice` is, if it is one: its number.
    fn placeholder(&self, slice: &[u8]) -> Option<usize> {
        let start = PLACEHOLDERS.as_ptr() as usize;
        let at = (slice.as_ptr() as usize).checked_sub(start)?;
        let pieces = self.pieces.get(at)?;
        let length: usize = pieces.iter().map(Bytes::len).sum();
        (length == slice.len() && !slice.is_empty()).then_some(at)
    }

    /// The batches a placeholder stands for, copied together: the fallback.
    pub fn concatenated(&self, records: &Bytes) -> Option<Bytes> {
        self.placeholder(records)
            .map(|number| concatenate(&self.pieces[number]))
    }
}

fn concatenate(batches: &[Bytes]) -> Bytes {
    match batches {
        [one] => one.clone(),
        _ => {
            let mut records = BytesMut::with_capacity(batches.iter().map(Bytes::len).sum());
            for batch in batches {
                records.extend_from_slice(batch);
            }
            records.freeze()
        }
    }
}

/// An encode target that keeps shared batches as they are: the frame is the list of
/// segments, encoded bytes and shared batches in order.
pub struct SegmentedBuf<'a> {
    shared: &'a SharedRecords,
    segments: Vec<Bytes>,
    current: BytesMut,
    /// Bytes in `segments`.
    before_current: usize,
    substituted: usize,
    /// The encoder went back into bytes already handed on as a segment (no Fetch encoder
    /// does): the segments are unusable and `finish` says so, so the answer is copied instead.
    broken: bool,
    scratch: Vec<u8>,
}

impl<'a> SegmentedBuf<'a> {
    pub fn new(shared: &'a SharedRecords) -> Self {
        Self {
            shared,
            segments: Vec::new(),
            current: BytesMut::with_capacity(4096),
            before_current: 0,
            substituted: 0,
            broken: false,
            scratch: Vec::new(),
        }
    }

    /// The segments, once every placeholder was replaced (None: encode again, copying).
    pub fn finish(mut self) -> Option<Vec<Bytes>> {
        if self.broken || self.substituted != self.shared.pieces.len() {
            return None;
        }
        if !self.current.is_empty() {
            self.segments.push(self.current.split().freeze());
        }
        Some(self.segments)
    }
}

// SAFETY: every method hands over to `BytesMut`'s own implementation for the encoded bytes.
unsafe impl BufMut for SegmentedBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut`, which is `current`'s.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        let Some(number) = self.shared.placeholder(src) else {
            self.current.extend_from_slice(src);
            return;
        };
        let encoded = self.current.split().freeze();
        self.before_current += encoded.len();
        if !encoded.is_empty() {
            self.segments.push(encoded);
        }
        for batch in &self.shared.pieces[number] {
            self.before_current += batch.len();
            self.segments.push(batch.clone());
        }
        self.substituted += 1;
    }
}

impl ByteBufMut for SegmentedBuf<'_> {
    fn offset(&self) -> usize {
        self.before_current + self.current.len()
    }

    /// Gaps (filled in later) can only lie in the bytes encoded since the last shared batch;
    /// the Fetch response encoder writes none across one. Anything else breaks the buffer
    /// (see `broken`) rather than the broker.
    fn seek(&mut self, offset: usize) {
        match offset.checked_sub(self.before_current) {
            Some(within) => self.current.resize(within, 0),
            None => self.broken = true,
        }
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        let base = self.before_current;
        if r.start >= base && r.end - base <= self.current.len() {
            return &mut self.current[r.start - base..r.end - base];
        }
        self.broken = true;
        self.scratch.clear();
        self.scratch.resize(r.len(), 0);
        &mut self.scratch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(segments: &[Bytes]) -> Vec<u8> {
        segments.iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn placeholders_become_their_batches_and_small_ones_are_copied() {
        let mut shared = SharedRecords::default();
        let big: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i + 1; 5000])).collect();
        let small = vec![Bytes::from_static(b"tiny")];
        let first = shared.records(big.clone());
        let second = shared.records(small);
        assert_eq!(&second[..], b"tiny", "small records are copied, not shared");
        let mut buf = SegmentedBuf::new(&shared);
        buf.put_slice(b"head");
        buf.put_slice(&first);
        buf.put_slice(&second);
        assert_eq!(buf.offset(), 4 + 15_000 + 4);
        let segments = buf.finish().expect("every placeholder replaced");
        let mut expected = b"head".to_vec();
        for batch in &big {
            expected.extend_from_slice(batch);
        }
        expected.extend_from_slice(b"tiny");
        assert_eq!(encoded(&segments), expected);
        // The batches themselves travel, not copies of them.
        assert!(segments.iter().any(|s| s.as_ptr() == big[1].as_ptr()));
    }

    #[test]
    fn going_back_past_a_shared_batch_is_caught_not_a_panic() {
        let mut shared = SharedRecords::default();
        let records = shared.records(vec![Bytes::from(vec![7u8; 8192])]);
        let mut buf = SegmentedBuf::new(&shared);
        buf.put_slice(b"head");
        buf.put_slice(&records);
        assert_eq!(buf.range(0..4).len(), 4);
        buf.seek(2);
        assert!(buf.finish().is_none());
    }

    #[test]
    fn a_placeholder_copied_some_other_way_is_caught() {
        let mut shared = SharedRecords::default();
        let records = shared.records(vec![Bytes::from(vec![9u8; 8192])]);
        let mut buf = SegmentedBuf::new(&shared);
        // An encoder writing the bytes piecewise instead of in one put_slice.
        buf.put_slice(&records[..100]);
        buf.put_slice(&records[100..]);
        assert!(buf.finish().is_none());
        assert_eq!(
            shared.concatenated(&records).expect("a placeholder")[..],
            [9u8; 8192][..]
        );
    }
}
