//! Reading objects: get, get_range, head.
//!
//! An object is opened non-blocking and checked with `fstat` before a byte
//! is read, so a FIFO, a device or a directory planted under a key is
//! reported as damage at once instead of blocking the reader forever, and
//! no more bytes are read than the file's size said when it was opened.

use std::ops::Range;
use std::os::fd::OwnedFd;

use bytes::Bytes;
use rustix::buffer::spare_capacity;
use rustix::fs::{FileType, OFlags, Stat};
use rustix::io::Errno;
use xfull_core::backend::{BackendError, ObjectMeta, check_size};

use crate::fs::{Root, kind_name, kind_of, mtime_of, size_of};

/// How objects are opened: never following a link, never waiting for a
/// writer (a FIFO), never becoming our controlling terminal (a tty).
const READ: OFlags = OFlags::RDONLY
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

impl Root {
    /// Opens the regular file under `key`; anything else there is damage.
    fn open_object(&self, key: &str) -> Result<(OwnedFd, Stat), BackendError> {
        self.check_key(key)?;
        let fd = self
            .open_beneath(key, READ)
            .map_err(|e| self.open_error(key, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.other(key, e))?;
        let kind = kind_of(&st);
        if kind != FileType::RegularFile {
            return Err(self.corrupt(key, format!("{}, not a regular file", kind_name(kind))));
        }
        Ok((fd, st))
    }

    pub(crate) fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.get_at_most(key, u64::MAX)
    }

    /// As `get`, refusing a file over `max` bytes before reading it.
    pub(crate) fn get_at_most(&self, key: &str, max: u64) -> Result<Bytes, BackendError> {
        let (fd, st) = self.open_object(key)?;
        let size = size_of(&st);
        check_size(&self.location, key, size, max)?;
        self.read_at(key, &fd, 0, size, size).map(Bytes::from)
    }

    /// The bytes `range` of `key`; a range past the end is an error (the
    /// caller asked for bytes the object does not have).
    pub(crate) fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        let (fd, st) = self.open_object(key)?;
        let size = size_of(&st);
        if range.start > range.end || range.end > size {
            return Err(BackendError::Other {
                location: self.location.clone(),
                message: format!(
                    "{key}: range {}..{} is outside the object's {size} bytes",
                    range.start, range.end
                ),
            });
        }
        self.read_at(key, &fd, range.start, range.end - range.start, size)
            .map(Bytes::from)
    }

    pub(crate) fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        let (_fd, st) = self.open_object(key)?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: size_of(&st),
            last_modified: mtime_of(&st),
            storage_class: None,
        })
    }

    /// Reads exactly `len` bytes at `offset`. A file that ends early was
    /// cut while we read it (objects are published whole and never
    /// changed in place): damage.
    fn read_at(
        &self,
        key: &str,
        fd: &OwnedFd,
        offset: u64,
        len: u64,
        size: u64,
    ) -> Result<Vec<u8>, BackendError> {
        let too_large = || BackendError::Other {
            location: self.location.clone(),
            message: format!("{key}: {len} bytes do not fit in memory"),
        };
        let n = usize::try_from(len).map_err(|_| too_large())?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(n).map_err(|_| too_large())?;
        // Read into the spare capacity: zeroing the buffer first was 3% of
        // a restore's CPU (`perf`, 2026-12-05). Should the allocator give
        // more capacity than asked, bytes read past the range are cut off.
        while buf.len() < n {
            let done = buf.len();
            match rustix::io::pread(fd, spare_capacity(&mut buf), offset + done as u64) {
                Ok(0) => {
                    return Err(self.corrupt(
                        key,
                        format!(
                            "ends at byte {}, its size said {size} (cut while read)",
                            offset + done as u64
                        ),
                    ));
                }
                Ok(_) => {}
                Err(Errno::INTR) => {}
                Err(e) => return Err(self.other(key, e)),
            }
        }
        buf.truncate(n);
        Ok(buf)
    }
}
