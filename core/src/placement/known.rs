//! What a backup session knows to be stored: the repository's index
//! objects plus the packs the session itself stored, so that a chunk
//! already stored (any VM, any earlier backup, or this session's own
//! packs) is found before it is compressed or uploaded.
//!
//! At the end of the session its packs become index objects
//! ([`super::index_write::store_entries`]); until then they are only
//! known here.
//!
//! A pack the index names is HEADed once per session before a chunk in
//! it is reused: the index may name a pack a sweep deleted (packs go
//! before the index objects naming them, and an object a running backup
//! may need is kept). Reusing such a
//! chunk made the backup find the pack gone only at its check before
//! committing, and read the segment from its source again: a live disk
//! then failed the backup. A chunk whose pack is gone is looked for at
//! its other places, then stored anew.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};

use super::index::IndexEntry;
use super::lookup::ChunkIndex;
use super::packer::StoredPack;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;

/// Own chunks remembered at most (about 100 bytes each in the map, so
/// about 100 MB): past it the session forgets its oldest knowledge, and a
/// chunk met again is stored again, in a new pack (waste, never a
/// missing chunk). Its index object still lists every pack.
pub const OWN_CAP: usize = 1 << 20;

/// Packs whose presence is remembered at most (about 50 bytes each):
/// past it the session forgets them and HEADs a pack again.
pub const PACKS_CAP: usize = 1 << 16;

/// HEADs of packs in flight at once.
const HEADS: usize = 16;

/// The repository's index plus this session's stored packs.
#[derive(Debug)]
pub struct KnownChunks {
    index: Arc<ChunkIndex>,
    /// Shared by a backup's workers (lookups) and its uploader (packs
    /// stored): held only for map operations, never across an await.
    own: Mutex<HashMap<ObjectId, IndexEntry>>,
    /// Packs the index names, HEADed: whether each was there.
    packs: Mutex<HashMap<ObjectId, bool>>,
}

impl KnownChunks {
    /// See [`ChunkIndex::damage_seen`].
    pub fn index_damage(&self) -> Option<String> {
        self.index.damage_seen()
    }

    pub fn new(index: Arc<ChunkIndex>) -> Self {
        KnownChunks {
            index,
            own: Mutex::new(HashMap::new()),
            packs: Mutex::new(HashMap::new()),
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
        let hits = self.index.lookup(&asked).await?;
        let there = self.present(hits.iter().flatten().map(|e| e.pack)).await?;
        let mut moved = Vec::new();
        for (k, hit) in rest.into_iter().zip(hits) {
            match hit {
                Some(e) if there.contains(&e.pack) => found[k] = Some(e),
                Some(_) => moved.push(k),
                None => {}
            }
        }
        if moved.is_empty() {
            return Ok(found);
        }
        // The first place's pack is gone: another place may hold the chunk
        // (a sweep moved it into a new pack), else it is stored anew.
        let asked: Vec<ObjectId> = moved.iter().map(|&k| ids[k]).collect();
        let places = self.index.lookup_all(&asked).await?;
        let there = self
            .present(places.iter().flatten().map(|e| e.pack))
            .await?;
        for (k, places) in moved.into_iter().zip(places) {
            found[k] = places.into_iter().find(|e| there.contains(&e.pack));
        }
        Ok(found)
    }

    /// Which of `packs` are in the store: remembered, or HEADed now.
    async fn present(&self, packs: impl Iterator<Item = ObjectId>) -> Result<HashSet<ObjectId>> {
        let mut there = HashSet::new();
        let mut ask = HashSet::new();
        {
            let known = self.packs.lock().unwrap_or_else(|p| p.into_inner());
            for p in packs {
                match known.get(&p) {
                    Some(true) => {
                        there.insert(p);
                    }
                    Some(false) => {}
                    None => {
                        ask.insert(p);
                    }
                }
            }
        }
        if ask.is_empty() {
            return Ok(there);
        }
        let backend = self.index.backend();
        let answers: Vec<(ObjectId, bool)> = futures::stream::iter(ask)
            .map(|p| async move { Ok::<_, Error>((p, backend.exists(&keys::pack(&p)).await?)) })
            .buffer_unordered(HEADS)
            .try_collect()
            .await?;
        let mut known = self.packs.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() + answers.len() > PACKS_CAP {
            known.clear();
        }
        for (p, is) in answers {
            known.insert(p, is);
            if is {
                there.insert(p);
            }
        }
        Ok(there)
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
