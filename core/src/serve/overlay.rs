//! The copy-on-write overlay of a writable served disk (`serve --writable
//! --overlay FILE`): one local file holding a header that says which
//! point and disk it belongs to, a map with one bit per 64 KiB block
//! ("this block is in the overlay"), and the written blocks at their disk
//! offset past the map, sparse. A block not in the map reads from the
//! point. The repository is never written.
//!
//! Durability follows NBD's: a write is durable after a FLUSH (or with
//! FUA, which the server turns into a flush). A flush syncs the data,
//! then writes the map's changed pages and syncs again, so a bit set on
//! disk always covers data already on disk: after a crash, blocks written
//! since the last flush read as they were before (the writes are lost, as
//! on a disk whose cache was not flushed), never as garbage.
//!
//! Why not a qcow2 overlay through qemu-storage-daemon: it would need a
//! second NBD hop (qemu reading the point from our export), qemu present
//! wherever `serve` runs, and a child process to supervise; the map is a
//! few dozen lines, and the file is locked so two servers cannot share it.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Granularity of the map: a write into a block not yet in the overlay
/// copies the block from the point first.
pub const BLOCK: u64 = 64 << 10;

/// Header space at the start of the file (the map follows it).
const HEADER: u64 = 4096;

const MAGIC: &str = "xfull-overlay-1";

/// What the header records: the overlay's owner and geometry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    format: String,
    point: String,
    disk: String,
    size: u64,
    block: u64,
}

/// An open overlay file (locked for this process).
#[derive(Debug)]
pub struct Overlay {
    path: PathBuf,
    file: Arc<File>,
    size: u64,
    /// One bit per block; `dirty` lists the map's 4 KiB pages changed
    /// since the last flush.
    map: Mutex<(Vec<u8>, std::collections::BTreeSet<u64>)>,
    /// A sync failed: every later write and flush fails,
    /// until the server restarts (see [`Overlay::flush`]).
    failed: AtomicBool,
    /// Tests: the next data sync fails as a lost writeback would.
    #[cfg(test)]
    fail_next_sync: AtomicBool,
}

impl Overlay {
    /// Opens the overlay at `path` for disk `disk` of `point` (`VM@ID`),
    /// creating it if absent. Refused: an overlay of another point or
    /// disk, a file that is not an overlay, a link, one in use by another
    /// process.
    pub fn open(path: &Path, point: &str, disk: &str, size: u64) -> Result<Overlay> {
        let fail = |reason: String| Error::Overlay {
            path: path.to_path_buf(),
            reason,
        };
        let io = |e: std::io::Error| fail(e.to_string());
        let want = Header {
            format: MAGIC.into(),
            point: point.into(),
            disk: disk.into(),
            size,
            block: BLOCK,
        };
        let blocks = size.div_ceil(BLOCK);
        let map_len = blocks.div_ceil(8);
        let no_follow = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
        let created = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(no_follow)
            .open(path);
        let (file, new) = match created {
            Ok(f) => (f, true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(no_follow)
                    .open(path)
                    .map_err(|e| fail(format!("cannot open it (a link is refused): {e}")))?;
                (f, false)
            }
            Err(e) => return Err(io(e)),
        };
        if !file.metadata().map_err(io)?.is_file() {
            return Err(fail("not a regular file".into()));
        }
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| fail("in use by another process".into()))?;
        let map = if new {
            let mut head = serde_json::to_vec(&want).map_err(|e| fail(e.to_string()))?;
            head.push(b'\n');
            head.resize(HEADER as usize, b' ');
            file.write_all_at(&head, 0).map_err(io)?;
            file.set_len(data_offset(size) + size).map_err(io)?;
            file.sync_all().map_err(io)?;
            // Its directory entry too: a flush the client was told had
            // succeeded must not be lost with the file's name in a crash.
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
            vec![0u8; map_len as usize]
        } else {
            let mut head = vec![0u8; HEADER as usize];
            file.read_exact_at(&mut head, 0)
                .map_err(|_| fail("not an xfull overlay (too short)".into()))?;
            let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
            let got: Header = serde_json::from_slice(line)
                .ok()
                .filter(|h: &Header| h.format == MAGIC)
                .ok_or_else(|| fail("not an xfull overlay (no header)".into()))?;
            if got != want {
                return Err(fail(format!(
                    "it is the overlay of point {}, disk {} ({} bytes, {}-byte blocks), not of \
                     point {point}, disk {disk}; give another file",
                    got.point, got.disk, got.size, got.block
                )));
            }
            let mut map = vec![0u8; map_len as usize];
            file.read_exact_at(&mut map, HEADER)
                .map_err(|_| fail("truncated map".into()))?;
            map
        };
        Ok(Overlay {
            path: path.to_path_buf(),
            file: Arc::new(file),
            size,
            map: Mutex::new((map, Default::default())),
            failed: AtomicBool::new(false),
            #[cfg(test)]
            fail_next_sync: AtomicBool::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<u8>, std::collections::BTreeSet<u64>)> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether block `b` is in the overlay.
    pub fn has(&self, b: u64) -> bool {
        self.lock().0[(b / 8) as usize] & (1 << (b % 8)) != 0
    }

    /// Marks blocks `first..=last` as in the overlay (durable at the
    /// next [`Overlay::flush`]).
    pub fn mark(&self, first: u64, last: u64) {
        let mut g = self.lock();
        let (map, dirty) = &mut *g;
        for b in first..=last {
            map[(b / 8) as usize] |= 1 << (b % 8);
            dirty.insert(b / 8 / HEADER);
        }
    }

    /// Reads `buf.len()` bytes of the disk at `offset` from the overlay.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file
            .read_exact_at(buf, data_offset(self.size) + offset)
    }

    /// `EIO` once a flush failed.
    fn usable(&self) -> std::io::Result<()> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(std::io::Error::other(format!(
                "{}: an earlier flush failed, so data written before it may be lost; the overlay \
                 takes no more writes until the server restarts",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.fail_next_sync.swap(false, Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        self.file.sync_data()
    }

    /// Writes `data` at disk offset `offset` (not yet marked).
    pub fn write_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
        self.usable()?;
        self.file
            .write_all_at(data, data_offset(self.size) + offset)
    }

    /// Makes `len` bytes at `offset` a hole (reads as zeros).
    pub fn punch(&self, offset: u64, len: u64) -> std::io::Result<()> {
        use rustix::fs::FallocateFlags as F;
        self.usable()?;
        rustix::fs::fallocate(
            &*self.file,
            F::PUNCH_HOLE | F::KEEP_SIZE,
            data_offset(self.size) + offset,
            len,
        )
        .map_err(std::io::Error::from)
    }

    /// Syncs the data, then the map pages changed since the last flush.
    /// The pages are copied first: every bit in them was set after its
    /// block was written, so the sync that follows covers that data.
    ///
    /// A failed sync fails the overlay for good (until the server
    /// restarts): Linux marks the pages whose writeback failed
    /// clean and reports the error once, so the next sync succeeds with
    /// their data lost; writing the map then would mark blocks "in the
    /// overlay" whose data never reached the disk, read as zeros or stale
    /// bytes after a restart, silently (review 104.3). The map on disk
    /// stays as the last good flush left it. A failed write of a map
    /// page, before its sync, only queues the pages again.
    pub fn flush(&self) -> std::io::Result<()> {
        self.usable()?;
        let pages: Vec<(u64, Vec<u8>)> = {
            let mut g = self.lock();
            let dirty = std::mem::take(&mut g.1);
            dirty
                .iter()
                .map(|&p| {
                    let from = (p * HEADER) as usize;
                    let to = (from + HEADER as usize).min(g.0.len());
                    (p, g.0[from..to].to_vec())
                })
                .collect()
        };
        self.sync_data()
            .inspect_err(|_| self.failed.store(true, Ordering::SeqCst))?;
        for (p, bytes) in &pages {
            if let Err(e) = self.file.write_all_at(bytes, HEADER + p * HEADER) {
                // Nothing is lost yet: the data is synced, and the map's
                // pages are queued again. A full disk answers ENOSPC here
                // (the map is sparse until written), and qemu's
                // werror=enospc retries once room is made; failing the
                // overlay for good turned that retry into EIO (review
                // 109.2).
                self.lock().1.extend(pages.iter().map(|(p, _)| *p));
                return Err(e);
            }
        }
        if !pages.is_empty() {
            self.sync_data()
                .inspect_err(|_| self.failed.store(true, Ordering::SeqCst))?;
        }
        Ok(())
    }
}

/// Where the disk's bytes start in the file: past the header and the
/// map, on a 64 KiB boundary (so blocks stay aligned for hole punching).
fn data_offset(size: u64) -> u64 {
    (HEADER + size.div_ceil(BLOCK).div_ceil(8)).next_multiple_of(BLOCK)
}

#[cfg(test)]
#[path = "overlay_tests.rs"]
mod tests;
