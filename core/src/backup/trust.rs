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
//!   missing, even where the parent had it. (Listing costs one request
//!   per 1,000 objects plus the index blocks, and 8 bytes of memory per
//!   object, 32 per chunk while the index is read; a prefix collision can
//!   only make a missing object look present, with odds of about one in
//!   2^64 / objects.)

use std::collections::HashSet;

use futures::TryStreamExt;

use crate::damage::KnownDamage;
use crate::error::Result;
use crate::id::ObjectId;
use crate::keys;
use crate::repo::Repository;

/// The repository's chunks and nodes by the first 8 bytes of their ids.
#[derive(Debug, Default)]
pub struct Present {
    chunks: Vec<u64>,
    nodes: Vec<u64>,
}

fn prefix(id: &ObjectId) -> u64 {
    let b = id.as_bytes();
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

impl Present {
    /// Lists the stored chunks and nodes.
    pub async fn load(repo: &Repository) -> Result<Present> {
        let nodes = async {
            let mut v: Vec<u64> = repo
                .backend()
                .list(keys::NODES)
                .try_filter_map(
                    |m| async move { Ok(keys::parse_content(&m.key).map(|id| prefix(&id))) },
                )
                .try_collect()
                .await?;
            v.sort_unstable();
            Ok::<_, crate::Error>(v)
        };
        let placement = repo.chunks();
        let chunks = async {
            let v: Vec<u64> = placement.list_ids().await?.iter().map(prefix).collect();
            Ok::<_, crate::Error>(v)
        };
        let (chunks, nodes) = futures::try_join!(chunks, nodes)?;
        Ok(Present { chunks, nodes })
    }

    fn has(v: &[u64], id: &ObjectId) -> bool {
        v.binary_search(&prefix(id)).is_ok()
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
        !self.damaged_chunks.contains(id)
            && self
                .present
                .as_ref()
                .is_none_or(|p| Present::has(&p.chunks, id))
    }

    pub fn has_node(&self, id: &ObjectId) -> bool {
        !self.damaged_nodes.contains(id)
            && self
                .present
                .as_ref()
                .is_none_or(|p| Present::has(&p.nodes, id))
    }
}
