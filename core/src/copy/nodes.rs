//! Copying a point's nodes, a batch at a time, and the chunks they need
//! that the target lacks.
//!
//! The order that makes a copy safe to interrupt and re-run: a node is
//! put (create-only) only after every chunk it names is findable in the
//! target (in a pack the target's index names, or in one of this
//! session's packs whose index object was written), and the manifest
//! comes last. A killed copy leaves packs no index names (orphans for
//! gc) and whole nodes; a re-run skips what is there.
//!
//! A node found in the target is trusted unread only if a point of the
//! target that the session pinned references it (committed points'
//! chunks are findable, and the pin keeps them). Any other node there may
//! be a killed backup's, put before its chunks were stored: its chunks
//! are looked up like a new node's, and only the node's put is skipped.
//!
//! What the target records as damaged (`damage/`) is never relied on: a
//! node with a record is put again over it from the source, a chunk with
//! one is copied again into a new pack (the index then has a good place
//! for it), and the records go once the point is committed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{CopyCounts, Run, in_source};
use crate::backend::PutMode;
use crate::damage::{Health, KnownDamage};
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;
use crate::lease::ObjectRef;
use crate::manifest::Manifest;
use crate::placement::session::{DiskPacks, Found, SessionPacks};
use crate::repo::{Repository, Stored, put_once};
use crate::session::Session;

/// Node requests (HEAD, GET, PUT) in flight at once.
const NODE_REQUESTS: usize = 16;
/// Nodes waiting for their chunks' index object before they are put
/// (their stored bytes; also bounded by [`PENDING_BYTES`]). Each flush
/// seals the open pack and writes an index object, so this also bounds
/// how many small packs and index objects a copy makes.
pub(super) const PENDING_NODES: usize = 4096;
/// Stored bytes of waiting nodes that also make a flush. A node is a few
/// KiB at 1 MiB segments of 16 KiB chunks, but ~40 KiB at 64 MiB segments
/// of 64 KiB chunks, and up to `node::max_stored` in a small-chunk
/// repository or from a hostile source: [`PENDING_NODES`] of those alone
/// was ~160 MiB to GiBs (found by review).
const PENDING_BYTES: usize = 64 << 20;

#[cfg(test)]
thread_local! {
    /// [`PENDING_BYTES`] as a test sets it (tokio's test runtime runs
    /// the copy on the test's thread).
    pub(super) static PENDING_BYTES_CAP: std::cell::Cell<usize> =
        const { std::cell::Cell::new(PENDING_BYTES) };
}

/// [`PENDING_BYTES`], or a test's cap.
pub(super) fn pending_bytes_cap() -> usize {
    #[cfg(test)]
    return PENDING_BYTES_CAP.with(|c| c.get());
    #[cfg(not(test))]
    PENDING_BYTES
}

/// Chunk ids remembered as handed to this session's packs (then
/// forgotten: a chunk met again is copied again, waste but never a
/// missing chunk).
const SENT_CAP: usize = 1 << 20;

/// One point's copy into the target: its pack writer, its nodes waiting
/// for their index, and what it did.
pub(super) struct Copier<'a> {
    run: &'a Run<'a>,
    packs: Arc<SessionPacks>,
    disk: Option<DiskPacks>,
    /// Nodes the session's pinned reference point references, with the
    /// length of the segments they cover there.
    trusted: HashMap<ObjectId, u64>,
    /// The target's damage records.
    known: KnownDamage,
    /// Nodes to put once their chunks are findable, and whether over a
    /// copy recorded as damaged.
    pending: Vec<(ObjectId, Bytes, bool)>,
    /// Their stored bytes.
    pending_bytes: usize,
    /// Keys of objects stored again over recorded damage: their records
    /// can go once the point is committed.
    pub replaced: Vec<String>,
    sent: HashSet<ObjectId>,
    /// Packs already recorded as the lease's dependencies.
    dep_packs: HashSet<ObjectId>,
    pub counts: CopyCounts,
}

impl<'a> Copier<'a> {
    pub fn new(
        run: &'a Run<'a>,
        packs: Arc<SessionPacks>,
        mut trusted: HashMap<ObjectId, u64>,
        known: KnownDamage,
    ) -> Self {
        // While a chunk has a record, a trusted node may name it: look at
        // every node (as a backup fetches every reused parent node then).
        if !known.chunks.is_empty() {
            trusted.clear();
        }
        trusted.retain(|n, _| !known.nodes.contains(n));
        Copier {
            run,
            packs,
            disk: None,
            trusted,
            known,
            pending: Vec::new(),
            pending_bytes: 0,
            replaced: Vec::new(),
            sent: HashSet::new(),
            dep_packs: HashSet::new(),
            counts: CopyCounts::default(),
        }
    }

    /// Copies the nodes `ids` (distinct pairs of a node and the length
    /// of a segment it is used for) that the target lacks, with the chunks
    /// they need; puts them at the next [`Copier::flush`]. A node must
    /// cover its segment, as restore requires: one used at another
    /// length than the reference point uses it is fetched and checked,
    /// and fails there as the source's damage.
    pub async fn batch(&mut self, session: &Session, ids: &[(ObjectId, u64)]) -> Result<()> {
        let mut check = Vec::new();
        for &(id, len) in ids {
            if self.trusted.get(&id) == Some(&len) {
                self.counts.nodes_present += 1;
            } else {
                check.push((id, len));
            }
        }
        let target = self.run.target.backend();
        let there: Vec<bool> = futures::stream::iter(&check)
            .map(|(id, _)| async move { Ok::<_, Error>(target.exists(&keys::node(id)).await?) })
            .buffered(NODE_REQUESTS)
            .try_collect()
            .await?;
        let source = self.run.source;
        let loaded: Vec<(ObjectId, Bytes, Vec<ObjectId>)> = futures::stream::iter(&check)
            .map(|&(id, len)| async move {
                let key = keys::node(&id);
                let stored = source
                    .backend()
                    .get_at_most(&key, source.max_node())
                    .await
                    .map_err(|e| in_source(source, crate::repo::missing(e, &key)))?;
                // Checked before anything relies on it: it opens, decodes
                // to a node of these constants, hashes to its id and
                // covers its segment.
                let node = source
                    .decode_segment_node(&id, &stored, len)
                    .map_err(|e| in_source(source, e))?;
                Ok::<_, Error>((id, stored, node.chunk_ids().collect()))
            })
            .buffered(NODE_REQUESTS)
            .try_collect()
            .await?;
        let mut chunks: Vec<ObjectId> = loaded.iter().flat_map(|(_, _, c)| c.clone()).collect();
        chunks.sort_unstable();
        chunks.dedup();
        self.copy_chunks(session, chunks).await?;
        for ((id, stored, _), there) in loaded.into_iter().zip(there) {
            self.counts.bytes_read += stored.len() as u64;
            let damaged = self.known.nodes.contains(&id);
            if there && !damaged {
                // Not ours, not pinned: relied on from now on.
                session.depend([ObjectRef::Node(id)]);
                self.counts.nodes_present += 1;
            } else {
                self.pending_bytes += stored.len();
                self.pending.push((id, stored, there && damaged));
            }
        }
        if self.pending.len() >= PENDING_NODES || self.pending_bytes >= pending_bytes_cap() {
            self.flush(session).await?;
        }
        Ok(())
    }

    /// Copies the chunks among `ids` (sorted, distinct) that the target
    /// does not have; records the target's packs it relies on.
    async fn copy_chunks(&mut self, session: &Session, mut ids: Vec<ObjectId>) -> Result<()> {
        ids.retain(|id| !self.sent.contains(id));
        let found = self.packs.find(&ids).await?;
        let mut new = Vec::new();
        for (id, f) in ids.into_iter().zip(found) {
            if self.known.chunks.contains(&id) {
                // Its place in the index may be the damaged copy.
                self.replaced.push(keys::chunk(&id));
                if !matches!(f, Found::Own) {
                    new.push(id);
                }
                continue;
            }
            match f {
                Found::New => new.push(id),
                Found::Own => {}
                Found::In(pack) => {
                    self.counts.chunks_present += 1;
                    if self.dep_packs.insert(pack) {
                        session.depend([ObjectRef::Pack(pack)]);
                    }
                }
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let disk = self.disk.get_or_insert_with(|| self.packs.disk());
        let moved = self
            .run
            .source_chunks
            .transfer(self.run.source_index().await?, &new, disk)
            .await
            .map_err(|e| in_source(self.run.source, e))?;
        self.counts.chunks_copied += moved.chunks;
        self.counts.bytes_read += moved.bytes_read;
        self.run.progress.add_transferred(moved.bytes_read);
        if self.sent.len() + new.len() > SENT_CAP {
            self.sent.clear();
        }
        self.sent.extend(new);
        Ok(())
    }

    /// Stores the open pack, writes the index object of the session's
    /// packs, then puts the nodes waiting for it (create-only).
    pub async fn flush(&mut self, session: &Session) -> Result<()> {
        if let Some(disk) = self.disk.take() {
            let stored = disk.finish().await?;
            self.counts.packs_written += stored.packs;
            self.counts.bytes_stored += stored.bytes;
            self.run.progress.add_transferred(stored.bytes);
        }
        self.packs.finish().await?;
        session.depend(self.packs.take_existed());
        let target = self.run.target;
        self.pending_bytes = 0;
        let put: Vec<(ObjectId, Stored, u64, bool)> =
            futures::stream::iter(std::mem::take(&mut self.pending))
                .map(|(id, stored, over)| async move {
                    let len = stored.len() as u64;
                    let r = match over {
                        true => put_over_damage(target, &id, stored).await?,
                        false => put_once(&**target.backend(), &keys::node(&id), stored).await?,
                    };
                    Ok::<_, Error>((id, r, len, over))
                })
                .buffer_unordered(NODE_REQUESTS)
                .try_collect()
                .await?;
        for (id, stored, len, over) in put {
            if over {
                // Repair may remove it meanwhile, as for a backup.
                session.depend([ObjectRef::Node(id)]);
                self.replaced.push(keys::node(&id));
            }
            match stored {
                Stored::New => {
                    self.counts.nodes_copied += 1;
                    self.counts.bytes_stored += len;
                }
                // Another writer put it meanwhile: relied on, not written.
                Stored::Existed => {
                    self.counts.nodes_present += 1;
                    session.depend([ObjectRef::Node(id)]);
                }
            }
        }
        Ok(())
    }
}

/// The nodes of `reference` with the length of the segment each covers
/// there; a node it uses at two lengths (damage in it) is not trusted.
pub(super) fn trusted_nodes(reference: Option<&Manifest>) -> HashMap<ObjectId, u64> {
    let mut out = HashMap::new();
    let mut conflicting = HashSet::new();
    let disks = reference.iter().flat_map(|r| r.disks.iter());
    for (node, len) in disks.flat_map(|d| d.segment_nodes()) {
        if *out.entry(node).or_insert(len) != len {
            conflicting.insert(node);
        }
    }
    out.retain(|n, _| !conflicting.contains(n));
    out
}

/// Puts a node over a copy recorded as damaged (its id fixes the right
/// bytes). Credentials that may not overwrite (a backup role) fall back to
/// a create-only put, and rely on what is there only if it decodes and
/// hashes to its id (the record was stale), as a backup does.
async fn put_over_damage(target: &Repository, id: &ObjectId, stored: Bytes) -> Result<Stored> {
    let key = keys::node(id);
    match target
        .backend()
        .put(&key, stored.clone(), PutMode::Overwrite)
        .await
    {
        Ok(()) => Ok(Stored::New),
        Err(e) if e.is_permission_denied() => {
            match put_once(&**target.backend(), &key, stored).await? {
                Stored::New => Ok(Stored::New),
                Stored::Existed => match target.check_node(id).await? {
                    Health::Sound => Ok(Stored::Existed),
                    _ => Err(e.into()),
                },
            }
        }
        Err(e) => Err(e.into()),
    }
}
