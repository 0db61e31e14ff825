//! Which referenced chunks the index lacks, in bounded memory, and where
//! the missing and bad ones lie in the points' nodes.
//!
//! The referenced chunks are 8-byte id prefixes in a sorted
//! [`SpilledSet`]; the index is walked once in id order
//! ([`crate::placement::Placement::walk_index`]) beside it. A prefix no
//! index entry (in a listed pack) has is missing; that is exact for the
//! chunks reported (no present chunk has the prefix). A missing chunk
//! whose prefix another, stored chunk shares passes unseen: at 200 M
//! chunks about one in 10^11.

use std::collections::{BTreeSet, HashMap, HashSet};

use futures::StreamExt;

use super::{FETCHES, NodeDamage, chunk_damage};
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::repo::Repository;
use crate::spilled_set::SpilledSet;

/// Rounds of looking again in index objects written while the walk
/// read (a gc replacing them) before verify gives up.
const ROUNDS: usize = 3;

/// What [`missing`] found.
#[derive(Debug, Default)]
pub struct Missing {
    /// The referenced prefixes no index entry in a listed pack has,
    /// sorted.
    pub prefixes: Vec<u64>,
    /// Index objects that could not be read (key, why): their entries
    /// did not count.
    pub damaged_index: Vec<(String, String)>,
}

/// The referenced prefixes in `refs` that no index entry in a listed
/// pack has.
pub async fn missing(repo: &Repository, refs: &SpilledSet) -> Result<Missing> {
    let mut cursor = refs.cursor();
    let mut missing = Vec::new();
    let walked = repo
        .chunks()
        .walk_index(&BTreeSet::new(), &mut |e| {
            let q = e.entry.id.prefix();
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
    while let Some(r) = cursor.peek()? {
        missing.push(r);
        cursor.advance();
    }
    let mut read = walked.read;
    let mut vanished = walked.vanished;
    let mut damaged_index = walked.damaged;
    // A gc replaced index objects while they were read: what they held
    // from there on is in objects written since. Only the chunks not
    // found are looked for there (in memory: normally none), so a gc
    // running beside verify costs a read of its new objects, not a walk
    // of the whole index again.
    for _ in 0..ROUNDS {
        if !vanished || missing.is_empty() {
            return Ok(Missing {
                prefixes: missing,
                damaged_index,
            });
        }
        let mut still = Vec::new();
        let mut at = 0;
        let walked = repo
            .chunks()
            .walk_index(&read, &mut |e| {
                let q = e.entry.id.prefix();
                while let Some(&r) = missing.get(at).filter(|r| **r <= q) {
                    if r < q {
                        still.push(r);
                    }
                    at += 1;
                }
                Ok(())
            })
            .await?;
        still.extend_from_slice(&missing[at..]);
        missing = still;
        read.extend(walked.read);
        vanished = walked.vanished;
        damaged_index.extend(walked.damaged);
    }
    if vanished && !missing.is_empty() {
        return Err(Error::Internal(
            "index objects kept changing while verify read them (a gc running?): try again".into(),
        ));
    }
    Ok(Missing {
        prefixes: missing,
        damaged_index,
    })
}

pub fn is_missing(missing: &[u64], id: &ObjectId) -> bool {
    missing.binary_search(&id.prefix()).is_ok()
}

/// The chunks [`map_to_nodes`] found in the nodes, each once.
#[derive(Debug, Default)]
pub struct Found {
    pub missing: BTreeSet<ObjectId>,
    pub bad: BTreeSet<ObjectId>,
    /// Nodes that read well before and no longer do (with why): gone
    /// with a point a prune removed, or damage.
    pub lost: Vec<(ObjectId, String)>,
}

/// Reads the nodes again (all but those damaged whole) and adds to
/// `nodes` the byte ranges of missing and bad chunks. A node that no
/// longer reads is damaged whole in `nodes` and listed in
/// [`Found::lost`]: a prune and a gc may have removed it since, which
/// is for the caller to judge, not a reason to stop.
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
        .map(|id| async move { (*id, repo.load_node(id).await) })
        .buffer_unordered(FETCHES);
    while let Some((id, n)) = loaded.next().await {
        let n = match n {
            Ok(n) => n,
            Err(e) if e.is_damage() => {
                nodes.insert(id, vec![(0..u64::MAX, e.to_string())]);
                found.lost.push((id, e.to_string()));
                continue;
            }
            Err(e) => return Err(e),
        };
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
