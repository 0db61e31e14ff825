//! What a delete batch's look spares of the packs and index objects the
//! census doomed (docs/design.md, "gc over packs", step 3): a pack a live
//! lease now names, younger than the (lowered) cutoff, or holding a
//! chunk marked since the census; an index object naming such a pack,
//! placing such a chunk, or named by a lease. Which packs an index object
//! names is not kept in memory (`gc/census.rs`): its table is read again
//! here, only when a pack was spared or a lease names one, or when chunks
//! were marked late.

use std::collections::HashSet;

use super::{Candidate, Listed, Sweep};
use crate::error::Result;
use crate::id::ObjectId;
use crate::placement::sweep::{EntryReader, read_table};

impl Sweep {
    /// Whether a pack or index candidate may go now, after the batch's
    /// look: a pack a live lease names, younger than the cutoff, or
    /// holding a chunk marked since the census, is spared (and the index
    /// objects naming it then stay); an index object goes only if every
    /// pack it names that was to go is going. `keep` holds what
    /// [`Sweep::late_packs`] and [`Sweep::blocked_index`] found.
    pub(super) fn pack_deletable(&self, listed: &Listed, keep: &HashSet<ObjectId>) -> bool {
        let Some(census) = &self.census else {
            return false;
        };
        match listed {
            Listed::Pack(meta, name) => {
                !self.prot.pack_deps.contains(name)
                    && meta.last_modified < self.prot.cutoff
                    && !keep.contains(name)
            }
            Listed::Index(_, name)
                if keep.contains(name) || self.prot.index_deps.contains(name) =>
            {
                false
            }
            Listed::Index(_, name) => census
                .objects
                .iter()
                .find(|o| o.object.name == *name)
                .is_some_and(|o| o.replace),
            Listed::Node(..) => false,
        }
    }

    /// The index objects of `batch` that name a pack spared or one a live
    /// lease names (their tables read again, only when there are such
    /// packs).
    pub(super) async fn blocked_index(&self, batch: &[Candidate]) -> Result<HashSet<ObjectId>> {
        let mut out = HashSet::new();
        let Some(census) = &self.census else {
            return Ok(out);
        };
        if self.prot.pack_deps.is_empty() && !census.packs.iter().any(|p| p.spared) {
            return Ok(out);
        }
        let backend = self.repo.backend();
        for c in batch {
            let Listed::Index(_, name) = &c.listed else {
                continue;
            };
            let Some(o) = census.objects.iter().find(|o| o.object.name == *name) else {
                continue;
            };
            let table = read_table(&**backend, &o.object).await?;
            let kept = |n: &ObjectId| {
                self.prot.pack_deps.contains(n) || census.pack(n).is_some_and(|p| p.spared)
            };
            if table.iter().any(kept) {
                out.insert(*name);
            }
        }
        Ok(out)
    }

    /// The packs and index objects of `batch` that hold a chunk marked
    /// after the census (a pinned point found late, a committed point, a
    /// node dependency): packs from their index objects' entries or an
    /// orphan's trailer; an index object by its own entries (it may be the
    /// only one to place that chunk: a backup whose own index object had
    /// the same bytes relies on it).
    pub(super) async fn late_packs(&self, batch: &[Candidate]) -> Result<HashSet<ObjectId>> {
        let mut out = HashSet::new();
        let marks = &self.prot.marks;
        let Some(census) = &self.census else {
            return Ok(out);
        };
        if !marks.any_late() {
            return Ok(out);
        }
        let packs: HashSet<ObjectId> = batch
            .iter()
            .filter_map(|c| match &c.listed {
                Listed::Pack(_, name) => Some(*name),
                _ => None,
            })
            .collect();
        for name in &packs {
            if let Some(chunks) = census.orphans.get(name)
                && chunks.iter().any(|c| marks.has_late(c))
            {
                out.insert(*name);
            }
        }
        let backend = self.repo.backend();
        let objects: HashSet<ObjectId> = batch
            .iter()
            .filter_map(|c| match &c.listed {
                Listed::Index(_, name) => Some(*name),
                _ => None,
            })
            .collect();
        for o in &census.objects {
            let in_batch = objects.contains(&o.object.name);
            let names_one = !packs.is_empty()
                && read_table(&**backend, &o.object)
                    .await?
                    .iter()
                    .any(|n| packs.contains(n));
            if !names_one && !in_batch {
                continue;
            }
            let mut reader = EntryReader::new(&o.object);
            while let Some(run) = reader.next(&**backend).await? {
                for e in run.iter().filter(|e| marks.has_late(&e.entry.id)) {
                    if packs.contains(&e.pack) {
                        out.insert(e.pack);
                    }
                    if in_batch {
                        out.insert(o.object.name);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Records the packs of a batch spared at its look.
    pub(super) fn spare(&mut self, names: impl IntoIterator<Item = ObjectId>) {
        if let Some(census) = &mut self.census {
            for n in names {
                if let Some(p) = census.pack_mut(&n) {
                    p.spared = true;
                }
            }
        }
    }
}
