//! A parent is never trusted blindly: before a backup reuses or re-chunks
//! from a parent's node, the node is fetched and checked against its id. A
//! segment whose parent node is missing or damaged, or names a chunk with a
//! damage record, is read and stored in full instead, so the new point does
//! not inherit the damage (and the damaged chunk is stored over).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{StreamExt, TryStreamExt};

use super::plan::{DiskPlan, PARENT_NODES_KEPT, SegmentPlan, data_bytes};
use crate::damage::KnownDamage;
use crate::error::Result;
use crate::id::ObjectId;
use crate::node::Node;
use crate::repo::Repository;

/// Node fetches in flight.
const FETCHES: usize = 32;

/// What a parent node turned out to be.
enum Parent {
    /// Sound, holding this many data bytes; kept when a touched segment
    /// re-chunks from it.
    Sound(u64, Option<Arc<Node>>),
    /// Sound, but naming a chunk recorded as damaged.
    HoldsDamage,
    Damaged,
}

/// Replaces plans that rely on a damaged parent node (or one naming a
/// chunk recorded as damaged) by full reads, and notes the data bytes of
/// the sound ones (`DiskPlan::parent_data`); returns how many segments
/// were affected, and the damaged nodes (to be replaced if the backup
/// produces them again).
pub async fn drop_damaged_parents(
    repo: &Repository,
    plan: &mut DiskPlan,
    known: &KnownDamage,
) -> Result<(u64, HashSet<ObjectId>)> {
    let used: HashSet<ObjectId> = plan.segments.iter().filter_map(relied_on).collect();
    let touched: HashSet<ObjectId> = plan.segments.iter().filter_map(rechunked_from).collect();
    let kept = AtomicUsize::new(0);
    let (touched, kept) = (&touched, &kept);
    let checked: Vec<(ObjectId, Parent)> = futures::stream::iter(used)
        .map(|id| async move {
            if known.nodes.contains(&id) {
                return Ok((id, Parent::Damaged));
            }
            match repo.load_node(&id).await {
                Ok(n) if n.chunk_ids().any(|c| known.chunks.contains(&c)) => {
                    Ok((id, Parent::HoldsDamage))
                }
                Ok(n) => {
                    let data = data_bytes(&n.entries);
                    let keep = touched.contains(&id)
                        && kept.fetch_add(n.entries.len(), Ordering::Relaxed) < PARENT_NODES_KEPT;
                    Ok((id, Parent::Sound(data, keep.then(|| Arc::new(n)))))
                }
                Err(e) if e.is_damage() => Ok((id, Parent::Damaged)),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(FETCHES)
        .try_collect()
        .await?;
    let mut avoid = HashSet::new();
    let mut damaged = HashSet::new();
    for (id, p) in checked {
        match p {
            Parent::Sound(d, node) => {
                plan.parent_data.insert(id, d);
                if let Some(n) = node {
                    plan.parent_nodes.insert(id, n);
                }
            }
            Parent::HoldsDamage => {
                avoid.insert(id);
            }
            Parent::Damaged => {
                avoid.insert(id);
                damaged.insert(id);
            }
        }
    }
    let mut affected = 0;
    for s in &mut plan.segments {
        if relied_on(s).is_some_and(|n| avoid.contains(&n)) {
            *s = SegmentPlan::Full(None);
            affected += 1;
        }
    }
    Ok((affected, damaged))
}

/// The parent node a touched segment is re-chunked from.
fn rechunked_from(s: &SegmentPlan) -> Option<ObjectId> {
    match s {
        SegmentPlan::Touched { parent, .. } => *parent,
        _ => None,
    }
}

/// The parent node a segment's plan uses without reading the segment
/// whole: reused as is, or re-chunked from.
fn relied_on(s: &SegmentPlan) -> Option<ObjectId> {
    match s {
        SegmentPlan::Reuse(n) => *n,
        SegmentPlan::Touched { parent, .. } => *parent,
        SegmentPlan::Full(_) => None,
    }
}
