//! A double-ended queue stored in chunks of at most `CHUNK` items, for a group's log index.
//!
//! A partition's log keeps one small record per Raft entry until retention compacts it:
//! millions of them on a busy partition. In one `VecDeque` every doubling copied the whole
//! index (tens of MB, a stall of tens of milliseconds in the middle of produce traffic, and
//! fresh pages to fault in). In chunks, growing copies at most one chunk, and compaction
//! frees whole chunks.

use std::collections::VecDeque;

/// Items per chunk. A chunk grows like any `VecDeque` up to this, so an idle group with a few
/// entries holds a few entries' memory, not a whole chunk.
const CHUNK: usize = 1024;

/// Invariant: no chunk is empty, and every chunk but the first and the last holds exactly
/// `CHUNK` items (the first may have been drained from the front, the last not filled yet).
pub struct ChunkedDeque<T> {
    chunks: VecDeque<VecDeque<T>>,
    len: usize,
}

impl<T> Default for ChunkedDeque<T> {
    fn default() -> Self {
        ChunkedDeque {
            chunks: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> ChunkedDeque<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Which chunk holds item `index`, and where in it.
    fn locate(&self, index: usize) -> Option<(usize, usize)> {
        if index >= self.len {
            return None;
        }
        let first = self.chunks.front().map_or(0, VecDeque::len);
        if index < first {
            return Some((0, index));
        }
        let rest = index - first;
        Some((1 + rest / CHUNK, rest % CHUNK))
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        let (chunk, at) = self.locate(index)?;
        self.chunks[chunk].get(at)
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        let (chunk, at) = self.locate(index)?;
        self.chunks[chunk].get_mut(at)
    }

    pub fn push_back(&mut self, item: T) {
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK => last.push_back(item),
            _ => self.chunks.push_back(VecDeque::from([item])),
        }
        self.len += 1;
    }

    /// Keeps the first `keep` items; each removed one goes to `removed`, last first.
    pub fn truncate_with(&mut self, keep: usize, mut removed: impl FnMut(T)) {
        while self.len > keep {
            let last = self
                .chunks
                .back_mut()
                .expect("len counts the chunks' items");
            removed(last.pop_back().expect("no chunk is empty"));
            if last.is_empty() {
                self.chunks.pop_back();
            }
            self.len -= 1;
        }
    }

    /// Removes the first `count` items (at most all); each goes to `removed`, first first.
    pub fn drain_front_with(&mut self, count: usize, mut removed: impl FnMut(T)) {
        for _ in 0..count.min(self.len) {
            let first = self
                .chunks
                .front_mut()
                .expect("len counts the chunks' items");
            removed(first.pop_front().expect("no chunk is empty"));
            if first.is_empty() {
                self.chunks.pop_front();
            }
            self.len -= 1;
        }
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// Items from `index` on, in order.
    pub fn iter_from(&self, index: usize) -> impl Iterator<Item = &T> {
        let (chunk, at) = self.locate(index).unwrap_or((self.chunks.len(), 0));
        self.chunks
            .range(chunk.min(self.chunks.len())..)
            .enumerate()
            .flat_map(move |(i, items)| items.range(if i == 0 { at } else { 0 }..))
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.iter_from(0)
    }
}

impl<T> FromIterator<T> for ChunkedDeque<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut deque = ChunkedDeque::default();
        for item in items {
            deque.push_back(item);
        }
        deque
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Random pushes, truncations and front drains agree with a `VecDeque` at every step,
    /// across chunk boundaries.
    #[test]
    fn behaves_as_a_vecdeque() {
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut model: VecDeque<u64> = VecDeque::new();
            let mut chunked: ChunkedDeque<u64> = ChunkedDeque::default();
            let mut next = 0u64;
            for _ in 0..3000 {
                match rng.random_range(0..10) {
                    0 => {
                        let keep = rng.random_range(0..=model.len());
                        let mut removed = Vec::new();
                        chunked.truncate_with(keep, |item| removed.push(item));
                        let expected: Vec<u64> = model.drain(keep..).rev().collect();
                        assert_eq!(removed, expected, "seed {seed}");
                    }
                    1 => {
                        let count = rng.random_range(0..=model.len() + 2);
                        let mut removed = Vec::new();
                        chunked.drain_front_with(count, |item| removed.push(item));
                        let expected: Vec<u64> = model.drain(..count.min(model.len())).collect();
                        assert_eq!(removed, expected, "seed {seed}");
                    }
                    _ => {
                        for _ in 0..rng.random_range(1..800) {
                            model.push_back(next);
                            chunked.push_back(next);
                            next += 1;
                        }
                    }
                }
                assert_eq!(chunked.len(), model.len());
                let probe = rng.random_range(0..model.len() + 2);
                assert_eq!(chunked.get(probe), model.get(probe), "seed {seed}");
                let from: Vec<u64> = chunked.iter_from(probe).copied().collect();
                let expected: Vec<u64> = model.iter().skip(probe).copied().collect();
                assert_eq!(from, expected, "seed {seed}");
                let chunks = chunked.chunks.len();
                let middle = chunked.chunks.iter().skip(1).take(chunks.saturating_sub(2));
                assert!(middle.into_iter().all(|c| c.len() == CHUNK));
                assert!(chunked.chunks.iter().all(|c| !c.is_empty()));
            }
        }
    }

    #[test]
    fn get_mut_and_clear() {
        let mut chunked: ChunkedDeque<u32> = (0..3000).collect();
        *chunked.get_mut(2500).expect("present") = 7;
        assert_eq!(chunked.get(2500), Some(&7));
        assert_eq!(chunked.iter().count(), 3000);
        chunked.clear();
        assert_eq!(chunked.len(), 0);
        assert_eq!(chunked.get(0), None);
    }
}
