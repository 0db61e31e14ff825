//! Structural verify's check of the index against the packs: every entry
//! of every index object must be what its pack's trailer says (the chunk
//! at that offset with those lengths), and every listed pack an index
//! object names must have a trailer that opens. Listings, index objects
//! and pack trailers only: no blob is read, so packs may sit in a tier
//! where whole reads are billed.
//!
//! Requests: one ranged GET per pack and index object naming it (two for a
//! trailer over 64 KiB), plus the index objects' entries, read once per
//! group of [`PACKS_PER_PASS`] packs an object names (a backup's object
//! names a few packs: one pass; a merged one of 2^19 entries names about
//! 3,300: 13 passes over its 26 MiB).
//!
//! Memory: the trailers of one group of packs (about 160 entries of 48
//! bytes per 16 MiB pack: 2 MiB per group, 20 MiB for packs of the
//! largest trailers), one read of index blocks, and the listed packs'
//! names and sizes; never every entry at once.

use std::collections::HashMap;

use serde::Serialize;

use crate::backend::Backend;
use crate::error::Result;
use crate::id::ObjectId;
use crate::keys;
use crate::placement::pack::PackEntry;
use crate::placement::pack_read::read_trailer;
use crate::placement::sweep::{EntryReader, list_index, list_packs, read_head, read_table};
use crate::progress::Progress;
use crate::repo::Repository;

/// Packs whose trailers are held at once while an index object's entries
/// are streamed past them.
pub const PACKS_PER_PASS: usize = 256;

/// Problems kept in the report (all are counted).
const MAX_KEPT: usize = 100;

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
}

impl IndexCheck {
    fn found(&mut self, p: IndexProblem) {
        self.problems_found += 1;
        if self.problems.len() < MAX_KEPT {
            self.problems.push(p);
        }
    }
}

/// Checks every index object's entries against the trailers of the
/// listed packs it names (a pack not listed is checked by the caller: its
/// chunks are missing). Stops at once when `progress` is cancelled.
pub async fn check_index(repo: &Repository, progress: &Progress) -> Result<IndexCheck> {
    let backend = repo.backend();
    let max_chunk = repo.config().chunking.max;
    let mut out = IndexCheck::default();
    let mut sizes: HashMap<ObjectId, u64> = HashMap::new();
    {
        let mut packs = Box::pin(list_packs(&**backend));
        while let Some((name, meta)) = futures::TryStreamExt::try_next(&mut packs).await? {
            sizes.insert(name, meta.size);
        }
    }
    for (name, meta) in list_index(&**backend).await? {
        let index = meta.key.clone();
        let read = async {
            let object = read_head(&**backend, repo.codec(), name, meta).await?;
            let named = read_table(&**backend, &object).await?;
            Ok::<_, crate::Error>((object, named))
        };
        let (object, named) = match read.await {
            Ok(o) => o,
            // Gone since the listing (a gc replaced it): nothing to check.
            Err(e) if e.is_damage() && gone(&**backend, &index).await => continue,
            Err(e) if e.is_damage() => {
                out.found(IndexProblem {
                    index,
                    pack: None,
                    chunk: None,
                    problem: e.to_string(),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        for group in named.chunks(PACKS_PER_PASS) {
            let mut trailers: HashMap<ObjectId, HashMap<ObjectId, PackEntry>> = HashMap::new();
            for pack in group {
                if progress.is_cancelled() {
                    return Err(crate::Error::Cancelled {
                        cleaned: "verify stopped (it writes nothing)".into(),
                    });
                }
                let Some(&size) = sizes.get(pack) else {
                    continue;
                };
                match read_trailer(&**backend, repo.codec(), pack, size, max_chunk).await {
                    Ok(entries) => {
                        out.trailers_read += 1;
                        trailers.insert(*pack, entries.into_iter().map(|e| (e.id, e)).collect());
                    }
                    // In an archive tier: not readable without a restore,
                    // which structural verify does not ask for.
                    Err(crate::Error::Backend(crate::backend::BackendError::Archived {
                        ..
                    })) => out.archived += 1,
                    // Deleted since the listing (a gc): no damage.
                    Err(e) if e.is_damage() && gone(&**backend, &keys::pack(pack)).await => {}
                    Err(e) if e.is_damage() => out.found(IndexProblem {
                        index: index.clone(),
                        pack: Some(keys::pack(pack)),
                        chunk: None,
                        problem: format!("the pack's trailer cannot be read: {e}"),
                    }),
                    Err(e) => return Err(e),
                }
            }
            if trailers.is_empty() {
                continue;
            }
            let mut reader = EntryReader::new(&object);
            loop {
                let run = match reader.next(&**backend).await {
                    Ok(Some(run)) => run,
                    Ok(None) => break,
                    Err(e) if e.is_damage() => {
                        out.found(IndexProblem {
                            index: index.clone(),
                            pack: None,
                            chunk: None,
                            problem: e.to_string(),
                        });
                        break;
                    }
                    Err(e) => return Err(e),
                };
                for e in run {
                    let Some(trailer) = trailers.get(&e.pack) else {
                        continue;
                    };
                    out.entries_checked += 1;
                    if let Some(why) = disagreement(&e.entry, trailer.get(&e.entry.id)) {
                        out.found(IndexProblem {
                            index: index.clone(),
                            pack: Some(keys::pack(&e.pack)),
                            chunk: Some(keys::chunk(&e.entry.id)),
                            problem: why,
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

async fn gone(backend: &dyn Backend, key: &str) -> bool {
    matches!(backend.head(key).await, Err(e) if e.is_not_found())
}

/// Why an index entry is not what the pack's trailer says, if it is not.
fn disagreement(indexed: &PackEntry, in_pack: Option<&PackEntry>) -> Option<String> {
    let at = |e: &PackEntry| {
        format!(
            "offset {}, {} bytes stored, {} plain",
            e.offset, e.stored_len, e.plain_len
        )
    };
    match in_pack {
        None => Some(format!(
            "the index places the chunk in this pack ({}), whose trailer does not list it",
            at(indexed)
        )),
        Some(p) if p != indexed => Some(format!(
            "the index places the chunk at {}, the pack's trailer at {}",
            at(indexed),
            at(p)
        )),
        Some(_) => None,
    }
}
