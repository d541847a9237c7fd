//! WAL tests against real files with O_DIRECT: cut and corrupt the tail of a segment at many
//! points, then recover: exactly the whole valid prefix comes back, and appends continue
//! cleanly after it.

use std::path::Path;

use glommio::LocalExecutorBuilder;

use super::record::RecordKind;
use super::recovery::EntryHeader;
use super::{next_chunk_capacity, Wal, WalConfig, CHUNK_CAPACITY_MAX, CHUNK_CAPACITY_MIN};

fn run<F: std::future::Future<Output = ()> + 'static>(make: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::default()
        .spawn(move || async move { make().await })
        .expect("executor")
        .join()
        .expect("test body");
}

/// glommio decides polled-I/O support from the first file it opens; make it a non-empty one.
async fn probe(dir: &Path) {
    let path = dir.join("probe");
    std::fs::write(&path, vec![1u8; 4096]).expect("probe file");
    let file = glommio::io::DmaFile::open(&path)
        .await
        .expect("probe opens");
    file.close().await.expect("probe closes");
}

fn config(dir: &Path) -> WalConfig {
    WalConfig {
        dir: dir.join("wal"),
        segment_bytes_max: 1 << 20,
        overlap_min_bytes: super::OVERLAP_MIN_BYTES_DEFAULT,
    }
}

async fn append_entries(
    wal: &mut Wal,
    group: u64,
    indexes: std::ops::RangeInclusive<u64>,
) -> Vec<u64> {
    let mut ends = Vec::new();
    for index in indexes {
        let header = EntryHeader {
            term: 1,
            index,
            entry_type: 0,
        };
        let data = vec![(index % 251) as u8 | 1; 100 + (index as usize * 13) % 400];
        let (location, _) = wal.append(group, RecordKind::Entry, &[&header.encode(), &data]);
        ends.push(location.position + u64::from(location.record_bytes));
        // Flush every few records so the file sees many partial-block rewrites.
        if index % 3 == 0 {
            flush(wal).await;
        }
    }
    flush(wal).await;
    ends
}

async fn flush(wal: &mut Wal) {
    if let Some(job) = wal.take_flush_job() {
        let done = job.run().await.expect("flush");
        wal.complete_flush(done);
    }
}

fn recovered_indexes(recovered: &super::recovery::RecoveredLog, group: u64) -> Vec<u64> {
    recovered
        .groups
        .get(&group)
        .map(|g| g.entries.iter().map(|e| e.index).collect())
        .unwrap_or_default()
}

#[test]
fn cut_and_corrupted_tails_keep_exactly_the_valid_prefix() {
    run(|| async {
        let temp = tempfile::tempdir().expect("tempdir");
        probe(temp.path()).await;
        let (mut wal, recovered) = Wal::open(config(temp.path())).await.expect("opens");
        assert!(recovered.groups.is_empty());
        let ends = append_entries(&mut wal, 7, 1..=60).await;
        drop(wal);
        let segment = temp.path().join("wal").join(format!("{:020}.wal", 1));
        let pristine = std::fs::read(&segment).expect("segment");
        let log_end = *ends.last().expect("records") as usize;
        let cuts: Vec<usize> = (0..log_end)
            .step_by(97)
            .chain([log_end - 1, log_end])
            .collect();
        for (round, &cut) in cuts.iter().enumerate() {
            for corrupt in [false, true] {
                let mut damaged = pristine.clone();
                if corrupt {
                    // Garbage instead of zeros after the cut: a torn write.
                    for (i, byte) in damaged[cut..log_end + 512].iter_mut().enumerate() {
                        *byte = (i * 31 + round) as u8 | 0x40;
                    }
                } else {
                    damaged[cut..].fill(0);
                }
                std::fs::write(&segment, &damaged).expect("write damaged copy");
                let (mut wal, recovered) = Wal::open(config(temp.path())).await.expect("recovers");
                let whole = ends.iter().filter(|&&end| end as usize <= cut).count() as u64;
                assert_eq!(
                    recovered_indexes(&recovered, 7),
                    (1..=whole).collect::<Vec<_>>(),
                    "cut {cut} corrupt {corrupt}"
                );
                // Appends continue after the prefix, and a second recovery sees both.
                append_entries(&mut wal, 7, whole + 1..=whole + 2).await;
                drop(wal);
                let (_, again) = Wal::open(config(temp.path()))
                    .await
                    .expect("recovers again");
                assert_eq!(
                    recovered_indexes(&again, 7),
                    (1..=whole + 2).collect::<Vec<_>>(),
                    "cut {cut} corrupt {corrupt}"
                );
            }
        }
    });
}

#[test]
fn segments_roll_and_recover_in_order() {
    run(|| async {
        let temp = tempfile::tempdir().expect("tempdir");
        probe(temp.path()).await;
        let (mut wal, _) = Wal::open(config(temp.path())).await.expect("opens");
        append_entries(&mut wal, 3, 1..=4000).await;
        assert!(wal.segment_count() > 1, "1 MiB segments rolled");
        drop(wal);
        let (wal, recovered) = Wal::open(config(temp.path())).await.expect("recovers");
        assert_eq!(
            recovered_indexes(&recovered, 3),
            (1..=4000).collect::<Vec<_>>()
        );
        assert!(wal.segment_count() > 1);
    });
}

#[test]
fn a_checkpoint_that_crosses_a_roll_does_not_count() {
    run(|| async {
        let temp = tempfile::tempdir().expect("tempdir");
        probe(temp.path()).await;
        let (mut wal, _) = Wal::open(config(temp.path())).await.expect("opens");
        assert!(
            wal.checkpoint_owed(),
            "a freshly opened log owes a checkpoint"
        );
        // Fill segment 1 to just below its end.
        let filler = vec![3u8; 200 << 10];
        for _ in 0..5 {
            wal.append(1, RecordKind::HardState, &[&filler]);
        }
        let started_in = wal.tail_segment();
        // The "checkpoint" does not fit and rolls into segment 2.
        wal.append(1, RecordKind::HardState, &[&filler]);
        assert_ne!(wal.tail_segment(), started_in);
        wal.note_checkpoint_written(started_in);
        assert!(
            wal.checkpoint_owed(),
            "a checkpoint split over two segments is not complete"
        );
        let started_in = wal.tail_segment();
        wal.append(1, RecordKind::HardState, &[b"small"]);
        wal.note_checkpoint_written(started_in);
        assert!(!wal.checkpoint_owed());
        flush(&mut wal).await;
        assert_eq!(
            wal.reclaimable_segments(|_| u64::MAX),
            vec![1],
            "only behind the complete checkpoint"
        );
    });
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("segment exists").ino()
}

fn segment_file(dir: &Path, segment: u64) -> std::path::PathBuf {
    dir.join("wal").join(format!("{segment:020}.wal"))
}

#[test]
fn rolls_write_into_the_segments_prepared_for_them() {
    run(|| async {
        let temp = tempfile::tempdir().expect("tempdir");
        probe(temp.path()).await;
        let (mut wal, _) = Wal::open(config(temp.path())).await.expect("opens");
        // Prepared before it is needed: the roll writes into the same file.
        wal.take_prepare_job().expect("a spare is due").run().await;
        assert!(wal.take_prepare_job().is_none(), "one spare at a time");
        let spare = segment_file(temp.path(), 2);
        let prepared_inode = inode(&spare);
        append_entries(&mut wal, 5, 1..=4000).await;
        assert!(wal.tail_segment() >= 2, "1 MiB segments rolled");
        assert_eq!(inode(&spare), prepared_inode);
        // Preparation still running when the flush rolls: the flush waits for it.
        let preparation = wal.take_prepare_job().expect("the next spare is due");
        let next = wal.tail_segment() + 1;
        let filler = vec![9u8; 100 << 10];
        let mut index = 4000;
        while wal.tail_segment() < next {
            index += 1;
            let header = EntryHeader {
                term: 1,
                index,
                entry_type: 0,
            };
            wal.append(5, RecordKind::Entry, &[&header.encode(), &filler]);
        }
        let job = wal.take_flush_job().expect("records are pending");
        let (done, ()) = futures::join!(job.run(), preparation.run());
        wal.complete_flush(done.expect("flush"));
        append_entries(&mut wal, 5, index + 1..=4100).await;
        drop(wal);
        let (_, recovered) = Wal::open(config(temp.path())).await.expect("recovers");
        assert_eq!(
            recovered_indexes(&recovered, 5),
            (1..=4100).collect::<Vec<_>>()
        );
    });
}

#[test]
fn a_prepared_spare_after_the_log_end_is_neither_data_nor_damage() {
    run(|| async {
        let temp = tempfile::tempdir().expect("tempdir");
        probe(temp.path()).await;
        let (mut wal, _) = Wal::open(config(temp.path())).await.expect("opens");
        let ends = append_entries(&mut wal, 7, 1..=60).await;
        wal.take_prepare_job().expect("a spare is due").run().await;
        drop(wal);
        let spare = segment_file(temp.path(), 2);
        assert!(spare.exists());

        // A clean end: the log continues in segment 1 (the never written spare goes),
        // nothing lost.
        let (mut wal, recovered) = Wal::open(config(temp.path())).await.expect("recovers");
        assert_eq!(
            recovered_indexes(&recovered, 7),
            (1..=60).collect::<Vec<_>>()
        );
        assert_eq!(wal.tail_segment(), 1);
        assert!(!spare.exists());
        append_entries(&mut wal, 7, 61..=62).await;
        drop(wal);
        let (_, recovered) = Wal::open(config(temp.path())).await.expect("recovers");
        assert_eq!(
            recovered_indexes(&recovered, 7),
            (1..=62).collect::<Vec<_>>()
        );

        // A torn last write in front of a spare (garbage behind a zero header) is cut, as
        // it would be without the spare, not taken for a lost block under acknowledged data.
        std::fs::remove_dir_all(temp.path().join("wal")).expect("fresh log");
        let (mut wal, _) = Wal::open(config(temp.path())).await.expect("opens");
        let ends_again = append_entries(&mut wal, 7, 1..=60).await;
        assert_eq!(ends, ends_again);
        wal.take_prepare_job().expect("a spare is due").run().await;
        drop(wal);
        let segment = segment_file(temp.path(), 1);
        let mut damaged = std::fs::read(&segment).expect("segment");
        let log_end = *ends.last().expect("records") as usize;
        for (i, byte) in damaged[log_end + 4096..log_end + 8192]
            .iter_mut()
            .enumerate()
        {
            *byte = (i * 31) as u8 | 0x40;
        }
        std::fs::write(&segment, &damaged).expect("write damaged copy");
        let (_, recovered) = Wal::open(config(temp.path()))
            .await
            .expect("a torn tail before a spare recovers");
        assert_eq!(
            recovered_indexes(&recovered, 7),
            (1..=60).collect::<Vec<_>>()
        );
        assert!(
            !spare.exists(),
            "the unwritten spare after a cut is removed"
        );
    });
}

fn entry(wal: &mut Wal, group: u64, index: u64, bytes: usize) {
    let header = EntryHeader {
        term: 1,
        index,
        entry_type: 0,
    };
    let data = vec![(index % 251) as u8 | 1; bytes];
    wal.append(group, RecordKind::Entry, &[&header.encode(), &data]);
}

/// Appends entries of `group` from `first` until the log has rolled into `segment`, flushing
/// every few; returns the next index.
async fn fill_until(wal: &mut Wal, group: u64, first: u64, segment: u64) -> u64 {
    let mut index = first;
    while wal.tail_segment() < segment {
        entry(wal, group, index, 3000);
        if index.is_multiple_of(7) {
            flush(wal).await;
        }
        index += 1;
    }
    flush(wal).await;
    index
}

#[test]
fn reclaimed_segment_files_are_reused_and_their_old_records_never_read_back() {
    run(|| async {
        let temp = tempfile::tempdir().expect("tempdir");
        probe(temp.path()).await;
        let (mut wal, _) = Wal::open(config(temp.path())).await.expect("opens");
        // Segment 1 holds group 1, which then goes; group 5 lives in segment 2 on.
        let end_1 = fill_until(&mut wal, 1, 1, 2).await;
        wal.append(1, RecordKind::GroupRemoved, &[]);
        let started_in = wal.tail_segment();
        entry(&mut wal, 5, 1, 100);
        wal.note_checkpoint_written(started_in);
        flush(&mut wal).await;
        assert_eq!(wal.reclaimable_segments(|_| u64::MAX), vec![1]);
        let old_inode = inode(&segment_file(temp.path(), 1));
        wal.remove_segments(&[1]).expect("reclaims");
        assert!(!segment_file(temp.path(), 1).exists());
        assert!(segment_file(temp.path(), 1).with_extension("free").exists());
        wal.take_prepare_job().expect("a spare is due").run().await;
        assert_eq!(
            inode(&segment_file(temp.path(), 3)),
            old_inode,
            "the kept file is reused, not a new one created"
        );

        // The roll writes over group 1's old records; recovery reads none of them, both while
        // segment 3 is the last and once it is an older one with a successor.
        let next = fill_until(&mut wal, 5, 2, 3).await;
        drop(wal);
        let (mut wal, recovered) = Wal::open(config(temp.path())).await.expect("recovers");
        assert_eq!(
            recovered_indexes(&recovered, 5),
            (1..next).collect::<Vec<_>>()
        );
        assert_eq!(recovered_indexes(&recovered, 1), Vec::<u64>::new());
        assert!(end_1 > 100, "group 1 filled segment 1");
        let last = fill_until(&mut wal, 5, next, 4).await;
        drop(wal);
        let (_, recovered) = Wal::open(config(temp.path())).await.expect("recovers");
        assert_eq!(
            recovered_indexes(&recovered, 5),
            (1..last).collect::<Vec<_>>()
        );
        assert_eq!(recovered_indexes(&recovered, 1), Vec::<u64>::new());

        // A block lost inside the reused segment (now an older one) is refused, not skipped.
        let segment = segment_file(temp.path(), 3);
        let mut damaged = std::fs::read(&segment).expect("segment");
        damaged[8192..12288].fill(0);
        std::fs::write(&segment, &damaged).expect("write damaged copy");
        let refused = Wal::open(config(temp.path())).await;
        assert!(
            matches!(refused, Err(super::WalError::Damaged { segment: 3, .. })),
            "a lost block under acknowledged records"
        );
    });
}

#[test]
fn a_log_written_before_segment_tags_is_read_and_its_files_never_reused() {
    run(|| async {
        let temp = tempfile::tempdir().expect("tempdir");
        probe(temp.path()).await;
        // Segment 1 as the previous format wrote it: records tagged 0, zeros after them.
        let mut old = Vec::new();
        for index in 1..=20u64 {
            let header = EntryHeader {
                term: 1,
                index,
                entry_type: 0,
            };
            let data = [index as u8 | 1; 50];
            super::record::encode(
                &mut old,
                0,
                1,
                RecordKind::Entry,
                &[&header.encode(), &data],
            );
        }
        old.resize(1 << 20, 0);
        std::fs::create_dir_all(temp.path().join("wal")).expect("wal dir");
        std::fs::write(segment_file(temp.path(), 1), &old).expect("old segment");
        let (mut wal, recovered) = Wal::open(config(temp.path())).await.expect("reads it");
        assert_eq!(
            recovered_indexes(&recovered, 1),
            (1..=20).collect::<Vec<_>>()
        );
        // New records follow in the same segment, then the log rolls.
        wal.append(1, RecordKind::GroupRemoved, &[]);
        fill_until(&mut wal, 5, 1, 2).await;
        let started_in = wal.tail_segment();
        entry(&mut wal, 5, 10_000, 100);
        wal.note_checkpoint_written(started_in);
        flush(&mut wal).await;
        assert_eq!(wal.reclaimable_segments(|_| u64::MAX), vec![1]);
        wal.remove_segments(&[1]).expect("reclaims");
        let kept = std::fs::read_dir(temp.path().join("wal"))
            .expect("wal dir")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".free"));
        assert!(
            !kept,
            "a file with untagged records is deleted, not kept for reuse"
        );
    });
}

/// A fresh WAL whose commits of 8 KiB or more pad to a block, and its config.
async fn open_overlapping_at_8k(dir: &Path) -> (Wal, WalConfig) {
    let config = WalConfig {
        overlap_min_bytes: 8192,
        ..config(dir)
    };
    let (wal, _) = Wal::open(config.clone()).await.expect("opens");
    (wal, config)
}

/// A commit of `overlap_min_bytes` or more ends on a block boundary (a `Padding` record that
/// recovery skips), so the next may be taken and written beside it; both land, whichever
/// completes first, and the log reads back whole with appends continuing after it.
#[test]
fn a_large_commit_is_padded_and_the_next_runs_beside_it() {
    run(|| async {
        let temp = tempfile::tempdir().expect("tempdir");
        probe(temp.path()).await;
        let (mut wal, config) = open_overlapping_at_8k(temp.path()).await;
        let append = |wal: &mut Wal, index: u64| {
            let header = EntryHeader {
                term: 1,
                index,
                entry_type: 0,
            };
            let data = vec![(index % 251) as u8 | 1; 1000 + (index as usize * 37) % 700];
            wal.append(3, RecordKind::Entry, &[&header.encode(), &data])
                .0
        };
        // Small commits end mid-block: nothing may run beside them.
        append(&mut wal, 1);
        let small = wal.take_flush_job().expect("a small commit");
        assert!(
            !wal.flush_may_start(),
            "a commit ending mid-block runs alone"
        );
        wal.complete_flush(small.run().await.expect("small commit"));
        for index in 2..=12 {
            append(&mut wal, index);
        }
        let first = wal.take_flush_job().expect("a large commit");
        assert!(
            wal.flush_may_start(),
            "a padded commit lets the next run beside it"
        );
        let next = append(&mut wal, 13);
        assert_eq!(
            next.position % 4096,
            0,
            "the next commit starts on a fresh block"
        );
        for index in 14..=20 {
            append(&mut wal, index);
        }
        let second = wal.take_flush_job().expect("the next commit");
        assert!(!second.must_follow_previous(), "no roll: it need not wait");
        assert!(!wal.flush_may_start(), "two commits in flight at most");
        let (second_done, first_done) = futures::join!(second.run(), first.run());
        wal.complete_flush(first_done.expect("first commit"));
        wal.complete_flush(second_done.expect("second commit"));
        for index in 21..=25 {
            append(&mut wal, index);
        }
        flush(&mut wal).await;
        drop(wal);
        let (_, recovered) = Wal::open(config).await.expect("recovers");
        assert_eq!(
            recovered_indexes(&recovered, 3),
            (1..=25).collect::<Vec<_>>()
        );
    });
}

/// Two commits in flight and a power cut: the later one landed whole, the earlier one tore.
/// Recovery keeps the prefix before the tear and zeroes everything after it, so the later
/// commit's records (valid, of this very segment, starting on a block boundary) can never
/// be read back, even once new appends end exactly where they begin.
#[test]
fn a_commit_that_landed_behind_a_torn_one_is_erased() {
    run(|| async {
        let temp = tempfile::tempdir().expect("tempdir");
        probe(temp.path()).await;
        let (mut wal, config) = open_overlapping_at_8k(temp.path()).await;
        let mut locations = Vec::new();
        let mut commits = Vec::new();
        for indexes in [1..=12, 13..=24] {
            for index in indexes {
                let header = EntryHeader {
                    term: 1,
                    index,
                    entry_type: 0,
                };
                let data = vec![(index % 251) as u8 | 1; 1000];
                let record = [&header.encode()[..], &data[..]];
                locations.push(wal.append(5, RecordKind::Entry, &record).0);
            }
            commits.push(wal.take_flush_job().expect("a commit"));
        }
        let (first, second) = (commits.remove(0), commits.remove(0));
        let (first_done, second_done) = futures::join!(first.run(), second.run());
        wal.complete_flush(first_done.expect("first"));
        wal.complete_flush(second_done.expect("second"));
        drop(wal);
        let later_start = locations[12].position;
        assert_eq!(later_start % 4096, 0, "the later commit starts on a block");
        // The earlier commit tore at its sixth record; the later one is whole.
        let segment = temp.path().join("wal").join(format!("{:020}.wal", 1));
        let mut content = std::fs::read(&segment).expect("segment");
        let torn = locations[5].position as usize;
        content[torn..torn + 512].fill(0);
        std::fs::write(&segment, &content).expect("tear");
        let (wal, recovered) = Wal::open(config.clone()).await.expect("recovers");
        assert_eq!(
            recovered_indexes(&recovered, 5),
            (1..=5).collect::<Vec<_>>()
        );
        drop(wal);
        let content = std::fs::read(&segment).expect("segment");
        assert!(
            content[torn..].iter().all(|&b| b == 0),
            "nothing after the tear survives recovery"
        );
    });
}

#[test]
fn chunk_capacity_rises_at_once_and_falls_slowly() {
    let big = 800 << 10;
    let after_big = next_chunk_capacity(CHUNK_CAPACITY_MIN, big);
    assert_eq!(after_big, big + big / 2);
    // A small commit between two large ones (two in flight) leaves room for the next large one.
    let after_small = next_chunk_capacity(after_big, 100 << 10);
    assert!(after_small >= big, "{after_small}");
    let mut capacity = after_small;
    for _ in 0..100 {
        capacity = next_chunk_capacity(capacity, 1);
    }
    assert_eq!(capacity, CHUNK_CAPACITY_MIN);
    assert_eq!(
        next_chunk_capacity(capacity, usize::MAX / 4),
        CHUNK_CAPACITY_MAX
    );
}
