//! Reading packs with ranged GETs: a pack's trailer with one suffix read,
//! and chunks in coalesced runs (adjacent blobs of one pack in one
//! request, bounded in size), every chunk checked against its id.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::index::IndexEntry;
use super::pack::{PackEntry, decode_trailer, open_blob, trailer_len};
use crate::backend::Backend;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;

/// Bytes read from a pack's end in the first request for its trailer.
/// An entry is 48 bytes and a pack seals at 32 MiB of stored (compressed)
/// bytes, so the trailer grows with the compression ratio: 24 KiB for
/// incompressible 64 KiB chunks, 72 KiB at 3:1, 120 KiB at 5:1. One
/// request covers up to about 2,700 chunks; a longer trailer (highly
/// compressible or minimum-size chunks) costs a second, exact read.
pub const TRAILER_GUESS: u64 = 128 << 10;

/// Largest run read in one request: bounds a restore's memory per
/// request while keeping requests few (8 MiB is 64 chunks of 128 KiB).
pub const MAX_RUN: u64 = 8 << 20;

/// Bytes of unwanted blobs a run may read through rather than split:
/// one request costs about as much as reading this much more.
pub const MAX_GAP: u64 = 256 << 10;

/// Reads and checks the trailer of the pack `name` of `size` bytes (from
/// a listing or the index): one ranged GET, two if the trailer is longer
/// than [`TRAILER_GUESS`].
pub async fn read_trailer(
    backend: &dyn Backend,
    codec: &Codec,
    name: &ObjectId,
    size: u64,
    max_chunk: u32,
) -> Result<Vec<PackEntry>> {
    let key = keys::pack(name);
    let first = size.saturating_sub(TRAILER_GUESS)..size;
    let mut suffix = get_exact(backend, &key, first).await?;
    let mut last4 = [0u8; 4];
    if suffix.len() >= 4 {
        last4.copy_from_slice(&suffix[suffix.len() - 4..]);
    }
    let need = trailer_len(&key, size, last4)?;
    if need > suffix.len() as u64 {
        suffix = get_exact(backend, &key, size - need..size).await?;
    }
    decode_trailer(codec, &key, &suffix, size, max_chunk)
}

/// One request: a byte range of one pack and the chunks in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRun {
    pub pack: ObjectId,
    pub range: Range<u64>,
    /// Ascending by offset, each inside `range`.
    pub entries: Vec<PackEntry>,
}

/// Groups the wanted chunks into runs: by pack, by offset, merging blobs
/// closer than `max_gap` bytes while a run stays within `max_run` bytes
/// (a single larger blob is a run of its own). A chunk wanted twice is
/// read once; two chunks an index places at one place are both kept (in
/// runs of their own), so each is opened under its own id and the one
/// the blob is not fails there, instead of going unread (found by
/// review: a copy committed a point whose chunk it had never read).
pub fn coalesce(mut wanted: Vec<IndexEntry>, max_gap: u64, max_run: u64) -> Vec<ReadRun> {
    // The whole entry: two entries of one chunk at one offset that differ
    // in length are both read (one kept at random could be the wrong
    // one, and a salvage then took the chunk for damaged: found by
    // review).
    wanted.sort_unstable_by_key(|w| (w.pack, w.entry.offset, w.entry.id, w.entry));
    wanted.dedup();
    let mut runs: Vec<ReadRun> = Vec::new();
    for w in wanted {
        let r = w.entry.range();
        if let Some(last) = runs.last_mut() {
            let joins = last.pack == w.pack
                && r.start >= last.range.end
                && r.start - last.range.end <= max_gap
                && r.end - last.range.start <= max_run;
            if joins {
                last.range.end = r.end;
                last.entries.push(w.entry);
                continue;
            }
        }
        runs.push(ReadRun {
            pack: w.pack,
            range: r,
            entries: vec![w.entry],
        });
    }
    runs
}

/// Reads one run with one ranged GET and opens each of its chunks. A pack
/// that is missing or shorter than the run is an error for the whole run
/// (damage: the pack is named); a blob that does not decode or match its
/// id is an error for that chunk only, naming pack and chunk, so a caller
/// can zero-fill just its bytes. CPU work runs on a blocking thread.
pub async fn read_run(
    backend: &dyn Backend,
    codec: &Arc<Codec>,
    run: &ReadRun,
) -> Result<Vec<(PackEntry, Result<Vec<u8>>)>> {
    let key = keys::pack(&run.pack);
    let bytes = get_exact(backend, &key, run.range.clone()).await?;
    let (entries, start, codec) = (run.entries.clone(), run.range.start, codec.clone());
    crate::task::blocking("opening chunks of a pack", move || {
        entries
            .into_iter()
            .map(|e| {
                let at = (e.offset - start) as usize..(e.range().end - start) as usize;
                let mut out = Vec::new();
                let opened = open_blob(&codec, &key, &e, &bytes[at], &mut out).map(|()| out);
                (e, opened)
            })
            .collect()
    })
    .await
}

/// A ranged GET that must return exactly the range: a shorter answer
/// means the object is shorter than the index or listing said (damage).
pub(super) async fn get_exact(
    backend: &dyn Backend,
    key: &str,
    range: Range<u64>,
) -> Result<Bytes> {
    match read_range(backend, key, range).await? {
        Some(b) => Ok(b),
        None => Err(Error::corrupt(key, "missing from the repository")),
    }
}

/// Exactly `range` of `key`; `None` if the object is gone. An object
/// shorter than the range is damage, whether the store answers with
/// fewer bytes (S3) or refuses the range (a local directory): a failed
/// read is followed by a HEAD to tell the two apart from an outage.
pub(crate) async fn read_range(
    backend: &dyn Backend,
    key: &str,
    range: Range<u64>,
) -> Result<Option<Bytes>> {
    let want = range.end - range.start;
    let (start, end) = (range.start, range.end);
    let short = |got: u64| {
        Error::corrupt(
            key,
            format!("{got} bytes at {start}..{end}: the pack is shorter than its index says"),
        )
    };
    match backend.get_range(key, range).await {
        Ok(b) if b.len() as u64 == want => Ok(Some(b)),
        Ok(b) => Err(short(b.len() as u64)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => match backend.head(key).await {
            Ok(m) if m.size < end => Err(short(m.size.saturating_sub(start))),
            Err(h) if h.is_not_found() => Ok(None),
            _ => Err(e.into()),
        },
    }
}

#[cfg(test)]
#[path = "pack_read_tests.rs"]
mod tests;
