//! What a backup's chunk lookups cost against a large index: a synthetic
//! repository index of N chunk ids in shard objects (as gc leaves them),
//! generated on demand by a store that holds nothing, and the lookups a
//! backup storing M new chunks makes (batches of 128, one segment's
//! chunks, as a backup worker asks), counted by request and measured by
//! peak RSS. Output: one JSON object.
//!
//! ```text
//! index_scale [--entries N] [--new M] [--present P] [--seed S]
//! ```
//!
//! A shard object is generated again for each request to another shard
//! than the last (the store keeps the last one only: its memory is one
//! object, about 112 bytes per entry of a shard while encoding, which the
//! peak RSS includes). Each entry names
//! its own pack, as in a large index, where a shard names about as many
//! packs as it has entries.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

mod synthetic;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use futures::stream::{self, BoxStream, StreamExt};
use rand::{Rng, SeedableRng};
use synthetic::{arg, not_found, set_prefix};
use xfull_core::backend::{Backend, BackendError, ObjectMeta, PutOptions};
use xfull_core::codec::Codec;
use xfull_core::id::ObjectId;
use xfull_core::keys;
use xfull_core::placement::index::{BLOCK_ENTRIES, ENTRY_LEN, IndexEntry, encode_in};
use xfull_core::placement::lookup::ChunkIndex;
use xfull_core::placement::pack::PackEntry;
use xfull_core::placement::shard::{self, SHARD_ENTRIES};

#[derive(Debug)]
struct Synthetic {
    depth: usize,
    per_shard: u64,
    seed: u64,
    gets: AtomicU64,
    get_bytes: AtomicU64,
    lists: AtomicU64,
    last: std::sync::Mutex<Option<(u64, Bytes)>>,
}

impl Synthetic {
    fn shards(&self) -> u64 {
        1 << (4 * self.depth)
    }

    fn prefix(&self, k: u64) -> String {
        format!("{k:0width$x}", width = self.depth)
    }

    fn key(&self, k: u64) -> String {
        let prefix = self.prefix(k);
        keys::index_in(&prefix, &ObjectId::of(prefix.as_bytes()))
    }

    /// The plain layout's size for `n` entries naming `n` packs.
    fn size(&self) -> u64 {
        let n = self.per_shard;
        let blocks = n.div_ceil(BLOCK_ENTRIES as u64);
        24 + 32 * (blocks + 1) + n * ENTRY_LEN as u64 + 8 + 32 * n + 32
    }

    /// The `j`th id of shard `k` (random, with the shard's prefix).
    fn entries(&self, k: u64) -> Vec<IndexEntry> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ k.wrapping_mul(0x9e37_79b9));
        (0..self.per_shard)
            .map(|j| {
                let mut id: [u8; 32] = rng.random();
                set_prefix(&mut id, k, self.depth);
                let mut pack = [0u8; 32];
                pack[..8].copy_from_slice(&k.to_le_bytes());
                pack[8..16].copy_from_slice(&j.to_le_bytes());
                IndexEntry {
                    pack: ObjectId::from_bytes(pack),
                    entry: PackEntry {
                        id: ObjectId::from_bytes(id),
                        offset: j * 100_000,
                        stored_len: 60_000,
                        plain_len: 131_072,
                    },
                }
            })
            .collect()
    }

    fn object(&self, k: u64) -> Bytes {
        let mut last = self.last.lock().expect("not poisoned");
        if let Some((at, bytes)) = &*last
            && *at == k
        {
            return bytes.clone();
        }
        *last = None;
        let bytes = encode_in(&Codec::plain(), &self.prefix(k), self.entries(k));
        *last = Some((k, bytes.clone()));
        bytes
    }

    fn shard_of(&self, key: &str) -> Option<u64> {
        synthetic::shard_of(key, self.depth, |k| self.key(k))
    }
}

#[async_trait]
impl Backend for Synthetic {
    fn location(&self) -> String {
        "synthetic".into()
    }

    async fn put_opts(&self, key: &str, _: Bytes, _: PutOptions) -> Result<(), BackendError> {
        Err(not_found(key))
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.get_range(key, 0..self.size()).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        let k = self.shard_of(key).ok_or_else(|| not_found(key))?;
        let bytes = self.object(k);
        let end = range.end.min(bytes.len() as u64);
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.get_bytes
            .fetch_add(end - range.start, Ordering::Relaxed);
        Ok(bytes.slice(range.start as usize..end as usize))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        self.shard_of(key).ok_or_else(|| not_found(key))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: self.size(),
            last_modified: Utc::now(),
            storage_class: None,
        })
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        let wanted = prefix.to_string();
        let size = self.size();
        // As S3 bills it: one request per 1,000 keys.
        self.lists
            .fetch_add(self.shards().div_ceil(1000), Ordering::Relaxed);
        stream::iter(0..self.shards())
            .map(move |k| self.key(k))
            .filter(move |key| std::future::ready(key.starts_with(&wanted)))
            .map(move |key| {
                Ok(ObjectMeta {
                    key,
                    size,
                    last_modified: Utc::now(),
                    storage_class: None,
                })
            })
            .boxed()
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        Err(not_found(keys.first().map_or("", |k| k.as_str())))
    }
}

/// Peak resident memory of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let entries = arg(&args, "--entries", 200_000_000);
    let new = arg(&args, "--new", 2_000);
    let present = arg(&args, "--present", 200);
    let seed = arg(&args, "--seed", 1);
    let depth = shard::depth_for(entries, SHARD_ENTRIES);
    let store = Arc::new(Synthetic {
        depth,
        per_shard: entries >> (4 * depth),
        seed,
        gets: AtomicU64::new(0),
        get_bytes: AtomicU64::new(0),
        lists: AtomicU64::new(0),
        last: std::sync::Mutex::new(None),
    });
    let rss_start = peak_rss_kib();
    let t = Instant::now();
    let backend: Arc<dyn Backend> = store.clone();
    let index = ChunkIndex::open(backend, Arc::new(Codec::plain()), None)
        .await
        .expect("open");
    let open_s = t.elapsed().as_secs_f64();
    let open_gets = store.gets.load(Ordering::Relaxed);
    // New chunks: random ids (absent), looked up a segment's batch at a
    // time, as a backup worker does.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xabcdef);
    let ids: Vec<ObjectId> = (0..new)
        .map(|_| ObjectId::from_bytes(rng.random()))
        .collect();
    let t = Instant::now();
    let mut found = 0;
    for batch in ids.chunks(128) {
        found += index
            .lookup(batch)
            .await
            .expect("lookup")
            .iter()
            .filter(|f| f.is_some())
            .count();
    }
    let lookup_s = t.elapsed().as_secs_f64();
    let gets = store.gets.load(Ordering::Relaxed) - open_gets;
    let bytes = store.get_bytes.load(Ordering::Relaxed);
    // Ids that are there: every one found where it was put.
    let mut hits = 0;
    for k in (0..store.shards()).step_by((store.shards() / present.max(1)).max(1) as usize) {
        let want = store.entries(k)[7];
        if index.lookup(&[want.entry.id]).await.expect("lookup")[0] == Some(want) {
            hits += 1;
        }
    }
    let checked = store
        .shards()
        .div_ceil((store.shards() / present.max(1)).max(1));
    println!(
        "{}",
        serde_json::json!({
            "entries": entries,
            "depth": depth,
            "shards": store.shards(),
            "entries_per_shard": store.per_shard,
            "shard_object_bytes": store.size(),
            "open": {"list_requests": store.lists.load(Ordering::Relaxed), "gets": open_gets, "seconds": open_s},
            "new_chunks": new,
            "new_found": found,
            "lookup": {
                "gets": gets,
                "gets_per_new_chunk": gets as f64 / new as f64,
                "bytes_read": bytes,
                "bytes_per_new_chunk": bytes as f64 / new as f64,
                "seconds": lookup_s,
            },
            "present_checked": checked,
            "present_found": hits,
            "peak_rss_mib": peak_rss_kib() as f64 / 1024.0,
            "rss_before_open_mib": rss_start as f64 / 1024.0,
        })
    );
}
