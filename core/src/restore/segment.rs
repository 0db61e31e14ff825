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

use super::DamagedRange;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::image_hash::{self, SegmentHash};
use crate::manifest::DiskManifest;
use crate::node::Entry;
use crate::placement::fetch::FetchError;
use crate::placement::lookup::ChunkIndex;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::task::blocking;

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
    /// The chunk index, opened once per restore or served point, and
    /// again when a chunk is not where it says (see `fetch`).
    pub(super) index: std::sync::Mutex<Arc<ChunkIndex>>,
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
    /// Opened and checked against its id.
    Plain(Vec<u8>),
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
        } else if let Error::Backend(crate::backend::BackendError::Archived { .. }) = &e {
            Error::Archived {
                point,
                disk,
                offset,
                object: object.described(),
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
        // One batched lookup and coalesced pack reads for the segment's
        // chunks (each opened and checked against its id there).
        let ids: Vec<ObjectId> = entries.iter().filter_map(|e| e.chunk()).collect();
        let mut opened = match self.fetch(&ids).await {
            Ok(o) => o.into_iter(),
            Err(FetchError {
                chunk: Some(id),
                error,
            }) => {
                // Where the chunk the store failed on lies in the image.
                let mut at = range.start;
                for e in &entries {
                    if e.chunk() == Some(id) {
                        break;
                    }
                    at += e.len();
                }
                return Err(self.fail(at, Object::Chunk(id), error));
            }
            Err(FetchError { chunk: None, error }) => return Err(error),
        };
        let mut at = range.start;
        let mut raw = Vec::with_capacity(entries.len());
        for e in &entries {
            let item = match e.chunk() {
                None => Fetched::Zeros,
                Some(id) => match opened.next() {
                    Some(Ok(plain)) if plain.len() as u64 == e.len() => Fetched::Plain(plain),
                    Some(Ok(plain)) => Fetched::Damaged(self.tolerate(
                        at,
                        e.len(),
                        Object::Chunk(id),
                        Error::corrupt(
                            crate::keys::chunk(&id),
                            format!("holds {} bytes, its node says {}", plain.len(), e.len()),
                        ),
                    )?),
                    Some(Err(err)) => {
                        Fetched::Damaged(self.tolerate(at, e.len(), Object::Chunk(id), err)?)
                    }
                    None => return Err(Error::Internal("a fetch answered too few chunks".into())),
                },
            };
            raw.push(item);
            at += e.len();
        }
        blocking("restore task", move || {
            self.assemble(range.start, len, entries, raw, damaged)
        })
        .await?
    }

    /// The chunks' plaintext (or why not). A chunk the index cannot give
    /// is looked for once more in the index as it is now: a gc may have
    /// moved it to another pack since this index was opened (a restore or
    /// a server outlives a sweep; the lease keeps the chunk, not its
    /// place).
    async fn fetch(
        &self,
        ids: &[ObjectId],
    ) -> std::result::Result<Vec<Result<Vec<u8>>>, FetchError> {
        let placement = self.repo.chunks();
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let fetched = placement.fetch(&index, ids).await?;
        self.progress.add_transferred(fetched.bytes);
        let mut chunks = fetched.chunks;
        let failed: Vec<usize> = (0..ids.len()).filter(|&k| chunks[k].is_err()).collect();
        if failed.is_empty() {
            return Ok(chunks);
        }
        let fresh = placement.open_index().await?;
        *self.index.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        let again: Vec<ObjectId> = failed.iter().map(|&k| ids[k]).collect();
        let refetched = placement.fetch(&fresh, &again).await?;
        self.progress.add_transferred(refetched.bytes);
        for (k, r) in failed.into_iter().zip(refetched.chunks) {
            chunks[k] = r;
        }
        Ok(chunks)
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
            let piece = &mut buf[off..off + e.len() as usize];
            match (e.chunk(), fetched) {
                (Some(_), Fetched::Plain(plain)) => piece.copy_from_slice(&plain),
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
