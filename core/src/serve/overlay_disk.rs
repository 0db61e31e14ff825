//! A writable served disk: a [`PointDisk`] under an [`Overlay`]. Reads
//! take each 64 KiB block from the overlay if it was written, else from
//! the point; writes, WRITE_ZEROES and TRIM go to the overlay only (a
//! block written in part is first copied from the point). Writers take
//! one lock, so two writes into one block never copy it twice.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::PointDisk;
use super::disk::MAX_EXTENTS;
use super::overlay::{BLOCK, Overlay};
use crate::nbd::{Export, ExportError, Extent, ReadPiece, push_extent};

#[derive(Debug)]
pub struct OverlayDisk {
    base: PointDisk,
    overlay: Arc<Overlay>,
    writer: tokio::sync::Mutex<()>,
}

fn io(e: impl std::fmt::Display) -> ExportError {
    ExportError::Io(format!("overlay: {e}"))
}

/// An overlay file's error for the client: a full filesystem or quota
/// is `ENOSPC`, on which qemu (`werror=enospc`) pauses the guest until
/// room is made, where on `EIO` the guest loses the write (review
/// 104.2); anything else is `EIO`.
fn from_io(e: std::io::Error) -> ExportError {
    // (std reads ENOSPC as StorageFull, EDQUOT as QuotaExceeded.)
    use std::io::ErrorKind;
    if matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) {
        ExportError::NoSpace(format!("overlay: {e}"))
    } else {
        io(e)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, ExportError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io)?
        .map_err(from_io)
}

impl OverlayDisk {
    pub fn new(base: PointDisk, overlay: Overlay) -> OverlayDisk {
        OverlayDisk {
            base,
            overlay: Arc::new(overlay),
            writer: Default::default(),
        }
    }

    /// Runs of `offset..end` alike in being in the overlay or not.
    fn runs(&self, offset: u64, end: u64) -> Vec<(Range<u64>, bool)> {
        let mut out: Vec<(Range<u64>, bool)> = Vec::new();
        let mut at = offset;
        while at < end {
            let b = at / BLOCK;
            let to = ((b + 1) * BLOCK).min(end);
            let inside = self.overlay.has(b);
            match out.last_mut() {
                Some((r, i)) if *i == inside => r.end = to,
                _ => out.push((at..to, inside)),
            }
            at = to;
        }
        out
    }

    /// Writes `data` at `offset`: blocks written in part and not yet in
    /// the overlay are first copied from the point. `data` of `None` is
    /// zeros (whole blocks are punched instead of written).
    async fn put(&self, offset: u64, len: u64, data: Option<Bytes>) -> Result<(), ExportError> {
        // The spec lets a client send requests of length 0: they change
        // nothing (the block range below would start past its end).
        if len == 0 {
            return Ok(());
        }
        let _one_writer = self.writer.lock().await;
        let end = offset + len;
        let (first, last) = (offset / BLOCK, (end - 1) / BLOCK);
        for b in first..=last {
            let (bs, be) = (b * BLOCK, ((b + 1) * BLOCK).min(self.base.size()));
            let (from, to) = (offset.max(bs), end.min(be));
            let whole = from == bs && to == be;
            let piece = data
                .as_ref()
                .map(|d| d.slice((from - offset) as usize..(to - offset) as usize));
            let ov = self.overlay.clone();
            if whole || self.overlay.has(b) {
                match piece {
                    Some(p) => blocking(move || ov.write_at(&p, from)).await?,
                    None if whole => blocking(move || ov.punch(from, to - from)).await?,
                    None => {
                        let zeros = vec![0u8; (to - from) as usize];
                        blocking(move || ov.write_at(&zeros, from)).await?
                    }
                }
            } else {
                // Copy on write: the block as the point has it, changed.
                let old = self.base.read(bs, (be - bs) as u32).await?;
                let mut block = BytesMut::from(&old[..]);
                let at = (from - bs) as usize..(to - bs) as usize;
                match &piece {
                    Some(p) => block[at].copy_from_slice(p),
                    None => block[at].fill(0),
                }
                blocking(move || ov.write_at(&block, bs)).await?;
            }
            self.overlay.mark(b, b);
        }
        Ok(())
    }
}

#[async_trait]
impl Export for OverlayDisk {
    fn name(&self) -> &str {
        self.base.name()
    }

    fn size(&self) -> u64 {
        self.base.size()
    }

    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, ExportError> {
        let mut buf = BytesMut::with_capacity(len as usize);
        for p in self.read_pieces(offset, len).await? {
            match p {
                ReadPiece::Data(b) => buf.extend_from_slice(&b),
                ReadPiece::Zeroes(n) => buf.resize(buf.len() + n as usize, 0),
            }
        }
        Ok(buf.freeze())
    }

    async fn read_pieces(&self, offset: u64, len: u32) -> Result<Vec<ReadPiece>, ExportError> {
        let mut out = Vec::new();
        for (r, inside) in self.runs(offset, offset + u64::from(len)) {
            let n = (r.end - r.start) as u32;
            if inside {
                let ov = self.overlay.clone();
                let buf = blocking(move || {
                    let mut buf = vec![0u8; n as usize];
                    ov.read_at(&mut buf, r.start).map(|()| buf)
                })
                .await?;
                out.push(ReadPiece::Data(Bytes::from(buf)));
            } else {
                out.extend(self.base.read_pieces(r.start, n).await?);
            }
        }
        Ok(out)
    }

    /// Blocks of the overlay are data; the rest as the point says. At
    /// most about [`MAX_EXTENTS`] per call, as the point's own (the
    /// client asks again from where they stop).
    async fn extents(&self, range: Range<u64>) -> Result<Vec<Extent>, ExportError> {
        let mut out = Vec::new();
        for (r, inside) in self.runs(range.start, range.end) {
            if out.len() >= MAX_EXTENTS {
                break;
            }
            if inside {
                push_extent(
                    &mut out,
                    Extent {
                        len: r.end - r.start,
                        flags: 0,
                    },
                );
                continue;
            }
            let mut at = r.start;
            while at < r.end && out.len() < MAX_EXTENTS {
                let got = self.base.extents(at..r.end).await?;
                let before = at;
                for e in got {
                    let len = e.len.min(r.end - at);
                    push_extent(
                        &mut out,
                        Extent {
                            len,
                            flags: e.flags,
                        },
                    );
                    at += len;
                    if at >= r.end {
                        break;
                    }
                }
                if at == before {
                    return Err(io("no extents"));
                }
            }
        }
        Ok(out)
    }

    fn writable(&self) -> bool {
        true
    }

    async fn write(&self, offset: u64, data: Bytes) -> Result<(), ExportError> {
        self.put(offset, data.len() as u64, Some(data)).await
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u32,
        _may_trim: bool,
    ) -> Result<(), ExportError> {
        self.put(offset, u64::from(len), None).await
    }

    /// Trimmed bytes read as zeros afterwards (the point's data there is
    /// not exposed again: a guest that trimmed a block expects it gone).
    async fn trim(&self, offset: u64, len: u32) -> Result<(), ExportError> {
        self.put(offset, u64::from(len), None).await
    }

    async fn flush(&self) -> Result<(), ExportError> {
        let _one_writer = self.writer.lock().await;
        let ov = self.overlay.clone();
        blocking(move || ov.flush()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ENOSPC and EDQUOT from the overlay's writes, punches and map
    /// writes reach the client as ENOSPC; other errors as EIO.
    #[test]
    fn a_full_overlay_filesystem_is_no_space_not_an_io_error() {
        use rustix::io::Errno;
        for code in [Errno::NOSPC.raw_os_error(), Errno::DQUOT.raw_os_error()] {
            let e = from_io(std::io::Error::from_raw_os_error(code));
            assert!(matches!(e, ExportError::NoSpace(_)), "{code}: {e:?}");
        }
        let e = from_io(std::io::Error::from_raw_os_error(5));
        assert!(matches!(e, ExportError::Io(_)), "{e:?}");
    }
}
