//! Which packs a set of chunks lives in, and their archive state and thaw:
//! the placement side of `xfull restore --plan` and `xfull thaw`.

use crate::archive::{ArchiveState, ThawAnswer, ThawTier};
use crate::error::Result;
use crate::id::ObjectId;
use crate::keys;

use super::Placement;
use super::lookup::ChunkIndex;

/// One pack as a restore would need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackState {
    pub pack: ObjectId,
    /// Its key, for messages.
    pub key: String,
    pub bytes: u64,
    pub state: ArchiveState,
}

impl Placement {
    /// The packs holding `ids`, every place of each (a restore reads the
    /// first copy whose pack exists and falls back to the others), added
    /// to `packs` (sorted and deduplicated by the caller); returns how many
    /// ids the index does not know (a restore would report them damaged).
    pub async fn packs_of(
        &self,
        index: &ChunkIndex,
        ids: &[ObjectId],
        packs: &mut Vec<ObjectId>,
    ) -> Result<u64> {
        let places = index.lookup_all(ids).await?;
        let mut unknown = 0;
        for p in places {
            if p.is_empty() {
                unknown += 1;
            }
            packs.extend(p.iter().map(|e| e.pack));
        }
        Ok(unknown)
    }

    /// A pack's size and archive state (one HEAD); `None` if it is gone
    /// (a gc rewrote it since the index was read, or it was lost: a
    /// restore then reads another copy or reports the chunk damaged).
    pub async fn pack_state(&self, pack: &ObjectId) -> Result<Option<PackState>> {
        let key = keys::pack(pack);
        let (meta, state) = match self.backend.archive_state(&key).await {
            Ok(found) => found,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(PackState {
            pack: *pack,
            key,
            bytes: meta.size,
            state,
        }))
    }

    /// Asks the store for a readable copy of a pack; `None` if it is gone
    /// (a gc rewrote it since the plan looked: counted, as the plan counts
    /// one, rather than stopping the thaw of the others).
    pub async fn thaw_pack(
        &self,
        pack: &ObjectId,
        days: Option<u32>,
        tier: ThawTier,
    ) -> Result<Option<ThawAnswer>> {
        match self.backend.thaw(&keys::pack(pack), days, tier).await {
            Ok(answer) => Ok(Some(answer)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
