//! Moving chunks between two repositories that name and seal them alike
//! (`xfull copy`, from a source to a target made with `init --like`): a
//! chunk's stored blob opens by its id in either, so it is read from the
//! source's packs and appended to the target's as it is stored, never
//! decompressed and compressed again. Every blob is opened and checked
//! against its id on arrival, before the target's writer sees it: a
//! damaged or forged source chunk is refused, named, and never written.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::fetch::RUNS_IN_FLIGHT;
use super::index::IndexEntry;
use super::lookup::ChunkIndex;
use super::pack::{PackEntry, open_blob};
use super::pack_read::{MAX_GAP, MAX_RUN, ReadRun, coalesce, get_exact, read_range};
use super::session::DiskPacks;
use super::{Placement, chunk_name};
use crate::backend::Backend;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;

/// What a transfer moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transferred {
    /// Chunks handed to the target's writer.
    pub chunks: u64,
    /// Their stored bytes.
    pub bytes: u64,
    /// Bytes read from the source (gaps a run read through included).
    pub bytes_read: u64,
}

impl Placement {
    /// Reads the chunks `ids` (distinct) from this repository's packs as
    /// `index` places them, in coalesced runs ([`RUNS_IN_FLIGHT`] at
    /// once), opens each blob and checks it against its id, and appends
    /// the blob as stored to `into`, a writer of a repository with the
    /// same keys. A blob that does not open, or whose pack is gone, is
    /// tried at its other places, then in the index opened anew (a gc may
    /// have moved it meanwhile); a chunk with no good copy fails the
    /// transfer as damage naming it, and nothing of it reaches `into`.
    /// Memory: the runs in flight and one chunk's plaintext per run.
    pub async fn transfer(
        &self,
        index: &ChunkIndex,
        ids: &[ObjectId],
        into: &mut DiskPacks,
    ) -> Result<Transferred> {
        let mut out = Transferred::default();
        let mut wanted = Vec::with_capacity(ids.len());
        let mut failed: Vec<(ObjectId, Option<Error>)> = Vec::new();
        for (id, place) in ids.iter().zip(index.lookup(ids).await?) {
            match place {
                Some(p) => wanted.push(p),
                None => failed.push((*id, None)),
            }
        }
        // Every id looked up must end added or failed: one a run left
        // out would otherwise be counted as sent without being read.
        let mut unread: HashSet<ObjectId> = wanted.iter().map(|w| w.entry.id).collect();
        let (backend, codec) = (&*self.backend, &self.codec);
        let mut reads = futures::stream::iter(coalesce(wanted, MAX_GAP, MAX_RUN))
            .map(|run| async move {
                let read = read_run_stored(backend, codec, &run).await;
                (run, read)
            })
            .buffered(RUNS_IN_FLIGHT);
        while let Some((run, read)) = reads.next().await {
            match read {
                Ok(blobs) => {
                    out.bytes_read += run.range.end - run.range.start;
                    for (e, blob) in blobs {
                        unread.remove(&e.id);
                        match blob {
                            Ok(blob) => add(into, &e, &blob, &mut out).await?,
                            Err(why) => failed.push((e.id, Some(why))),
                        }
                    }
                }
                Err(e) if e.is_damage() => {
                    let why = e.to_string();
                    for c in &run.entries {
                        unread.remove(&c.id);
                    }
                    failed.extend(
                        run.entries
                            .iter()
                            .map(|c| (c.id, Some(Error::corrupt(keys::pack(&run.pack), &why)))),
                    );
                }
                Err(e) => return Err(e),
            }
        }
        drop(reads);
        failed.extend(unread.into_iter().map(|id| {
            let why = Error::corrupt(chunk_name(&id), "its place in the index was not read");
            (id, Some(why))
        }));
        if failed.is_empty() {
            return Ok(out);
        }
        let fresh = self.open_index().await?;
        for (id, first) in failed {
            if !self
                .other_copy(&[index, &fresh], &id, into, &mut out)
                .await?
            {
                let why = first.map_or_else(
                    || "no index object lists it in a pack that exists".to_string(),
                    |e| e.to_string(),
                );
                return Err(Error::corrupt(
                    chunk_name(&id),
                    format!("no copy in the source opens as this chunk: {why}"),
                ));
            }
        }
        Ok(out)
    }

    /// Tries every place of `id` in `indexes`, in order; true once one
    /// opened and was handed to `into`.
    async fn other_copy(
        &self,
        indexes: &[&ChunkIndex],
        id: &ObjectId,
        into: &mut DiskPacks,
        out: &mut Transferred,
    ) -> Result<bool> {
        for index in indexes {
            let places = index.lookup_all(std::slice::from_ref(id)).await?;
            for place in places.into_iter().flatten() {
                match read_one_stored(&*self.backend, &self.codec, &place).await {
                    Ok(Some(blob)) => {
                        out.bytes_read += blob.len() as u64;
                        add(into, &place.entry, &blob, out).await?;
                        return Ok(true);
                    }
                    // Gone, or damaged: the next place may do.
                    Ok(None) => {}
                    Err(e) if e.is_damage() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(false)
    }
}

async fn add(
    into: &mut DiskPacks,
    e: &PackEntry,
    blob: &Bytes,
    out: &mut Transferred,
) -> Result<()> {
    into.add(e.id, e.plain_len as usize, blob).await?;
    out.chunks += 1;
    out.bytes += blob.len() as u64;
    Ok(())
}

/// One run with one ranged GET; each blob opened and checked (on a
/// blocking thread), and returned as stored if it is good. A pack
/// missing or shorter than the run fails the whole run as damage.
async fn read_run_stored(
    backend: &dyn Backend,
    codec: &Arc<Codec>,
    run: &ReadRun,
) -> Result<Vec<(PackEntry, Result<Bytes>)>> {
    let key = keys::pack(&run.pack);
    let bytes = get_exact(backend, &key, run.range.clone()).await?;
    let (entries, start, codec) = (run.entries.clone(), run.range.start, codec.clone());
    crate::task::blocking("checking chunks read for a copy", move || {
        let mut plain = Vec::new();
        entries
            .into_iter()
            .map(|e| {
                let at = (e.offset - start) as usize..(e.range().end - start) as usize;
                let blob = bytes.slice(at);
                let checked = open_blob(&codec, &key, &e, &blob, &mut plain).map(|()| blob);
                (e, checked)
            })
            .collect()
    })
    .await
}

/// One blob at its place, checked; `None` if its pack is gone.
async fn read_one_stored(
    backend: &dyn Backend,
    codec: &Arc<Codec>,
    place: &IndexEntry,
) -> Result<Option<Bytes>> {
    let key = keys::pack(&place.pack);
    let e = place.entry;
    let Some(blob) = read_range(backend, &key, e.range()).await? else {
        return Ok(None);
    };
    let codec = codec.clone();
    crate::task::blocking("checking a chunk read for a copy", move || {
        open_blob(&codec, &key, &e, &blob, &mut Vec::new()).map(|()| Some(blob))
    })
    .await?
}
