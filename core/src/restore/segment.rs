//! What restoring a segment needs: the context shared by its tasks, the
//! buffers, and how a failure is named (the work itself, in parts, is
//! in `part.rs`).
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
use crate::image_hash::SegmentHash;
use crate::manifest::DiskManifest;
use crate::node::Entry;
use crate::placement::fetch::FetchError;
use crate::placement::fetch_into::{Ask, Got};
use crate::placement::lookup::ChunkIndex;
use crate::progress::Progress;
use crate::repo::Repository;

/// A restored part on its way to the writer.
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

/// One restored part (a whole segment of 16 MiB or less).
pub(super) struct RestoredPart {
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
    /// A part's worth of zeros (read only).
    pub(super) zeros: Arc<Vec<u8>>,
    pub(super) buffers: Arc<BufferPool>,
    pub(super) point: String,
    pub(super) progress: Arc<Progress>,
    pub(super) image_hash: bool,
    pub(super) ignore_damage: bool,
    /// Damaged objects met (key, why), for the damage records.
    pub(super) found: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

/// Damaged objects remembered per restore (the rest go unrecorded: a
/// verify finds them).
const FOUND_CAP: usize = 10_000;

/// Segment buffers for reuse: fresh 16 MiB allocations cost page faults
/// and page clearing on every segment, reused ones do not.
#[derive(Default)]
pub(super) struct BufferPool(std::sync::Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    pub(super) fn take(&self, len: usize) -> Vec<u8> {
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
pub(super) enum Object {
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
pub(super) enum Fetched {
    Zeros,
    /// Opened and checked against its id, in its place in the part.
    Placed,
    /// Opened and checked against its id, in a buffer of its own.
    Plain(Vec<u8>),
    Damaged(DamagedRange),
}

/// A chunk opened by [`SegmentCtx::fetch_into`].
pub(super) enum Opened {
    /// In its slot.
    Placed,
    /// In a buffer of its own.
    Own(Vec<u8>),
}

impl SegmentCtx {
    /// The error for `e` met reading `object` at `offset`.
    pub(super) fn fail(&self, offset: u64, object: Object, e: Error) -> Error {
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
        let key = object.key();
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        // Once per object: a chunk met again (listed twice, or straddling
        // two parts) needs one damage record.
        if found.len() < FOUND_CAP {
            found.entry(key).or_insert_with(|| e.to_string());
        }
    }

    /// Damage becomes a range of zeros when told to go on; the rest fails.
    pub(super) fn tolerate(
        &self,
        offset: u64,
        length: u64,
        object: Object,
        e: Error,
    ) -> Result<DamagedRange> {
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
        Ok(self.repo.load_segment_node(&node_id, len).await?.entries)
    }

    /// The chunks `asks` names, opened into their slots of `buf` where
    /// they have one; a chunk that does not open at the first place the
    /// index gives is fetched again by [`Self::fetch`] (every copy, a
    /// fresh index), which says why if none opens.
    pub(super) async fn fetch_into(
        &self,
        asks: Vec<Ask>,
        buf: Vec<u8>,
    ) -> std::result::Result<(Vec<u8>, Vec<Result<Opened>>), FetchError> {
        let placement = self.repo.chunks();
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let ids: Vec<ObjectId> = asks.iter().map(|a| a.id).collect();
        let placed = placement.fetch_into(&index, asks, buf).await?;
        self.progress.add_transferred(placed.bytes);
        let again: Vec<ObjectId> = (placed.got.iter().zip(&ids))
            .filter(|(g, _)| matches!(g, Got::Failed))
            .map(|(_, id)| *id)
            .collect();
        let refetched = if again.is_empty() {
            Vec::new()
        } else {
            self.fetch(&again).await?
        };
        let mut again = refetched.into_iter();
        let out = placed.got.into_iter().map(|got| match got {
            Got::Placed => Ok(Opened::Placed),
            Got::Own(plain) => Ok(Opened::Own(plain)),
            Got::Failed => match again.next() {
                Some(r) => r.map(Opened::Own),
                None => Err(Error::Internal("a fetch answered too few chunks".into())),
            },
        });
        Ok((placed.buf, out.collect()))
    }

    /// The chunks' plaintext (or why not). A chunk the index cannot give
    /// is looked for once more in the index as it is now: a gc may have
    /// moved it to another pack since this index was opened (a restore or
    /// a server outlives a sweep; the lease keeps the chunk, not its
    /// place).
    pub(super) async fn fetch(
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
}
