//! A parent is never trusted blindly: before a backup reuses or re-chunks
//! from a parent's node, the node is fetched and checked against its id. A
//! segment whose parent node is missing or damaged is read and stored in
//! full instead, so the new point does not inherit the damage.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};

use super::plan::{DiskPlan, SegmentPlan, data_bytes};
use crate::error::Result;
use crate::id::ObjectId;
use crate::repo::Repository;

/// Node fetches in flight.
const FETCHES: usize = 32;

/// Replaces plans that rely on a damaged parent node by full reads, and
/// notes the data bytes of the sound ones (`DiskPlan::parent_data`);
/// returns how many segments were affected, and the damaged nodes (to be
/// replaced if the backup produces them again).
pub async fn drop_damaged_parents(
    repo: &Repository,
    plan: &mut DiskPlan,
) -> Result<(u64, HashSet<ObjectId>)> {
    let used: HashSet<ObjectId> = plan.segments.iter().filter_map(relied_on).collect();
    let checked: Vec<(ObjectId, Option<u64>)> = futures::stream::iter(used)
        .map(|id| async move {
            match repo.load_node(&id).await {
                Ok(n) => Ok((id, Some(data_bytes(&n.entries)))),
                Err(e) if e.is_damage() => Ok((id, None)),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(FETCHES)
        .try_collect()
        .await?;
    let mut damaged = HashSet::new();
    for (id, data) in checked {
        match data {
            Some(d) => {
                plan.parent_data.insert(id, d);
            }
            None => {
                damaged.insert(id);
            }
        }
    }
    let mut affected = 0;
    for s in &mut plan.segments {
        if relied_on(s).is_some_and(|n| damaged.contains(&n)) {
            *s = SegmentPlan::Full(None);
            affected += 1;
        }
    }
    Ok((affected, damaged))
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
