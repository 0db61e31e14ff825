//! Snapshot diff: the changed blocks between an old and a new image of a
//! disk, found by reading both.
//!
//! Both images are read in large pieces by several threads at once; a
//! piece that is a hole in both is equal without a read. The new image's
//! tail past the old image's end counts as changed; a shorter new image
//! simply ends.

use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::extents::ExtentSet;
use crate::error::{Error, Result};
use crate::source::DiskSource;

/// Bytes compared per unit of work, at least (a block larger than this
/// is its own piece, so that pieces start and end on block boundaries).
const PIECE: u64 = 8 << 20;

/// Most threads comparing at once. Each holds two piece buffers (8 MiB,
/// or one block of up to 16 MiB, each) and starts a reader thread per
/// piece, so with a thread per core memory grew with the machine: 2 GiB
/// on 128 threads (review 94). Comparing is a memcmp per block, so the
/// reads bound it, and eight threads keep 16 of them in flight: at most
/// 128 MiB of buffers (256 MiB with 16 MiB blocks).
const MAX_WORKERS: usize = 8;

/// The comparing threads for `available` cores (unknown: 2).
fn workers(available: Option<usize>) -> usize {
    available.unwrap_or(2).clamp(1, MAX_WORKERS)
}

/// Checks a `--block-size`: a power of two from 512 B to 16 MiB.
pub fn check_block_size(block: u64) -> Result<()> {
    if !(512..=16 << 20).contains(&block) || !block.is_power_of_two() {
        return Err(Error::InvalidArgument(format!(
            "block size {block} must be a power of two from 512 bytes to 16 MiB"
        )));
    }
    Ok(())
}

/// The blocks of `new` that differ from `old`, at `block` granularity.
pub fn diff_images(old: &Path, new: &Path, block: u64) -> Result<ExtentSet> {
    check_block_size(block)?;
    let (old, new) = (DiskSource::open(old)?, DiskSource::open(new)?);
    let common = old.size().min(new.size());
    let next = AtomicU64::new(0);
    let found = Mutex::new(Vec::new());
    let failure = Mutex::new(None);
    let piece = PIECE.max(block);
    let threads = workers(std::thread::available_parallelism().ok().map(|n| n.get()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                loop {
                    let start = next.fetch_add(piece, Ordering::Relaxed);
                    if start >= common || failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                        return;
                    }
                    let end = (start + piece).min(common);
                    match compare(&old, &new, start..end, block, &mut a, &mut b) {
                        Ok(ranges) => found
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .extend(ranges),
                        Err(e) => {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut ranges = found.into_inner().unwrap_or_else(|p| p.into_inner());
    if new.size() > common {
        ranges.push(common..new.size());
    }
    Ok(ExtentSet::from_ranges(ranges))
}

fn compare(
    old: &DiskSource,
    new: &DiskSource,
    range: Range<u64>,
    block: u64,
    a: &mut Vec<u8>,
    b: &mut Vec<u8>,
) -> Result<Vec<Range<u64>>> {
    if old.data_ranges(range.clone())?.is_empty() && new.data_ranges(range.clone())?.is_empty() {
        return Ok(Vec::new());
    }
    let len = (range.end - range.start) as usize;
    a.resize(len, 0);
    b.resize(len, 0);
    std::thread::scope(|s| {
        let other = s.spawn(|| old.read_at(range.start, a));
        let here = new.read_at(range.start, b);
        let there = other
            .join()
            .map_err(|_| Error::Internal("image reader panicked".into()))?;
        here.and(there)
    })?;
    let mut out: Vec<Range<u64>> = Vec::new();
    let mut off = 0usize;
    // Blocks are aligned to the image start: pieces start on block
    // boundaries because a piece is a multiple of the block size (both
    // powers of two, the piece the larger).
    while off < len {
        let end = (off + block as usize).min(len);
        if a[off..end] != b[off..end] {
            // Adjacent blocks joined: every piece's ranges are held until
            // the end, and a disk rewritten throughout gave one per block
            // (8 GiB for 2 TiB; review 87).
            let (s, e) = (range.start + off as u64, range.start + end as u64);
            match out.last_mut() {
                Some(last) if last.end == s => last.end = e,
                _ => out.push(s..e),
            }
        }
        off = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn finds_changed_blocks_and_grown_tails() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        let f = std::fs::File::create(&old).unwrap();
        f.set_len(20 << 20).unwrap();
        f.write_all_at(&[1u8; 10000], 5 << 20).unwrap();
        std::fs::copy(&old, &new).unwrap();
        let g = std::fs::OpenOptions::new().write(true).open(&new).unwrap();
        g.write_all_at(b"x", 5 << 20).unwrap(); // inside existing data
        g.write_all_at(b"y", (17 << 20) + 4095).unwrap(); // in a hole, block end
        g.set_len((20 << 20) + 10).unwrap(); // grown
        let d = diff_images(&old, &new, 4096).unwrap();
        assert_eq!(
            d.ranges(),
            &[
                (5 << 20)..(5 << 20) + 4096,
                (17 << 20)..(17 << 20) + 4096,
                (20 << 20)..(20 << 20) + 10
            ]
        );
        assert!(diff_images(&old, &old, 4096).unwrap().is_empty());
        assert!(diff_images(&old, &new, 1000).is_err());
        // Blocks larger than a piece of work are whole blocks still: until
        // stop 52, 16 MiB blocks were reported by the 8 MiB piece.
        let d = diff_images(&old, &new, 16 << 20).unwrap();
        // (8 MiB pieces gave 0..8 MiB for the write at 5 MiB.)
        assert_eq!(d.ranges(), &[0..(20 << 20) + 10]);
    }

    /// Threads are capped whatever the core count: each holds two
    /// pieces (16 MiB or more) and its reader thread.
    #[test]
    fn comparing_threads_are_capped() {
        assert_eq!(workers(Some(128)), MAX_WORKERS);
        assert_eq!(workers(Some(4)), 4);
        assert_eq!(workers(None), 2);
        assert_eq!(workers(Some(0)), 1);
    }

    /// Changed blocks are collected from every piece before they are
    /// merged, so each piece must give its adjacent changed blocks as one
    /// range: a disk rewritten throughout gave one range per 4 KiB block
    /// (16 bytes each: 8 GiB for 2 TiB) before (review 87).
    #[test]
    fn adjacent_changed_blocks_are_one_range() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        std::fs::write(&old, vec![1u8; 1 << 20]).unwrap();
        let mut bytes = vec![2u8; 1 << 20];
        bytes[(512 << 10)..(516 << 10)].fill(1); // one block unchanged
        std::fs::write(&new, bytes).unwrap();
        let (old, new) = (
            DiskSource::open(&old).unwrap(),
            DiskSource::open(&new).unwrap(),
        );
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let got = compare(&old, &new, 0..1 << 20, 4096, &mut a, &mut b).unwrap();
        assert_eq!(got, vec![0..512 << 10, 516 << 10..1 << 20]);
    }
}
