//! Salvage: the chunks of packs whose trailer cannot be read, stored
//! again (`repair`). Such a pack is damage `verify` reports for ever, gc
//! keeps (it cannot tell what is live in it) and `index rebuild` cannot
//! read, so its chunks live only as long as the index entries naming
//! them. Each chunk the index places there is read at that place, opened
//! and checked against its id, and stored again in a new pack with an
//! index object; the caller may then remove the pack (`repair`'s
//! targeted sweep), unless it was made again byte for byte and so healed
//! in place ([`Salvaged::healed`]).
//!
//! Memory: the entries naming those packs (at most [`MAX_ENTRIES`]) and
//! one run of blobs ([`MAX_RUN`]) with its opened chunks at a time.

use std::collections::BTreeSet;

use super::Placement;
use super::index::IndexEntry;
use super::index_write::store_entries;
use super::merge::Merge;
use super::pack::PackEntry;
use super::pack_read::{MAX_GAP, MAX_RUN, ReadRun, coalesce, read_run, read_trailer};
use super::packer::{DEFAULT_TARGET, Packer, SealedPack};
use super::sweep::{list_index, read_head, store};
use crate::backend::{ObjectClass, PutMode, PutOptions};
use crate::damage::Health;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;
use crate::progress::Progress;
use crate::task::blocking;

/// Index entries taken per salvage (80 bytes each: 80 MiB at most). A
/// pack of 32 MiB holds a few hundred to a few thousand chunks (65,536
/// at most, of minimum size); beyond it no pack of the call is whole.
pub const MAX_ENTRIES: usize = 1 << 20;

/// What [`Placement::salvage`] did.
#[derive(Debug, Default)]
pub struct Salvaged {
    /// Packs every chunk of which the index names was read (stored again,
    /// or found damaged): nothing the index knows is left only there.
    pub whole: Vec<ObjectId>,
    /// Chunks stored again.
    pub stored: u64,
    /// Chunks that did not open at their place there, with why.
    pub damaged: Vec<(ObjectId, String)>,
    /// Packs made again byte for byte, written over the damaged ones
    /// (see [`Placement::salvage`]): sound now, not to be removed.
    pub healed: Vec<ObjectId>,
    /// The new packs holding the chunks stored again (each indexed): all
    /// must still be there when a pack of `whole` is removed.
    pub new_packs: Vec<ObjectId>,
}

impl Placement {
    /// Stores again, in new packs, every chunk the index places in
    /// `packs` that opens there (see the module). `level`: the zstd level
    /// of the new blobs. A pack is [`Salvaged::whole`] unless an index
    /// object could not be read to its end (it may name more chunks
    /// there) or the entries exceeded [`MAX_ENTRIES`]. Needs a key that
    /// reads chunk data. Stopped by `progress`, what it stored is indexed
    /// first.
    pub async fn salvage(
        &self,
        packs: &[ObjectId],
        level: i32,
        progress: &Progress,
    ) -> Result<Salvaged> {
        let targets: BTreeSet<ObjectId> = packs.iter().copied().collect();
        let (entries, complete) = self.entries_in(&targets).await?;
        let mut out = Salvaged::default();
        let mut stored_ids = BTreeSet::new();
        let mut packer = Packer::new(self.codec.clone(), DEFAULT_TARGET, 0);
        let runs = coalesce(entries, MAX_GAP, MAX_RUN);
        progress.add_total(runs.len() as u64);
        for run in runs {
            if progress.is_cancelled() {
                self.store_salvaged(packer.seal(), &targets, &mut out)
                    .await?;
                return Err(Error::Cancelled {
                    cleaned: format!(
                        "stopped moving the chunks of packs whose trailer cannot be read after \
                         {} chunk(s); what was stored is indexed",
                        out.stored
                    ),
                });
            }
            let opened = self.read_each_if_need_be(&run, &mut out).await?;
            let codec = self.codec.clone();
            let sealed = blocking("sealing salvaged chunks", move || {
                let seal = |id: &ObjectId, plain: Vec<u8>| -> Result<_> {
                    Ok((*id, plain.len(), codec.encode_chunk(id, &plain, level)?))
                };
                (opened.into_iter())
                    .map(|(e, plain)| (e, plain.and_then(|p| seal(&e.id, p))))
                    .collect::<Vec<_>>()
            })
            .await?;
            for (p, r) in sealed.into_iter() {
                match r {
                    Ok((id, plain_len, blob)) => {
                        stored_ids.insert(id);
                        let full = packer.push_stored(id, plain_len, &blob)?;
                        self.store_salvaged(full, &targets, &mut out).await?;
                        out.stored += 1;
                    }
                    Err(e) if e.is_damage() => out.damaged.push((p.id, e.to_string())),
                    // A key that cannot open chunk data, say.
                    Err(e) => return Err(e),
                }
            }
            progress.add_done(1);
        }
        // The new packs are indexed before the caller removes the old.
        self.store_salvaged(packer.seal(), &targets, &mut out)
            .await?;
        // A chunk with a bad place and a good one there was stored.
        let stored: BTreeSet<ObjectId> = stored_ids;
        out.damaged.retain(|(id, _)| !stored.contains(id));
        if complete {
            let healed: BTreeSet<ObjectId> = out.healed.iter().copied().collect();
            out.whole = targets.difference(&healed).copied().collect();
        }
        Ok(out)
    }

    /// Reads one run; if the pack is missing or shorter than the run (the
    /// run may end in an entry past the pack's end: a wrong or hostile
    /// one), reads its chunks one by one, so that such an entry fails
    /// alone and the others are not taken for damaged (and their only
    /// copy removed). What fails is put in `out.damaged`.
    async fn read_each_if_need_be(
        &self,
        run: &ReadRun,
        out: &mut Salvaged,
    ) -> Result<Vec<(PackEntry, Result<Vec<u8>>)>> {
        match read_run(&*self.backend, &self.codec, run).await {
            Ok(opened) => return Ok(opened),
            Err(e) if e.is_damage() => {}
            Err(e) => return Err(e),
        }
        let mut opened = Vec::new();
        for entry in &run.entries {
            let one = ReadRun {
                pack: run.pack,
                range: entry.range(),
                entries: vec![*entry],
            };
            match read_run(&*self.backend, &self.codec, &one).await {
                Ok(got) => opened.extend(got),
                Err(e) if e.is_damage() => out.damaged.push((entry.id, e.to_string())),
                Err(e) => return Err(e),
            }
        }
        Ok(opened)
    }

    /// Stores a pack of salvaged chunks and indexes it. In a repository
    /// whose packs are named by the hash of their bytes (unencrypted),
    /// chunks sealed again the same way in the same order make the same
    /// pack: a name among `targets` means these are the right bytes for
    /// it, so they replace the damaged ones (it is [`Salvaged::healed`];
    /// put create-only, "already there" was taken for stored and the
    /// damaged pack then removed: every chunk lost, caught by its test).
    /// Any other name taken must hold these blobs (`sweep::store`).
    async fn store_salvaged(
        &self,
        pack: Option<SealedPack>,
        targets: &BTreeSet<ObjectId>,
        out: &mut Salvaged,
    ) -> Result<()> {
        let Some(pack) = pack else {
            return Ok(());
        };
        if targets.contains(&pack.name) {
            let opts = PutOptions {
                class: ObjectClass::Data,
                ..PutOptions::new(PutMode::Overwrite)
            };
            let key = keys::pack(&pack.name);
            self.backend.put_opts(&key, pack.bytes, opts).await?;
            out.healed.push(pack.name);
            return Ok(());
        }
        let stored = store(&*self.backend, &self.codec, pack).await?;
        // Indexed at once: a gc that lists the pack sees it younger than
        // its cutoff or named (an unindexed pack older than the cutoff
        // whose chunks an indexed pack, the damaged one, also holds is an
        // orphan it deletes: found by review, when the index object came
        // at the end of a long salvage).
        let entries = (stored.entries.into_iter())
            .map(|entry| IndexEntry {
                pack: stored.name,
                entry,
            })
            .collect();
        store_entries(&*self.backend, &self.codec, "", entries).await?;
        out.new_packs.push(stored.name);
        Ok(())
    }

    /// Whether the pack `name`'s trailer reads now: [`Health::Damaged`]
    /// while it does not, [`Health::Gone`] once the pack is.
    pub async fn trailer_health(&self, name: &ObjectId) -> Result<Health> {
        let key = keys::pack(name);
        let size = match self.backend.head(&key).await {
            Ok(m) => m.size,
            Err(e) if e.is_not_found() => return Ok(Health::Gone),
            Err(e) => return Err(e.into()),
        };
        match read_trailer(&*self.backend, &self.codec, name, size, self.max_chunk).await {
            Ok(_) => Ok(Health::Sound),
            Err(e) if e.is_damage() => Ok(Health::Damaged(e.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Every index entry placing a chunk in `packs` (every object's, a
    /// place two objects repeat once), and whether every index object
    /// was read to its end and the entries stayed within [`MAX_ENTRIES`].
    async fn entries_in(&self, packs: &BTreeSet<ObjectId>) -> Result<(Vec<IndexEntry>, bool)> {
        let backend = &*self.backend;
        let mut complete = true;
        let mut objects = Vec::new();
        for (name, meta) in list_index(backend).await? {
            match read_head(backend, &self.codec, name, meta).await {
                Ok(o) => objects.push(o),
                Err(e) if e.is_damage() => complete = false,
                Err(e) => return Err(e),
            }
        }
        let mut merge = Merge::new(objects.iter().collect()).with_repeats();
        let mut found = Vec::new();
        loop {
            match merge.next(backend).await {
                Ok(Some(e)) if packs.contains(&e.pack) => {
                    if found.len() == MAX_ENTRIES {
                        complete = false;
                        break;
                    }
                    found.push(e);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                // Gone (a gc replaced it) or damaged: the rest of what
                // it names is unknown.
                Err(e) if e.is_damage() && merge.reading().is_some() => complete = false,
                Err(e) => return Err(e),
            }
        }
        found.sort_unstable_by_key(|e| (e.pack, e.entry));
        found.dedup();
        Ok((found, complete))
    }
}

#[cfg(test)]
#[path = "salvage_tests.rs"]
mod tests;
