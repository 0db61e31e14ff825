//! Which referenced chunks the index lacks, in bounded memory, and where
//! the missing and bad ones lie in the points' nodes.
//!
//! The referenced chunks are 8-byte id prefixes in a sorted
//! [`SpilledSet`]; the index is walked once in id order
//! ([`crate::placement::Placement::walk_ids`]) beside it. A prefix no
//! index entry (in a listed pack) has is missing; that is exact for the
//! chunks reported (no present chunk has the prefix). A missing chunk
//! whose prefix another, stored chunk shares passes unseen: at 200 M
//! chunks about one in 10^11.

use std::collections::{BTreeSet, HashMap, HashSet};

use futures::StreamExt;

use super::spilled_set::SpilledSet;
use super::{FETCHES, NodeDamage, chunk_damage, prefix};
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::repo::Repository;

/// The referenced prefixes in `refs` that no index entry in a listed
/// pack has, sorted.
pub async fn missing(repo: &Repository, refs: &SpilledSet) -> Result<Vec<u64>> {
    // An index object replaced by a sweep while read: walk again.
    for _ in 0..3 {
        let mut cursor = refs.cursor();
        let mut missing = Vec::new();
        let walked = repo
            .chunks()
            .walk_ids(&mut |id| {
                let q = prefix(id);
                while let Some(r) = cursor.peek()? {
                    if r > q {
                        break;
                    }
                    if r < q {
                        missing.push(r);
                    }
                    cursor.advance();
                }
                Ok(())
            })
            .await?;
        if walked {
            while let Some(r) = cursor.peek()? {
                missing.push(r);
                cursor.advance();
            }
            return Ok(missing);
        }
    }
    Err(Error::Internal(
        "index objects kept changing while verify read them (a gc running?): try again".into(),
    ))
}

pub fn is_missing(missing: &[u64], id: &ObjectId) -> bool {
    missing.binary_search(&prefix(id)).is_ok()
}

/// The chunks [`map_to_nodes`] found in the nodes, each once.
#[derive(Debug, Default)]
pub struct Found {
    pub missing: BTreeSet<ObjectId>,
    pub bad: BTreeSet<ObjectId>,
}

/// Reads the nodes again (all but those damaged whole) and adds to
/// `nodes` the byte ranges of missing and bad chunks.
pub async fn map_to_nodes(
    repo: &Repository,
    todo: &[ObjectId],
    nodes: &mut HashMap<ObjectId, NodeDamage>,
    missing: &[u64],
    bad: &HashMap<ObjectId, String>,
) -> Result<Found> {
    let mut found = Found::default();
    let whole: HashSet<ObjectId> = nodes.keys().copied().collect();
    let mut loaded = futures::stream::iter(todo.iter().filter(|id| !whole.contains(id)))
        .map(|id| async move { repo.load_node(id).await.map(|n| (*id, n)) })
        .buffer_unordered(FETCHES);
    while let Some(r) = loaded.next().await {
        let (id, n) = r?;
        let damage = chunk_damage(&n, |c| {
            if is_missing(missing, c) {
                found.missing.insert(*c);
                Some(format!("chunk {} missing from the repository", c.short()))
            } else {
                let why = bad.get(c).cloned();
                if why.is_some() {
                    found.bad.insert(*c);
                }
                why
            }
        });
        if !damage.is_empty() {
            nodes.entry(id).or_default().extend(damage);
        }
    }
    Ok(found)
}

#[cfg(test)]
#[path = "chunks_tests.rs"]
mod tests;
