//! The synthetic repository of `gc_scale.rs` and `full_scan_scale.rs`: N
//! chunk ids in shard objects (as gc leaves them), N/128 packs and N/128
//! nodes, generated on demand by a store that keeps only the last shard
//! object it encoded, and counts requests as S3 would bill them (a LIST
//! per 1,000 keys). It awaits once per GET and per 1,000 keys listed, as
//! a network store does, so that concurrent work interleaves as it would
//! against S3.
//!
//! Entry `j` of shard `k` is global entry `g = j * shards + k` and lies
//! in pack `g / 128`: a pack holds 128 chunks spread over 128 shards, and
//! a shard names about as many packs as it has entries, as in a real
//! index. Node `n` stands for the segment of entries `128 n ..`: one node
//! per 128 chunks, as gc_scale's marking assumes.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use rand::{Rng, SeedableRng};
use xfull_core::backend::{Backend, BackendError, ObjectMeta, PutOptions};
use xfull_core::codec::Codec;
use xfull_core::id::ObjectId;
use xfull_core::keys;
use xfull_core::placement::index::{BLOCK_ENTRIES, ENTRY_LEN, IndexEntry, encode_in};
use xfull_core::placement::pack::PackEntry;
use xfull_core::placement::shard::{self, SHARD_ENTRIES};

use crate::synthetic::{self, not_found, set_prefix};

pub const PER_PACK: u64 = 128;

#[derive(Debug)]
pub struct Synthetic {
    pub depth: usize,
    pub per_shard: u64,
    seed: u64,
    /// Each shard object's size (it depends on how many packs it names).
    sizes: Vec<u64>,
    at: DateTime<Utc>,
    pub gets: AtomicU64,
    pub get_bytes: AtomicU64,
    /// LIST requests of `packs/`, `index/` and `nodes/`.
    pub lists: [AtomicU64; 3],
    last: Mutex<Option<(u64, Bytes)>>,
    /// Objects put (the repository's `config`): a few, small.
    small: Mutex<BTreeMap<String, Bytes>>,
}

pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Pack `p`'s name: uniform first bytes, as hashes are.
fn pack_name(p: u64) -> ObjectId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&splitmix(p).to_be_bytes());
    b[8..16].copy_from_slice(&p.to_be_bytes());
    ObjectId::from_bytes(b)
}

/// Node `n`'s id (uniform first bytes).
pub fn node_name(n: u64) -> ObjectId {
    let g = n * PER_PACK;
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&splitmix(g ^ 0xaaaa).to_be_bytes());
    b[8..16].copy_from_slice(&g.to_be_bytes());
    ObjectId::from_bytes(b)
}

impl Synthetic {
    /// A repository of about `entries` chunk ids (rounded down to a
    /// multiple of the shards), every object dated `at`.
    pub fn new(entries: u64, seed: u64, at: DateTime<Utc>) -> Synthetic {
        let depth = shard::depth_for(entries, SHARD_ENTRIES);
        let mut store = Synthetic {
            depth,
            per_shard: entries >> (4 * depth),
            seed,
            sizes: Vec::new(),
            at,
            gets: AtomicU64::new(0),
            get_bytes: AtomicU64::new(0),
            lists: Default::default(),
            last: Mutex::new(None),
            small: Mutex::new(BTreeMap::new()),
        };
        store.sizes = (0..store.shards()).map(|k| store.size_of(k)).collect();
        store
    }

    pub fn shards(&self) -> u64 {
        1 << (4 * self.depth)
    }

    pub fn entries_total(&self) -> u64 {
        self.per_shard * self.shards()
    }

    /// Packs, and nodes: one per 128 entries.
    pub fn packs(&self) -> u64 {
        self.entries_total().div_ceil(PER_PACK)
    }

    pub fn list_requests(&self) -> u64 {
        self.lists.iter().map(|l| l.load(Ordering::Relaxed)).sum()
    }

    fn prefix(&self, k: u64) -> String {
        format!("{k:0width$x}", width = self.depth)
    }

    fn key(&self, k: u64) -> String {
        let prefix = self.prefix(k);
        keys::index_in(&prefix, &ObjectId::of(prefix.as_bytes()))
    }

    fn global(&self, k: u64, j: u64) -> u64 {
        j * self.shards() + k
    }

    /// The plain layout's size for shard `k`.
    fn size_of(&self, k: u64) -> u64 {
        let n = self.per_shard;
        let mut packs = 0;
        let mut last = None;
        for j in 0..n {
            let p = self.global(k, j) / PER_PACK;
            if last != Some(p) {
                packs += 1;
                last = Some(p);
            }
        }
        let blocks = n.div_ceil(BLOCK_ENTRIES as u64);
        24 + 32 * (blocks + 1) + n * ENTRY_LEN as u64 + 8 + 32 * packs + 32
    }

    /// Shard `k`'s entries with their global numbers (random ids with
    /// the shard's prefix).
    pub fn entries(&self, k: u64) -> impl Iterator<Item = (u64, IndexEntry)> + '_ {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ k.wrapping_mul(0x9e37_79b9));
        (0..self.per_shard).map(move |j| {
            let mut id: [u8; 32] = rng.random();
            set_prefix(&mut id, k, self.depth);
            let g = self.global(k, j);
            let e = IndexEntry {
                pack: pack_name(g / PER_PACK),
                entry: PackEntry {
                    id: ObjectId::from_bytes(id),
                    offset: (g % PER_PACK) * 100_000,
                    stored_len: 60_000,
                    plain_len: 131_072,
                },
            };
            (g, e)
        })
    }

    fn object(&self, k: u64) -> Bytes {
        let mut last = self.last.lock().expect("not poisoned");
        if let Some((at, bytes)) = &*last
            && *at == k
        {
            return bytes.clone();
        }
        *last = None;
        let entries = self.entries(k).map(|(_, e)| e).collect();
        let bytes = encode_in(&Codec::plain(), &self.prefix(k), entries);
        assert_eq!(bytes.len() as u64, self.sizes[k as usize], "shard {k}");
        *last = Some((k, bytes.clone()));
        bytes
    }

    fn shard_of(&self, key: &str) -> Option<u64> {
        synthetic::shard_of(key, self.depth, |k| self.key(k))
    }

    /// Keys `0..n` made by `key`, listed as S3 bills it: one request per
    /// 1,000 keys, counted in `lists[kind]`.
    fn listing<'a>(
        &'a self,
        kind: usize,
        n: u64,
        key: impl Fn(u64) -> (String, u64) + Send + 'a,
    ) -> BoxStream<'a, Result<ObjectMeta, BackendError>> {
        self.lists[kind].fetch_add(n.div_ceil(1000), Ordering::Relaxed);
        let at = self.at;
        stream::iter(0..n)
            .then(move |i| {
                let (key, size) = key(i);
                async move {
                    // A page's round trip: lets other tasks run.
                    if i.is_multiple_of(1000) {
                        tokio::task::yield_now().await;
                    }
                    Ok(ObjectMeta {
                        key,
                        size,
                        last_modified: at,
                        storage_class: None,
                    })
                }
            })
            .boxed()
    }
}

#[async_trait]
impl Backend for Synthetic {
    fn location(&self) -> String {
        "synthetic".into()
    }

    async fn put_opts(&self, key: &str, bytes: Bytes, _: PutOptions) -> Result<(), BackendError> {
        if key.starts_with(keys::INDEX) || key.starts_with(keys::PACKS) {
            return Err(not_found(key));
        }
        self.small
            .lock()
            .expect("not poisoned")
            .insert(key.to_string(), bytes);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        if let Some(b) = self.small.lock().expect("not poisoned").get(key) {
            return Ok(b.clone());
        }
        let k = self.shard_of(key).ok_or_else(|| not_found(key))?;
        self.get_range(key, 0..self.sizes[k as usize]).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        let k = self.shard_of(key).ok_or_else(|| not_found(key))?;
        // Counted before the object is made, so that a sampler reading
        // the count sees the making as part of the GET.
        self.gets.fetch_add(1, Ordering::Relaxed);
        // A request's round trip: lets other tasks run.
        tokio::task::yield_now().await;
        let bytes = self.object(k);
        let end = range.end.min(bytes.len() as u64);
        self.get_bytes
            .fetch_add(end - range.start, Ordering::Relaxed);
        Ok(bytes.slice(range.start as usize..end as usize))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        let k = self.shard_of(key).ok_or_else(|| not_found(key))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: self.sizes[k as usize],
            last_modified: self.at,
            storage_class: None,
        })
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        if prefix == keys::PACKS {
            return self.listing(0, self.packs(), |p| (keys::pack(&pack_name(p)), 16 << 20));
        }
        if prefix == keys::NODES {
            return self.listing(2, self.packs(), |n| (keys::node(&node_name(n)), 2048));
        }
        let wanted = prefix.to_string();
        self.listing(1, self.shards(), move |k| {
            (self.key(k), self.sizes[k as usize])
        })
        .filter(move |m| std::future::ready(m.as_ref().is_ok_and(|m| m.key.starts_with(&wanted))))
        .boxed()
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        Err(not_found(keys.first().map_or("", |k| k.as_str())))
    }
}

/// Peak (`VmHWM`) or current (`VmRSS`) resident memory, in MiB.
pub fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    kib as f64 / 1024.0
}
