//! Restore: one disk of one point, to a new file, a block device, or
//! stdout.
//!
//! Chunks are fetched with bounded parallelism, each verified against its
//! id before use, and handed in disk order to one writer thread that also
//! computes the BLAKE3 of the whole image. A new file is written under a
//! temporary name and renamed when complete, so a failed restore never
//! leaves a truncated image under the requested name.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::chunk_store::ChunkStore;
use crate::error::{Error, Result};
use crate::manifest::{DiskManifest, Manifest};
use crate::progress::Progress;
use crate::repo::Repository;

/// Chunk fetches in flight.
const FETCHES: usize = 16;
/// Node fetches in flight (one node covers a segment).
const NODE_FETCHES: usize = 4;

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
        let err = |source| Error::Target {
            path: path.clone(),
            source,
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

/// What a restore wrote.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    pub bytes: u64,
    /// BLAKE3 of the restored image, hex.
    pub blake3: String,
}

enum Piece {
    Data(u64, Vec<u8>),
    Zero(u64, u64),
}

/// Restores disk `disk` of point `m` to `target`.
pub async fn restore(
    repo: &Repository,
    m: &Manifest,
    disk: &str,
    target: &Target,
    progress: Arc<Progress>,
) -> Result<RestoreOutcome> {
    let d = m.disk(disk)?.clone();
    progress.add_total(d.size);
    let mut sink = Sink::open(target, d.size)?;
    let (tx, mut rx) = mpsc::channel::<Piece>(FETCHES);
    let writer_progress = progress.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        let zeros = vec![0u8; 1 << 20];
        while let Some(piece) = rx.blocking_recv() {
            match piece {
                Piece::Data(off, data) => {
                    hasher.update(&data);
                    sink.write_data(off, &data)?;
                    writer_progress.add_done(data.len() as u64);
                }
                Piece::Zero(off, len) => {
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(zeros.len() as u64) as usize;
                        hasher.update(&zeros[..n]);
                        sink.write_zeros(off + len - left, &zeros[..n])?;
                        left -= n as u64;
                    }
                    writer_progress.add_done(len);
                }
            }
        }
        Ok::<_, Error>((sink, hasher.finalize()))
    });

    let produced = produce(repo, m, &d, &tx, &progress).await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Error::Internal(format!("restore writer died: {e}")))?;
    produced?;
    let (sink, hash) = written?;
    sink.finish()?;
    Ok(RestoreOutcome {
        bytes: d.size,
        blake3: hash.to_hex().to_string(),
    })
}

/// Feeds the writer every piece of the disk, in order.
async fn produce(
    repo: &Repository,
    m: &Manifest,
    d: &DiskManifest,
    tx: &mpsc::Sender<Piece>,
    progress: &Progress,
) -> Result<()> {
    let point = m.point_name();
    let damaged = |offset: u64, chunk: String, e: Error| Error::Damaged {
        point: point.clone(),
        disk: d.name.to_string(),
        offset,
        chunk,
        reason: e.to_string(),
    };
    // Each segment becomes its list of (offset, length, chunk id or zero).
    let segments = futures::stream::iter(0..d.segments.len())
        .map(|i| {
            let range = d.segment_range(i);
            let seg = d.segments[i];
            async move {
                let Some(node_id) = seg else {
                    return Ok(vec![(range.start, range.end - range.start, None)]);
                };
                let node = repo
                    .load_node(&node_id)
                    .await
                    .map_err(|e| damaged(range.start, format!("node {node_id}"), e))?;
                if node.len() != range.end - range.start {
                    return Err(damaged(
                        range.start,
                        format!("node {node_id}"),
                        Error::corrupt(
                            crate::keys::node(&node_id),
                            format!(
                                "covers {} bytes, the segment has {}",
                                node.len(),
                                range.end - range.start
                            ),
                        ),
                    ));
                }
                let mut off = range.start;
                Ok(node
                    .entries
                    .iter()
                    .map(|e| {
                        let item = (off, e.len(), e.1);
                        off += e.len();
                        item
                    })
                    .collect())
            }
        })
        .buffered(NODE_FETCHES)
        .map_ok(|entries| futures::stream::iter(entries.into_iter().map(Ok::<_, Error>)))
        .try_flatten();

    let store = repo.chunks();
    let pieces = segments
        .map_ok(|(off, len, id)| {
            let store = store.clone();
            let damaged = &damaged;
            async move {
                let Some(id) = id else {
                    return Ok::<_, Error>(Piece::Zero(off, len));
                };
                let raw = store
                    .get_raw(&id)
                    .await
                    .map_err(|e| damaged(off, id.to_hex(), e))?;
                progress.add_transferred(raw.len() as u64);
                let plain =
                    tokio::task::spawn_blocking(move || ChunkStore::open(&id, &raw, len as usize))
                        .await
                        .map_err(|e| Error::Internal(format!("decompress task died: {e}")))?
                        .map_err(|e| damaged(off, id.to_hex(), e))?;
                Ok(Piece::Data(off, plain))
            }
        })
        .try_buffered(FETCHES);
    futures::pin_mut!(pieces);
    while let Some(piece) = pieces.try_next().await? {
        if tx.send(piece).await.is_err() {
            // The writer stopped: its error is reported by the caller.
            break;
        }
    }
    Ok(())
}

/// The open restore target.
enum Sink {
    Stdout(std::io::BufWriter<std::io::Stdout>),
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
            Target::Stdout => Sink::Stdout(std::io::BufWriter::with_capacity(
                1 << 20,
                std::io::stdout(),
            )),
            Target::NewFile(path) => {
                let partial = partial_path(path);
                let err = |source| Error::Target {
                    path: partial.clone(),
                    source,
                };
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
                let err = |source| Error::Target {
                    path: path.clone(),
                    source,
                };
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

    fn write_data(&mut self, off: u64, data: &[u8]) -> Result<()> {
        match self {
            Sink::Stdout(w) => w.write_all(data).map_err(stdout_err),
            Sink::File { file, partial, .. } => file
                .write_all_at(data, off)
                .map_err(|source| target_err(partial, source)),
            Sink::Device { file, path } => file
                .write_all_at(data, off)
                .map_err(|source| target_err(path, source)),
        }
    }

    fn write_zeros(&mut self, off: u64, zeros: &[u8]) -> Result<()> {
        match self {
            // A fresh file already reads as zeros there.
            Sink::File { .. } => Ok(()),
            _ => self.write_data(off, zeros),
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Sink::Stdout(mut w) => w.flush().map_err(stdout_err),
            Sink::File {
                file,
                partial,
                path,
            } => {
                file.sync_all().map_err(|e| target_err(&partial, e))?;
                std::fs::rename(&partial, &path).map_err(|e| target_err(&path, e))?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    // Make the rename itself durable.
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| target_err(dir, e))?;
                }
                Ok(())
            }
            Sink::Device { file, path } => file.sync_all().map_err(|e| target_err(&path, e)),
        }
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".xfull-partial");
    PathBuf::from(s)
}

fn target_err(path: &Path, source: std::io::Error) -> Error {
    Error::Target {
        path: path.to_path_buf(),
        source,
    }
}

fn stdout_err(source: std::io::Error) -> Error {
    target_err(Path::new("-"), source)
}
