//! Reading chunks for restore, serve and verify: looked up in the index,
//! read in coalesced runs of their packs (one ranged GET per run), every
//! chunk opened and checked against its id.
//!
//! A chunk whose copy is damaged or whose pack is gone is looked for
//! again in every index object: a repair or a later backup may have
//! stored it again in another pack (two copies of one chunk are rare,
//! see docs/design.md, "Pack layout"). Only when no copy opens is it
//! damage, named by the chunk.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;

use super::chunk_name;
use super::index::IndexEntry;
use super::lookup::ChunkIndex;
use super::pack::PackEntry;
use super::pack::open_blob;
use super::pack_read::{MAX_GAP, MAX_RUN, ReadRun, coalesce, read_range, read_run};
use crate::backend::Backend;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;

/// Runs read at once.
pub const RUNS_IN_FLIGHT: usize = 4;

/// What a fetch read.
#[derive(Debug)]
pub struct Fetched {
    /// Per id asked, in order: its plaintext, or why no copy could be
    /// read (always damage: any other failure fails the whole fetch).
    pub chunks: Vec<Result<Vec<u8>>>,
    /// Bytes read from the store.
    pub bytes: u64,
}

/// A failure that is not damage (the store failed or refused), with the
/// first chunk of the request it stopped, so that the caller can say
/// where in the image it happened.
#[derive(Debug)]
pub struct FetchError {
    pub chunk: Option<ObjectId>,
    pub error: Error,
}

impl From<Error> for FetchError {
    fn from(error: Error) -> Self {
        FetchError { chunk: None, error }
    }
}

/// Fetches the chunks `ids` (duplicates allowed). Memory: the runs in
/// flight (at most [`RUNS_IN_FLIGHT`] x [`MAX_RUN`]) plus the plaintext
/// of the chunks asked.
pub async fn fetch(
    backend: &dyn Backend,
    codec: &Arc<Codec>,
    index: &ChunkIndex,
    ids: &[ObjectId],
) -> std::result::Result<Fetched, FetchError> {
    let mut unique: Vec<ObjectId> = ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let places = index.lookup(&unique).await?;
    let mut got: HashMap<ObjectId, Result<Vec<u8>>> = HashMap::with_capacity(unique.len());
    let mut wanted = Vec::new();
    for (id, place) in unique.iter().zip(places) {
        match place {
            Some(p) => wanted.push(p),
            None => {
                got.insert(*id, Err(not_indexed(id, index)));
            }
        }
    }
    let runs = coalesce(wanted, MAX_GAP, MAX_RUN);
    let mut bytes = read_runs(backend, codec, runs, |e, r| {
        got.insert(e.id, r);
    })
    .await?;
    let failed: Vec<ObjectId> = got
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(id, _)| *id)
        .collect();
    if !failed.is_empty() {
        bytes += other_copies(backend, codec, index, &failed, &mut got).await?;
    }
    let mut left: HashMap<ObjectId, usize> = HashMap::new();
    for id in ids {
        *left.entry(*id).or_default() += 1;
    }
    let chunks = ids
        .iter()
        .map(|id| {
            let n = left.entry(*id).or_default();
            *n = n.saturating_sub(1);
            // The last asker takes the value; earlier ones get a copy.
            let r = if *n == 0 {
                got.remove(id)
            } else {
                got.get(id).map(|r| match r {
                    Ok(v) => Ok(v.clone()),
                    Err(e) => Err(Error::corrupt(chunk_name(id), e.to_string())),
                })
            };
            r.unwrap_or_else(|| Err(not_indexed(id, index)))
        })
        .collect();
    Ok(Fetched { chunks, bytes })
}

/// Reads `runs` ([`RUNS_IN_FLIGHT`] at once, in order) and hands each
/// chunk's plaintext, or why it cannot be read, to `each`. A pack gone
/// or shorter than the index says is damage of each of its chunks (they
/// may have other copies); any other failure stops the reading. Returns
/// the bytes read.
pub(super) async fn read_runs(
    backend: &dyn Backend,
    codec: &Arc<Codec>,
    runs: Vec<ReadRun>,
    mut each: impl FnMut(PackEntry, Result<Vec<u8>>),
) -> std::result::Result<u64, FetchError> {
    let mut bytes = 0u64;
    let mut results = futures::stream::iter(runs)
        .map(|run| async move {
            let read = read_run(backend, codec, &run).await;
            (run, read)
        })
        .buffered(RUNS_IN_FLIGHT);
    while let Some((run, read)) = results.next().await {
        match read {
            Ok(opened) => {
                bytes += run.range.end - run.range.start;
                for (e, r) in opened {
                    each(e, r);
                }
            }
            Err(e) if e.is_damage() => {
                for entry in &run.entries {
                    let why = Error::corrupt(keys::pack(&run.pack), e.to_string());
                    each(*entry, Err(why));
                }
            }
            Err(error) => {
                return Err(FetchError {
                    chunk: run.entries.first().map(|e| e.id),
                    error,
                });
            }
        }
    }
    Ok(bytes)
}

/// Tries every other copy the index knows of the chunks that failed;
/// replaces their results with the first copy that opens.
async fn other_copies(
    backend: &dyn Backend,
    codec: &Arc<Codec>,
    index: &ChunkIndex,
    failed: &[ObjectId],
    got: &mut HashMap<ObjectId, Result<Vec<u8>>>,
) -> Result<u64> {
    let mut bytes = 0;
    for (id, places) in failed.iter().zip(index.lookup_readable(failed).await?) {
        // The first place was tried already.
        for place in places.iter().skip(1) {
            match read_one(backend, codec, place).await {
                Ok(Some(plain)) => {
                    bytes += u64::from(place.entry.stored_len);
                    got.insert(*id, Ok(plain));
                    break;
                }
                Ok(None) => {}
                Err(e) if e.is_damage() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(bytes)
}

/// Reads and opens one chunk at its place: `None` if its pack is gone.
pub async fn read_one(
    backend: &dyn Backend,
    codec: &Codec,
    place: &IndexEntry,
) -> Result<Option<Vec<u8>>> {
    let key = keys::pack(&place.pack);
    let e = place.entry;
    let Some(blob) = read_range(backend, &key, e.range()).await? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    open_blob(codec, &key, &e, &blob, &mut out)?;
    Ok(Some(out))
}

fn not_indexed(id: &ObjectId, index: &ChunkIndex) -> Error {
    let why = match index.damage_seen() {
        // It may be listed there.
        Some(damage) => format!(
            "not found in the index, part of which cannot be read ({damage}; `xfull index \
             rebuild` makes it again from the packs)"
        ),
        None => "missing from the repository (no index object lists it)".to_string(),
    };
    Error::corrupt(chunk_name(id), why)
}
