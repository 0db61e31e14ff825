//! Structural verify's check of the index against the packs: every entry
//! of every index object must be what its pack's trailer says (the chunk
//! at that offset with those lengths), and every listed pack an index
//! object names must have a trailer that opens. Listings, index objects
//! and pack trailers only: no blob is read, so packs may sit in a tier
//! where whole reads are billed.
//!
//! It scales with the repository, not with how the index is cut (a shard
//! object holds one id prefix from nearly every pack): every listed
//! pack's trailer is read once ([`TRAILERS_IN_FLIGHT`] at a time) into a
//! set of 8-byte prints ([`print`]; `crate::spilled_set`, spilled to local files
//! beyond its budget), then every index object is read once, all of them merged in
//! chunk id order (gc's census merge), and each entry's print is looked
//! up; parts of the set are loaded in that same order, each once.
//!
//! Requests: one ranged GET per pack (two for a trailer over 128 KiB),
//! and each index object read once. Memory: the listed packs (40 bytes
//! each), the prints' budget, the merge's read buffers (at most 64 MiB),
//! and the trailers in flight.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::Serialize;

use crate::backend::{Backend, BackendError};
use crate::error::{Error, Result};
use crate::gc::spill;
use crate::id::ObjectId;
use crate::keys;
use crate::placement::ids::gone;
use crate::placement::index::IndexEntry;
use crate::placement::lookup::default_cache_dir;
use crate::placement::merge::Merge;
use crate::placement::pack::PackEntry;
use crate::placement::pack_read::read_trailer;
use crate::placement::sweep::{list_index, list_packs, read_head};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::spilled_set::{self, SpilledSet};

/// Pack trailers read at once.
pub const TRAILERS_IN_FLIGHT: usize = 16;

/// Problems kept in the report (all are counted).
const MAX_KEPT: usize = 100;

/// Index entries between looks at cancellation.
const CANCEL_EVERY: u64 = 4096;

/// An index entry its pack contradicts, a pack whose trailer cannot be
/// read, or an index object that cannot be read.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct IndexProblem {
    /// The index object's key.
    pub index: String,
    /// The pack's key, unless the index object itself is unreadable.
    pub pack: Option<String>,
    /// The chunk (logical key), for a wrong entry.
    pub chunk: Option<String>,
    pub problem: String,
}

/// What [`check_index`] found.
#[derive(Clone, Debug, Default)]
pub struct IndexCheck {
    /// Pack trailers read.
    pub trailers_read: u64,
    /// Index entries compared with their pack's trailer.
    pub entries_checked: u64,
    /// Packs in an archive storage class: their trailers are not read.
    pub archived: u64,
    /// Every problem found (the first [`MAX_KEPT`] in `problems`).
    pub problems_found: u64,
    pub problems: Vec<IndexProblem>,
    /// Packs whose trailer cannot be read that an index object names
    /// (the first [`MAX_UNREADABLE`]), for `repair` to move their chunks.
    pub unreadable_packs: Vec<ObjectId>,
    /// All such packs.
    pub unreadable_found: u64,
    /// Entries their pack's trailer contradicts (the first
    /// [`MAX_CONTRADICTED`]): their chunks may be placed nowhere a pack
    /// lists them ([`unplaced`]).
    pub contradicted: Vec<IndexEntry>,
    /// All such entries: beyond [`MAX_CONTRADICTED`] their chunks are
    /// not judged, and the caller says so.
    pub contradicted_found: u64,
    /// The listed packs with their sizes, sorted by name.
    pub listed: Vec<(ObjectId, u64)>,
}

/// Contradicted entries kept for [`unplaced`] (80 bytes each).
pub const MAX_CONTRADICTED: usize = 1 << 16;

/// Packs whose trailer cannot be read kept for `repair` (32 bytes each;
/// further ones wait for a later repair).
pub const MAX_UNREADABLE: usize = 4096;

impl IndexCheck {
    fn found(&mut self, p: IndexProblem) {
        self.problems_found += 1;
        if self.problems.len() < MAX_KEPT {
            self.problems.push(p);
        }
    }
}

/// What became of a listed pack's trailer.
#[derive(Debug)]
enum Trailer {
    /// Read: its entries are in the prints.
    Read,
    /// Not read, and no damage: archived, or deleted since the listing.
    Skipped,
    /// Cannot be read; reported once, by the first index entry naming it.
    Damaged(Option<String>),
}

/// Checks every index object's entries against the trailers of the
/// listed packs they name (a pack not listed is checked by the caller:
/// its chunks are missing). Stops at once when `progress` is cancelled.
pub async fn check_index(repo: &Repository, progress: &Progress) -> Result<IndexCheck> {
    check_index_with(repo, progress, spilled_set::DEFAULT_BUDGET).await
}

/// [`check_index`] with the prints' memory budget given (tests make it
/// small to take the files' path).
pub async fn check_index_with(
    repo: &Repository,
    progress: &Progress,
    budget: usize,
) -> Result<IndexCheck> {
    let backend = &**repo.backend();
    let mut out = IndexCheck::default();
    let mut packs: Vec<(ObjectId, u64)> = Vec::new();
    {
        let mut listed = Box::pin(list_packs(backend));
        while let Some((name, meta)) = futures::TryStreamExt::try_next(&mut listed).await? {
            packs.push((name, meta.size));
        }
    }
    packs.sort_unstable();
    let base = spill::base_dir(default_cache_dir(&repo.config().repo_id));
    let mut prints = SpilledSet::new(budget, base);
    // Keyed afresh each run, so that no one who writes index objects can
    // make a wrong entry whose print matches a trailer's.
    let print_key: [u8; 32] = rand::random();
    let trailers = read_trailers(repo, &packs, &print_key, progress, &mut prints, &mut out).await?;
    prints.seal()?;

    let mut objects = Vec::new();
    for (name, meta) in list_index(backend).await? {
        let key = meta.key.clone();
        match read_head(backend, repo.codec(), name, meta).await {
            Ok(o) => objects.push(o),
            // Gone since the listing (a gc replaced it): nothing to check.
            Err(e) if e.is_damage() && gone(backend, &key).await => {}
            Err(e) if e.is_damage() => out.found(unreadable(key, &e)),
            Err(e) => return Err(e),
        }
    }
    let mut merge = Merge::new(objects.iter().collect()).with_repeats();
    let mut walk = Walk {
        packs: &packs,
        trailers,
        prints,
        key: print_key,
        seen: 0,
    };
    walk.go(backend, &mut merge, progress, &mut out).await?;
    drop(walk);
    out.listed = packs;
    Ok(out)
}

/// Of the chunks `wanted` picks among those a contradicted entry of
/// `check` names, the ones no index entry places where its pack's own
/// trailer lists them (and, with `open`, where they open), each with
/// why. A restore finds those nowhere: their points are damaged, not
/// only the index (the index check alone named the index object, and
/// verify and repair called the point whole; `index rebuild` cannot
/// help, as no trailer lists them). Trailers and index blocks only,
/// unless `open`.
pub async fn unplaced(
    repo: &Repository,
    check: &IndexCheck,
    wanted: &(dyn Fn(&ObjectId) -> bool + Sync),
    open: bool,
) -> Result<BTreeMap<ObjectId, String>> {
    let mut why = BTreeMap::new();
    for e in check.contradicted.iter().filter(|e| wanted(&e.entry.id)) {
        why.entry(e.entry.id).or_insert_with(|| {
            format!(
                "in no pack the index names: in {}, {}",
                keys::pack(&e.pack),
                contradicted(&e.entry)
            )
        });
    }
    if why.is_empty() {
        return Ok(why);
    }
    let ids: Vec<ObjectId> = why.keys().copied().collect();
    let index = repo.chunks().open_index().await?;
    let places = index.lookup_readable(&ids).await?.into_iter().flatten();
    let listed = &check.listed;
    let size = |p: &ObjectId| {
        let i = listed.binary_search_by_key(p, |(n, _)| *n).ok()?;
        Some(listed[i].1)
    };
    let found = repo
        .chunks()
        .sound_at(places.collect(), &size, open, &|| false)
        .await?
        .unwrap_or_default();
    why.retain(|id, _| !found.sound.contains(id) && !found.archived.contains(id));
    Ok(why)
}

/// Reads every listed pack's trailer into `prints`; returns what became
/// of each (by position in `packs`).
async fn read_trailers(
    repo: &Repository,
    packs: &[(ObjectId, u64)],
    key: &[u8; 32],
    progress: &Progress,
    prints: &mut SpilledSet,
    out: &mut IndexCheck,
) -> Result<Vec<Trailer>> {
    let backend = &**repo.backend();
    let codec = repo.codec();
    let max_chunk = repo.config().chunking.max;
    let mut states: Vec<Trailer> = packs.iter().map(|_| Trailer::Skipped).collect();
    let mut reads = futures::stream::iter(packs.iter().enumerate())
        .map(|(i, (name, size))| async move {
            let r = read_trailer(backend, codec, name, *size, max_chunk).await;
            // Deleted since the listing (a gc): no damage.
            let gone = match &r {
                Err(e) if e.is_damage() => gone(backend, &keys::pack(name)).await,
                _ => false,
            };
            (i, r, gone)
        })
        .buffer_unordered(TRAILERS_IN_FLIGHT);
    while let Some((i, read, gone)) = reads.next().await {
        if progress.is_cancelled() {
            return Err(stopped());
        }
        let name = &packs[i].0;
        states[i] = match read {
            Ok(entries) => {
                out.trailers_read += 1;
                for e in &entries {
                    prints.insert(print(key, name, e))?;
                }
                Trailer::Read
            }
            // In an archive tier: not readable without a restore, which
            // structural verify does not ask for.
            Err(Error::Backend(BackendError::Archived { .. })) => {
                out.archived += 1;
                Trailer::Skipped
            }
            Err(_) if gone => Trailer::Skipped,
            Err(e) if e.is_damage() => Trailer::Damaged(Some(e.to_string())),
            Err(e) => return Err(e),
        };
    }
    Ok(states)
}

/// The merge's walk over the index.
struct Walk<'a> {
    packs: &'a [(ObjectId, u64)],
    trailers: Vec<Trailer>,
    prints: SpilledSet,
    /// The prints' key.
    key: [u8; 32],
    seen: u64,
}

impl Walk<'_> {
    async fn go(
        &mut self,
        backend: &dyn Backend,
        merge: &mut Merge<'_>,
        progress: &Progress,
        out: &mut IndexCheck,
    ) -> Result<()> {
        loop {
            let e = match merge.next(backend).await {
                Ok(Some(e)) => e,
                Ok(None) => return Ok(()),
                // An object found damaged half way is reported and left
                // out, one gone since the listing (a gc replaced it) only
                // left out; the merge goes on with the others, nothing
                // read twice.
                Err(e) if e.is_damage() => {
                    let Some(key) = merge.reading() else {
                        return Err(e);
                    };
                    if !gone(backend, key).await {
                        out.found(unreadable(key.to_string(), &e));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.seen += 1;
            if self.seen.is_multiple_of(CANCEL_EVERY) && progress.is_cancelled() {
                return Err(stopped());
            }
            let Ok(i) = self.packs.binary_search_by_key(&e.pack, |(n, _)| *n) else {
                continue;
            };
            let index = merge.source_key().unwrap_or_default().to_string();
            match &mut self.trailers[i] {
                Trailer::Skipped => {}
                Trailer::Damaged(why) => {
                    if let Some(why) = why.take() {
                        out.unreadable_found += 1;
                        if out.unreadable_packs.len() < MAX_UNREADABLE {
                            out.unreadable_packs.push(e.pack);
                        }
                        out.found(IndexProblem {
                            index,
                            pack: Some(keys::pack(&e.pack)),
                            chunk: None,
                            problem: format!("the pack's trailer cannot be read: {why}"),
                        });
                    }
                }
                Trailer::Read => {
                    out.entries_checked += 1;
                    if !self.prints.contains(print(&self.key, &e.pack, &e.entry))? {
                        out.contradicted_found += 1;
                        if out.contradicted.len() < MAX_CONTRADICTED {
                            out.contradicted.push(e);
                        }
                        out.found(IndexProblem {
                            index,
                            pack: Some(keys::pack(&e.pack)),
                            chunk: Some(keys::chunk(&e.entry.id)),
                            problem: contradicted(&e.entry),
                        });
                    }
                }
            }
        }
    }
}

/// The print of `entry` as stored in `pack`: the first 4 bytes of the
/// chunk id (prints sort as ids do, so an index read in id order asks
/// about them in order) and 4 bytes of a hash of the whole entry. An
/// index entry whose print is not among the trailers' is contradicted by
/// its pack (or missing from it). A wrong entry passes unseen only if its
/// print equals that of another entry of the same 4-byte id prefix: at
/// 200 M chunks about 0.05 entries share a prefix, so about one in 10^11
/// wrong entries. The hash is keyed by `key`, random per run: without it
/// a writer of index objects could search (about 2^32 tries) for a wrong
/// entry whose print matches.
pub fn print(key: &[u8; 32], pack: &ObjectId, entry: &PackEntry) -> u64 {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(entry.id.as_bytes());
    h.update(pack.as_bytes());
    h.update(&entry.offset.to_le_bytes());
    h.update(&entry.stored_len.to_le_bytes());
    h.update(&entry.plain_len.to_le_bytes());
    let sum = h.finalize();
    let id = entry.id.as_bytes();
    let s = sum.as_bytes();
    u64::from_be_bytes([id[0], id[1], id[2], id[3], s[0], s[1], s[2], s[3]])
}

fn stopped() -> Error {
    Error::Cancelled {
        cleaned: "verify stopped (it writes nothing)".into(),
    }
}

fn unreadable(index: String, e: &Error) -> IndexProblem {
    IndexProblem {
        index,
        pack: None,
        chunk: None,
        problem: e.to_string(),
    }
}

fn contradicted(indexed: &PackEntry) -> String {
    format!(
        "the index places the chunk in this pack at offset {}, {} bytes stored, {} plain; \
         the pack's trailer does not list it there",
        indexed.offset, indexed.stored_len, indexed.plain_len
    )
}

#[cfg(test)]
#[path = "index_check_tests.rs"]
mod tests;
