//! Restore: one disk of one point, to a new file, a block device, or
//! stdout.
//!
//! Work is done a segment at a time, several segments at once: fetch the
//! node, fetch its chunks concurrently, then on a blocking thread
//! decompress each chunk into the segment's buffer, check it against its
//! id, hash the segment as a BLAKE3 subtree and write it. Segments come out
//! in disk order, so stdout gets the image in order, and the per-segment
//! hashes merge into the BLAKE3 of the whole image (see [`image_hash`]).
//! A new file is written under a temporary name and renamed when complete,
//! so a failed restore never leaves a truncated image under the requested
//! name; zero runs are not written and stay holes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::chunk_store::ChunkStore;
use crate::error::{Error, Result};
use crate::image_hash::{self, SegmentHash};
use crate::manifest::{DiskManifest, Manifest};
use crate::node::Entry;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::task::blocking;

/// Segments in flight: bounds memory to about twice this many segments
/// (compressed chunks plus the decompressed buffer).
const SEGMENTS_IN_FLIGHT: usize = 4;
/// Chunk fetches in flight per segment.
const FETCHES: usize = 16;

/// Where a restore writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// A file that does not exist yet.
    NewFile(PathBuf),
    /// An existing block device, written in place.
    Device(PathBuf),
}

impl Target {
    /// Interprets `-` or a path; refuses to overwrite an existing file.
    pub fn parse(to: &str) -> Result<Target> {
        if to == "-" {
            return Ok(Target::Stdout);
        }
        let path = PathBuf::from(to);
        let err = |error| Error::Target {
            path: path.clone(),
            error,
        };
        match std::fs::metadata(&path) {
            Ok(m) if m.file_type().is_block_device() => Ok(Target::Device(path)),
            Ok(_) => Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "already exists and is not a block device; refusing to overwrite it",
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                if !dir.is_dir() {
                    return Err(err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("directory {} does not exist", dir.display()),
                    )));
                }
                Ok(Target::NewFile(path))
            }
            Err(e) => Err(err(e)),
        }
    }
}

/// Restore options.
#[derive(Debug, Clone, Copy)]
pub struct RestoreOptions {
    /// Flush the image to stable storage before reporting success.
    pub sync: bool,
    /// Compute the BLAKE3 of the whole image. Every chunk is verified
    /// against its id either way; the image hash lets an operator compare
    /// with `b3sum` of the source, and costs hashing every byte, zeros
    /// included.
    pub image_hash: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            sync: false,
            image_hash: true,
        }
    }
}

/// What a restore wrote.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    pub bytes: u64,
    /// BLAKE3 of the restored image, hex (unless not asked for).
    pub blake3: Option<String>,
}

/// A restored segment on its way to the writer.
enum Piece {
    Zeros {
        start: u64,
        len: u64,
    },
    Data {
        start: u64,
        buf: Vec<u8>,
        entries: Vec<Entry>,
    },
}

/// Restores disk `disk` of point `m` to `target`.
pub async fn restore(
    repo: &Repository,
    m: &Manifest,
    disk: &str,
    target: &Target,
    opts: RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreOutcome> {
    let d = Arc::new(m.disk(disk)?.clone());
    progress.add_total(d.size);
    let mut sink = Sink::open(target, d.size)?;
    let zeros: Arc<[u8]> = vec![0u8; d.segment_size as usize].into();
    let buffers = Arc::new(BufferPool::default());

    // One writer thread takes segments in disk order: sequential writes
    // suit every target (and stdout needs them), while decompression and
    // hashing run in parallel on the segment tasks.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(2);
    let writer = {
        let (zeros, buffers, progress) = (zeros.clone(), buffers.clone(), progress.clone());
        tokio::task::spawn_blocking(move || {
            while let Some(piece) = rx.blocking_recv() {
                let len = sink.write(&piece, &zeros)?;
                progress.add_done(len);
                if let Piece::Data { buf, .. } = piece {
                    buffers.give(buf);
                }
            }
            Ok::<_, Error>(sink)
        })
    };

    let ctx = Arc::new(SegmentCtx {
        repo: repo.clone(),
        d: d.clone(),
        zeros,
        buffers,
        point: m.point_name(),
        progress,
        image_hash: opts.image_hash,
    });
    let mut hashes = Vec::with_capacity(d.segments.len());
    let mut done = futures::stream::iter(0..d.segments.len())
        .map(|i| ctx.clone().restore_segment(i))
        .buffered(SEGMENTS_IN_FLIGHT);
    let mut failed = None;
    while let Some(seg) = done.next().await {
        match seg {
            Ok((hash, piece)) => {
                hashes.push(hash);
                if tx.send(piece).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop((done, tx));
    let sink = writer
        .await
        .map_err(|e| Error::Internal(format!("restore writer died: {e}")))?;
    match (failed, sink) {
        (None, Ok(sink)) => blocking("restore writer", move || sink.finish(opts.sync)).await??,
        (Some(e), Ok(sink)) => {
            sink.abandon();
            return Err(e);
        }
        (_, Err(e)) => {
            if let Target::NewFile(path) = target {
                let _ = std::fs::remove_file(partial_path(path));
            }
            return Err(e);
        }
    }
    Ok(RestoreOutcome {
        bytes: d.size,
        blake3: hashes.into_iter().collect::<Option<Vec<_>>>().map(|h| {
            image_hash::combine(&h, d.segment_size, d.size)
                .to_hex()
                .to_string()
        }),
    })
}

struct SegmentCtx {
    repo: Repository,
    d: Arc<DiskManifest>,
    zeros: Arc<[u8]>,
    buffers: Arc<BufferPool>,
    point: String,
    progress: Arc<Progress>,
    image_hash: bool,
}

/// Segment buffers for reuse: fresh 16 MiB allocations cost page faults
/// and page clearing on every segment, reused ones do not.
#[derive(Default)]
struct BufferPool(std::sync::Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        // Every byte is overwritten by a chunk or a zero run.
        buf.resize(len, 0);
        buf
    }

    fn give(&self, buf: Vec<u8>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(buf);
    }
}

impl SegmentCtx {
    fn damaged(&self, offset: u64, chunk: String, e: Error) -> Error {
        Error::Damaged {
            point: self.point.clone(),
            disk: self.d.name.to_string(),
            offset,
            chunk,
            reason: e.to_string(),
        }
    }

    async fn restore_segment(self: Arc<Self>, i: usize) -> Result<(Option<SegmentHash>, Piece)> {
        let range = self.d.segment_range(i);
        let len = range.end - range.start;
        let entries = match self.d.segments[i] {
            None => Vec::new(),
            Some(node_id) => {
                let node = self
                    .repo
                    .load_node(&node_id)
                    .await
                    .map_err(|e| self.damaged(range.start, format!("node {node_id}"), e))?;
                if node.len() != len {
                    let e = Error::Corrupt {
                        key: crate::keys::node(&node_id),
                        reason: format!("covers {} bytes, the segment has {len}", node.len()),
                    };
                    return Err(self.damaged(range.start, format!("node {node_id}"), e));
                }
                node.entries
            }
        };
        let store = self.repo.chunks();
        let raw: Vec<Option<Bytes>> = futures::stream::iter(entries.iter().copied())
            .scan(range.start, |off, e| {
                let at = *off;
                *off += e.len();
                futures::future::ready(Some((at, e)))
            })
            .map(|(at, e)| {
                let (store, ctx) = (&store, &self);
                async move {
                    let Some(id) = e.chunk() else { return Ok(None) };
                    let b = store
                        .get_raw(&id)
                        .await
                        .map_err(|err| ctx.damaged(at, id.to_hex(), err))?;
                    ctx.progress.add_transferred(b.len() as u64);
                    Ok::<_, Error>(Some(b))
                }
            })
            .buffered(FETCHES)
            .try_collect()
            .await?;
        blocking("restore task", move || {
            self.assemble(range.start, len, entries, &raw)
        })
        .await?
    }

    /// Decompresses, verifies and hashes one segment.
    fn assemble(
        &self,
        start: u64,
        len: u64,
        entries: Vec<Entry>,
        raw: &[Option<Bytes>],
    ) -> Result<(Option<SegmentHash>, Piece)> {
        let (seg, total) = (self.d.segment_size, self.d.size);
        let hash = |data: &[u8]| {
            self.image_hash
                .then(|| image_hash::hash_segment(start, data, seg, total))
        };
        if entries.iter().all(|e| e.chunk().is_none()) {
            let h = hash(&self.zeros[..len as usize]);
            return Ok((h, Piece::Zeros { start, len }));
        }
        let mut buf = self.buffers.take(len as usize);
        let mut off = 0usize;
        for (e, framed) in entries.iter().zip(raw) {
            let piece = &mut buf[off..off + e.len() as usize];
            match (e.chunk(), framed) {
                (Some(id), Some(framed)) => {
                    if let Err(err) = ChunkStore::open_into(&id, framed, piece) {
                        self.buffers.give(buf);
                        return Err(self.damaged(start + off as u64, id.to_hex(), err));
                    }
                }
                _ => piece.fill(0),
            }
            off += e.len() as usize;
        }
        let h = hash(&buf);
        Ok((
            h,
            Piece::Data {
                start,
                buf,
                entries,
            },
        ))
    }
}

/// The open restore target.
enum Sink {
    /// Stdout as a plain file: `std::io::Stdout` is line-buffered and
    /// would scan every byte of the image for newlines.
    Stdout(std::io::BufWriter<File>),
    File {
        file: File,
        partial: PathBuf,
        path: PathBuf,
    },
    Device {
        file: File,
        path: PathBuf,
    },
}

impl Sink {
    fn open(target: &Target, size: u64) -> Result<Sink> {
        Ok(match target {
            Target::Stdout => {
                use std::os::fd::AsFd;
                let fd = std::io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(stdout_err)?;
                Sink::Stdout(std::io::BufWriter::with_capacity(1 << 20, File::from(fd)))
            }
            Target::NewFile(path) => {
                let partial = partial_path(path);
                let err = |error| target_err(&partial, error);
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&partial)
                    .map_err(err)?;
                // Zero runs are never written: they stay holes.
                file.set_len(size).map_err(err)?;
                Sink::File {
                    file,
                    partial,
                    path: path.clone(),
                }
            }
            Target::Device(path) => {
                let err = |error| target_err(path, error);
                let mut file = OpenOptions::new().write(true).open(path).map_err(err)?;
                let dev_size =
                    std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(err)?;
                if dev_size < size {
                    return Err(Error::InvalidArgument(format!(
                        "block device {} holds {dev_size} bytes, the disk needs {size}",
                        path.display()
                    )));
                }
                Sink::Device {
                    file,
                    path: path.clone(),
                }
            }
        })
    }

    /// Writes one segment; returns its length.
    fn write(&mut self, piece: &Piece, zeros: &[u8]) -> Result<u64> {
        match (self, piece) {
            (Sink::Stdout(w), Piece::Data { buf, .. }) => {
                w.write_all(buf).map_err(stdout_err)?;
                Ok(buf.len() as u64)
            }
            (Sink::Stdout(w), Piece::Zeros { len, .. }) => {
                w.write_all(&zeros[..*len as usize]).map_err(stdout_err)?;
                Ok(*len)
            }
            (Sink::Device { file, path }, Piece::Data { start, buf, .. }) => {
                file.write_all_at(buf, *start)
                    .map_err(|e| target_err(path, e))?;
                Ok(buf.len() as u64)
            }
            (Sink::Device { file, path }, Piece::Zeros { start, len }) => {
                let zeros = &zeros[..*len as usize];
                file.write_all_at(zeros, *start)
                    .map_err(|e| target_err(path, e))?;
                Ok(*len)
            }
            // A fresh file already reads as zeros there.
            (Sink::File { .. }, Piece::Zeros { len, .. }) => Ok(*len),
            (
                Sink::File { file, partial, .. },
                Piece::Data {
                    start,
                    buf,
                    entries,
                },
            ) => {
                // Write each run of chunks in one call; skip zero runs.
                let mut off = 0usize;
                let mut run: Option<usize> = None;
                for e in entries {
                    match (e.chunk(), run) {
                        (Some(_), None) => run = Some(off),
                        (None, Some(r)) => {
                            file.write_all_at(&buf[r..off], start + r as u64)
                                .map_err(|e| target_err(partial, e))?;
                            run = None;
                        }
                        _ => {}
                    }
                    off += e.len() as usize;
                }
                if let Some(r) = run {
                    file.write_all_at(&buf[r..off], start + r as u64)
                        .map_err(|e| target_err(partial, e))?;
                }
                Ok(buf.len() as u64)
            }
        }
    }

    /// Drops a restore that failed: a new file's partial image is removed
    /// (a device or stdout keeps what was written).
    fn abandon(self) {
        if let Sink::File { partial, .. } = self {
            let _ = std::fs::remove_file(partial);
        }
    }

    fn finish(self, sync: bool) -> Result<()> {
        match self {
            Sink::Stdout(mut w) => w.flush().map_err(stdout_err),
            Sink::File {
                file,
                partial,
                path,
            } => {
                if sync {
                    file.sync_all().map_err(|e| target_err(&partial, e))?;
                }
                std::fs::rename(&partial, &path).map_err(|e| target_err(&path, e))?;
                if sync && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    // Make the rename itself durable.
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| target_err(dir, e))?;
                }
                Ok(())
            }
            Sink::Device { file, path } => {
                if sync {
                    file.sync_all().map_err(|e| target_err(&path, e))?;
                }
                Ok(())
            }
        }
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".xfull-partial");
    PathBuf::from(s)
}

fn target_err(path: &Path, error: std::io::Error) -> Error {
    Error::Target {
        path: path.to_path_buf(),
        error,
    }
}

fn stdout_err(source: std::io::Error) -> Error {
    target_err(Path::new("-"), source)
}
