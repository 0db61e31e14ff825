//! Every chunk id the index places in a listed pack, in id order, in
//! bounded memory: the index objects merged as gc's census reads them
//! (each read once, checked for order and shard on the way), for
//! structural verify of a repository whose ids do not fit in memory.

use super::Placement;
use super::merge::Merge;
use super::sweep::{list_index, read_head};
use crate::backend::Backend;
use crate::error::Result;
use crate::id::ObjectId;

impl Placement {
    /// Calls `f` with each chunk id an index object places in a listed
    /// pack, in id order, each once. `Ok(false)`: an index object went
    /// away while it was read (a gc replaced it), and the walk stopped
    /// part way: the caller starts again. A damaged index object is an
    /// error (damage naming it).
    pub async fn walk_ids(
        &self,
        f: &mut (dyn FnMut(&ObjectId) -> Result<()> + Send),
    ) -> Result<bool> {
        let backend = &*self.backend;
        let packs = self.list_packs().await?;
        let mut objects = Vec::new();
        for (name, meta) in list_index(backend).await? {
            let key = meta.key.clone();
            match read_head(backend, &self.codec, name, meta).await {
                Ok(o) => objects.push(o),
                Err(e) if e.is_damage() && gone(backend, &key).await => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        let mut merge = Merge::new(objects.iter().collect());
        let mut last = None;
        loop {
            match merge.next(backend).await {
                Ok(Some(e)) => {
                    if last == Some(e.entry.id) || packs.binary_search(&e.pack).is_err() {
                        continue;
                    }
                    last = Some(e.entry.id);
                    f(&e.entry.id)?;
                }
                Ok(None) => return Ok(true),
                Err(e) if e.is_damage() => {
                    let reading = merge.reading().map(str::to_string);
                    return match reading {
                        Some(key) if gone(backend, &key).await => Ok(false),
                        _ => Err(e),
                    };
                }
                Err(e) => return Err(e),
            }
        }
    }
}

async fn gone(backend: &dyn Backend, key: &str) -> bool {
    matches!(backend.head(key).await, Err(e) if e.is_not_found())
}
