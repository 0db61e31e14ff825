//! After a sweep of the target that may not have protected everything a
//! copy relies on (its lease expired, a pinned point went before the pin
//! was seen), the copy checks every node and chunk the point references
//! in the target and copies again from the source what is gone, as a
//! backup reads its source again (`backup/repair.rs`). Chunks go to new
//! packs whatever the index says (the index may still name a lost copy);
//! a node that is missing or damaged is put over whatever is under its
//! key, after its chunks' index object.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{Run, in_source};
use crate::backend::PutMode;
use crate::error::Result;
use crate::id::ObjectId;
use crate::keys;
use crate::lease::ObjectRef;
use crate::manifest::Manifest;
use crate::placement::lookup::ChunkIndex;
use crate::placement::session::{DiskPacks, SessionPacks};

/// Chunk ids remembered as checked (then forgotten: a re-check is cheap).
const CHECKED_CAP: usize = 1 << 20;
/// Nodes replaced per index object written.
const NODES_PER_FLUSH: usize = 1024;

/// Checks everything `manifest` references in the target; copies again
/// what is gone. Returns the packs and index objects its puts found
/// already stored (named by their bytes, maybe another writer's garbage
/// a sweep is about to delete: the copy's lease must name them), and the
/// packs stored before the copy's session began (`began`) that chunks
/// found rely on (nothing else keeps a sweep from deleting those).
pub(super) async fn ensure_present(
    run: &Run<'_>,
    manifest: &Manifest,
    began: Option<DateTime<Utc>>,
) -> Result<Vec<ObjectRef>> {
    let placement = run.target.chunks();
    // Opened after the sweep this check follows.
    let index = placement.open_index().await?;
    let forced = placement.session(Arc::new(ChunkIndex::empty(run.target.backend().clone())));
    let mut disk = forced.disk();
    let mut replace: Vec<(ObjectId, Bytes)> = Vec::new();
    let mut replace_bytes = 0usize;
    let mut checked = HashSet::new();
    let mut seen = HashSet::new();
    let mut relied = Vec::new();
    // Each node with its segment's length: it must cover it, as restore
    // requires (a node used at two lengths fails at one of them).
    for (node, len) in manifest.disks.iter().flat_map(|d| d.segment_nodes()) {
        if !seen.insert((node, len)) {
            continue;
        }
        let node = &node;
        let chunks: Vec<ObjectId> = match run.target.load_segment_node(node, len).await {
            Ok(n) => n.chunk_ids().collect(),
            Err(e) if e.is_damage() => {
                let (stored, n) = source_node(run, node, len).await?;
                replace_bytes += stored.len();
                replace.push((*node, stored));
                n
            }
            Err(e) => return Err(e),
        };
        if checked.len() > CHECKED_CAP {
            checked.clear();
        }
        let todo: Vec<ObjectId> = chunks.into_iter().filter(|c| checked.insert(*c)).collect();
        let found = placement.presence_in(&index, &todo, began).await?;
        relied.extend(found.relied.into_iter().map(ObjectRef::Pack));
        let absent = found.absent;
        if !absent.is_empty() {
            run.source_chunks
                .transfer(run.source_index().await?, &absent, &mut disk)
                .await
                .map_err(|e| in_source(run.source, e))?;
        }
        // Bounded by their bytes too, as the copy's waiting nodes are.
        if replace.len() >= NODES_PER_FLUSH || replace_bytes >= super::nodes::pending_bytes_cap() {
            replace_bytes = 0;
            flush(run, &forced, &mut disk, &mut replace).await?;
        }
    }
    flush(run, &forced, &mut disk, &mut replace).await?;
    relied.extend(forced.take_existed());
    Ok(relied)
}

/// A node's stored bytes in the source, checked (also that it covers its
/// segment's `len` bytes), and its chunks.
async fn source_node(run: &Run<'_>, id: &ObjectId, len: u64) -> Result<(Bytes, Vec<ObjectId>)> {
    let key = keys::node(id);
    let stored = run
        .source
        .backend()
        .get_at_most(&key, run.source.max_node())
        .await
        .map_err(|e| in_source(run.source, crate::repo::missing(e, &key)))?;
    let node = run
        .source
        .decode_segment_node(id, &stored, len)
        .map_err(|e| in_source(run.source, e))?;
    let chunks = node.chunk_ids().collect();
    Ok((stored, chunks))
}

/// The packs, their index object, then the nodes over what was there.
async fn flush(
    run: &Run<'_>,
    forced: &Arc<SessionPacks>,
    disk: &mut DiskPacks,
    replace: &mut Vec<(ObjectId, Bytes)>,
) -> Result<()> {
    let full = std::mem::replace(disk, forced.disk());
    full.finish().await?;
    forced.finish().await?;
    for (id, stored) in replace.drain(..) {
        run.target
            .backend()
            .put(&keys::node(&id), stored, PutMode::Overwrite)
            .await?;
    }
    Ok(())
}
