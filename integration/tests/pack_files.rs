//! Where chunks lie in a local repository's packs, read through the
//! engine (with the test password), for tests that damage one chunk.

use std::path::PathBuf;

use futures::TryStreamExt;
use xfull_core::keys;
use xfull_core::placement::pack_read::read_trailer;
use xfull_integration::env::Env;

/// One chunk's blob in a pack file.
#[derive(Clone, Debug)]
pub struct PackedChunk {
    /// The pack's file.
    pub file: PathBuf,
    /// The blob's byte range in the file.
    pub offset: u64,
    pub len: u64,
    /// The chunk id, hex (as messages name it).
    pub id: String,
}

/// Every chunk of every pack of `e`'s (local) repository, packs in key
/// order, chunks in pack order.
pub fn packed_chunks(e: &Env) -> Vec<PackedChunk> {
    let repo = crate::unlocked::open(e);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let backend = repo.backend().clone();
        let mut packs: Vec<_> = backend.list(keys::PACKS).try_collect().await.unwrap();
        packs.sort_by(|a, b| a.key.cmp(&b.key));
        let max = repo.config().chunking.max;
        let mut out = Vec::new();
        for meta in packs {
            let Some(name) = keys::parse_pack(&meta.key) else {
                continue;
            };
            let entries = read_trailer(&*backend, repo.codec(), &name, meta.size, max)
                .await
                .unwrap_or_else(|err| panic!("{}: {err}", meta.key));
            for en in entries {
                out.push(PackedChunk {
                    file: e.repo.join(&meta.key),
                    offset: en.offset,
                    len: u64::from(en.stored_len),
                    id: en.id.to_hex().to_string(),
                });
            }
        }
        out
    })
}

/// Flips a byte in the middle of `c`'s blob: that chunk, and only it, is
/// damaged.
pub fn damage(c: &PackedChunk) {
    let mut bytes = std::fs::read(&c.file).unwrap();
    bytes[(c.offset + c.len / 2) as usize] ^= 0xff;
    std::fs::write(&c.file, bytes).unwrap();
}
