//! `verify --read-data` pack by pack, in memory that does not grow with
//! the repository: every listed pack's trailer is read (a few ahead), the
//! chunks the caller wants (a predicate: verify asks its spilled set of
//! referenced chunks) are read from it in coalesced runs, in offset
//! order through the pack rather than chunk by chunk, and each is opened
//! and checked against its id. Memory: the trailers ahead and the runs in
//! flight ([`super::fetch::RUNS_IN_FLIGHT`] x [`MAX_RUN`]).
//!
//! A copy that does not open is damage only if no copy does: each such
//! chunk is checked again at every place the index gives
//! ([`Placement::check`], as a restore would fall back). A pack whose
//! trailer cannot be read hides which chunks it holds: the index is
//! walked for the wanted chunks it places there, and each is checked at
//! every place.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use futures::{StreamExt, TryStreamExt};

use super::Placement;
use super::fetch::read_runs;
use super::ids::gone;
use super::index::IndexEntry;
use super::pack::PackEntry;
use super::pack_read::{MAX_GAP, MAX_RUN, coalesce, read_trailer};
use super::sweep::list_packs;
use crate::damage::Health;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;
use crate::progress::Progress;

/// Trailers read ahead of the pack being read.
const TRAILERS_AHEAD: usize = 8;

/// Places [`Placement::sound_at`] opens at once.
const SOUND_BATCH: usize = 1024;

/// What [`Placement::sound_at`] found.
#[derive(Debug, Default)]
pub struct Soundness {
    /// Ids with a copy listed (and, asked, opening) at a place given.
    pub sound: HashSet<ObjectId>,
    /// Ids at a place in an archive class, whose soundness is unknown.
    pub archived: HashSet<ObjectId>,
}

/// What [`Placement::check_packs`] found.
#[derive(Debug, Default)]
pub struct PackCheck {
    /// Wanted chunks no copy of which opens, with why.
    pub bad: BTreeMap<ObjectId, String>,
    /// Copies of wanted chunks read (good or bad; a chunk stored twice
    /// is read twice).
    pub chunks: u64,
    /// Bytes read from the store, trailers aside.
    pub bytes: u64,
}

impl Placement {
    /// Reads and checks every copy of every chunk `want` selects, pack by
    /// pack (see the module). Packs deleted since the listing (a gc) are
    /// skipped; one in an archive class is an error that says so.
    pub async fn check_packs(
        &self,
        want: &(dyn Fn(&ObjectId) -> bool + Sync),
        progress: &Progress,
    ) -> Result<PackCheck> {
        let backend = &*self.backend;
        let codec = &self.codec;
        let max = self.max_chunk;
        let mut packs: Vec<(ObjectId, u64)> = list_packs(backend)
            .map_ok(|(name, meta)| (name, meta.size))
            .try_collect()
            .await?;
        packs.sort_unstable();
        let mut out = PackCheck::default();
        // Copies that did not open, and packs whose trailer did not.
        let mut failed: BTreeMap<ObjectId, String> = BTreeMap::new();
        let mut unreadable: BTreeMap<ObjectId, String> = BTreeMap::new();
        let mut trailers = futures::stream::iter(&packs)
            .map(|(name, size)| async move {
                let read = read_trailer(backend, codec, name, *size, max).await;
                let gone = match &read {
                    Err(e) if e.is_damage() => gone(backend, &keys::pack(name)).await,
                    _ => false,
                };
                (*name, read, gone)
            })
            .buffered(TRAILERS_AHEAD);
        while let Some((pack, read, gone)) = trailers.next().await {
            if progress.is_cancelled() {
                return Err(Error::Cancelled {
                    cleaned: "verify stopped (it writes nothing)".into(),
                });
            }
            let entries = match read {
                Ok(entries) => entries,
                Err(_) if gone => continue,
                Err(e) if e.is_damage() => {
                    unreadable.insert(pack, e.to_string());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let wanted: Vec<IndexEntry> = entries
                .into_iter()
                .filter(|e| want(&e.id))
                .map(|entry| IndexEntry { pack, entry })
                .collect();
            progress.add_total(wanted.iter().map(|w| u64::from(w.entry.plain_len)).sum());
            let runs = coalesce(wanted, MAX_GAP, MAX_RUN);
            let mut read = 0;
            let bytes = read_runs(backend, codec, runs, |e, r| {
                read += 1;
                progress.add_done(u64::from(e.plain_len));
                if let Err(why) = r {
                    failed.entry(e.id).or_insert_with(|| why.to_string());
                }
            })
            .await
            .map_err(|f| f.error)?;
            out.chunks += read;
            out.bytes += bytes;
        }
        drop(trailers);
        if !unreadable.is_empty() {
            let mut hidden = Vec::new();
            self.walk_index(&Default::default(), &mut |e| {
                if let Some(why) = unreadable.get(&e.pack)
                    && want(&e.entry.id)
                {
                    let why = format!("its pack {} does not open: {why}", keys::pack(&e.pack));
                    hidden.push((e.entry.id, why));
                }
                Ok(())
            })
            .await?;
            for (id, why) in hidden {
                failed.entry(id).or_insert(why);
            }
        }
        // As a restore would: any copy that opens will do.
        if !failed.is_empty() {
            let index = self.open_index().await?;
            for (id, why) in failed {
                match self.check_in(&index, &id, max as usize).await? {
                    Health::Sound => {}
                    Health::Damaged(_) | Health::Gone => {
                        out.bad.insert(id, why);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Of `places` in the pack `pack` of `size` bytes (as listed), those
    /// its own trailer lists at that place: what `index rebuild` would
    /// find again. A pack gone, or whose trailer does not read (damage),
    /// lists none; any other failure of the store (an archived object)
    /// is an error. One or two ranged GETs.
    pub async fn listed_at(
        &self,
        pack: &ObjectId,
        size: u64,
        places: &[IndexEntry],
    ) -> Result<Vec<IndexEntry>> {
        let read = read_trailer(&*self.backend, &self.codec, pack, size, self.max_chunk).await;
        let trailer: BTreeSet<PackEntry> = match read {
            Ok(entries) => entries.into_iter().collect(),
            Err(e) if e.is_damage() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let listed = |p: &&IndexEntry| p.pack == *pack && trailer.contains(&p.entry);
        Ok(places.iter().filter(listed).copied().collect())
    }

    /// Which chunks have a sound copy at the `places` given: listed there
    /// by its pack's own trailer ([`Placement::listed_at`]; `size`: a
    /// pack's listed size, none for a pack gone) and, with `open`,
    /// opening there ([`Placement::opens_at`], [`SOUND_BATCH`] places at
    /// a time); with `open` false (a key that cannot read chunk data) the
    /// listing is all that is checked. Ids at a place in an archive class,
    /// which cannot be read, are returned apart: what they mean is the
    /// caller's (gc keeps every copy of a keeper there, yet takes an
    /// orphan's cover there as sound). `None` once `cancelled` says so,
    /// which is looked at before each pack and batch.
    pub async fn sound_at(
        &self,
        mut places: Vec<IndexEntry>,
        size: &(dyn Fn(&ObjectId) -> Option<u64> + Sync),
        open: bool,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<Soundness>> {
        let mut out = Soundness::default();
        places.sort_unstable_by_key(|p| (p.pack, p.entry.offset));
        for of_pack in places.chunk_by(|a, b| a.pack == b.pack) {
            if cancelled() {
                return Ok(None);
            }
            let Some(size) = size(&of_pack[0].pack) else {
                continue;
            };
            let listed = match self.listed_at(&of_pack[0].pack, size, of_pack).await {
                Ok(listed) => listed,
                Err(e) if e.is_archived() => {
                    out.archived.extend(of_pack.iter().map(|p| p.entry.id));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !open {
                out.sound.extend(listed.iter().map(|p| p.entry.id));
                continue;
            }
            for (i, batch) in listed.chunks(SOUND_BATCH).enumerate() {
                if cancelled() {
                    return Ok(None);
                }
                match self.opens_at(batch.to_vec()).await {
                    Ok(opened) => out.sound.extend(opened),
                    // An archive tier the listing did not show: the rest
                    // of the pack is in it too.
                    Err(e) if e.is_archived() => {
                        let rest = &listed[i * SOUND_BATCH..];
                        out.archived.extend(rest.iter().map(|p| p.entry.id));
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Some(out))
    }

    /// Reads and opens each chunk at the one place given (coalesced runs,
    /// as a restore reads), and returns the ids whose copy there opened
    /// and matched. A pack gone or cut short, or a blob that does not
    /// open, leaves its ids out; any other failure of the store (one
    /// that is not damage, such as an archived object) is an error.
    pub async fn opens_at(&self, places: Vec<IndexEntry>) -> Result<HashSet<ObjectId>> {
        let mut opened = HashSet::new();
        let runs = coalesce(places, MAX_GAP, MAX_RUN);
        read_runs(&*self.backend, &self.codec, runs, |e, plain| {
            if plain.is_ok() {
                opened.insert(e.id);
            }
        })
        .await
        .map_err(|f| f.error)?;
        Ok(opened)
    }
}

#[cfg(test)]
#[path = "check_packs_tests.rs"]
mod tests;
