//! Rebuilding the chunk index from pack trailers alone (`xfull index
//! rebuild`, and what `repair` will use when index objects are missing or
//! damaged): every pack is self-describing, so the index is derived data.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::ids::{first_present, gone};
use super::index::{self, IndexEntry, IndexHead};
use super::index_write::MAX_WRITTEN_ENTRIES;
use super::pack_read::read_trailer;
use super::sweep::{list_index, read_head, read_table};
use crate::backend::{Backend, ObjectMeta, PutMode};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;
use crate::progress::Progress;
use crate::repo::{Stored, put_once};

/// What a rebuild found and wrote.
#[derive(Debug, Default)]
pub struct Rebuilt {
    /// Packs whose trailers were read and indexed.
    pub packs: u64,
    /// Places of chunks indexed (a chunk stored in two packs counts twice).
    pub chunks: u64,
    /// Packs left out: key and why (a damaged or unreadable trailer).
    pub damaged: Vec<(String, String)>,
    /// Packs left out as the store answered "archived": in an archive
    /// class (GLACIER, DEEP_ARCHIVE), unreadable until thawed.
    pub archived: Vec<String>,
    /// Packs listed and deleted before their trailer was read (a gc's
    /// sweep): their live chunks are in packs it wrote first.
    pub gone: u64,
    /// The index objects written (none if there were no packs), and
    /// whether each was new (an identical one may exist already).
    pub written: Vec<(String, Stored)>,
    /// Index objects removed as superseded (see [`rebuild`]).
    pub removed: Vec<String>,
    /// Superseded index objects kept: each names a pack this rebuild did
    /// not index that is there (see [`removable`]); key and that pack.
    pub kept: Vec<(String, String)>,
}

/// Reads every pack's trailer and writes index objects of any ids holding
/// them all (every place of every chunk), [`MAX_WRITTEN_ENTRIES`] at most
/// each; gc later merges them into shards. One already stored under the
/// name of an object made here must be that object, else it is written
/// again ([`store_checked`]).
///
/// Then, if every listed pack was indexed, the index objects listed
/// before the packs are removed, except those of the names written: the
/// new objects place every chunk they placed. Until review 86's finding
/// they were left for gc, so a damaged one held every gc and failed
/// every verify for ever, and an entry contradicting its pack stayed,
/// though verify tells the user to run this very command for both.
/// Safe with writers at work because every writer (backup, copy,
/// repair, gc's repack) stores a pack before any index object naming
/// it: an object of the first listing names packs stored before the
/// second began, which that listing shows (a pack deleted since is a
/// sweep's, whose moved chunks are in packs it stored first). Listed
/// the other way round, a backup's pack and object stored between the
/// listings would lose their only index entry (gc's census lists packs
/// first and keeps young objects for that reason). A pack left out (a
/// damaged trailer) keeps every object: their entries are the places
/// `repair` salvages its chunks from. So does a pack in an archive class
/// (its trailer unreadable until thawed): the other packs are indexed and
/// the archived ones listed (until stop 55 the first one stopped the
/// rebuild with the store's error, indexing none after it). An object
/// naming a pack that was not indexed but is there stays too
/// ([`removable`]). Memory: one object's entries (40 MiB), the keys of
/// the first listing and 8 bytes per pack.
pub async fn rebuild(
    backend: Arc<dyn Backend>,
    codec: &Arc<Codec>,
    max_chunk: u32,
    progress: &Progress,
) -> Result<Rebuilt> {
    let mut out = Rebuilt::default();
    let listed_first = list_index(&*backend).await?;
    let mut entries: Vec<IndexEntry> = Vec::new();
    // The packs indexed, by 8 bytes of their names (see `removable`).
    let mut indexed: Vec<u64> = Vec::new();
    let mut listing = backend.list(keys::PACKS);
    while let Some(meta) = listing.try_next().await? {
        if progress.is_cancelled() {
            return Err(Error::Cancelled {
                cleaned: match out.written.len() {
                    0 => "nothing was written".into(),
                    n => format!("{n} index object(s) written stay: they agree with the packs"),
                },
            });
        }
        let Some(name) = keys::parse_pack(&meta.key) else {
            continue;
        };
        match read_trailer(&*backend, codec, &name, meta.size, max_chunk).await {
            Ok(found) => {
                indexed.push(name.prefix());
                out.packs += 1;
                out.chunks += found.len() as u64;
                entries.extend(
                    found
                        .into_iter()
                        .map(|entry| IndexEntry { pack: name, entry }),
                );
                if entries.len() >= MAX_WRITTEN_ENTRIES {
                    let full = std::mem::take(&mut entries);
                    out.written
                        .extend(store_checked(&*backend, codec, full).await?);
                }
            }
            Err(e) if e.is_damage() && gone(&*backend, &meta.key).await => out.gone += 1,
            Err(e) if e.is_damage() => out.damaged.push((meta.key, e.to_string())),
            Err(e) if e.is_archived() => out.archived.push(meta.key),
            Err(e) => return Err(e),
        }
    }
    drop(listing);
    out.written
        .extend(store_checked(&*backend, codec, entries).await?);
    if out.damaged.is_empty() && out.archived.is_empty() {
        let written: BTreeSet<&str> = out.written.iter().map(|(k, _)| k.as_str()).collect();
        let superseded: Vec<(ObjectId, ObjectMeta)> = listed_first
            .into_iter()
            .filter(|(_, meta)| !written.contains(meta.key.as_str()))
            .collect();
        indexed.sort_unstable();
        let (superseded, kept) = removable(&*backend, codec, superseded, &indexed).await?;
        out.kept = kept;
        for batch in superseded.chunks(DELETE_BATCH) {
            if progress.is_cancelled() {
                // Harmless: the index written is whole, and the next
                // rebuild or gc's merge removes what is left.
                let left = superseded.len() - out.removed.len();
                return Err(Error::Cancelled {
                    cleaned: format!(
                        "the index objects made from the packs were written; {left} index \
                         object(s) they replace were left (the next rebuild removes them)"
                    ),
                });
            }
            backend.delete_many(batch).await?;
            out.removed.extend_from_slice(batch);
        }
    }
    Ok(out)
}

/// Index objects removed per request (S3's DeleteObjects takes 1,000).
const DELETE_BATCH: usize = 1000;

/// Superseded objects' tables read at once (one after another they were
/// the rebuild's longest wait once the index is in shards: review 109.4).
const TABLES: usize = 16;

/// Of the `superseded` index objects, the keys to remove, and those
/// kept with the pack that keeps each. One whose table names a pack this
/// rebuild did not index is kept if that pack is there: the listing left
/// it out (a bucket index lagging, a page lost), or a GET of it answered
/// "not found" and a HEAD too, passing it for gone, when it is not. Its
/// entries may be the only ones placing that pack's chunks, and removing
/// it lost them until the next rebuild (review 106.3). Packs gone for
/// good (a sweep's) are asked about once each; normally there are none.
/// An object that does not read is removed (what it names is unknown and
/// it places nothing a reader could use); one gone meanwhile is passed
/// over. Memory: 8 bytes per pack indexed (`indexed`, sorted by 8 bytes
/// of the name: an unindexed pack whose prefix collides with an indexed
/// one's would be taken for indexed, with odds of about 2^-64 per pair)
/// and [`TABLES`] tables at a time, read together.
async fn removable(
    backend: &dyn Backend,
    codec: &Arc<Codec>,
    superseded: Vec<(ObjectId, ObjectMeta)>,
    indexed: &[u64],
) -> Result<(Vec<String>, Vec<(String, String)>)> {
    let (mut remove, mut kept) = (Vec::new(), Vec::new());
    let mut tables = futures::stream::iter(superseded)
        .map(|(name, meta)| async move {
            let key = meta.key.clone();
            let object = read_head(backend, codec, name, meta).await;
            let table = match object {
                Ok(o) => read_table(backend, &o).await,
                Err(e) => Err(e),
            };
            (key, table)
        })
        .buffered(TABLES);
    while let Some((key, table)) = tables.next().await {
        let table = match table {
            Ok(t) => t,
            Err(e) if e.is_damage() && gone(backend, &key).await => continue,
            Err(e) if e.is_damage() => {
                remove.push(key);
                continue;
            }
            Err(e) => return Err(e),
        };
        let unindexed = table
            .into_iter()
            .filter(|p| indexed.binary_search(&p.prefix()).is_err());
        match first_present(backend, unindexed).await? {
            Some(pack) => kept.push((key, keys::pack(&pack))),
            None => remove.push(key),
        }
    }
    Ok((remove, kept))
}

/// Stores `entries` as index objects of any ids, create-only, as
/// [`super::index_write::store_entries`] does, except that an object
/// found already stored is read and must hold exactly these entries.
/// The objects a rebuild makes often have the very name of one the
/// repository holds (one backup's object, or gc's merge of all of them,
/// places every chunk of its packs), and that may be the damaged object
/// the rebuild is run to mend: taken for this one, it stayed, and verify
/// kept saying to run `index rebuild` (review). The name proves the
/// content, so writing over it is safe. Cost: one GET of each object
/// found already stored.
async fn store_checked(
    backend: &dyn Backend,
    codec: &Arc<Codec>,
    entries: Vec<IndexEntry>,
) -> Result<Vec<(String, Stored)>> {
    let mut out = Vec::new();
    for mut round in index::rounds(entries) {
        let object = index::encode_in(codec, "", round.clone());
        let key = keys::index(&index::index_name(&object));
        let mut stored = put_once(backend, &key, object.clone()).await?;
        round.sort_unstable_by_key(|e| e.entry.id);
        let len = object.len() as u64;
        if stored == Stored::Existed && !holds(backend, codec, &key, len, &round).await? {
            backend.put(&key, object, PutMode::Overwrite).await?;
            stored = Stored::New;
        }
        out.push((key, stored));
    }
    Ok(out)
}

/// Whether the index object `key` opens whole and holds exactly
/// `entries` (sorted by id), as the `len` bytes made of them. Gone since
/// the put (a gc merged it away) is no: it is written again; so is one
/// larger than `len`, refused before it is read.
async fn holds(
    backend: &dyn Backend,
    codec: &Arc<Codec>,
    key: &str,
    len: u64,
    entries: &[IndexEntry],
) -> Result<bool> {
    let bytes = match backend.get_at_most(key, len).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(crate::backend::BackendError::Corrupt { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    match IndexHead::decode_all(codec, key, &bytes) {
        Ok((_, found)) => Ok(found == entries),
        Err(e) if e.is_damage() => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[path = "rebuild_tests.rs"]
mod tests;
