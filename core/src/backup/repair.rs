//! After a sweep that may not have protected everything a backup uses
//! (its lease expired, or a parent was pruned before it was pinned), the
//! backup checks that every object its point references still exists and
//! stores again, from the source disk, the segments whose objects are gone.
//! Only nodes are read (no chunk), so chunks may live in an archive tier.

use std::collections::HashSet;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::segment::seal_segment;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::lease::ObjectRef;
use crate::manifest::DiskManifest;
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
}

/// True when every listed object still exists.
pub async fn all_exist(repo: &Repository, refs: &[ObjectRef]) -> Result<bool> {
    let (b, placement) = (repo.backend(), &repo.chunks());
    let missing = futures::stream::iter(refs)
        .map(|r| async move {
            match r {
                ObjectRef::Chunk(id) => placement.exists(id).await.map(|there| !there),
                ObjectRef::Node(_) | ObjectRef::Pack(_) | ObjectRef::Index(_) => {
                    match b.head(&r.key()).await {
                        Ok(_) => Ok(false),
                        Err(e) if e.is_not_found() => Ok(true),
                        Err(e) => Err(Error::from(e)),
                    }
                }
            }
        })
        .buffer_unordered(CHECKS)
        .try_any(futures::future::ready)
        .await?;
    Ok(!missing)
}

/// Checks every node and chunk the disks reference, and stores again the
/// segments that lost any.
pub async fn ensure_present(
    repo: &Repository,
    disks: &[(Arc<DiskSource>, &DiskManifest)],
) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    let mut checked: HashSet<ObjectId> = HashSet::new();
    for (source, disk) in disks {
        let mut seen_nodes = HashSet::new();
        for (idx, node) in disk.segments.iter().enumerate() {
            let Some(node) = node else { continue };
            if !seen_nodes.insert(*node) {
                continue;
            }
            let present = segment_present(repo, node, &mut checked, &mut report).await?;
            if !present {
                // Any segment with this node will do: same node, same bytes.
                restore_segment(repo, source, disk, idx, node).await?;
                report.segments_restored += 1;
            }
        }
    }
    Ok(report)
}

async fn segment_present(
    repo: &Repository,
    node: &ObjectId,
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
    let todo: Vec<ObjectRef> = n
        .chunk_ids()
        .filter(|c| checked.insert(*c))
        .map(ObjectRef::Chunk)
        .collect();
    report.objects_checked += todo.len() as u64;
    all_exist(repo, &todo).await
}

/// Reads one segment from the source again and stores its chunks
/// (create-only: those that survived are left as they are) and its node.
async fn restore_segment(
    repo: &Repository,
    source: &Arc<DiskSource>,
    disk: &DiskManifest,
    idx: usize,
    expected: &ObjectId,
) -> Result<()> {
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
                reason: "a concurrent gc removed data this backup relies on, and it cannot be \
                         read again; back up from a snapshot that does not change"
                    .into(),
            });
        }
        Ok::<_, Error>(sealed)
    })
    .await??;
    let (plain, chunks) = (sealed.node, sealed.chunks);
    let store = repo.chunks();
    futures::stream::iter(chunks)
        .map(|(id, framed)| {
            let store = &store;
            async move { store.put(&id, framed).await }
        })
        .buffer_unordered(CHECKS)
        .try_collect::<Vec<_>>()
        .await?;
    // The node was missing or damaged: replace whatever is there.
    repo.replace_node(&expected, &plain).await?;
    Ok(())
}
