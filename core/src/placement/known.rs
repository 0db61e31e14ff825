//! What a backup session knows to be stored: the repository's index
//! objects plus the packs the session itself stored, so that a chunk
//! already stored (any VM, any earlier backup, or this session's own
//! packs) is found before it is compressed or uploaded.
//!
//! At the end of the session its packs become index objects
//! ([`super::index_write::store_entries`]); until then they are only
//! known here.

use super::index::IndexEntry;
use super::lookup::ChunkIndex;
use super::packer::StoredPack;
use crate::error::Result;
use crate::id::ObjectId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Own chunks remembered at most (about 100 bytes each in the map, so
/// about 100 MB): past it the session forgets its oldest knowledge, and a
/// chunk met again is stored again, in a new pack (waste, never a
/// missing chunk). Its index object still lists every pack.
pub const OWN_CAP: usize = 1 << 20;

/// The repository's index plus this session's stored packs.
#[derive(Debug)]
pub struct KnownChunks {
    index: Arc<ChunkIndex>,
    /// Shared by a backup's workers (lookups) and its uploader (packs
    /// stored): held only for map operations, never across an await.
    own: Mutex<HashMap<ObjectId, IndexEntry>>,
}

impl KnownChunks {
    pub fn new(index: Arc<ChunkIndex>) -> Self {
        KnownChunks {
            index,
            own: Mutex::new(HashMap::new()),
        }
    }

    /// Records a pack this session stored: its chunks may be reused now.
    pub fn note_stored(&self, pack: &StoredPack) {
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        if own.len() + pack.entries.len() > OWN_CAP {
            own.clear();
        }
        for &entry in &pack.entries {
            own.insert(
                entry.id,
                IndexEntry {
                    pack: pack.name,
                    entry,
                },
            );
        }
    }

    /// Where each id is stored, if it is (answers in the order given):
    /// this session's packs first, then one batched lookup in the index.
    pub async fn find(&self, ids: &[ObjectId]) -> Result<Vec<Option<IndexEntry>>> {
        let mut found: Vec<Option<IndexEntry>> = {
            let own = self.own.lock().unwrap_or_else(|p| p.into_inner());
            ids.iter().map(|id| own.get(id).copied()).collect()
        };
        let rest: Vec<usize> = (0..ids.len()).filter(|&k| found[k].is_none()).collect();
        if rest.is_empty() {
            return Ok(found);
        }
        let asked: Vec<ObjectId> = rest.iter().map(|&k| ids[k]).collect();
        for (k, hit) in rest.into_iter().zip(self.index.lookup(&asked).await?) {
            found[k] = hit;
        }
        Ok(found)
    }
}

/// The index entries of stored packs.
pub fn entries_of(packs: &[StoredPack]) -> Vec<IndexEntry> {
    packs
        .iter()
        .flat_map(|p| {
            p.entries.iter().map(|&entry| IndexEntry {
                pack: p.name,
                entry,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "known_tests.rs"]
mod tests;
