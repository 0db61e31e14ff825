//! What a backup checks of its parent before relying on it, at a cost that
//! follows what changed rather than the disk's size.
//!
//! A segment the change source calls unchanged reuses the parent's node id
//! unread; a touched one is re-chunked from the parent's node. The backup
//! must never rely on a node that is missing or damaged, or that names a
//! chunk recorded as damaged: such a segment is read and stored in full
//! instead, so the new point does not inherit the damage (and the damaged
//! object is stored over). How that holds without fetching every reused
//! node (which cost one GET per segment: ~131 k for a 2 TiB disk):
//!
//! - **Missing**: a node a committed point references is never deleted by
//!   gc, and the session's lease names the parent point, so a sweep that
//!   runs meanwhile keeps it too (see "Concurrency" in docs/design.md).
//!   `repair` removes damaged nodes, and keeps their damage records until
//!   a backup stores them again; `verify` records the nodes it finds
//!   missing (lost outside xfull). Both are then known damage (below).
//! - **Known damage**: objects met damaged by verify, restore, serve or a
//!   backup carry damage records (`crate::damage`), read at the start of
//!   every backup. A relied-on node with a record is never reused. While
//!   any *chunk* has a record, every relied-on node is fetched (as before)
//!   to find the segments naming it: O(disk) only until `repair` clears
//!   the record.
//! - **Damage nobody met yet** (bit rot, tampering): the nodes of touched
//!   segments, of reused ones the audit picked, and of a reused last
//!   segment over zeros are fetched and verified anyway (re-chunking
//!   starts from them, the audit and the zero check of the tail check the
//!   disk against them), and a random [`NODE_SAMPLE_PERCENT`] of the
//!   reused ones (at least one) is fetched and verified on every backup. Damage found
//!   there makes the check fetch all the others too. `verify` (listings)
//!   and `verify --read-data` (contents) are what find it everywhere.
//!
//! A reused segment's data bytes still count in the point's statistics:
//! without its node, they come from the parent's statistics less the data
//! of the parent's segments that are not reused (touched, or dropped by a
//! shrink: those nodes are fetched). A parent whose numbers do not add up
//! (hostile or damaged) makes the check fetch every reused node instead.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{StreamExt, TryStreamExt};

use super::audit::pick;
use super::plan::{DiskPlan, PARENT_NODES_KEPT, SegmentPlan, data_bytes};
use crate::damage::KnownDamage;
use crate::error::Result;
use crate::id::ObjectId;
use crate::manifest::DiskManifest;
use crate::node::Node;
use crate::repo::Repository;

/// Node fetches in flight.
const FETCHES: usize = 32;

/// Share of the reused parent nodes fetched and verified on each backup,
/// in percent (at least one node).
pub const NODE_SAMPLE_PERCENT: f64 = 1.0;

/// What a parent node turned out to be.
enum Parent {
    /// Sound, holding this many data bytes; kept when a worker reads it
    /// (a touched segment re-chunks from it, an audited one is checked
    /// against it).
    Sound(u64, Option<Arc<Node>>),
    /// Sound, but naming a chunk recorded as damaged.
    HoldsDamage,
    Damaged,
}

impl Parent {
    fn sound(&self) -> bool {
        matches!(self, Parent::Sound(..))
    }
}

/// Replaces plans that rely on a damaged parent node (or one naming a
/// chunk recorded as damaged) by full reads, and notes the data bytes of
/// the reused segments (`DiskPlan::reused_data` or, when every node was
/// fetched, `DiskPlan::parent_data`); returns how many segments were
/// affected, and the damaged nodes (to be replaced if the backup produces
/// them again).
pub async fn drop_damaged_parents(
    repo: &Repository,
    plan: &mut DiskPlan,
    known: &KnownDamage,
    parent: Option<&DiskManifest>,
) -> Result<(u64, HashSet<ObjectId>)> {
    let relied: HashSet<ObjectId> = plan.segments.iter().filter_map(relied_on).collect();
    if relied.is_empty() {
        return Ok((0, HashSet::new()));
    }
    let touched: HashSet<ObjectId> = plan.segments.iter().filter_map(rechunked_from).collect();
    // The nodes of reused segments picked for the audit, which reads them
    // anyway: checked here like the touched ones, so that one found
    // unsound is read in full and stored again rather than reused, and
    // kept for the workers so that it is fetched once.
    let audited: HashSet<ObjectId> = plan
        .audit_reused
        .iter()
        .filter_map(|&i| plan.segments.get(i).and_then(relied_on))
        .collect();
    // And the one where the disk's zeros to its end start, for the zero
    // check of the tail.
    let tail = plan
        .tail_zeros
        .and_then(|(k, _)| plan.segments.get(k).and_then(relied_on));
    let keep: HashSet<ObjectId> = touched.union(&audited).copied().chain(tail).collect();
    let reused: Vec<usize> = plan
        .reused()
        .into_iter()
        .filter(|&i| plan.segments[i].reuses_node())
        .collect();
    // The parent's segments past the new end (a shrink): their data leaves.
    let dropped: Vec<ObjectId> = parent
        .map(|p| {
            p.segments
                .iter()
                .skip(plan.segments.len())
                .flatten()
                .copied()
        })
        .into_iter()
        .flatten()
        .collect();
    let sampled = parent.is_some()
        && known.chunks.is_empty()
        && !relied.iter().any(|id| known.nodes.contains(id))
        && dropped.len() <= reused.len();
    let fetch: HashSet<ObjectId> = if sampled {
        let sample = pick(&reused, NODE_SAMPLE_PERCENT)
            .into_iter()
            .filter_map(|i| relied_on(&plan.segments[i]));
        keep.iter().copied().chain(dropped).chain(sample).collect()
    } else {
        relied.clone()
    };
    let mut checked = check(repo, fetch, known, &keep).await?;
    let sum = match (sampled, parent) {
        (true, Some(p)) => reused_by_difference(plan, p, &checked, reused.len()),
        _ => None,
    };
    match sum {
        Some(total) => plan.reused_data = Some(total),
        None => {
            let rest = relied.into_iter().filter(|id| !checked.contains_key(id));
            let more = check(repo, rest.collect(), known, &keep).await?;
            checked.extend(more);
        }
    }
    Ok(apply(plan, checked, sum.is_none()))
}

/// Fetches and checks `ids`, keeping the nodes in `keep` (those read
/// later: touched and audited segments' by the workers, the tail's by the
/// zero check) for them, up to
/// [`PARENT_NODES_KEPT`] entries.
async fn check(
    repo: &Repository,
    ids: HashSet<ObjectId>,
    known: &KnownDamage,
    keep: &HashSet<ObjectId>,
) -> Result<HashMap<ObjectId, Parent>> {
    let kept = AtomicUsize::new(0);
    let kept = &kept;
    futures::stream::iter(ids)
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
                    let keep = keep.contains(&id)
                        && kept.fetch_add(n.entries.len(), Ordering::Relaxed) < PARENT_NODES_KEPT;
                    Ok((id, Parent::Sound(data, keep.then(|| Arc::new(n)))))
                }
                Err(e) if e.is_damage() => Ok((id, Parent::Damaged)),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(FETCHES)
        .try_collect()
        .await
}

/// The data bytes of the reused segments: the parent's, less those of its
/// segments that are not reused. `None` when that cannot be trusted: a
/// checked node was unsound (its segment is read in full and its data is
/// unknown), or the parent's numbers do not add up.
fn reused_by_difference(
    plan: &DiskPlan,
    parent: &DiskManifest,
    checked: &HashMap<ObjectId, Parent>,
    reused: usize,
) -> Option<u64> {
    if !checked.values().all(Parent::sound) {
        return None;
    }
    let mut total = parent.stats.bytes_data;
    for (i, id) in parent.segments.iter().enumerate() {
        let kept = matches!(plan.segments.get(i), Some(SegmentPlan::Reuse(_)));
        if let (false, Some(id)) = (kept, id) {
            let Some(Parent::Sound(d, _)) = checked.get(id) else {
                return None;
            };
            total = total.checked_sub(*d)?;
        }
    }
    // Each reused node holds at least one byte of data (an all-zero
    // segment has no node), at most a segment.
    let reused = reused as u64;
    (reused <= total && total <= reused * parent.segment_size).then_some(total)
}

/// Applies the check: unsound parents' segments are read in full; with
/// `per_node`, each sound node's data bytes are noted for its segments.
fn apply(
    plan: &mut DiskPlan,
    checked: HashMap<ObjectId, Parent>,
    per_node: bool,
) -> (u64, HashSet<ObjectId>) {
    let mut avoid = HashSet::new();
    let mut damaged = HashSet::new();
    for (id, p) in checked {
        match p {
            Parent::Sound(d, node) => {
                if per_node {
                    plan.parent_data.insert(id, d);
                }
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
    (affected, damaged)
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
