//! The open restore target, written a segment at a time in disk order.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::partial::Partial;
use super::segment::Piece;
use super::target::{Target, open_device, target_err};
use crate::error::Result;

pub(super) enum Sink {
    /// Stdout as a plain file: `std::io::Stdout` is line-buffered and
    /// would scan every byte of the image for newlines.
    Stdout(std::io::BufWriter<File>),
    File {
        partial: Partial,
        overwrite: bool,
    },
    Device {
        file: File,
        path: PathBuf,
    },
}

impl Sink {
    /// Opens `target` for an image of `size` bytes.
    pub(super) fn open(target: &Target, size: u64) -> Result<Sink> {
        Ok(match target {
            Target::Stdout => {
                use std::os::fd::AsFd;
                let fd = std::io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(stdout_err)?;
                widen_pipe(fd.as_fd());
                Sink::Stdout(std::io::BufWriter::with_capacity(1 << 20, File::from(fd)))
            }
            Target::File { path, overwrite } => Sink::File {
                partial: Partial::create(path, size)?,
                overwrite: *overwrite,
            },
            Target::Device(path) => Sink::Device {
                file: open_device(path, size)?,
                path: path.clone(),
            },
        })
    }

    /// Writes one segment; returns its length.
    pub(super) fn write(&mut self, piece: &Piece, zeros: &[u8]) -> Result<u64> {
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
                Sink::File { partial, .. },
                Piece::Data {
                    start,
                    buf,
                    entries,
                },
            ) => {
                let write = |from: usize, to: usize| {
                    partial
                        .file()
                        .write_all_at(&buf[from..to], start + from as u64)
                        .map_err(|e| partial.write_error(e))
                };
                // Write each run of chunks in one call; skip zero runs.
                let mut off = 0usize;
                let mut run: Option<usize> = None;
                for e in entries {
                    match (e.chunk(), run) {
                        (Some(_), None) => run = Some(off),
                        (None, Some(r)) => {
                            write(r, off)?;
                            run = None;
                        }
                        _ => {}
                    }
                    off += e.len() as usize;
                }
                if let Some(r) = run {
                    write(r, off)?;
                }
                Ok(buf.len() as u64)
            }
        }
    }

    /// Completes the restore: flushes stdout, publishes a file, with
    /// `sync` makes the image durable.
    pub(super) fn finish(self, sync: bool) -> Result<()> {
        match self {
            Sink::Stdout(mut w) => w.flush().map_err(stdout_err),
            Sink::File { partial, overwrite } => partial.publish(overwrite, sync),
            Sink::Device { file, path } => {
                if sync {
                    file.sync_all().map_err(|e| target_err(&path, e))?;
                }
                Ok(())
            }
        }
    }

    /// Drops a restore that stops unfinished, undoing what can be undone;
    /// says what it did, for the user.
    pub(super) fn abandon(self) -> String {
        match self {
            Sink::Stdout(_) => "the image written to stdout is incomplete".into(),
            Sink::File { partial, .. } => {
                let target = partial.target().display().to_string();
                match partial.discard() {
                    Some(p) => format!(
                        "removed the partial image {}; {target} was not written",
                        p.display()
                    ),
                    None => format!("{target} was not written"),
                }
            }
            Sink::Device { path, .. } => format!(
                "block device {} holds a partly restored image",
                path.display()
            ),
        }
    }
}

fn stdout_err(source: std::io::Error) -> crate::Error {
    target_err(Path::new("-"), source)
}

/// The pipe buffer a restore to stdout asks for: Linux's default limit
/// for unprivileged processes (`/proc/sys/fs/pipe-max-size`). An image
/// piped through the default 64 KiB buffer costs a wakeup of each side
/// per 64 KiB: 2 GiB of zeros through `cat` took 2.4-2.8 s, with 1 MiB
/// 0.7-1.2 s (bench/results/crypto-backup.md, run 9).
const PIPE_SIZE: usize = 1 << 20;

/// Grows the buffer of `fd` to [`PIPE_SIZE`] if it is a pipe with a
/// smaller one; returns its size then (`None`: not a pipe). Best effort:
/// a refusal (a user over the kernel's limit of pipe pages) leaves the
/// pipe as it was.
#[cfg(target_os = "linux")]
fn widen_pipe(fd: std::os::fd::BorrowedFd<'_>) -> Option<usize> {
    use rustix::pipe::{fcntl_getpipe_size, fcntl_setpipe_size};
    let now = fcntl_getpipe_size(fd).ok()?;
    if now >= PIPE_SIZE {
        return Some(now);
    }
    Some(fcntl_setpipe_size(fd, PIPE_SIZE).unwrap_or(now))
}

#[cfg(not(target_os = "linux"))]
fn widen_pipe(_fd: std::os::fd::BorrowedFd<'_>) -> Option<usize> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_pipe_to_stdout_is_widened_and_a_file_is_left_alone() {
        let (_r, w) = rustix::pipe::pipe().unwrap();
        assert!(rustix::pipe::fcntl_getpipe_size(&w).unwrap() < PIPE_SIZE);
        assert_eq!(widen_pipe(w.as_fd()), Some(PIPE_SIZE));
        assert_eq!(rustix::pipe::fcntl_getpipe_size(&w).unwrap(), PIPE_SIZE);
        // Already as large: nothing asked, the size said.
        assert_eq!(widen_pipe(w.as_fd()), Some(PIPE_SIZE));
        let f = tempfile::tempfile().unwrap();
        assert_eq!(widen_pipe(f.as_fd()), None);
    }
}
