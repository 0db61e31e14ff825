//! Restoring one segment: fetch its node and chunks, decompress and
//! verify each chunk into the segment's buffer, hash the segment.
//!
//! A failure is reported by what it is: damage (an object missing, or
//! stored bytes that cannot be what the id says) is [`Error::Damaged`];
//! anything else (the store failed or refused, an archived object) is
//! [`Error::Unreadable`], with the same position, because the data may be
//! fine and the operator acts differently. With `ignore_damage`, damage
//! becomes zeros and a [`DamagedRange`] instead.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::DamagedRange;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::image_hash::{self, SegmentHash};
use crate::manifest::DiskManifest;
use crate::node::Entry;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::task::blocking;

/// Chunk fetches in flight per segment.
const FETCHES: usize = 16;

/// A restored segment on its way to the writer.
pub(super) enum Piece {
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

/// One restored segment.
pub(super) struct Segment {
    pub(super) hash: Option<SegmentHash>,
    pub(super) piece: Piece,
    /// Damage written as zeros (only with `ignore_damage`).
    pub(super) damaged: Vec<DamagedRange>,
}

/// What a segment task needs, shared by all of them.
pub(super) struct SegmentCtx {
    pub(super) repo: Repository,
    pub(super) d: Arc<DiskManifest>,
    pub(super) zeros: Arc<[u8]>,
    pub(super) buffers: Arc<BufferPool>,
    pub(super) point: String,
    pub(super) progress: Arc<Progress>,
    pub(super) image_hash: bool,
    pub(super) ignore_damage: bool,
    /// Damaged objects met (key, why), for the damage records.
    pub(super) found: std::sync::Mutex<Vec<(String, String)>>,
}

/// Damaged objects remembered per restore (the rest go unrecorded: a
/// verify finds them).
const FOUND_CAP: usize = 10_000;

/// Segment buffers for reuse: fresh 16 MiB allocations cost page faults
/// and page clearing on every segment, reused ones do not.
#[derive(Default)]
pub(super) struct BufferPool(std::sync::Mutex<Vec<Vec<u8>>>);

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

    pub(super) fn give(&self, buf: Vec<u8>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(buf);
    }
}

/// The stored object a range of the image comes from.
#[derive(Clone, Copy)]
enum Object {
    Node(ObjectId),
    Chunk(ObjectId),
}

impl Object {
    fn key(self) -> String {
        match self {
            Object::Node(id) => crate::keys::node(&id),
            Object::Chunk(id) => crate::keys::chunk(&id),
        }
    }

    /// As [`Error::Damaged`] has always named it (a chunk by its id).
    fn in_error(self) -> String {
        match self {
            Object::Node(id) => format!("node {id}"),
            Object::Chunk(id) => id.to_hex().to_string(),
        }
    }

    fn described(self) -> String {
        match self {
            Object::Node(id) => format!("node {id}"),
            Object::Chunk(id) => format!("chunk {}", id.to_hex()),
        }
    }
}

/// A chunk as fetched.
enum Fetched {
    Zeros,
    Framed(Bytes),
    Damaged(DamagedRange),
}

impl SegmentCtx {
    /// The error for `e` met reading `object` at `offset`.
    fn fail(&self, offset: u64, object: Object, e: Error) -> Error {
        let (point, disk) = (self.point.clone(), self.d.name.to_string());
        if e.is_damage() {
            self.note(object, &e);
            Error::Damaged {
                point,
                disk,
                offset,
                chunk: object.in_error(),
                reason: e.to_string(),
            }
        } else {
            Error::Unreadable {
                point,
                disk,
                offset,
                object: object.described(),
                reason: e.to_string(),
            }
        }
    }

    fn note(&self, object: Object, e: &Error) {
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        if found.len() < FOUND_CAP {
            found.push((object.key(), e.to_string()));
        }
    }

    /// Damage becomes a range of zeros when told to go on; the rest fails.
    fn tolerate(&self, offset: u64, length: u64, object: Object, e: Error) -> Result<DamagedRange> {
        if self.ignore_damage && e.is_damage() {
            self.note(object, &e);
            Ok(DamagedRange {
                offset,
                length,
                object: object.described(),
                reason: e.to_string(),
            })
        } else {
            Err(self.fail(offset, object, e))
        }
    }

    /// The entries of a segment's node, which must cover `len` bytes.
    pub(super) async fn entries(&self, node_id: ObjectId, len: u64) -> Result<Vec<Entry>> {
        let node = self.repo.load_node(&node_id).await?;
        if node.len() != len {
            return Err(Error::Corrupt {
                key: crate::keys::node(&node_id),
                reason: format!("covers {} bytes, the segment has {len}", node.len()),
            });
        }
        Ok(node.entries)
    }

    pub(super) async fn restore_segment(self: Arc<Self>, i: usize) -> Result<Segment> {
        let range = self.d.segment_range(i);
        let len = range.end - range.start;
        let mut damaged = Vec::new();
        let entries = match self.d.segments[i] {
            None => Vec::new(),
            Some(id) => match self.entries(id, len).await {
                Ok(entries) => entries,
                Err(e) => {
                    // No node, no chunk boundaries: the whole segment.
                    damaged.push(self.tolerate(range.start, len, Object::Node(id), e)?);
                    Vec::new()
                }
            },
        };
        let store = self.repo.chunks();
        let raw: Vec<Fetched> = futures::stream::iter(entries.iter().copied())
            .scan(range.start, |off, e| {
                let at = *off;
                *off += e.len();
                futures::future::ready(Some((at, e)))
            })
            .map(|(at, e)| {
                let (store, ctx) = (&store, &self);
                async move {
                    let Some(id) = e.chunk() else {
                        return Ok(Fetched::Zeros);
                    };
                    match store.get_raw(&id).await {
                        Ok(b) => {
                            ctx.progress.add_transferred(b.len() as u64);
                            Ok(Fetched::Framed(b))
                        }
                        Err(err) => ctx
                            .tolerate(at, e.len(), Object::Chunk(id), err)
                            .map(Fetched::Damaged),
                    }
                }
            })
            .buffered(FETCHES)
            .try_collect()
            .await?;
        blocking("restore task", move || {
            self.assemble(range.start, len, entries, raw, damaged)
        })
        .await?
    }

    /// Decompresses, verifies and hashes one segment.
    fn assemble(
        &self,
        start: u64,
        len: u64,
        entries: Vec<Entry>,
        raw: Vec<Fetched>,
        mut damaged: Vec<DamagedRange>,
    ) -> Result<Segment> {
        let (seg, total) = (self.d.segment_size, self.d.size);
        let hash = |data: &[u8]| {
            self.image_hash
                .then(|| image_hash::hash_segment(start, data, seg, total))
        };
        if entries.iter().all(|e| e.chunk().is_none()) {
            let hash = hash(&self.zeros[..len as usize]);
            let piece = Piece::Zeros { start, len };
            return Ok(Segment {
                hash,
                piece,
                damaged,
            });
        }
        let mut buf = self.buffers.take(len as usize);
        let mut off = 0usize;
        for (e, fetched) in entries.iter().zip(raw) {
            let at = start + off as u64;
            let piece = &mut buf[off..off + e.len() as usize];
            match (e.chunk(), fetched) {
                (Some(id), Fetched::Framed(framed)) => {
                    if let Err(err) = self.repo.chunks().open_into(&id, &framed, piece) {
                        match self.tolerate(at, e.len(), Object::Chunk(id), err) {
                            Ok(r) => {
                                piece.fill(0);
                                damaged.push(r);
                            }
                            Err(err) => {
                                self.buffers.give(buf);
                                return Err(err);
                            }
                        }
                    }
                }
                (_, Fetched::Damaged(r)) => {
                    piece.fill(0);
                    damaged.push(r);
                }
                _ => piece.fill(0),
            }
            off += e.len() as usize;
        }
        damaged.sort_by_key(|r| r.offset);
        Ok(Segment {
            hash: hash(&buf),
            piece: Piece::Data {
                start,
                buf,
                entries,
            },
            damaged,
        })
    }
}
