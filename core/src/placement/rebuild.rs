//! Rebuilding the chunk index from pack trailers alone (`xfull index
//! rebuild`, and what `repair` will use when index objects are missing or
//! damaged): every pack is self-describing, so the index is derived data.

use std::sync::Arc;

use futures::TryStreamExt;

use super::index::IndexEntry;
use super::index_write::{MAX_WRITTEN_ENTRIES, store_entries};
use super::pack_read::read_trailer;
use crate::backend::Backend;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::keys;
use crate::progress::Progress;
use crate::repo::Stored;

/// What a rebuild found and wrote.
#[derive(Debug, Default)]
pub struct Rebuilt {
    /// Packs whose trailers were read and indexed.
    pub packs: u64,
    /// Places of chunks indexed (a chunk stored in two packs counts twice).
    pub chunks: u64,
    /// Packs left out: key and why (a damaged or unreadable trailer).
    pub damaged: Vec<(String, String)>,
    /// The index objects written (none if there were no packs), and
    /// whether each was new (an identical one may exist already).
    pub written: Vec<(String, Stored)>,
}

/// Reads every pack's trailer and writes index objects of any ids holding
/// them all (every place of every chunk), [`MAX_WRITTEN_ENTRIES`] at most
/// each; gc later merges them into shards. Existing index objects are
/// left alone: removing them is a sweep's job (gc), and entries of the
/// new objects agree with every sound one. Memory: one object's entries
/// (40 MiB), whatever the repository's size.
pub async fn rebuild(
    backend: Arc<dyn Backend>,
    codec: &Codec,
    max_chunk: u32,
    progress: &Progress,
) -> Result<Rebuilt> {
    let mut out = Rebuilt::default();
    let mut entries: Vec<IndexEntry> = Vec::new();
    let mut listing = backend.list(keys::PACKS);
    while let Some(meta) = listing.try_next().await? {
        if progress.is_cancelled() {
            return Err(Error::Cancelled {
                cleaned: "nothing was written".into(),
            });
        }
        let Some(name) = keys::parse_pack(&meta.key) else {
            continue;
        };
        match read_trailer(&*backend, codec, &name, meta.size, max_chunk).await {
            Ok(found) => {
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
                        .extend(store_entries(&*backend, codec, "", full).await?);
                }
            }
            Err(e) if e.is_damage() => out.damaged.push((meta.key, e.to_string())),
            Err(e) => return Err(e),
        }
    }
    drop(listing);
    out.written
        .extend(store_entries(&*backend, codec, "", entries).await?);
    Ok(out)
}

#[cfg(test)]
#[path = "rebuild_tests.rs"]
mod tests;
