//! A growable buffer in memory that O_DIRECT can write as it is: the WAL lays records out in
//! one, then hands its memory to the disk, so no copy sits between the append and the write
//! (glommio writes only its own `DmaBuffer`s; copying a flush into one cost ~6% of a busy
//! shard).

use glommio::io::DmaBuffer;

use super::BLOCK_BYTES;

/// Allocates block-aligned memory of at least the given size. The real disk takes it from
/// glommio's io_uring arena (registered, already faulted in), the simulated one from the heap.
pub type AllocateAligned = fn(usize) -> DmaBuffer;

/// Block-aligned bytes with a length below their capacity, like a `Vec` whose storage is a
/// `DmaBuffer`. Growing past the capacity moves to a buffer twice as large (one copy); the
/// WAL sizes new buffers from recent flushes so that is rare.
pub struct WriteBuffer {
    storage: DmaBuffer,
    len: usize,
    allocate: AllocateAligned,
}

fn round_up_to_block(bytes: usize) -> usize {
    bytes.div_ceil(BLOCK_BYTES as usize).max(1) * BLOCK_BYTES as usize
}

impl WriteBuffer {
    pub fn with_capacity(capacity: usize, allocate: AllocateAligned) -> Self {
        let storage = allocate(round_up_to_block(capacity));
        assert!(storage.as_ptr().align_offset(BLOCK_BYTES as usize) == 0);
        WriteBuffer {
            storage,
            len: 0,
            allocate,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.storage.len()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.storage.as_bytes()[..self.len]
    }

    /// The bytes from `start` to the end, to patch what was just appended.
    pub fn tail_mut(&mut self, start: usize) -> &mut [u8] {
        &mut self.storage.as_bytes_mut()[start..self.len]
    }

    pub fn reserve(&mut self, additional: usize) {
        let needed = self.len + additional;
        if needed <= self.capacity() {
            return;
        }
        let mut larger = (self.allocate)(round_up_to_block(needed.max(2 * self.capacity())));
        larger.as_bytes_mut()[..self.len].copy_from_slice(self.as_slice());
        self.storage = larger;
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.storage.as_bytes_mut()[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Zero-pads to the next block boundary and gives up the memory, trimmed to whole
    /// blocks, for an O_DIRECT write.
    pub fn into_blocks(mut self) -> DmaBuffer {
        let padded = self.len.div_ceil(BLOCK_BYTES as usize) * BLOCK_BYTES as usize;
        self.reserve(padded - self.len);
        self.storage.as_bytes_mut()[self.len..padded].fill(0);
        self.storage.trim_to_size(padded);
        self.storage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_keeping_its_bytes_and_pads_to_whole_blocks() {
        let mut buffer = WriteBuffer::with_capacity(10, glommio::allocate_dma_buffer_global);
        assert_eq!(buffer.capacity(), 4096);
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        buffer.extend_from_slice(&data[..3000]);
        buffer.extend_from_slice(&data[3000..]);
        assert!(buffer.capacity() >= 8192);
        assert_eq!(buffer.as_slice(), &data[..]);
        buffer.tail_mut(4999)[0] = 7;
        let blocks = buffer.into_blocks();
        assert_eq!(blocks.len(), 8192);
        assert_eq!(&blocks.as_bytes()[..4999], &data[..4999]);
        assert_eq!(blocks.as_bytes()[4999], 7);
        assert!(blocks.as_bytes()[5000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn an_empty_buffer_writes_nothing() {
        let buffer = WriteBuffer::with_capacity(0, glommio::allocate_dma_buffer_global);
        assert!(buffer.is_empty());
        assert_eq!(buffer.into_blocks().len(), 0);
    }
}
