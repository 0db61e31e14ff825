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
    /// The packs holding `ids` (the copy a restore reads first), added to
    /// `packs` (sorted and deduplicated by the caller); returns how many
    /// ids the index does not know (a restore would report them damaged).
    pub async fn packs_of(
        &self,
        index: &ChunkIndex,
        ids: &[ObjectId],
        packs: &mut Vec<ObjectId>,
    ) -> Result<u64> {
        let places = index.lookup(ids).await?;
        let mut unknown = 0;
        for p in places {
            match p {
                Some(e) => packs.push(e.pack),
                None => unknown += 1,
            }
        }
        Ok(unknown)
    }

    /// A pack's size and archive state (one HEAD).
    pub async fn pack_state(&self, pack: &ObjectId) -> Result<PackState> {
        let key = keys::pack(pack);
        let (meta, state) = self.backend.archive_state(&key).await?;
        Ok(PackState {
            pack: *pack,
            key,
            bytes: meta.size,
            state,
        })
    }

    /// Asks the store for a readable copy of a pack.
    pub async fn thaw_pack(
        &self,
        pack: &ObjectId,
        days: u32,
        tier: ThawTier,
    ) -> Result<ThawAnswer> {
        Ok(self.backend.thaw(&keys::pack(pack), days, tier).await?)
    }
}
