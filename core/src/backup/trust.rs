//! What a backup may take as stored, and what it must store again.
//!
//! A backup skips uploading what its parent's nodes list. That is only
//! sound if those objects are really there and whole, and a create-only
//! put answers "already exists" for a damaged copy too. So:
//!
//! - objects with a damage record (`crate::damage`), and parent nodes the
//!   backup found damaged, are stored again over their copies when the
//!   backup produces them;
//! - a full scan reads every byte, so it makes its point whole: it lists
//!   the repository's nodes and indexed chunks (in packs that exist)
//!   first and stores again whatever its point references that is
//!   missing, even where the parent had it. Listing costs one request
//!   per 1,000 nodes and packs plus one read of the index (the merge
//!   verify and gc use, [`crate::placement::Placement::walk_index`]); memory
//!   is 8 bytes per node and, for chunks, at most 64 MiB
//!   ([`SpilledSet`]: 8 M chunks, beyond that sorted local files asked
//!   with one short read each). Whatever the listing misses (an index
//!   object damaged, or replaced by a gc while read, a local file that
//!   cannot be read) is stored anew: that costs uploads, never a point
//!   relying on a lost chunk. A prefix collision can only make a missing
//!   object look present, with odds of about one in 2^64 / objects.

use std::collections::{BTreeSet, HashSet};

use futures::TryStreamExt;

use crate::damage::KnownDamage;
use crate::error::Result;
use crate::id::ObjectId;
use crate::keys;
use crate::placement::lookup::default_cache_dir;
use crate::repo::Repository;
use crate::spilled_set::{self, SpilledSet};

/// The repository's chunks and nodes by the first 8 bytes of their ids.
#[derive(Debug)]
pub struct Present {
    chunks: SpilledSet,
    nodes: Vec<u64>,
}

impl Present {
    /// Lists the stored chunks and nodes.
    pub async fn load(repo: &Repository) -> Result<Present> {
        Present::load_with(repo, spilled_set::DEFAULT_BUDGET).await
    }

    /// [`Present::load`] with the chunks' memory budget given (tests make
    /// it small to take the files' path).
    pub async fn load_with(repo: &Repository, budget: usize) -> Result<Present> {
        let nodes = async {
            let mut v: Vec<u64> = repo
                .backend()
                .list(keys::NODES)
                .try_filter_map(
                    |m| async move { Ok(keys::parse_content(&m.key).map(|id| id.prefix())) },
                )
                .try_collect()
                .await?;
            v.sort_unstable();
            Ok::<_, crate::Error>(v)
        };
        let (chunks, nodes) = futures::try_join!(stored_chunks(repo, budget), nodes)?;
        Ok(Present { chunks, nodes })
    }

    fn has_chunk(&self, id: &ObjectId) -> bool {
        // A local file that cannot be read: store the chunk anew.
        self.chunks.contains_at_random(id.prefix()).unwrap_or(false)
    }

    fn has_node(&self, id: &ObjectId) -> bool {
        self.nodes.binary_search(&id.prefix()).is_ok()
    }
}

/// The prefixes of the chunks the index places in listed packs.
async fn stored_chunks(repo: &Repository, budget: usize) -> Result<SpilledSet> {
    let base = crate::gc::spill::base_dir(default_cache_dir(&repo.config().repo_id));
    let mut rounds = 0;
    loop {
        let mut set = SpilledSet::new(budget, base.clone());
        let walked = repo
            .chunks()
            .walk_index(&BTreeSet::new(), &mut |e| set.insert(e.entry.id.prefix()))
            .await?;
        set.seal()?;
        rounds += 1;
        // A gc replaced index objects while they were read: what they
        // held from there on is in objects written since, so walk again
        // (at most three times; then what was missed is stored anew).
        if !walked.vanished || rounds == 3 {
            return Ok(set);
        }
    }
}

/// The pipeline's view of what is stored.
#[derive(Debug, Default)]
pub struct Trust {
    /// Chunks to store over a damaged copy.
    pub damaged_chunks: HashSet<ObjectId>,
    /// Nodes to store over a damaged copy.
    pub damaged_nodes: HashSet<ObjectId>,
    /// For a full scan: what the repository holds.
    pub present: Option<std::sync::Arc<Present>>,
}

impl Trust {
    pub fn new(known: &KnownDamage, damaged_parents: &HashSet<ObjectId>) -> Trust {
        Trust {
            damaged_chunks: known.chunks.clone(),
            damaged_nodes: known.nodes.union(damaged_parents).copied().collect(),
            present: None,
        }
    }

    /// Is the chunk there and whole, as far as the backup knows?
    pub fn has_chunk(&self, id: &ObjectId) -> bool {
        !self.damaged_chunks.contains(id) && self.present.as_ref().is_none_or(|p| p.has_chunk(id))
    }

    pub fn has_node(&self, id: &ObjectId) -> bool {
        !self.damaged_nodes.contains(id) && self.present.as_ref().is_none_or(|p| p.has_node(id))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::{Backend, PutMode};
    use crate::chunker::ChunkParams;
    use crate::config::RepoConfig;
    use crate::gc::test_packs::store_pack;
    use crate::placement::index::IndexHead;
    use crate::testing::MemBackend;

    fn chunk(i: usize) -> (ObjectId, Vec<u8>) {
        let data: Vec<u8> = (0..1500u32).map(|b| (b as usize * 3 + i) as u8).collect();
        (
            ObjectId::of(&[data.as_slice(), &i.to_le_bytes()].concat()),
            data,
        )
    }

    #[tokio::test]
    async fn a_full_scan_finds_the_stored_chunks_in_memory_and_spilled_not_those_of_a_damaged_object()
     {
        let mem = Arc::new(MemBackend::default());
        let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
        let repo = Repository::init(mem.clone(), cfg).await.unwrap();
        let chunks: Vec<_> = (0..90).map(chunk).collect();
        store_pack(&repo, &chunks[..40]).await;
        let (_, damaged) = store_pack(&repo, &chunks[40..60]).await;
        for budget in [64 << 20, 64] {
            let p = Present::load_with(&repo, budget).await.unwrap();
            for (i, (id, _)) in chunks.iter().enumerate() {
                assert_eq!(p.has_chunk(id), i < 60, "chunk {i} at budget {budget}");
            }
        }
        // An index object that does not read: its chunks are stored anew.
        let mut bytes = mem.get(&damaged).await.unwrap().to_vec();
        let (head, _) = IndexHead::decode_all(repo.codec(), &damaged, &bytes).unwrap();
        bytes[head.block_range(0).start as usize + 40] ^= 1;
        mem.delete_many(std::slice::from_ref(&damaged))
            .await
            .unwrap();
        mem.put(&damaged, bytes.into(), PutMode::Create)
            .await
            .unwrap();
        for budget in [64 << 20, 64] {
            let p = Present::load_with(&repo, budget).await.unwrap();
            for (i, (id, _)) in chunks.iter().enumerate() {
                assert_eq!(p.has_chunk(id), i < 40, "chunk {i} at budget {budget}");
            }
        }
    }
}
