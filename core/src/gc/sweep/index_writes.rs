//! What a sweep over packs writes to the index: the entries of each new
//! pack a rewrite stored, and the surviving entries of the objects it
//! rewrites into shards.

use super::Sweep;
use crate::error::{Error, Result};
use crate::gc::census::{Census, Fate};
use crate::placement::index::IndexEntry;
use crate::placement::index_write::IndexWriter;
use crate::placement::merge::Merge;
use crate::placement::sweep::NewPack;

impl Sweep {
    /// A pack the repack wrote: counted, and its entries to the index
    /// object the sweep writes.
    pub(super) async fn index_new_pack(
        &mut self,
        census: &mut Census,
        writer: &mut IndexWriter,
        np: NewPack,
    ) -> Result<()> {
        self.report.packs_written += 1;
        self.new_packs.push(np.name);
        // Blobs are copied verbatim, so a pack rewritten again gives the
        // same new pack: one a killed sweep left as an orphan is listed,
        // doomed, and must not go now that it is indexed.
        if let Some(same) = census.pack_mut(&np.name)
            && same.fate.doomed()
        {
            same.fate = Fate::Keep;
        }
        for entry in np.entries {
            writer
                .push(IndexEntry {
                    pack: np.name,
                    entry,
                })
                .await?;
        }
        Ok(())
    }

    /// The surviving entries of the objects to rewrite into shards, merged
    /// in id order and written as shard objects of the census's depth.
    /// Stopped by a cancel, the objects it wrote are added to
    /// `census.written` (undone with the others).
    pub(super) async fn write_shards(&mut self, census: &mut Census) -> Result<Vec<String>> {
        let backend = self.repo.backend().clone();
        let into: Vec<_> = census
            .objects
            .iter()
            .filter(|o| o.replace && o.into_shards)
            .map(|o| o.object.clone())
            .collect();
        if into.is_empty() {
            return Ok(Vec::new());
        }
        let codec = self.repo.codec().clone();
        let mut writer = IndexWriter::sharded(backend.clone(), codec, census.depth);
        let mut merge = Merge::new(into.iter().collect());
        let mut n = 0u64;
        while let Some(e) = merge.next(&*backend).await? {
            n += 1;
            // The sweep's marker stays fresh through a long merge, which
            // stops there when cancelled.
            if n.is_multiple_of(1 << 20) {
                if self.cancelled() {
                    census.written.extend(writer.written.iter().cloned());
                    return Err(Error::Cancelled {
                        cleaned: String::new(),
                    });
                }
                self.refresh().await?;
            }
            if census.survives(&e.pack) {
                writer.push(e).await?;
            }
        }
        writer.finish().await
    }
}
