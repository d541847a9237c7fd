//! An in-memory disk that models what a power cut does to an O_DIRECT log.
//!
//! Every file keeps what is durable (as of its last `sync`) apart from the writes since. A
//! simulated crash keeps the durable bytes and, per unsynced write, chosen by the seeded RNG:
//! all of it, none of it, or a random subset of its 512-byte sectors (a torn write). Names
//! created or removed since the last `sync_dir` may come back or vanish. The disk can also be
//! told to crash after a given number of mutating operations, so a test can cut power at any
//! point inside a group commit, the same way on every run of the same seed.
//!
//! Operations complete at once (their futures are ready on first poll), so a pump driven on
//! this disk has no timing in it: the order of events is the program's alone.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rand::rngs::StdRng;
use rand::Rng;

use glommio::io::DmaBuffer;

use crate::wal::disk::{Disk, DiskFile};
use crate::wal::write_buffer::AllocateAligned;

const SECTOR_BYTES: usize = 512;

#[derive(Default)]
struct FileState {
    /// What reads see now.
    current: Vec<u8>,
    /// What survives a crash for certain.
    durable: Vec<u8>,
    /// Writes (and hole punches, as zeros) since the last sync, oldest first.
    unsynced: Vec<(u64, Vec<u8>)>,
}

#[derive(Default)]
struct DiskState {
    /// The namespace as it is now.
    names: BTreeMap<PathBuf, Rc<RefCell<FileState>>>,
    /// The namespace as of the last `sync_dir`: what a crash falls back to.
    durable_names: BTreeMap<PathBuf, Rc<RefCell<FileState>>>,
    /// Renames since the last `sync_dir` of their directory, oldest first: after a crash each
    /// is either done or not (never both names, never neither: rename is atomic).
    unsynced_renames: Vec<(PathBuf, PathBuf)>,
    /// Mutating operations left before the power goes; `None` runs forever.
    operations_left: Option<u64>,
    crashed: bool,
    operations: u64,
}

/// A handle to one simulated disk; clones share it.
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Rc<RefCell<DiskState>>,
}

pub struct SimFile {
    disk: SimDisk,
    state: Rc<RefCell<FileState>>,
}

fn crashed() -> io::Error {
    io::Error::other("simulated power cut")
}

impl SimDisk {
    /// Cuts the power after `operations` more mutating operations (writes, syncs, creates,
    /// removes); that one and everything after it fails.
    pub fn crash_after(&self, operations: u64) {
        self.state.borrow_mut().operations_left = Some(operations);
    }

    pub fn has_crashed(&self) -> bool {
        self.state.borrow().crashed
    }

    /// Mutating operations performed so far (to pick crash points within a run).
    pub fn operations(&self) -> u64 {
        self.state.borrow().operations
    }

    /// Power comes back: each file keeps its durable bytes plus whatever part of its unsynced
    /// writes `rng` lets through; the namespace falls back to its last synced form.
    pub fn restart(&self, rng: &mut StdRng) {
        let mut state = self.state.borrow_mut();
        let mut names = BTreeMap::new();
        // Each unsynced rename happened or did not: which of its two names exists.
        let mut renamed: BTreeMap<PathBuf, bool> = BTreeMap::new();
        for (from, to) in &state.unsynced_renames {
            let done = rng.random_bool(0.5);
            renamed.insert(from.clone(), !done);
            renamed.insert(to.clone(), done);
        }
        // A name whose creation or removal was not followed by a directory sync may be either
        // way after the crash; everything else is as of the last sync.
        for (path, file) in &state.durable_names {
            let removed_unsynced = !state.names.contains_key(path);
            let present = match renamed.get(path) {
                Some(&present) => present,
                None => !removed_unsynced || rng.random_bool(0.5),
            };
            if present {
                names.insert(path.clone(), file.clone());
            }
        }
        for (path, file) in &state.names {
            if state.durable_names.contains_key(path) {
                continue;
            }
            let present = match renamed.get(path) {
                Some(&present) => present,
                None => rng.random_bool(0.5),
            };
            if present {
                names.insert(path.clone(), file.clone());
            }
        }
        state.unsynced_renames.clear();
        for file in names.values() {
            settle(&mut file.borrow_mut(), rng);
        }
        state.durable_names = names.clone();
        state.names = names;
        state.operations_left = None;
        state.crashed = false;
    }

    /// Damages one file the way failing media or a stray writer would, both in what reads see
    /// and in what survives: flipped bytes, a zeroed or garbage block, or a cut tail.
    pub fn damage(&self, rng: &mut StdRng) {
        let state = self.state.borrow();
        let files: Vec<_> = state.names.values().cloned().collect();
        // Half the time the newest file (names sort by age), where recovery cuts instead of
        // refusing; otherwise any file.
        let pick = if rng.random_bool(0.5) {
            files.len().saturating_sub(1)
        } else {
            rng.random_range(0..files.len().max(1))
        };
        let Some(file) = files.get(pick) else {
            return;
        };
        let mut file = file.borrow_mut();
        let mut content = std::mem::take(&mut file.current);
        if content.is_empty() {
            return;
        }
        // Most damage lands where the data is, not in the preallocated zeros.
        let used = content
            .iter()
            .rposition(|&b| b != 0)
            .map_or(1, |last| last + 1);
        match rng.random_range(0..4) {
            0 => {
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..used);
                    content[at] ^= 1 << rng.random_range(0..8);
                }
            }
            1 | 2 => {
                let block = rng.random_range(0..used.div_ceil(4096));
                let end = ((block + 1) * 4096).min(content.len());
                let garbage = rng.random_bool(0.5);
                for byte in &mut content[block * 4096..end] {
                    *byte = if garbage { rng.random() } else { 0 };
                }
            }
            _ => content.truncate(rng.random_range(0..used)),
        }
        file.unsynced.clear();
        file.durable = content.clone();
        file.current = content;
    }

    /// Counts one mutating operation, failing it if the power is (now) gone.
    fn mutate(&self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        if state.crashed {
            return Err(crashed());
        }
        if let Some(left) = state.operations_left.as_mut() {
            if *left == 0 {
                state.crashed = true;
                return Err(crashed());
            }
            *left -= 1;
        }
        state.operations += 1;
        Ok(())
    }

    fn check_power(&self) -> io::Result<()> {
        if self.state.borrow().crashed {
            return Err(crashed());
        }
        Ok(())
    }
}

/// Applies a crash to one file: unsynced writes land whole, not at all, or torn by sector.
fn settle(file: &mut FileState, rng: &mut StdRng) {
    let mut content = std::mem::take(&mut file.durable);
    for (position, bytes) in std::mem::take(&mut file.unsynced) {
        let position = position as usize;
        let fate = rng.random_range(0..3);
        for (sector, chunk) in bytes.chunks(SECTOR_BYTES).enumerate() {
            let lands = match fate {
                0 => false,
                1 => true,
                _ => rng.random_bool(0.5),
            };
            if lands {
                let start = position + sector * SECTOR_BYTES;
                write_into(&mut content, start as u64, chunk);
            }
        }
    }
    file.current = content.clone();
    file.durable = content;
}

fn write_into(content: &mut Vec<u8>, position: u64, bytes: &[u8]) {
    let start = position as usize;
    let end = start + bytes.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[start..end].copy_from_slice(bytes);
}

impl Disk for SimDisk {
    type File = SimFile;

    async fn open(&self, path: &Path, create: bool) -> io::Result<SimFile> {
        let existing = {
            self.check_power()?;
            self.state.borrow().names.get(path).cloned()
        };
        let state = match existing {
            Some(state) => state,
            None if create => {
                self.mutate()?;
                let state = Rc::new(RefCell::new(FileState::default()));
                self.state
                    .borrow_mut()
                    .names
                    .insert(path.to_path_buf(), state.clone());
                state
            }
            None => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        Ok(SimFile {
            disk: self.clone(),
            state,
        })
    }

    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        self.check_power()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.check_power()?;
        Ok(self
            .state
            .borrow()
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.mutate()?;
        self.state
            .borrow_mut()
            .names
            .remove(path)
            .map(drop)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// Until the next `sync_dir`, a crash leaves either the old name or the new one.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.mutate()?;
        let mut state = self.state.borrow_mut();
        assert!(
            !state.names.contains_key(to),
            "renames never replace a file"
        );
        // Two renames of one file between directory syncs are not modelled (`restart` picks
        // each rename's outcome alone); the WAL syncs after every rename.
        assert!(
            !state
                .unsynced_renames
                .iter()
                .any(|(_, renamed_to)| renamed_to == from),
            "a file renamed twice without a directory sync"
        );
        let file = state
            .names
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        state.names.insert(to.to_path_buf(), file);
        state
            .unsynced_renames
            .push((from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.mutate()?;
        let mut state = self.state.borrow_mut();
        let in_dir = |path: &PathBuf| path.parent() == Some(dir);
        state.durable_names.retain(|path, _| !in_dir(path));
        state.unsynced_renames.retain(|(_, to)| !in_dir(to));
        let now: Vec<_> = state
            .names
            .iter()
            .filter(|(path, _)| in_dir(path))
            .map(|(path, file)| (path.clone(), file.clone()))
            .collect();
        state.durable_names.extend(now);
        Ok(())
    }

    /// Plain aligned heap memory: the simulation runs outside any glommio executor.
    fn allocate_aligned(&self) -> AllocateAligned {
        glommio::allocate_dma_buffer_global
    }
}

impl DiskFile for SimFile {
    type ReadBuf = Vec<u8>;

    async fn size(&self) -> io::Result<u64> {
        self.disk.check_power()?;
        Ok(self.state.borrow().current.len() as u64)
    }

    async fn read_at(&self, position: u64, length: usize) -> io::Result<Vec<u8>> {
        self.disk.check_power()?;
        let state = self.state.borrow();
        let start = (position as usize).min(state.current.len());
        let end = (start + length).min(state.current.len());
        Ok(state.current[start..end].to_vec())
    }

    async fn write_at(&self, position: u64, bytes: DmaBuffer) -> io::Result<usize> {
        let bytes = bytes.as_bytes();
        assert!(
            position.is_multiple_of(4096) && bytes.len().is_multiple_of(4096),
            "O_DIRECT writes are whole blocks"
        );
        self.disk.mutate()?;
        let mut state = self.state.borrow_mut();
        write_into(&mut state.current, position, bytes);
        state.unsynced.push((position, bytes.to_vec()));
        Ok(bytes.len())
    }

    async fn allocate(&self, size: u64) -> io::Result<()> {
        self.disk.mutate()?;
        let mut state = self.state.borrow_mut();
        if (state.current.len() as u64) < size {
            let old = state.current.len() as u64;
            state.current.resize(size as usize, 0);
            state.unsynced.push((old, vec![0; (size - old) as usize]));
        }
        Ok(())
    }

    async fn deallocate(&self, position: u64, length: u64) -> io::Result<()> {
        self.disk.mutate()?;
        let mut state = self.state.borrow_mut();
        let zeros = vec![0; length as usize];
        write_into(&mut state.current, position, &zeros);
        state.unsynced.push((position, zeros));
        Ok(())
    }

    async fn sync(&self) -> io::Result<()> {
        self.disk.mutate()?;
        let mut state = self.state.borrow_mut();
        // Replaying the writes costs what was written, not the size of the file.
        let FileState {
            durable, unsynced, ..
        } = &mut *state;
        for (position, bytes) in unsynced.drain(..) {
            write_into(durable, position, &bytes);
        }
        debug_assert!(
            state.durable == state.current,
            "a sync makes current durable"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn block(byte: u8) -> Vec<u8> {
        vec![byte; 4096]
    }

    fn dma_block(byte: u8) -> DmaBuffer {
        let mut buffer = glommio::allocate_dma_buffer_global(4096);
        buffer.as_bytes_mut().fill(byte);
        buffer
    }

    #[test]
    fn synced_writes_survive_and_unsynced_ones_may_tear() {
        let mut torn_seen = false;
        for seed in 0..64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let disk = SimDisk::default();
            let path = Path::new("/d/a.wal");
            futures::executor::block_on(async {
                let file = disk.open(path, true).await.expect("create");
                disk.sync_dir(Path::new("/d")).await.expect("dir sync");
                file.write_at(0, dma_block(1)).await.expect("write");
                file.sync().await.expect("sync");
                file.write_at(4096, dma_block(2)).await.expect("write");
            });
            disk.restart(&mut rng);
            let content = futures::executor::block_on(async {
                let file = disk.open(path, false).await.expect("survives");
                file.read_at(0, 8192).await.expect("read")
            });
            assert_eq!(&content[..4096], &block(1)[..], "seed {seed}: synced block");
            let second = &content[4096.min(content.len())..];
            assert!(second.iter().all(|&b| b == 2 || b == 0), "seed {seed}");
            torn_seen |= second.contains(&2) && second.contains(&0);
        }
        assert!(torn_seen, "some seed tears the unsynced write");
    }

    #[test]
    fn the_power_cut_fails_that_operation_and_every_later_one() {
        let disk = SimDisk::default();
        disk.crash_after(2);
        futures::executor::block_on(async {
            let file = disk.open(Path::new("/d/a.wal"), true).await.expect("op 1");
            file.write_at(0, dma_block(1)).await.expect("op 2");
            assert!(file.sync().await.is_err(), "op 3 fails");
            assert!(file.read_at(0, 10).await.is_err(), "reads fail too");
        });
        assert!(disk.has_crashed());
    }
}
