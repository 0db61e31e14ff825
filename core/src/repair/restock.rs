//! Storing again, from disk images the operator names, the chunks and
//! nodes a repository lacks. An image of the disk as it was when a point
//! was taken (the snapshot it was backed up from, or the live disk where
//! it has not changed there) yields the same segments, so the same nodes
//! and chunks: content addressing means any match is the right bytes.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use crate::backup::segment::seal_segment;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::lease::ObjectRef;
use crate::names::{DiskName, VmName};
use crate::placement::lookup::ChunkIndex;
use crate::progress::Progress;
use crate::repo::{Repository, Stored};
use crate::source::DiskSource;
use crate::task::blocking;

/// Segments read and chunked at once (each holds a segment in memory).
const SEGMENTS_IN_FLIGHT: usize = 2;

/// A disk image to take data from: `--vm VM --disk D=PATH`.
#[derive(Debug)]
pub struct RepairSource {
    pub vm: VmName,
    pub disk: DiskName,
    pub source: Arc<DiskSource>,
}

impl RepairSource {
    /// The VM must have a readable point with this disk: anything else is
    /// a mistake in the command line.
    pub(super) async fn check(&self, repo: &Repository) -> Result<()> {
        let points = repo.points_in_order(&self.vm).await?;
        if points.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "--vm {}: the VM has no points",
                self.vm
            )));
        }
        for id in points.iter().rev() {
            match repo.load_summary(&self.vm, id).await {
                Ok(s) if s.disks.iter().any(|d| d.name == self.disk) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.is_damage() => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::InvalidArgument(format!(
            "--disk {}: no readable point of VM {} has a disk of that name",
            self.disk, self.vm
        )))
    }
}

/// Reads each source whole and stores the wanted chunks and nodes it
/// holds (chunks in new packs, nodes create-only). Returns how many
/// chunks and nodes were stored.
pub(super) async fn restock(
    repo: &Repository,
    sources: &[RepairSource],
    wanted: BTreeSet<ObjectRef>,
    progress: &Progress,
) -> Result<(u64, u64)> {
    let mut chunks: BTreeSet<ObjectId> = BTreeSet::new();
    let mut nodes: BTreeSet<ObjectId> = BTreeSet::new();
    for r in wanted {
        match r {
            ObjectRef::Chunk(id) => chunks.insert(id),
            ObjectRef::Node(id) => nodes.insert(id),
            ObjectRef::Pack(_) => continue,
        };
    }
    let (chunks, nodes) = (Arc::new(chunks), Arc::new(nodes));
    progress.add_total(sources.iter().map(|s| s.source.size()).sum());
    let seg = repo.config().segment_size;
    let (params, level) = (repo.config().chunking, repo.config().zstd_level);
    let (mut stored_chunks, mut stored_nodes) = (0, 0);
    // New packs and one index object, whatever the index says: the
    // wanted chunks are missing or damaged where it points.
    let placement = repo.chunks();
    let session = placement.session(Arc::new(ChunkIndex::empty(repo.backend().clone())));
    let mut packs = session.disk();
    let mut done: HashSet<ObjectId> = HashSet::new();
    for s in sources {
        let size = s.source.size();
        let mut sealed = futures::stream::iter((0..size.div_ceil(seg)).map(|i| {
            let (source, chunks, codec) = (s.source.clone(), chunks.clone(), repo.codec().clone());
            let range = i * seg..((i + 1) * seg).min(size);
            blocking("reading a repair source", move || {
                let mut buf = vec![0u8; (range.end - range.start) as usize];
                source.read_at(range.start, &mut buf)?;
                let len = buf.len() as u64;
                Ok::<_, Error>((
                    seal_segment(&params, &codec, level, &buf, |c| chunks.contains(c))?,
                    len,
                ))
            })
        }))
        .buffered(SEGMENTS_IN_FLIGHT);
        while let Some(r) = sealed.next().await {
            if progress.is_cancelled() {
                // What was stored is made findable before stopping.
                packs.finish().await?;
                session.finish().await?;
                return Err(Error::Cancelled {
                    cleaned: format!(
                        "stopped storing data again after {stored_chunks} chunk(s) and \
                         {stored_nodes} node(s); what was stored is sound"
                    ),
                });
            }
            let (segment, len) = r??;
            for (id, plain_len, blob) in segment.chunks {
                if done.insert(id) {
                    packs.add(id, plain_len, &blob).await?;
                    stored_chunks += 1;
                }
            }
            if nodes.contains(&segment.node_id)
                && repo.put_node(&segment.node_id, &segment.node).await?.0 == Stored::New
            {
                stored_nodes += 1;
            }
            progress.add_done(len);
        }
    }
    // Chunks before the nodes that name them are committed by the index.
    packs.finish().await?;
    session.finish().await?;
    Ok((stored_chunks, stored_nodes))
}
