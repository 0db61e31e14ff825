//! The objects a point's disks rely on beyond their manifest: their nodes
//! and the packs holding their chunks (every copy: a restore falls back to
//! a second copy when the first is gone or damaged). Read from metadata
//! only, the nodes and the chunk index, which stay hot; for `restore
//! --plan`, `thaw` and object lock's extension.

use futures::StreamExt;

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::progress::Progress;
use crate::repo::Repository;

/// Nodes read at once.
const IN_FLIGHT: usize = 16;

/// Packs the chunks of `nodes` live in, sorted and without repeats.
#[derive(Clone, Debug, Default)]
pub struct NodePacks {
    pub packs: Vec<ObjectId>,
    /// Chunks the index does not know (a restore reports them damaged).
    pub unknown_chunks: u64,
}

/// The sorted, distinct nodes of these disks' segment lists.
pub fn nodes_of<'a>(segments: impl IntoIterator<Item = &'a [Option<ObjectId>]>) -> Vec<ObjectId> {
    let mut nodes: Vec<ObjectId> = segments
        .into_iter()
        .flat_map(|s| s.iter().flatten().copied())
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

/// Reads every node (16 at once) and looks its chunks up in the index.
/// Progress counts nodes; a cancelled `progress` stops it.
pub async fn packs_of_nodes(
    repo: &Repository,
    nodes: &[ObjectId],
    progress: &Progress,
) -> Result<NodePacks> {
    progress.add_total(nodes.len() as u64);
    let placement = repo.chunks();
    let index = placement.open_index().await?;
    let mut out = NodePacks::default();
    let mut unique = 0;
    let mut found = futures::stream::iter(nodes.iter().map(|id| {
        let (placement, index) = (placement.clone(), index.clone());
        async move {
            let node = repo.load_node(id).await?;
            let ids: Vec<ObjectId> = node.chunk_ids().collect();
            let mut packs = Vec::new();
            let unknown = placement.packs_of(&index, &ids, &mut packs).await?;
            Ok::<_, Error>((packs, unknown))
        }
    }))
    .buffer_unordered(IN_FLIGHT);
    while let Some(r) = found.next().await {
        if progress.is_cancelled() {
            return Err(Error::Cancelled {
                cleaned: "nothing to clean up; run it again to finish".into(),
            });
        }
        let (p, u) = r?;
        out.packs.extend(p);
        out.unknown_chunks += u;
        progress.add_done(1);
        // A disk's chunks share few packs: keep the list near its
        // distinct entries, not one per chunk.
        if out.packs.len() > 2 * unique + 4096 {
            out.packs.sort_unstable();
            out.packs.dedup();
            unique = out.packs.len();
        }
    }
    drop(found);
    out.packs.sort_unstable();
    out.packs.dedup();
    Ok(out)
}

/// How many distinct chunks of `nodes` the index places only in `gone`
/// packs, with one such pack; `None` if every chunk has a copy elsewhere
/// (chunks the index does not know are [`packs_of_nodes`]' business).
pub async fn chunks_only_in(
    repo: &Repository,
    nodes: &[ObjectId],
    gone: &std::collections::HashSet<ObjectId>,
    progress: &Progress,
) -> Result<Option<(u64, ObjectId)>> {
    let index = repo.chunks().open_index().await?;
    let mut lost: Vec<(ObjectId, ObjectId)> = Vec::new();
    let mut found = futures::stream::iter(nodes.iter().map(|id| {
        let index = index.clone();
        async move {
            let node = repo.load_node(id).await?;
            let ids: Vec<ObjectId> = node.chunk_ids().collect();
            let places = index.lookup_all(&ids).await?;
            let lost: Vec<(ObjectId, ObjectId)> = (ids.into_iter().zip(places))
                .filter(|(_, p)| !p.is_empty() && p.iter().all(|e| gone.contains(&e.pack)))
                .map(|(chunk, p)| (chunk, p[0].pack))
                .collect();
            Ok::<_, Error>(lost)
        }
    }))
    .buffer_unordered(IN_FLIGHT);
    while let Some(r) = found.next().await {
        if progress.is_cancelled() {
            return Err(Error::Cancelled {
                cleaned: "nothing to clean up; run it again to finish".into(),
            });
        }
        lost.extend(r?);
    }
    drop(found);
    lost.sort_unstable();
    lost.dedup_by_key(|(chunk, _)| *chunk);
    Ok(lost.first().map(|(_, pack)| (lost.len() as u64, *pack)))
}
