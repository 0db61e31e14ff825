//! Reading chunks straight into a caller's buffer: a restore's part.
//!
//! [`super::fetch::fetch`] gives each chunk as a buffer of its own, which
//! a restore then copied into the part it writes: that copy was 10% of a
//! restore's CPU, and each buffer a fresh allocation (`perf`, 2026-12-05).
//! Here a chunk with a slot (a range of the caller's buffer, exactly its
//! length) is opened and checked straight into it. Only the first place
//! the index gives is tried: a chunk that does not open there comes back
//! as damage, and the caller asks [`super::fetch::fetch`] for it, which
//! looks at every other copy (rare: damage, or a pack a gc rewrote).
//!
//! Memory: the runs (coalesced as `fetch` does) in flight, at most
//! [`RUNS_IN_FLIGHT`] at once, one waiting and one being opened; the
//! caller's buffer.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::fetch::{FetchError, RUNS_IN_FLIGHT};
use super::lookup::ChunkIndex;
use super::pack::{open_blob, open_blob_into};
use super::pack_read::{MAX_GAP, MAX_RUN, ReadRun, coalesce, get_exact};
use crate::backend::Backend;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::keys;

/// One chunk asked for.
#[derive(Clone, Debug)]
pub struct Ask {
    pub id: ObjectId,
    /// Where in the buffer its plaintext goes; `None`: in a buffer of its
    /// own (a chunk only partly in the part).
    pub slot: Option<Range<usize>>,
}

/// How an ask was answered.
#[derive(Debug)]
pub enum Got {
    /// Opened into its slot.
    Placed,
    /// Opened into a buffer of its own (no slot, or a slot whose length
    /// is not the chunk's as the index says: the caller names that).
    Own(Vec<u8>),
    /// Not opened at its first place (not indexed, its pack missing or
    /// short, its blob damaged, or anything else): the caller asks
    /// [`super::fetch::fetch`], which looks at every copy and says why.
    Failed,
}

/// What [`fetch_into`] gives back.
#[derive(Debug)]
pub struct Placed {
    pub buf: Vec<u8>,
    /// Per ask, in order.
    pub got: Vec<Got>,
    /// Bytes read from the store.
    pub bytes: u64,
}

/// Fetches `asks` (ids may repeat; slots must lie in `buf` and not
/// overlap) into `buf`. A store that fails (not damage) fails the whole
/// fetch, naming the first chunk of the run it stopped.
pub async fn fetch_into(
    backend: &dyn Backend,
    codec: &Arc<Codec>,
    index: &ChunkIndex,
    asks: Vec<Ask>,
    buf: Vec<u8>,
) -> std::result::Result<Placed, FetchError> {
    if let Some(a) = asks
        .iter()
        .find(|a| a.slot.as_ref().is_some_and(|s| s.end > buf.len()))
    {
        return Err(Error::Internal(format!("a slot past the buffer for {}", a.id.short())).into());
    }
    let mut unique: Vec<ObjectId> = asks.iter().map(|a| a.id).collect();
    unique.sort_unstable();
    unique.dedup();
    let places = index.lookup(&unique).await?;
    // An id not indexed stays unanswered: `Failed`.
    let wanted = places.into_iter().flatten().collect();
    let runs = coalesce(wanted, MAX_GAP, MAX_RUN);
    // Runs are read RUNS_IN_FLIGHT at once and opened one after another
    // as they arrive (the buffer can be in one blocking task at a time),
    // at most one waiting: memory stays a few runs, as `fetch`'s, even
    // when an index (a hostile one) makes a part's runs many and large.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(ReadRun, Result<Bytes>)>(1);
    let reads = async move {
        let mut bytes = 0u64;
        let mut read = futures::stream::iter(runs)
            .map(|run| async move {
                let got = get_exact(backend, &keys::pack(&run.pack), run.range.clone()).await;
                (run, got)
            })
            .buffered(RUNS_IN_FLIGHT);
        while let Some((run, got)) = read.next().await {
            match got {
                Err(error) if !error.is_damage() => {
                    return Err(FetchError {
                        chunk: run.entries.first().map(|e| e.id),
                        error,
                    });
                }
                Ok(_) => bytes += run.range.end - run.range.start,
                // A pack gone or short: its chunks stay `Failed`.
                Err(_) => {}
            }
            if tx.send((run, got)).await.is_err() {
                break; // the opening failed
            }
        }
        Ok(bytes)
    };
    let asks = Arc::new(Opening::new(codec.clone(), asks));
    let opens = async move {
        let (mut buf, mut got) = (buf, Vec::new());
        got.resize_with(asks.asks.len(), || Got::Failed);
        while let Some((run, bytes)) = rx.recv().await {
            let Ok(bytes) = bytes else { continue };
            let asks = asks.clone();
            (buf, got) = crate::task::blocking("opening chunks into a part", move || {
                asks.open_run(buf, got, &run, &bytes)
            })
            .await?;
        }
        Ok::<_, Error>((buf, got))
    };
    let (bytes, opened) = futures::join!(reads, opens);
    let (buf, got) = opened?;
    Ok(Placed {
        buf,
        got,
        bytes: bytes?,
    })
}

/// The asks of one fetch, by id, and the codec that opens their chunks.
struct Opening {
    codec: Arc<Codec>,
    asks: Vec<Ask>,
    by_id: HashMap<ObjectId, Vec<usize>>,
}

impl Opening {
    fn new(codec: Arc<Codec>, asks: Vec<Ask>) -> Self {
        let mut by_id: HashMap<ObjectId, Vec<usize>> = HashMap::new();
        for (k, a) in asks.iter().enumerate() {
            by_id.entry(a.id).or_default().push(k);
        }
        Opening { codec, asks, by_id }
    }

    /// Whether ask `k` has a slot of `len` bytes.
    fn fits(&self, k: usize, len: u32) -> bool {
        let slot = self.asks[k].slot.as_ref();
        slot.is_some_and(|s| s.len() == len as usize)
    }

    /// Opens the chunks of one run read (`bytes`) for their asks: once per
    /// chunk, into the first ask's slot or a buffer of its own, and
    /// copied for its other asks. A chunk that does not open leaves its
    /// asks as they were (`Failed` unless answered already).
    fn open_run(
        &self,
        mut buf: Vec<u8>,
        mut got: Vec<Got>,
        run: &ReadRun,
        bytes: &[u8],
    ) -> (Vec<u8>, Vec<Got>) {
        let (codec, key) = (&*self.codec, keys::pack(&run.pack));
        for e in &run.entries {
            let Some(ks) = self.by_id.get(&e.id) else {
                continue;
            };
            let at =
                (e.offset - run.range.start) as usize..(e.range().end - run.range.start) as usize;
            let blob = &bytes[at];
            let first: std::result::Result<Range<usize>, Vec<u8>> =
                match ks.iter().find(|&&k| self.fits(k, e.plain_len)) {
                    Some(&k) => {
                        let slot = self.asks[k].slot.clone().unwrap_or_default();
                        if open_blob_into(codec, &key, e, blob, &mut buf[slot.clone()]).is_err() {
                            continue;
                        }
                        Ok(slot)
                    }
                    None => {
                        let mut own = Vec::new();
                        if open_blob(codec, &key, e, blob, &mut own).is_err() {
                            continue;
                        }
                        Err(own)
                    }
                };
            for &k in ks {
                got[k] = match (&first, &self.asks[k].slot) {
                    (Ok(from), Some(to)) if from == to => Got::Placed,
                    (Ok(from), Some(to)) if self.fits(k, e.plain_len) => {
                        buf.copy_within(from.clone(), to.start);
                        Got::Placed
                    }
                    (Ok(from), _) => Got::Own(buf[from.clone()].to_vec()),
                    (Err(own), Some(to)) if self.fits(k, e.plain_len) => {
                        buf[to.clone()].copy_from_slice(own);
                        Got::Placed
                    }
                    (Err(own), _) => Got::Own(own.clone()),
                };
            }
        }
        (buf, got)
    }
}

#[cfg(test)]
#[path = "fetch_into_tests.rs"]
mod tests;
