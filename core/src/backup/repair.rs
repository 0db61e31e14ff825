//! After a sweep that may not have protected everything a backup uses
//! (its lease expired, or a parent was pruned before it was pinned), the
//! backup checks that every object its point references still exists and
//! stores again, from the source disk, the segments whose objects are gone.
//! Only nodes are read (no chunk), so chunks may live in an archive tier.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::segment::seal_segment;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::lease::ObjectRef;
use crate::manifest::DiskManifest;
use crate::placement::lookup::ChunkIndex;
use crate::repo::Repository;
use crate::source::DiskSource;
use crate::task::blocking;

/// Requests in flight while checking.
const CHECKS: usize = 32;
/// Chunk ids remembered as checked (then forgotten: a re-check is cheap).
const CHECKED_CAP: usize = 1 << 20;

/// What a check found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    pub objects_checked: u64,
    pub segments_restored: u64,
    /// Packs and index objects the stores found already there, and older
    /// packs the chunks found rely on: deps.
    pub existed: Vec<ObjectRef>,
}

/// True when every listed object still exists.
pub async fn all_exist(repo: &Repository, refs: &[ObjectRef]) -> Result<bool> {
    let chunks: Vec<ObjectId> = refs
        .iter()
        .filter_map(|r| match r {
            ObjectRef::Chunk(id) => Some(*id),
            _ => None,
        })
        .collect();
    // Chunks: looked up in the index as it is now, their packs HEADed.
    if !repo.chunks().absent(&chunks).await?.is_empty() {
        return Ok(false);
    }
    let b = repo.backend();
    let missing = futures::stream::iter(refs)
        .filter(|r| futures::future::ready(!matches!(r, ObjectRef::Chunk(_))))
        .map(|r| async move { Ok::<_, Error>(!b.exists(&r.key()).await?) })
        .buffer_unordered(CHECKS)
        .try_any(futures::future::ready)
        .await?;
    Ok(!missing)
}

/// Checks every node and chunk the disks reference, and stores again the
/// segments that lost any. A chunk found in a pack stored before the
/// session began (`began`) makes that pack a dep (`existed`): nothing
/// else keeps a sweep from deleting it before the point is committed.
pub async fn ensure_present(
    repo: &Repository,
    disks: &[(Arc<DiskSource>, &DiskManifest)],
    began: Option<DateTime<Utc>>,
) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    let mut checked: HashSet<ObjectId> = HashSet::new();
    // Chunks stored again by this call: the index opened here does not
    // show them, and two segments may share a lost chunk.
    let mut stored: HashSet<ObjectId> = HashSet::new();
    // Opened after the sweep this check follows.
    let index = repo.chunks().open_index().await?;
    for (source, disk) in disks {
        let mut seen_nodes = HashSet::new();
        for (idx, node) in disk.segments.iter().enumerate() {
            let Some(node) = node else { continue };
            if !seen_nodes.insert(*node) {
                continue;
            }
            let present =
                segment_present(repo, &index, node, began, &mut checked, &mut report).await?;
            if !present {
                // Any segment with this node will do: same node, same bytes.
                if stored.len() > CHECKED_CAP {
                    stored.clear();
                }
                let existed =
                    restore_segment(repo, &index, &mut stored, source, disk, idx, node, began)
                        .await?;
                report.existed.extend(existed);
                report.segments_restored += 1;
            }
        }
    }
    Ok(report)
}

async fn segment_present(
    repo: &Repository,
    index: &ChunkIndex,
    node: &ObjectId,
    began: Option<DateTime<Utc>>,
    checked: &mut HashSet<ObjectId>,
    report: &mut RepairReport,
) -> Result<bool> {
    report.objects_checked += 1;
    let n = match repo.load_node(node).await {
        Ok(n) => n,
        Err(e) if e.is_damage() => return Ok(false),
        Err(e) => return Err(e),
    };
    if checked.len() > CHECKED_CAP {
        checked.clear();
    }
    let todo: Vec<ObjectId> = n.chunk_ids().filter(|c| checked.insert(*c)).collect();
    report.objects_checked += todo.len() as u64;
    let found = repo.chunks().presence_in(index, &todo, began).await?;
    report
        .existed
        .extend(found.relied.into_iter().map(ObjectRef::Pack));
    Ok(found.absent.is_empty())
}

/// Reads one segment from the source again and stores its node and the
/// chunks of it that are missing (in a new pack); returns what the stores
/// found already there and the older packs the chunks found rely on.
/// Only the missing chunks: storing the others too gave each a second
/// copy, which gc keeps as long as the chunk lives (a crash walk found 4
/// copies per chunk after many such backups).
#[allow(clippy::too_many_arguments)]
async fn restore_segment(
    repo: &Repository,
    index: &ChunkIndex,
    stored: &mut HashSet<ObjectId>,
    source: &Arc<DiskSource>,
    disk: &DiskManifest,
    idx: usize,
    expected: &ObjectId,
    began: Option<DateTime<Utc>>,
) -> Result<Vec<ObjectRef>> {
    let range = disk.segment_range(idx);
    let (source, params, level, codec) = (
        source.clone(),
        repo.config().chunking,
        repo.config().zstd_level,
        repo.codec().clone(),
    );
    let expected = *expected;
    let sealed = blocking("re-reading a segment", move || {
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        source.read_at(range.start, &mut buf)?;
        let sealed = seal_segment(&params, &codec, level, &buf, |_| true)?;
        if sealed.node_id != expected {
            return Err(Error::SourceChanged {
                path: source.path().to_path_buf(),
                offset: range.start,
                reason: "a gc removed data this backup relies on, and it cannot be read again; \
                         back up from a snapshot that does not change"
                    .into(),
            });
        }
        Ok::<_, Error>(sealed)
    })
    .await??;
    let (plain, mut chunks) = (sealed.node, sealed.chunks);
    // Looked up in the index opened after the sweep, each pack HEADed: a
    // chunk found is not stored again, its older pack becomes a dep.
    let ids: Vec<ObjectId> = chunks.iter().map(|(id, _, _)| *id).collect();
    let found = repo.chunks().presence_in(index, &ids, began).await?;
    let absent: HashSet<ObjectId> = found.absent.into_iter().collect();
    chunks.retain(|(id, _, _)| absent.contains(id) && stored.insert(*id));
    let mut existed: Vec<ObjectRef> = found.relied.into_iter().map(ObjectRef::Pack).collect();
    // In a new pack and index object, whatever the index says: they are
    // gone where it points.
    existed.extend(repo.chunks().store(chunks).await?);
    // The node was missing or damaged: replace whatever is there.
    repo.replace_node(&expected, &plain).await?;
    Ok(existed)
}

#[cfg(test)]
#[path = "repair_tests.rs"]
mod tests;
