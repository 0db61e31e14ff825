//! Every chunk the index places in a listed pack, in id order, in
//! bounded memory: the index objects merged as gc's census reads them
//! (each read once, checked for order and shard on the way), for
//! structural verify of a repository whose ids do not fit in memory.

use std::collections::BTreeSet;

use futures::{StreamExt, TryStreamExt};

use super::Placement;
use super::index::IndexEntry;
use super::merge::Merge;
use super::sweep::{list_index, read_head};

use crate::backend::Backend;
use crate::error::Result;
use crate::id::ObjectId;
use crate::keys;

/// What one [`Placement::walk_index`] read.
#[derive(Debug, Default)]
pub struct Walked {
    /// The keys of the index objects it listed and read (or tried to).
    pub read: BTreeSet<String>,
    /// An index object went away while it was read (a gc replaced it by
    /// objects written since): the ids it held from there on were not
    /// seen, and may be in objects a new listing shows.
    pub vanished: bool,
    /// Index objects that cannot be read, with why: left out from where
    /// they failed (their ids may be missing from the walk).
    pub damaged: Vec<(String, String)>,
}

impl Placement {
    /// Calls `f` with the first entry (by pack name) of each chunk an
    /// index object (except those keyed in `skip`) places in a listed
    /// pack, in id order, each chunk once. An
    /// object that fails half way is left out and the walk goes on: one
    /// gone is [`Walked::vanished`], one damaged is in
    /// [`Walked::damaged`]; neither makes the walk start again.
    pub async fn walk_index(
        &self,
        skip: &BTreeSet<String>,
        f: &mut (dyn FnMut(&IndexEntry) -> Result<()> + Send),
    ) -> Result<Walked> {
        let backend = &*self.backend;
        let packs = self.list_packs().await?;
        let mut walked = Walked::default();
        let mut objects = Vec::new();
        for (name, meta) in list_index(backend).await? {
            if skip.contains(&meta.key) {
                continue;
            }
            let key = meta.key.clone();
            walked.read.insert(key.clone());
            match read_head(backend, &self.codec, name, meta).await {
                Ok(o) => objects.push(o),
                Err(e) if e.is_damage() => walked.failed(backend, &key, &e).await,
                Err(e) => return Err(e),
            }
        }
        let mut merge = Merge::new(objects.iter().collect());
        let mut last = None;
        loop {
            match merge.next(backend).await {
                Ok(Some(e)) => {
                    if last == Some(e.entry.id) || packs.binary_search(&e.pack).is_err() {
                        continue;
                    }
                    last = Some(e.entry.id);
                    f(&e)?;
                }
                Ok(None) => return Ok(walked),
                // The merge goes on without the object that failed.
                Err(e) if e.is_damage() => match merge.reading() {
                    Some(key) => walked.failed(backend, key, &e).await,
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    }
}

impl Walked {
    async fn failed(&mut self, backend: &dyn Backend, key: &str, e: &crate::error::Error) {
        if gone(backend, key).await {
            self.vanished = true;
        } else {
            self.damaged.push((key.to_string(), e.to_string()));
        }
    }
}

/// Whether `key` is no longer stored (a failed HEAD is not "gone").
pub(crate) async fn gone(backend: &dyn Backend, key: &str) -> bool {
    matches!(backend.exists(key).await, Ok(false))
}

/// Of `packs`, one the store has (a HEAD each, 16 at once), if any: a
/// pack a listing left out that is there after all (gc's census and the
/// index rebuild ask so before dropping what places its chunks).
pub(crate) async fn first_present(
    backend: &dyn Backend,
    packs: impl IntoIterator<Item = ObjectId>,
) -> Result<Option<ObjectId>> {
    let mut there = futures::stream::iter(packs)
        .map(|p| async move {
            Ok::<_, crate::Error>(backend.exists(&keys::pack(&p)).await?.then_some(p))
        })
        .buffer_unordered(HEADS)
        .try_filter_map(|p| futures::future::ready(Ok(p)));
    there.try_next().await
}

/// Packs asked about at once.
const HEADS: usize = 16;
