//! A parent is never trusted blindly: before a backup reuses or re-chunks
//! from a parent's node, the node is fetched and checked against its id. A
//! segment whose parent node is missing or damaged is read and stored in
//! full instead, so the new point does not inherit the damage.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;

use super::plan::{DiskPlan, SegmentPlan};
use crate::error::Result;
use crate::id::ObjectId;
use crate::repo::Repository;

/// Node fetches in flight.
const FETCHES: usize = 32;

/// Replaces plans that rely on a damaged parent node by full reads;
/// returns how many segments were affected, and the damaged nodes (to be
/// replaced if the backup produces them again).
pub async fn drop_damaged_parents(
    repo: &Repository,
    plan: &mut DiskPlan,
) -> Result<(u64, HashSet<ObjectId>)> {
    let used: HashSet<ObjectId> = plan
        .segments
        .iter()
        .filter_map(|s| match s {
            SegmentPlan::Reuse(n) => *n,
            SegmentPlan::Touched { parent, .. } => *parent,
            SegmentPlan::Full(_) => None,
        })
        .collect();
    let checked: HashMap<ObjectId, bool> = futures::stream::iter(used)
        .map(|id| async move {
            match repo.load_node(&id).await {
                Ok(_) => Ok((id, true)),
                Err(e) if e.is_damage() => Ok((id, false)),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(FETCHES)
        .collect::<Vec<Result<_>>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let mut affected = 0;
    for s in &mut plan.segments {
        let node = match s {
            SegmentPlan::Reuse(n) => *n,
            SegmentPlan::Touched { parent, .. } => *parent,
            SegmentPlan::Full(_) => None,
        };
        if node.is_some_and(|n| checked.get(&n) == Some(&false)) {
            *s = SegmentPlan::Full(None);
            affected += 1;
        }
    }
    let damaged = checked
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(id, _)| id)
        .collect();
    Ok((affected, damaged))
}
