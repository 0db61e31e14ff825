//! Packs an old index object names that the listing of `packs/` left
//! out. Such a pack was stored before the object, so before the sweep
//! began and its listing with it: unlisted means deleted (by a sweep
//! killed before it removed the objects naming it), and the census drops
//! its entries when it rewrites the object. A store whose listing leaves
//! out a pack that exists (a bucket index lagging, a page lost) would
//! make it drop the only entries placing live chunks, and every restore
//! needing them would fail until an `index rebuild` (review 106.3). So
//! each such pack is asked about (one HEAD; normally there is none), and
//! one that is there holds every pack of the sweep back.

use std::collections::BTreeSet;

use crate::backend::Backend;
use crate::error::Result;
use crate::gc::census::Census;
use crate::id::ObjectId;
use crate::placement::ids::first_present;

/// Packs asked about at most: a sample beyond (ids are hashes, so the
/// first in order are a random choice), which a listing that loses keys
/// at random does not pass.
const ASKED: usize = 4096;

#[derive(Debug, Default)]
pub struct Unlisted {
    names: BTreeSet<ObjectId>,
}

impl Unlisted {
    /// Notes the packs of an old index object's table the census has
    /// not listed.
    pub fn note(&mut self, census: &Census, table: &[ObjectId]) {
        for name in table {
            if census.pack(name).is_none() {
                self.names.insert(*name);
                if self.names.len() > ASKED {
                    self.names.pop_last();
                }
            }
        }
    }

    /// The first noted pack the store has after all, if any.
    pub async fn first_present(&self, backend: &dyn Backend) -> Result<Option<ObjectId>> {
        first_present(backend, self.names.iter().copied()).await
    }
}
