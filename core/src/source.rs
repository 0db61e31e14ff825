//! Reading a source disk: a regular (possibly sparse) image file, a
//! block device, or an NBD export ([`nbd`]).
//!
//! Holes of sparse files are found with SEEK_DATA/SEEK_HOLE and never read:
//! the reader fills them with zeros in memory, so a sparse image gives the
//! same chunks, nodes and manifest as the same bytes written out in full.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::limits::MAX_DISK_SIZE;

pub mod nbd;

#[derive(Debug)]
pub struct DiskSource {
    /// The file's path, or the NBD URI.
    path: PathBuf,
    size: u64,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    File {
        file: File,
        /// Regular files may have holes; block devices are read in full.
        sparse: bool,
    },
    Nbd(nbd::NbdDisk),
}

impl DiskSource {
    /// Opens a disk given as a path or an NBD URI; for an NBD disk, the
    /// dirty bitmaps to read from the same export are negotiated too.
    pub async fn open_any(path: &Path, bitmaps: &[String]) -> Result<Self> {
        let text = path.to_string_lossy();
        if !nbd::is_nbd_uri(&text) {
            return Self::open(path);
        }
        let disk = nbd::NbdDisk::connect(&text, bitmaps)
            .await
            .map_err(|e| Error::Source {
                path: path.to_path_buf(),
                error: std::io::Error::other(e.to_string()),
            })?;
        let size = disk.size();
        let s = DiskSource {
            path: path.to_path_buf(),
            size,
            kind: Kind::Nbd(disk),
        };
        if size > MAX_DISK_SIZE {
            return Err(s.io_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "is {size} bytes; xfull backs up disks of at most {MAX_DISK_SIZE} bytes (64 TiB)"
                ),
            )));
        }
        Ok(s)
    }

    /// The NBD connection, for an NBD disk.
    pub(crate) fn nbd_client(&self) -> Option<&crate::nbd::Client> {
        match &self.kind {
            Kind::Nbd(d) => Some(d.client()),
            Kind::File { .. } => None,
        }
    }

    /// Whether the disk is an image file or device (not an NBD export).
    pub fn is_local(&self) -> bool {
        matches!(self.kind, Kind::File { .. })
    }

    /// Opens a disk for reading; refuses directories and special files.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |error| Error::Source {
            path: path.to_path_buf(),
            error,
        };
        let file = File::open(path).map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        let ft = meta.file_type();
        let (size, sparse) = if ft.is_file() {
            (meta.len(), true)
        } else if ft.is_block_device() {
            // The size of a block device is where a seek to its end lands.
            let size = (&file).seek(SeekFrom::End(0)).map_err(err)?;
            (size, false)
        } else {
            let what = if ft.is_dir() {
                "is a directory, not a disk image"
            } else {
                "is not a regular file or a block device"
            };
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                what,
            )));
        };
        // Refused now rather than after reading it: its manifest would be
        // refused (see `manifest::limits`).
        if size > MAX_DISK_SIZE {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "is {size} bytes; xfull backs up disks of at most {MAX_DISK_SIZE} bytes (64 TiB)"
                ),
            )));
        }
        Ok(DiskSource {
            path: path.to_path_buf(),
            size,
            kind: Kind::File { file, sparse },
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether `other` reads the very same disk as this: the same file
    /// (device and inode, whatever path, symlink or hard link reached
    /// it), or the same block device (two device nodes of one device
    /// share their `rdev`, not their inode). `--base` compares an old
    /// image with the disk: given the disk itself it finds no change, and
    /// the point would hold the parent's bytes (review 105.1). NBD
    /// exports are never the same as far as this can tell.
    pub fn same_disk(&self, other: &DiskSource) -> Result<bool> {
        let (Kind::File { file: a, .. }, Kind::File { file: b, .. }) = (&self.kind, &other.kind)
        else {
            return Ok(false);
        };
        let a = a.metadata().map_err(|e| self.io_err(e))?;
        let b = b.metadata().map_err(|e| other.io_err(e))?;
        let block = |m: &std::fs::Metadata| m.file_type().is_block_device();
        Ok((a.dev(), a.ino()) == (b.dev(), b.ino())
            || (block(&a) && block(&b) && a.rdev() == b.rdev()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_err(&self, error: std::io::Error) -> Error {
        Error::Source {
            path: self.path.clone(),
            error,
        }
    }

    /// The ranges inside `range` that may hold data (everything, for a
    /// block device or a file system without hole reporting).
    pub fn data_ranges(&self, range: Range<u64>) -> Result<Vec<Range<u64>>> {
        let file = match &self.kind {
            Kind::File { sparse: false, .. } => return Ok(vec![range]),
            Kind::File { file, .. } => file,
            Kind::Nbd(d) => {
                return d
                    .data_ranges(range)
                    .map_err(|e| self.io_err(std::io::Error::other(e.to_string())));
            }
        };
        let mut out = Vec::new();
        let mut pos = range.start;
        while pos < range.end {
            let data = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(pos)) {
                Ok(d) => d,
                // ENXIO: no data at or after pos (or the file shrank).
                Err(rustix::io::Errno::NXIO) => {
                    self.check_not_shrunk(range.end)?;
                    break;
                }
                // No SEEK_DATA support: treat everything as data.
                Err(rustix::io::Errno::INVAL) if out.is_empty() && pos == range.start => {
                    return Ok(vec![range]);
                }
                Err(e) => return Err(self.io_err(e.into())),
            };
            if data >= range.end {
                break;
            }
            let hole = rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(data))
                .map_err(|e| self.io_err(e.into()))?;
            let end = hole.min(range.end);
            out.push(data..end);
            pos = end;
        }
        Ok(out)
    }

    /// Fills `buf` with the disk's bytes from `start`: holes become zeros
    /// without a read. Returns the bytes actually read from the source.
    pub fn read_at(&self, start: u64, buf: &mut [u8]) -> Result<u64> {
        let end = start + buf.len() as u64;
        let mut filled = start;
        let ranges = self.data_ranges(start..end)?;
        for r in &ranges {
            buf[(filled - start) as usize..(r.start - start) as usize].fill(0);
            filled = r.end;
        }
        buf[(filled - start) as usize..].fill(0);
        self.read_ranges_at(start, buf, &ranges)
    }

    /// Reads only `ranges` (from [`DiskSource::data_ranges`] over the
    /// buffer's span) into `buf`, which covers the disk from `start`, and
    /// leaves the rest of `buf` untouched: for a caller whose buffer is
    /// zero already, so that a sparse disk's holes are neither read nor
    /// written. Returns the bytes read.
    pub fn read_ranges_at(&self, start: u64, buf: &mut [u8], ranges: &[Range<u64>]) -> Result<u64> {
        let end = start + buf.len() as u64;
        let mut read = 0;
        for r in ranges {
            if r.start < start || r.end > end || r.start > r.end {
                return Err(Error::Internal(format!(
                    "data range {r:?} outside the read {start}..{end}"
                )));
            }
            let (a, b) = ((r.start - start) as usize, (r.end - start) as usize);
            self.read_span(r.start, &mut buf[a..b])?;
            read += r.end - r.start;
        }
        self.check_not_shrunk(end)?;
        Ok(read)
    }

    fn read_span(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match &self.kind {
            Kind::File { file, .. } => match file.read_exact_at(buf, offset) {
                // Data ranges are found before they are read (by another
                // thread): a file that shrank in between ends early here.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.check_not_shrunk(offset + buf.len() as u64)?;
                    Err(self.io_err(std::io::Error::other(format!(
                        "it ended before offset {} while it was being read (size {} when \
                         opened): did it shrink?",
                        offset + buf.len() as u64,
                        self.size
                    ))))
                }
                r => r.map_err(|e| self.io_err(e)),
            },
            Kind::Nbd(d) => d
                .read_at(offset, buf)
                .map_err(|e| self.io_err(std::io::Error::other(e.to_string()))),
        }
    }

    /// A file that shrank under the backup reads as holes past its new
    /// end: refuse it instead of storing zeros that were never there.
    fn check_not_shrunk(&self, end: u64) -> Result<()> {
        if let Kind::File { file, sparse: true } = &self.kind {
            let now = file.metadata().map_err(|e| self.io_err(e))?.len();
            if now < end.min(self.size) {
                return Err(self.io_err(std::io::Error::other(format!(
                    "the disk shrank from {} to {now} bytes while it was being read",
                    self.size
                ))));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sparse_file_reads_as_zeros_and_reports_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&[7u8; 4096], 4 << 20).unwrap();
        drop(f);
        let src = DiskSource::open(&p).unwrap();
        assert_eq!(src.size(), 8 << 20);
        let ranges = src.data_ranges(0..8 << 20).unwrap();
        let covered: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        assert!((4096..8 << 20).contains(&covered), "{ranges:?}");
        let mut buf = vec![1u8; 8 << 20];
        src.read_at(0, &mut buf).unwrap();
        assert!(buf[..4 << 20].iter().all(|&b| b == 0));
        assert!(buf[4 << 20..(4 << 20) + 4096].iter().all(|&b| b == 7));
        assert!(buf[(4 << 20) + 4096..].iter().all(|&b| b == 0));
    }

    /// Data ranges found before the file shrank, read after: the error
    /// says it shrank (not "failed to fill whole buffer").
    #[test]
    fn a_file_that_shrinks_after_its_ranges_were_found_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let f = File::create(&p).unwrap();
        f.write_all_at(&[7u8; 1 << 20], 0).unwrap();
        let src = DiskSource::open(&p).unwrap();
        let ranges = src.data_ranges(0..1 << 20).unwrap();
        f.set_len(4096).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let e = src.read_ranges_at(0, &mut buf, &ranges).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("shrank") && msg.contains("img"), "{msg}");
    }

    /// Two device nodes of one block device are two inodes: only their
    /// `rdev` says they are one disk (a `--base` of `/dev/vg/lv` for the
    /// disk `/dev/dm-3`). Needs root to make device nodes: with
    /// XFULL_NO_ROOT set it is skipped, as the other root-only tests are
    /// (the e2e `base_self` covers files, links and hard links).
    #[test]
    fn two_device_nodes_of_one_block_device_are_the_same_disk() {
        if std::env::var_os("XFULL_NO_ROOT").is_some() {
            eprintln!("XFULL_NO_ROOT set: making device nodes needs root, not run");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let node = |name: &str, minor| {
            let p = dir.path().join(name);
            let made = rustix::fs::mknodat(
                rustix::fs::CWD,
                &p,
                rustix::fs::FileType::BlockDevice,
                rustix::fs::Mode::from_raw_mode(0o600),
                rustix::fs::makedev(7, minor),
            );
            made.expect("mknod needs root (XFULL_NO_ROOT=1 skips this test)");
            DiskSource::open(&p).unwrap()
        };
        let (a, b, other) = (node("a", 0), node("b", 0), node("c", 1));
        assert!(a.same_disk(&b).unwrap());
        assert!(!a.same_disk(&other).unwrap());
        let f = dir.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        assert!(!a.same_disk(&DiskSource::open(&f).unwrap()).unwrap());
    }

    #[test]
    fn refuses_directories_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let e = DiskSource::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
        let e = DiskSource::open(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(e, Error::Source { .. }));
        let mut f = File::create(dir.path().join("small")).unwrap();
        f.write_all(b"x").unwrap();
        assert_eq!(
            DiskSource::open(&dir.path().join("small")).unwrap().size(),
            1
        );
    }
}
