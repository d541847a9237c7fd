//! `OwnedBatch`: a record batch on its way into a partition's log. The shard rewrites its
//! base offset and leader epoch in place, so the batch must own its bytes. It may own them
//! as a disjoint part of a larger allocation (as `BytesMut::split_to` gives), which is how
//! the batches of one produce request reach the log without each being copied.

use std::any::Any;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// Something that must live as long as a batch's bytes do, such as the accounting of the
/// request body the batch was cut from. Dropped with the last clone of the frozen batch.
pub type KeepAlive = Arc<dyn Any + Send + Sync>;

pub struct OwnedBatch {
    bytes: BytesMut,
    keep_alive: Option<KeepAlive>,
}

impl OwnedBatch {
    /// A batch in an allocation of its own, holding a copy of `batch`.
    pub fn copy_of(batch: &[u8]) -> Self {
        OwnedBatch {
            bytes: BytesMut::from(batch),
            keep_alive: None,
        }
    }

    /// A batch cut from a larger allocation; `keep_alive` is dropped once every clone of the
    /// frozen batch is.
    pub fn cut_from(bytes: BytesMut, keep_alive: KeepAlive) -> Self {
        OwnedBatch {
            bytes,
            keep_alive: Some(keep_alive),
        }
    }

    /// The bytes, read-only from here on: what the Raft entry and the entry cache share.
    pub fn freeze(self) -> Bytes {
        match self.keep_alive {
            None => self.bytes.freeze(),
            Some(keep_alive) => Bytes::from_owner(KeptBytes {
                bytes: self.bytes.freeze(),
                _keep_alive: keep_alive,
            }),
        }
    }
}

impl Deref for OwnedBatch {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl DerefMut for OwnedBatch {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl std::fmt::Debug for OwnedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedBatch")
            .field("len", &self.bytes.len())
            .field("cut", &self.keep_alive.is_some())
            .finish()
    }
}

struct KeptBytes {
    bytes: Bytes,
    _keep_alive: KeepAlive,
}

impl AsRef<[u8]> for KeptBytes {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountsDrops(Arc<AtomicUsize>);
    impl Drop for CountsDrops {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_cut_batch_is_patched_in_place_and_keeps_its_owner_alive_until_the_last_clone() {
        let mut body = BytesMut::from(&[1u8, 2, 3, 4, 5, 6][..]);
        let first = body.split_to(3);
        let drops = Arc::new(AtomicUsize::new(0));
        let owner: KeepAlive = Arc::new(CountsDrops(drops.clone()));
        let mut first = OwnedBatch::cut_from(first, owner.clone());
        let mut second = OwnedBatch::cut_from(body, owner);
        first[0] = 9;
        second[2] = 8;
        let (first, second) = (first.freeze(), second.freeze());
        assert_eq!(&first[..], &[9, 2, 3]);
        assert_eq!(&second[..], &[4, 5, 8]);
        let clone = first.slice(1..);
        drop((first, second));
        assert_eq!(drops.load(Ordering::SeqCst), 0, "a clone still holds bytes");
        drop(clone);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_copied_batch_owns_its_bytes() {
        let source = [7u8; 5];
        let mut batch = OwnedBatch::copy_of(&source);
        batch[0] = 1;
        assert_eq!(&batch.freeze()[..], &[1, 7, 7, 7, 7]);
        assert_eq!(source, [7u8; 5]);
    }
}
