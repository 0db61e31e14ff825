//! The sweep over packs (docs/design.md, "Retention and garbage
//! collection", packs): after marking and the node batches,
//!
//! 1. [`Sweep::plan_packs`] lists `packs/` and `index/`, reads every index
//!    object's head and then its entries a few blocks at a time, adds up
//!    each pack's live and dead bytes, reads old orphans' trailers, and
//!    decides each pack's fate ([`super::super::pack_plan`]);
//! 2. [`Sweep::write_replacements`] moves the live blobs of packs to
//!    rewrite into new packs, then writes the surviving entries of every
//!    index object to be replaced, with the new packs' entries, as new
//!    index objects (create-only): all before anything is deleted;
//! 3. [`Sweep::pack_candidates`] lists the dead and rewritten packs, then
//!    the replaced index objects, for the same announced batches as nodes:
//!    at each batch's look a pack a live lease now names as a dependency,
//!    or that holds a chunk marked since, is spared, and the old index
//!    objects naming it stay (`spare.rs`).
//!
//! A crash anywhere leaves every committed point readable: new packs and
//! index objects come before deletions; a pack goes before the index
//! objects naming it, so at worst an index object names a pack that is
//! gone (readers try a chunk's other places, and the next sweep rewrites
//! that object); a new pack whose index object was never written is an
//! orphan whose chunks are all in indexed packs.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{Candidate, Listed, Sweep};
use crate::backend::ObjectMeta;
use crate::crypto::Access;
use crate::error::{Error, Result};
use crate::gc::census::{Census, Decide, Fate};
use crate::gc::copies::Copies;
use crate::gc::orphans::uncovered;
use crate::gc::pack_plan::{PackFate, WasteReason, class_rules};
use crate::gc::unlisted::Unlisted;
use crate::id::ObjectId;
use crate::keys;
use crate::placement::index_write::IndexWriter;
use crate::placement::packer::DEFAULT_TARGET;
use crate::placement::sweep::{
    EntryReader, Repacker, list_index, list_packs, read_head, read_table,
};

impl Sweep {
    fn max_chunk(&self) -> u32 {
        self.repo.config().chunking.max
    }

    /// Steps 4b and 4c, unless a look held the sweep (then nothing of
    /// packs is planned or written).
    pub async fn prepare_packs(&mut self) -> Result<()> {
        if self.prot.hold.is_some() {
            return Ok(());
        }
        self.plan_packs().await?;
        self.write_replacements().await
    }

    /// Step 4b: the census of packs and their fates.
    pub async fn plan_packs(&mut self) -> Result<()> {
        self.stop_if_cancelled().await?;
        let backend = self.repo.backend().clone();
        let mut census = Census::default();
        {
            let mut packs = Box::pin(list_packs(&*backend));
            while let Some((name, meta)) = futures::TryStreamExt::try_next(&mut packs).await? {
                census.listed(
                    name,
                    meta.size,
                    meta.last_modified,
                    meta.storage_class.as_deref(),
                );
            }
        }
        census.listing_done();
        self.report.packs_listed = census.packs.len() as u64;
        let cutoff = self.prot.cutoff;
        let mut unlisted = Unlisted::default();
        for (name, meta) in list_index(&*backend).await? {
            self.stop_if_cancelled().await?;
            let read = async {
                let object = read_head(&*backend, self.repo.codec(), name, meta).await?;
                let table = read_table(&*backend, &object).await?;
                Ok::<_, crate::Error>((object, table))
            };
            match read.await {
                Ok((object, table)) => {
                    // (A younger object may name a pack stored after the
                    // listing: its entries are kept anyway.)
                    if object.meta.last_modified < cutoff {
                        unlisted.note(&census, &table);
                    }
                    census.index(object, &table)
                }
                Err(e) if e.is_damage() => return self.hold_packs(e),
                Err(e) => return Err(e),
            }
        }
        self.report.index_objects_read = census.objects.len() as u64;
        if let Some(name) = unlisted.first_present(&*backend).await? {
            self.census = None;
            self.report.held_by_store = true;
            self.report.held.get_or_insert(format!(
                "the store's listing of packs/ left out {}, which is there: no pack deleted or \
                 rewritten, since the index entries of packs it leaves out would be dropped; a \
                 listing that stays so is the store's to mend (on Ceph RGW: `radosgw-admin \
                 bucket check --fix`)",
                keys::pack(&name)
            ));
            return Ok(());
        }
        self.stop_if_cancelled().await?;
        let mut orphan_live = census
            .read_orphans(
                &*backend,
                self.repo.codec(),
                cutoff,
                self.max_chunk(),
                &self.prot.marks,
            )
            .await?;
        let progress = self.progress.clone();
        let cancelled = || progress.as_ref().is_some_and(|p| p.is_cancelled());
        let mut copies = self.copies_for(&census);
        if let Err(e) = census
            .count(
                &*backend,
                &mut self.prot.marks,
                &mut orphan_live,
                copies.as_mut(),
                &cancelled,
            )
            .await
        {
            if e.is_damage() {
                return self.hold_packs(e);
            }
            return Err(e);
        }
        let ctx = Decide {
            now: self.started,
            cutoff,
            deps: &self.prot.pack_deps,
            rules: self.pack_opts.rules,
            min_storage_days: &self.pack_opts.min_storage_days,
            // Under object lock a partly live pack is retained as long as
            // anything in it is: a rewrite could not delete it.
            max_waste_pct: if self.repo.config().object_lock.is_some() {
                100
            } else {
                self.pack_opts.max_waste_pct
            },
            shard_entries: self.pack_opts.shard_entries,
        };
        // An old orphan goes only if its live chunks' indexed copies are
        // sound (`gc/orphans.rs`).
        let covers = std::mem::take(&mut census.orphan_covers);
        if !covers.is_empty() {
            let size = |name: &ObjectId| census.pack(name).map(|p| p.size);
            let open = self.repo.codec().access() == Access::Full;
            let placement = self.repo.chunks();
            let bad = uncovered(&placement, covers, &size, open, &cancelled).await?;
            orphan_live.extend(bad);
        }
        census.decide(&ctx, &orphan_live);
        if let Some(mut copies) = copies {
            // A copy that stays rather than one that would be moved.
            census.keep_copies_that_stay(&mut copies, &ctx);
            // Fates were decided with every copy but the keepers' as
            // waste; a copy in a pack that goes is dropped only once its
            // keeper opens.
            let goes = |name: &ObjectId| census.goes(name);
            let size = |name: &ObjectId| census.pack(name).map(|p| p.size);
            let back = copies
                .check_keepers(&self.repo.chunks(), &goes, &size, &cancelled)
                .await?;
            self.report.copies_kept_bad_keeper += back.len() as u64;
            census.count_live_again(&back, &ctx);
            self.report.copies_over_cap = copies.over_cap;
            census.copies = copies;
        }
        self.fit_rewrites(&mut census).await?;
        if let Err(e) = census.settle(&*backend, &cancelled).await {
            if e.is_damage() {
                return self.hold_packs(e);
            }
            return Err(e);
        }
        // Mark files that could not be read answered "marked": only
        // garbage kept, but say so.
        if let Some(e) = self.prot.marks.read_error() {
            self.report.held.get_or_insert(format!(
                "gc mark files could not be read ({e}); some garbage kept"
            ));
        }
        self.count_fates(&census);
        self.census = Some(census);
        Ok(())
    }

    /// Copies a rewrite of `pack` left out as they did not open: damage
    /// records for their chunks, so that the next backup of the same data
    /// stores them again should no other copy open. A hint, best effort
    /// (a record refused is not an error of the sweep): the report counts
    /// the copies, and `verify --read-data` finds and records the damage.
    async fn record_left_out(&mut self, pack: &ObjectId, ids: &[ObjectId]) {
        self.report.copies_damaged_left_out += ids.len() as u64;
        for id in ids {
            let why = format!(
                "its copy in {} does not open; gc left it out of a rewrite",
                keys::pack(pack)
            );
            let key = crate::placement::chunk_name(id);
            let _ = crate::damage::record(&self.repo, &key, &why, "gc").await;
        }
    }

    /// Whether this sweep leaves out copies of live chunks held by several
    /// packs (`gc/copies.rs`), and which classes it may read them in: not
    /// with a key that cannot open chunk data, nor under object lock.
    fn copies_for(&self, census: &Census) -> Option<Copies> {
        if self.repo.codec().access() != Access::Full || self.repo.config().object_lock.is_some() {
            return None;
        }
        let days = &self.pack_opts.min_storage_days;
        let readable = std::iter::once(!self.pack_opts.rules.archive)
            .chain(census.classes.iter().map(|c| !class_rules(c, days).archive))
            .collect();
        Some(Copies::new(readable))
    }

    /// Keeps the planned rewrites to what the store has room for, oldest
    /// first as they are written: a rewrite stores the new packs before the
    /// old ones go, so on a nearly full disk it failed, and stopped the
    /// sweep before it deleted anything. The others keep their waste this
    /// time (`WasteReason::NoSpace`); packs with nothing live still go.
    async fn fit_rewrites(&mut self, census: &mut Census) -> Result<()> {
        let Some(room) = self.repo.backend().free_for_data().await? else {
            return Ok(());
        };
        self.report.room_for_data = Some(room);
        // Blobs move verbatim: a new pack is the live blobs plus its
        // trailer (48 bytes a chunk, a sealed table's 46 more), and one
        // MiB of slack for whatever else the sweep stores as data.
        let mut left = room.saturating_sub(1 << 20);
        for k in repacks_oldest_first(census) {
            let p = &mut census.packs[k];
            let need = u64::from(p.live_bytes) + 64 * u64::from(p.live_chunks);
            if need <= left {
                left -= need;
            } else {
                p.fate = Fate::Planned(PackFate::KeepWaste(WasteReason::NoSpace));
                self.report.packs_not_rewritten_no_space += 1;
            }
        }
        Ok(())
    }

    /// A damaged index object: which packs it names, or how much of them
    /// is live, is unknown, so no pack or index object goes this time.
    fn hold_packs(&mut self, e: crate::Error) -> Result<()> {
        self.census = None;
        self.report.held_by_damage = true;
        self.report.held.get_or_insert(format!(
            "{e}; no pack deleted or rewritten (run `xfull index rebuild`, then gc again)"
        ));
        Ok(())
    }

    fn count_fates(&mut self, census: &Census) {
        let r = &mut self.report;
        for p in &census.packs {
            match p.fate {
                Fate::Planned(PackFate::KeepWaste(_)) => {
                    r.waste_bytes_left += u64::from(p.dead_bytes)
                }
                // Unreferenced but recent (a backup's own, maybe).
                Fate::Young if p.live_chunks == 0 => r.young_kept += 1,
                Fate::OrphanLive => r.packs_unindexed_live += 1,
                Fate::Damaged => r.packs_damaged += 1,
                Fate::Archived => r.packs_archived += 1,
                Fate::Orphan => r.packs_orphaned += 1,
                _ => {}
            }
        }
    }

    /// Step 4c: repacks, then the new index objects. Nothing is deleted
    /// yet; a dry run writes nothing.
    pub async fn write_replacements(&mut self) -> Result<()> {
        let Some(mut census) = self.census.take() else {
            return Ok(());
        };
        let result = self.replace_with(&mut census).await;
        self.census = Some(census);
        match result {
            // Stopped between two writes: undo (with the census back).
            Err(Error::Cancelled { .. }) => self.stop_if_cancelled().await,
            // An index object found damaged while merging (out of order,
            // or holding ids outside its shard): nothing is deleted; what
            // was written is orphaned for the next sweep.
            Err(e) if e.is_damage() => self.hold_packs(e),
            other => other,
        }
    }

    async fn replace_with(&mut self, census: &mut Census) -> Result<()> {
        let backend = self.repo.backend().clone();
        let mut writer = IndexWriter::new(backend.clone(), self.repo.codec().clone());
        let repack: Vec<ObjectId> = repacks_oldest_first(census)
            .into_iter()
            .map(|k| census.packs[k].name)
            .collect();
        let mut repacker = Repacker::new(self.repo.codec().clone(), DEFAULT_TARGET);
        let mut taken = HashSet::new();
        for name in repack {
            if self.cancelled() {
                return Err(Error::Cancelled {
                    cleaned: String::new(),
                });
            }
            if self.dry_run {
                let p = census.pack(&name).map_or(0, |p| u64::from(p.live_bytes));
                self.report.live_bytes_moved += p;
                self.report.packs_rewritten += 1;
                continue;
            }
            self.refresh().await?;
            let marks = &self.prot.marks;
            // Copies kept in another pack are left behind; of a chunk
            // with a damaged copy, only a copy that opens is moved.
            let extra = census.copies.extra_in(&name);
            let live = |id: &ObjectId| marks.has_chunk(id) && !extra.contains(id);
            let damaged = &census.copies.damaged;
            let check = |id: &ObjectId| damaged.contains(id);
            // A new pack that fails to store stops the sweep (`?`): it
            // may hold blobs of packs taken before, doomed as rewritten.
            let moved = repacker
                .take(&*backend, &name, self.max_chunk(), live, check)
                .await?;
            if !matches!(moved, Ok(Some(_))) {
                self.keep_other_copies(census, &name, &taken);
            }
            match moved {
                Ok(Some(m)) => {
                    taken.insert(name);
                    self.record_left_out(&name, &m.damaged).await;
                    self.report.packs_rewritten += 1;
                    self.report.live_bytes_moved += m.bytes;
                    for np in m.packs {
                        self.index_new_pack(census, &mut writer, np).await?;
                    }
                }
                // Gone meanwhile: its entries go with the old objects.
                Ok(None) => {
                    if let Some(p) = census.pack_mut(&name) {
                        p.fate = Fate::Gone;
                    }
                }
                // Its trailer is damaged: left as it is (verify names it).
                Err(e) if e.is_damage() => {
                    self.report.packs_damaged += 1;
                    if let Some(p) = census.pack_mut(&name) {
                        p.fate = Fate::Damaged;
                    }
                }
                // In an archive class or tier the sweep was not told of (a
                // lifecycle transition, `prune` on an archive repository):
                // kept with its waste, as the rules keep an archive
                // class's. Failing instead stopped every later sweep
                // before it deleted anything.
                Err(e) if e.is_archived() => {
                    self.report.packs_archived += 1;
                    if let Some(p) = census.pack_mut(&name) {
                        self.report.waste_bytes_left += u64::from(p.dead_bytes);
                        p.fate = Fate::Planned(PackFate::KeepWaste(WasteReason::ArchiveClass));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(np) = repacker.finish(&*backend).await? {
            self.index_new_pack(census, &mut writer, np).await?;
        }
        if self.dry_run {
            return Ok(());
        }
        for k in 0..census.objects.len() {
            if !census.objects[k].replace || census.objects[k].into_shards {
                continue;
            }
            if self.cancelled() {
                // Objects already written (a writer flushes every 2^19
                // entries) are undone with the others.
                census.written.extend(writer.written.iter().cloned());
                return Err(Error::Cancelled {
                    cleaned: String::new(),
                });
            }
            self.refresh().await?;
            let object = census.objects[k].object.clone();
            let young = census.is_young(&census.objects[k]);
            // A young shard object is rewritten in its own shard: its
            // entries come sorted, all inside its prefix.
            let mut own = (young && !object.prefix.is_empty()).then(|| {
                IndexWriter::sharded(
                    backend.clone(),
                    self.repo.codec().clone(),
                    object.prefix.len(),
                )
            });
            let mut reader = EntryReader::new(&object);
            while let Some(run) = reader.next(&*backend).await? {
                for e in run {
                    if !census.survives_in(&e.pack, young) {
                        continue;
                    }
                    match own.as_mut() {
                        Some(w) => w.push(e).await?,
                        None => writer.push(e).await?,
                    }
                }
            }
            if let Some(w) = own {
                let keys = w.finish().await?;
                self.report.index_objects_written += keys.len() as u64;
                census.written.extend(keys);
            }
        }
        let written = writer.finish().await?;
        self.report.index_objects_written += written.len() as u64;
        census.written.extend(written);
        let shards = self.write_shards(census).await?;
        self.report.index_objects_written += shards.len() as u64;
        census.written.extend(shards);
        for o in census.objects.iter_mut() {
            if census.written.contains(&o.object.meta.key) {
                o.replace = false;
            }
        }
        Ok(())
    }

    /// Step 4d: the dead and rewritten packs, then the replaced index
    /// objects, as deletion candidates (judged again at each batch).
    pub fn pack_candidates(&self) -> Vec<Candidate> {
        let Some(census) = &self.census else {
            return Vec::new();
        };
        let meta = |key: String, size, at| ObjectMeta {
            key,
            size,
            last_modified: at,
            storage_class: None,
        };
        let mut out: Vec<Candidate> = census
            .packs
            .iter()
            .filter(|p| p.fate.doomed())
            .map(|p| {
                let m = meta(keys::pack(&p.name), p.size, p.at);
                Candidate::new(Listed::Pack(m, p.name))
            })
            .collect();
        out.extend(
            census
                .objects
                .iter()
                .filter(|o| o.replace)
                .map(|o| Candidate::new(Listed::Index(o.object.meta.clone(), o.object.name))),
        );
        out
    }
}

/// The packs planned for a rewrite (indices into `census.packs`), oldest
/// first, then by name: the order they are rewritten in, so that data
/// stored about the same time shares new packs, and the order in which
/// `fit_rewrites` spends the room.
fn repacks_oldest_first(census: &Census) -> Vec<usize> {
    let mut repack: Vec<(DateTime<Utc>, ObjectId, usize)> = census
        .packs
        .iter()
        .enumerate()
        .filter(|(_, p)| p.fate == Fate::Planned(PackFate::Repack))
        .map(|(k, p)| (p.at, p.name, k))
        .collect();
    repack.sort_unstable();
    repack.into_iter().map(|(_, _, k)| k).collect()
}
