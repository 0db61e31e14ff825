//! Chunk marks on local disk, for a sweep whose marks outgrow their
//! memory budget (docs/design.md, "gc in bounded memory").
//!
//! While marking, each time the buffer of marks is full it is sorted,
//! deduplicated and written as a **run** (a file of sorted u64 prefixes).
//! At the seal the runs are merged into **parts**: files of at most a
//! budget's worth of distinct marks each, in id order, so part `i` holds
//! exactly the marks in `[first_i, first_{i+1})`. The census then loads
//! one part at a time as it goes through the index in id order; any other
//! question (an orphan's trailer, a repack, a repair sweep's chunk) is a
//! lookup in the part's file (a sparse index in memory, one read of a few
//! KiB).
//!
//! The files live in a private directory (0700, files 0600) made for
//! this sweep under a base directory ([`base_dir`]) and removed when the
//! [`Spill`] is dropped: on success, error and cancellation alike. A
//! SIGKILL leaves it behind; the next sweep never reads another's files
//! (its directory has a fresh random name) and removes those of
//! processes that are gone ([`remove_stale`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Directory names start with this, then the process id.
const DIR_PREFIX: &str = "xfull-gc-marks-";

/// Every this many values of a part, one is kept in memory: a lookup
/// reads one stretch of 32 KiB.
const SPARSE: usize = 4096;

/// Read and write buffers of the files (one per run while merging).
const IO_BUFFER: usize = 64 << 10;

/// Where a sweep's mark files go: `$TMPDIR` if set, else the
/// repository's cache directory (on disk, where `/tmp` may be memory),
/// else the system's temporary directory.
pub fn base_dir(cache: Option<PathBuf>) -> PathBuf {
    match std::env::var_os("TMPDIR").filter(|v| !v.is_empty()) {
        Some(t) => PathBuf::from(t),
        None => cache.unwrap_or_else(std::env::temp_dir),
    }
}

#[derive(Debug)]
struct Part {
    file: File,
    /// Its smallest mark.
    first: u64,
    count: u64,
    /// Every [`SPARSE`]th mark.
    sparse: Vec<u64>,
}

/// A sweep's mark files; removed when dropped.
#[derive(Debug)]
pub struct Spill {
    dir: PathBuf,
    runs: Vec<PathBuf>,
    parts: Vec<Part>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |error| Error::MarkFiles {
        path: path.to_path_buf(),
        error,
    }
}

fn create_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))
}

impl Spill {
    /// Makes a private directory under `base` (created if needed), after
    /// removing those that sweeps killed before left there.
    pub fn create(base: &Path) -> Result<Spill> {
        std::fs::create_dir_all(base).map_err(io(base))?;
        // Once per base directory and process (a gc runs one sweep; tests
        // run thousands).
        static CLEANED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
        let first = {
            let mut cleaned = CLEANED.lock().unwrap_or_else(|e| e.into_inner());
            let first = !cleaned.iter().any(|b| b == base);
            if first {
                cleaned.push(base.to_path_buf());
            }
            first
        };
        if first {
            remove_stale(base);
        }
        let name = format!(
            "{DIR_PREFIX}{}-{:016x}-{}",
            std::process::id(),
            rand::random::<u64>(),
            host_tag()
        );
        let dir = base.join(name);
        // mkdir fails on anything already there, a symlink included.
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        Ok(Spill {
            dir,
            runs: Vec::new(),
            parts: Vec::new(),
        })
    }

    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes sorted, distinct marks as a run.
    pub fn write_run(&mut self, sorted: &[u64]) -> Result<()> {
        let path = self.dir.join(format!("run-{}", self.runs.len()));
        let mut w = BufWriter::with_capacity(IO_BUFFER, create_file(&path)?);
        for v in sorted {
            w.write_all(&v.to_be_bytes()).map_err(io(&path))?;
        }
        w.flush().map_err(io(&path))?;
        self.runs.push(path);
        Ok(())
    }

    /// Merges the runs into parts of at most `per_part` distinct marks
    /// each, and removes the runs.
    pub fn seal(&mut self, per_part: usize) -> Result<()> {
        let per_part = per_part.max(1) as u64;
        let mut readers = Vec::new();
        for path in &self.runs {
            let f = File::open(path).map_err(io(path))?;
            readers.push((BufReader::with_capacity(IO_BUFFER, f), path.clone()));
        }
        let mut heap = BinaryHeap::new();
        for (i, (r, path)) in readers.iter_mut().enumerate() {
            if let Some(v) = read_u64(r, path)? {
                heap.push(Reverse((v, i)));
            }
        }
        let mut out: Option<(BufWriter<File>, PathBuf, Part)> = None;
        let mut last = None;
        while let Some(Reverse((v, i))) = heap.pop() {
            let (r, path) = &mut readers[i];
            if let Some(n) = read_u64(r, path)? {
                heap.push(Reverse((n, i)));
            }
            if last == Some(v) {
                continue;
            }
            last = Some(v);
            if out.as_ref().is_some_and(|(_, _, p)| p.count >= per_part) {
                let (w, path, part) = out.take().expect("checked");
                self.finish_part(w, &path, part)?;
            }
            if out.is_none() {
                let path = self.dir.join(format!("part-{}", self.parts.len()));
                let file = create_file(&path)?;
                let part = Part {
                    file: file.try_clone().map_err(io(&path))?,
                    first: v,
                    count: 0,
                    sparse: Vec::new(),
                };
                out = Some((BufWriter::with_capacity(IO_BUFFER, file), path, part));
            }
            let (w, path, part) = out.as_mut().expect("made above");
            if part.count.is_multiple_of(SPARSE as u64) {
                part.sparse.push(v);
            }
            part.count += 1;
            w.write_all(&v.to_be_bytes()).map_err(io(path))?;
        }
        if let Some((w, path, part)) = out {
            self.finish_part(w, &path, part)?;
        }
        drop(readers);
        for path in self.runs.drain(..) {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        Ok(())
    }

    fn finish_part(&mut self, mut w: BufWriter<File>, path: &Path, part: Part) -> Result<()> {
        w.flush().map_err(io(path))?;
        self.parts.push(part);
        Ok(())
    }

    /// How many parts (census passes) there are.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Distinct marks in all parts.
    pub fn count(&self) -> u64 {
        self.parts.iter().map(|p| p.count).sum()
    }

    /// The part that holds `v` if it is marked.
    pub fn part_of(&self, v: u64) -> Option<usize> {
        self.parts.partition_point(|p| p.first <= v).checked_sub(1)
    }

    #[cfg(test)]
    /// The marks part `i` covers: `first..end` (`end` `None`: to the
    /// last id).
    pub fn span(&self, i: usize) -> (u64, Option<u64>) {
        (self.parts[i].first, self.parts.get(i + 1).map(|p| p.first))
    }

    /// Reads part `i` whole into `into` (sorted).
    pub fn load(&self, i: usize, into: &mut Vec<u64>) -> Result<()> {
        let part = &self.parts[i];
        into.clear();
        into.reserve_exact(part.count as usize);
        let mut bytes = vec![0u8; IO_BUFFER];
        let path = self.part_path(i);
        let mut at = 0u64;
        let end = part.count * 8;
        while at < end {
            let n = ((end - at) as usize).min(bytes.len());
            part.file
                .read_exact_at(&mut bytes[..n], at)
                .map_err(io(&path))?;
            into.extend(bytes[..n].chunks_exact(8).map(be_u64));
            at += n as u64;
        }
        Ok(())
    }

    /// Whether `v` is marked: the sparse index says which stretch of its
    /// part may hold it, one read gets that stretch.
    pub fn contains(&self, v: u64) -> Result<bool> {
        let Some(i) = self.part_of(v) else {
            return Ok(false);
        };
        let part = &self.parts[i];
        let s = part.sparse.partition_point(|&x| x <= v) - 1;
        let from = (s * SPARSE) as u64;
        let n = (part.count - from).min(SPARSE as u64) as usize;
        let mut bytes = vec![0u8; n * 8];
        part.file
            .read_exact_at(&mut bytes, from * 8)
            .map_err(io(&self.part_path(i)))?;
        let stretch: Vec<u64> = bytes.chunks_exact(8).map(be_u64).collect();
        Ok(stretch.binary_search(&v).is_ok())
    }

    fn part_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("part-{i}"))
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        // Best effort: a directory left (a full disk refusing nothing
        // here, a foreign file) is removed by the next sweep.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap_or_default())
}

fn read_u64(r: &mut impl Read, path: &Path) -> Result<Option<u64>> {
    let mut b = [0u8; 8];
    match r.read_exact(&mut b) {
        Ok(()) => Ok(Some(u64::from_be_bytes(b))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// This host's name as it may appear in a file name: a directory shared
/// by hosts or containers (other process ids) is told apart by it.
fn host_tag() -> String {
    crate::host::name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Removes mark directories under `base` left by processes that are gone
/// (a sweep killed with SIGKILL): ours by owner, name and host, a
/// directory (not a symlink), its process id absent from `/proc`.
/// Without `/proc` nothing is removed. Best effort: one that cannot be
/// removed stays. (Removing a running sweep's directory could only make
/// it fail: its parts are open files, its runs would be missing.)
pub fn remove_stale(base: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let mut parts = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .unwrap_or_default()
            .splitn(3, '-');
        let (Some(pid), Some(_), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if host != host_tag() {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let ours = meta.is_dir() && Some(meta.uid()) == me;
        if ours && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
#[path = "spill_tests.rs"]
mod tests;
