//! A count of bytes a shard holds beyond its caches, with a bound that admission checks:
//! one for the batches its fetch answers hold from WAL reads, one for the produce request
//! bodies its batches were cut from (`handlers::produce`).
//!
//! Fetch reads: from the read until the answer carrying them is written to its socket (or
//! dropped); batches served from the entry cache cost nothing extra and are not counted.
//! Admission never waits: a fetch finding too little room reads less (at least the one
//! whole batch Kafka requires) and answers at once, so consumers keep moving while what is
//! held stays within the bound plus one batch per fetch in flight. Reads are reserved when
//! planned, so fetches loading at the same time share the room rather than each see all of
//! it. Answers may travel to another shard, so the count is an atomic released by whichever
//! thread drops the last slice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

#[derive(Clone)]
pub struct HeldMemory {
    held: Arc<AtomicUsize>,
    max: usize,
}

impl HeldMemory {
    pub fn new(max: usize) -> Self {
        Self {
            held: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Bytes that may still be taken now (WAL reads, or request bodies kept).
    pub fn room(&self) -> usize {
        self.max.saturating_sub(self.held())
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Counts `bytes` about to be read from the WAL until the returned reservation is
    /// dropped: fetches planned while this one loads see the room it will take.
    pub fn reserve(&self, bytes: usize) -> Reservation {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        Reservation {
            bytes,
            held: self.held.clone(),
        }
    }

    /// `batch`, counted as held until its last clone or slice is dropped.
    pub fn hold(&self, batch: Bytes) -> Bytes {
        self.held.fetch_add(batch.len(), Ordering::Relaxed);
        Bytes::from_owner(Held {
            batch,
            held: self.held.clone(),
        })
    }
}

/// Bytes counted for reads still loading (`HeldMemory::reserve`).
pub struct Reservation {
    bytes: usize,
    held: Arc<AtomicUsize>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let before = self.held.fetch_sub(self.bytes, Ordering::Relaxed);
        debug_assert!(before >= self.bytes, "released more than was reserved");
    }
}

struct Held {
    batch: Bytes,
    held: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.batch
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let before = self.held.fetch_sub(self.batch.len(), Ordering::Relaxed);
        debug_assert!(before >= self.batch.len(), "released more than was held");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_until_the_last_slice_is_dropped() {
        let memory = HeldMemory::new(100);
        let batch = memory.hold(Bytes::from(vec![7u8; 60]));
        assert_eq!((memory.held(), memory.room()), (60, 40));
        let slice = batch.slice(10..20);
        let clone = batch.clone();
        drop(batch);
        assert_eq!(memory.held(), 60);
        drop(clone);
        assert_eq!(memory.held(), 60, "a slice still holds the read");
        assert_eq!(&slice[..], &[7u8; 10]);
        let other_thread = std::thread::spawn(move || drop(slice));
        other_thread.join().expect("dropped");
        assert_eq!((memory.held(), memory.room()), (0, 100));
    }

    #[test]
    fn a_reservation_counts_until_dropped() {
        let memory = HeldMemory::new(100);
        let reservation = memory.reserve(70);
        assert_eq!(
            memory.room(),
            30,
            "a second fetch sees the room the first will take"
        );
        let batch = memory.hold(Bytes::from(vec![1u8; 70]));
        drop(reservation);
        assert_eq!(memory.held(), 70, "held by the batch once loaded");
        drop(batch);
        assert_eq!(memory.held(), 0);
    }

    #[test]
    fn room_is_zero_past_the_bound() {
        let memory = HeldMemory::new(10);
        let _held = memory.hold(Bytes::from(vec![0u8; 25]));
        assert_eq!(memory.room(), 0);
    }
}
