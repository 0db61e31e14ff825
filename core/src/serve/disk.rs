//! One disk of one point as an NBD [`Export`] (read-only): its size from
//! the manifest, `base:allocation` from the manifest and its nodes, reads
//! fetched on demand a part (at most 16 MiB of a segment) at a time
//! through restore's part reader (every chunk verified), kept in the
//! shared [`PartCache`], with read-ahead for sequential readers.
//!
//! Damage is served as an error for the damaged range only: a read
//! overlapping it gets `EIO` (and one warning per damaged range, naming
//! point, disk, offset and chunk); every other range of the disk reads
//! as usual.

use crate::placement::lookup::ChunkIndex;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;

use super::cache::{Fetched, PartCache};
use super::part::CachedPart;
use crate::manifest::{DiskManifest, Manifest};
use crate::nbd::{Export, ExportError, Extent, ReadPiece, STATE_HOLE, STATE_ZERO, push_extent};
use crate::progress::{Notice, Progress, Warning};
use crate::repo::Repository;
use crate::restore::PartReader;

/// Damaged ranges reported per disk (each once); past this, reads still
/// fail but are not reported again.
const REPORTED_CAP: usize = 10_000;

/// How many segments `extents` looks at per call (the client asks again
/// from where the answer stopped).
const EXTENT_SEGMENTS: usize = 64;

/// How many extents `extents` gives per call, whatever the nodes hold:
/// 256 KiB, and a reply of 128 KiB. Block status is outside the server's
/// memory budget, and nodes of a repository whose configuration claims
/// 64-byte chunks made one request build 4 M extents (64 MiB; review at
/// stop 49). Real nodes merge into far fewer per 64 segments.
pub(super) const MAX_EXTENTS: usize = 16 * 1024;

/// What a warning said of a place: apart, so that a part unreadable a
/// while (a store's error) does not hide damage found there later, at
/// the same offset (review 104.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Report {
    Unreadable,
    Damaged,
}

/// One disk of one point, served read-only.
pub struct PointDisk {
    name: String,
    point: String,
    d: Arc<DiskManifest>,
    reader: Arc<PartReader>,
    cache: Arc<PartCache>,
    owner: u64,
    progress: Arc<Progress>,
    reported: Mutex<HashSet<(Report, u64)>>,
    /// Warnings given so far.
    said: AtomicUsize,
    /// Where the last read ended: a read starting there is sequential.
    last_end: AtomicU64,
    read_ahead: usize,
}

impl std::fmt::Debug for PointDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PointDisk")
            .field("point", &self.point)
            .field("disk", &self.name)
            .finish()
    }
}

impl PointDisk {
    /// Disk `disk` of point `m`, served under the disk's name. Warnings
    /// (damage met) go to `progress`. `read_ahead` parts are fetched
    /// ahead of a sequential reader.
    pub fn new(
        repo: &Repository,
        index: Arc<ChunkIndex>,
        m: &Manifest,
        disk: &str,
        cache: Arc<PartCache>,
        read_ahead: usize,
        progress: Arc<Progress>,
    ) -> crate::Result<PointDisk> {
        let d = Arc::new(m.disk(disk)?.clone());
        let point = m.point_name();
        Ok(PointDisk {
            name: disk.to_string(),
            reader: Arc::new(PartReader::new(repo, index, &point, d.clone())),
            point,
            d,
            owner: cache.owner(),
            cache,
            progress,
            reported: Mutex::default(),
            said: AtomicUsize::new(0),
            last_end: AtomicU64::new(u64::MAX),
            read_ahead,
        })
    }

    /// The point served (`VM@ID`).
    pub fn point(&self) -> &str {
        &self.point
    }

    fn fetch(
        &self,
        k: usize,
    ) -> impl FnOnce() -> futures::future::BoxFuture<'static, Fetched> + use<> {
        let (reader, range) = (self.reader.clone(), self.reader.part_range(k));
        move || {
            async move {
                let data = reader.read_part(k).await.map_err(Arc::new)?;
                Ok(Arc::new(CachedPart::new(
                    range.start,
                    range.end - range.start,
                    data,
                )))
            }
            .boxed()
        }
    }

    async fn part(&self, k: usize) -> Result<Arc<CachedPart>, ExportError> {
        let r = self.reader.part_range(k);
        match self.cache.get((self.owner, k), self.fetch(k)).await {
            Ok(s) => {
                // Read again: unreadable once more is said once more.
                self.readable(r.start);
                Ok(s)
            }
            Err(e) => {
                if self.first_report(Report::Unreadable, r.start) {
                    self.progress
                        .notice(Notice::Warning(Warning::ServedDataUnreadable {
                            point: self.point.clone(),
                            disk: self.name.clone(),
                            offset: r.start,
                            reason: e.to_string(),
                        }));
                }
                Err(ExportError::Io(e.to_string()))
            }
        }
    }

    /// Whether to warn of `what` at `offset`: once per offset and kind
    /// (again for a new unreadable spell), and [`REPORTED_CAP`] times in
    /// all per disk, so that a store failing on and off for weeks does
    /// not grow the warnings without bound (review 109.6).
    fn first_report(&self, what: Report, offset: u64) -> bool {
        let mut seen = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        if self.said.load(Ordering::Relaxed) >= REPORTED_CAP || !seen.insert((what, offset)) {
            return false;
        }
        self.said.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The part at `offset` was read: its unreadable spell is over.
    fn readable(&self, offset: u64) {
        let mut seen = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.is_empty() {
            seen.remove(&(Report::Unreadable, offset));
        }
    }

    /// Starts fetching the parts after `k` for a sequential reader.
    fn read_ahead(&self, k: usize) {
        for next in k + 1..(k + 1 + self.read_ahead).min(self.reader.parts()) {
            // An error is met again, and reported, by the read itself.
            self.cache.prefetch((self.owner, next), self.fetch(next));
        }
    }

    /// The pieces of `offset..offset+len`, or `EIO` naming the first
    /// damaged range met.
    async fn pieces(&self, offset: u64, len: u32) -> Result<Vec<ReadPiece>, ExportError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = offset + u64::from(len);
        let unit = self.reader.part_size();
        let (first, last) = ((offset / unit) as usize, ((end - 1) / unit) as usize);
        let sequential = self.last_end.swap(end, Ordering::Relaxed) == offset;
        if sequential || offset.is_multiple_of(unit) {
            self.read_ahead(last);
        }
        let mut out = Vec::new();
        for k in first..=last {
            let part = self.part(k).await?;
            let (from, to) = (offset.max(part.start), end.min(part.start + part.len));
            if let Some(r) = part.damage_in(from, to) {
                if self.first_report(Report::Damaged, r.offset) {
                    self.progress
                        .notice(Notice::Warning(Warning::ServedDataDamaged {
                            point: self.point.clone(),
                            disk: self.name.clone(),
                            offset: r.offset,
                            length: r.length,
                            object: r.object.clone(),
                            reason: r.reason.clone(),
                        }));
                }
                return Err(ExportError::Io(format!(
                    "point {}, disk {}: damaged data at offset {} ({}): {}",
                    self.point, self.name, r.offset, r.object, r.reason
                )));
            }
            part.pieces(from, to, &mut out);
        }
        Ok(out)
    }

    /// The extents of segment `i` from `from` (inside it).
    async fn segment_extents(&self, i: usize, from: u64, out: &mut Vec<Extent>) {
        let r = self.d.segment_range(i);
        let zero = STATE_HOLE | STATE_ZERO;
        if self.d.segments[i].is_none() {
            return push_extent(
                out,
                Extent {
                    len: r.end - from,
                    flags: zero,
                },
            );
        }
        let entries = match self.reader.entries(i).await {
            Ok(e) => e,
            // A damaged node: data, and reads there say what is wrong.
            Err(_) => {
                return push_extent(
                    out,
                    Extent {
                        len: r.end - from,
                        flags: 0,
                    },
                );
            }
        };
        let mut at = r.start;
        for e in entries {
            if out.len() >= MAX_EXTENTS {
                return;
            }
            let (a, b) = (at.max(from), at + e.len());
            at = b;
            if a < b {
                let flags = if e.chunk().is_none() { zero } else { 0 };
                push_extent(out, Extent { len: b - a, flags });
            }
        }
    }
}

#[async_trait]
impl Export for PointDisk {
    fn name(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.d.size
    }

    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, ExportError> {
        let mut buf = BytesMut::with_capacity(len as usize);
        for p in self.pieces(offset, len).await? {
            match p {
                ReadPiece::Data(b) => buf.extend_from_slice(&b),
                ReadPiece::Zeroes(n) => buf.resize(buf.len() + n as usize, 0),
            }
        }
        Ok(buf.freeze())
    }

    async fn read_pieces(&self, offset: u64, len: u32) -> Result<Vec<ReadPiece>, ExportError> {
        self.pieces(offset, len).await
    }

    async fn extents(&self, range: Range<u64>) -> Result<Vec<Extent>, ExportError> {
        let seg_size = self.d.segment_size;
        let first = (range.start / seg_size) as usize;
        let last = (((range.end - 1) / seg_size) as usize).min(first + EXTENT_SEGMENTS - 1);
        let mut out = Vec::new();
        for i in first..=last {
            if out.len() >= MAX_EXTENTS {
                break;
            }
            let from = range.start.max(self.d.segment_range(i).start);
            self.segment_extents(i, from, &mut out).await;
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
