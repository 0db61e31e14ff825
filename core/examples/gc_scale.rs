//! What a gc's marking and census cost at scale: a synthetic repository
//! of N chunk ids in shard objects (as gc leaves them) and N/128 packs,
//! generated on demand by a store that holds nothing; the chunk marks of
//! the live ids and the node marks of N/128 nodes fed to the sweep's mark
//! set (`gc::marks::Marks`, with its memory budget), then the census as a
//! sweep takes it (`gc::census::Census`: listing, heads and tables, the
//! count in id order, fates, the objects to replace), counted by request
//! and measured by peak RSS. Output: one JSON object.
//!
//! ```text
//! gc_scale [--entries N] [--mark-memory BYTES] [--seed S]
//! ```
//!
//! Entry `j` of shard `k` is global entry `g = j * shards + k` and lies
//! in pack `g / 128`: a pack holds 128 chunks spread over 128 shards, and
//! a shard names about as many packs as it has entries, as in a real
//! index. Pack `p` is dead if `p % 50 == 0` (deleted), half dead if
//! `p % 50 == 1` (rewritten); one chunk in 10 of the others is dead
//! (waste kept). A shard object is generated again for each request to
//! another shard than the last (the store keeps the last one only: its
//! memory, about 112 bytes per entry of a shard while encoding, is in the
//! peak RSS).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

mod synthetic;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use futures::TryStreamExt;
use futures::stream::{self, BoxStream, StreamExt};
use rand::{Rng, SeedableRng};
use synthetic::{arg, not_found, set_prefix};
use xfull_core::backend::{Backend, BackendError, ObjectMeta, PutOptions};
use xfull_core::codec::Codec;
use xfull_core::gc::census::{Census, Decide, Fate, PackInfo};
use xfull_core::gc::marks::Marks;
use xfull_core::gc::pack_plan::{PackFate, class_rules};
use xfull_core::id::ObjectId;
use xfull_core::keys;
use xfull_core::placement::index::{BLOCK_ENTRIES, ENTRY_LEN, IndexEntry, encode_in};
use xfull_core::placement::pack::PackEntry;
use xfull_core::placement::shard::{self, SHARD_ENTRIES};
use xfull_core::placement::sweep::{list_index, list_packs, read_head, read_table};

const PER_PACK: u64 = 128;

#[derive(Debug)]
struct Synthetic {
    depth: usize,
    per_shard: u64,
    seed: u64,
    /// Each shard object's size (it depends on how many packs it names).
    sizes: Vec<u64>,
    at: DateTime<Utc>,
    gets: AtomicU64,
    get_bytes: AtomicU64,
    lists: AtomicU64,
    last: std::sync::Mutex<Option<(u64, Bytes)>>,
}

fn splitmix(mut x: u64) -> u64 {
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

/// Whether global entry `g` (in pack `g / 128`) is live.
fn live(g: u64) -> bool {
    match (g / PER_PACK) % 50 {
        0 => false,
        1 => g.is_multiple_of(2),
        _ => !splitmix(g ^ 0x5555).is_multiple_of(10),
    }
}

impl Synthetic {
    fn shards(&self) -> u64 {
        1 << (4 * self.depth)
    }

    fn packs(&self) -> u64 {
        (self.per_shard * self.shards()).div_ceil(PER_PACK)
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
    fn entries(&self, k: u64) -> impl Iterator<Item = (u64, IndexEntry)> + '_ {
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
        let k = self.shard_of(key).ok_or_else(|| not_found(key))?;
        self.get_range(key, 0..self.sizes[k as usize]).await
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
        let k = self.shard_of(key).ok_or_else(|| not_found(key))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: self.sizes[k as usize],
            last_modified: self.at,
            storage_class: None,
        })
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        let at = self.at;
        if prefix == keys::PACKS {
            // As S3 bills it: one request per 1,000 keys.
            self.lists
                .fetch_add(self.packs().div_ceil(1000), Ordering::Relaxed);
            return stream::iter(0..self.packs())
                .map(move |p| {
                    Ok(ObjectMeta {
                        key: keys::pack(&pack_name(p)),
                        size: 16 << 20,
                        last_modified: at,
                        storage_class: None,
                    })
                })
                .boxed();
        }
        let wanted = prefix.to_string();
        self.lists
            .fetch_add(self.shards().div_ceil(1000), Ordering::Relaxed);
        stream::iter(0..self.shards())
            .map(move |k| (k, self.key(k)))
            .filter(move |(_, key)| std::future::ready(key.starts_with(&wanted)))
            .map(move |(k, key)| {
                Ok(ObjectMeta {
                    key,
                    size: self.sizes[k as usize],
                    last_modified: at,
                    storage_class: None,
                })
            })
            .boxed()
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        Err(not_found(keys.first().map_or("", |k| k.as_str())))
    }
}

/// Peak (`VmHWM`) or current (`VmRSS`) resident memory, in MiB.
fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    kib as f64 / 1024.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let entries = arg(&args, "--entries", 200_000_000);
    let budget = arg(&args, "--mark-memory", 64 << 20) as usize;
    let seed = arg(&args, "--seed", 1);
    let depth = shard::depth_for(entries, SHARD_ENTRIES);
    let now = Utc::now();
    let mut store = Synthetic {
        depth,
        per_shard: entries >> (4 * depth),
        seed,
        sizes: Vec::new(),
        at: now - Duration::days(30),
        gets: AtomicU64::new(0),
        get_bytes: AtomicU64::new(0),
        lists: AtomicU64::new(0),
        last: std::sync::Mutex::new(None),
    };
    store.sizes = (0..store.shards()).map(|k| store.size_of(k)).collect();
    let store = Arc::new(store);
    let backend: &dyn Backend = &*store;
    let codec = Arc::new(Codec::plain());

    // Marking: the live chunks of every shard (as the nodes would give
    // them, in no particular order) and one node per 128 chunks.
    let t = Instant::now();
    let mut marks = Marks::with_budget(budget, Some(std::env::temp_dir()));
    let mut live_ids = 0u64;
    for k in 0..store.shards() {
        for (g, e) in store.entries(k) {
            if live(g) {
                marks.chunk(&e.entry.id).expect("mark");
                live_ids += 1;
            }
            if g.is_multiple_of(PER_PACK) {
                let mut node = [0u8; 32];
                node[..8].copy_from_slice(&splitmix(g ^ 0xaaaa).to_be_bytes());
                node[8..16].copy_from_slice(&g.to_be_bytes());
                marks.node(ObjectId::from_bytes(node));
            }
        }
    }
    marks.seal().expect("seal");
    let mark_s = t.elapsed().as_secs_f64();
    let rss_marked = rss_mib("VmRSS:");
    let peak_marked = rss_mib("VmHWM:");

    // The census, as `Sweep::plan_packs` takes it.
    let t = Instant::now();
    let mut census = Census::default();
    {
        let mut packs = Box::pin(list_packs(backend));
        while let Some((name, meta)) = packs.try_next().await.expect("list packs") {
            census.listed(name, meta.size, meta.last_modified, None);
        }
    }
    census.listing_done();
    let peak_listed = rss_mib("VmHWM:");
    for (name, meta) in list_index(backend).await.expect("list index") {
        let object = read_head(backend, &codec, name, meta).await.expect("head");
        let table = read_table(backend, &object).await.expect("table");
        census.index(object, &table);
    }
    let heads_gets = store.gets.load(Ordering::Relaxed);
    let peak_heads = rss_mib("VmHWM:");
    let mut orphan_live = census
        .read_orphans(backend, &codec, now, 8 << 20, &marks)
        .await
        .expect("orphans");
    let never = || false;
    census
        .count(backend, &mut marks, &mut orphan_live, &never)
        .await
        .expect("count");
    let count_gets = store.gets.load(Ordering::Relaxed) - heads_gets;
    let peak_count = rss_mib("VmHWM:");
    let deps = Default::default();
    census.decide(
        &Decide {
            now,
            cutoff: now,
            deps: &deps,
            rules: class_rules("", &Default::default()),
            min_storage_days: &Default::default(),
            max_waste_pct: 25,
            shard_entries: SHARD_ENTRIES,
        },
        &orphan_live,
    );
    census.settle(backend, &never).await.expect("settle");
    let census_s = t.elapsed().as_secs_f64();
    let fate = |f: Fate| census.packs.iter().filter(|p| p.fate == f).count();
    let (delete, repack) = (
        fate(Fate::Planned(PackFate::Delete)),
        fate(Fate::Planned(PackFate::Repack)),
    );
    let kept = census.packs.len() - delete - repack;
    let replaced = census.objects.iter().filter(|o| o.replace).count();
    // Every 50th pack is dead, every 50th half dead; the rest keep their
    // waste.
    assert_eq!(delete as u64, store.packs().div_ceil(50), "packs deleted");
    assert!(repack as u64 >= store.packs() / 50, "packs rewritten");
    let (nodes, chunks) = marks.counts();
    println!(
        "{}",
        serde_json::json!({
            "entries": store.per_shard * store.shards(),
            "depth": depth,
            "shards": store.shards(),
            "packs": store.packs(),
            "live_chunks": live_ids,
            "chunks_marked": chunks,
            "nodes_marked": nodes,
            "mark_memory": budget,
            "passes": marks.passes(),
            "mark_state_bytes": marks.state_bytes(),
            "pack_info_bytes": std::mem::size_of::<PackInfo>(),
            "marking": {"seconds": mark_s, "rss_mib": rss_marked, "peak_rss_mib": peak_marked},
            "census": {
                "seconds": census_s,
                "peak_rss_mib_listed": peak_listed,
                "peak_rss_mib_heads": peak_heads,
                "peak_rss_mib_counted": peak_count,
                "list_requests": store.lists.load(Ordering::Relaxed),
                "gets_heads_and_tables": heads_gets,
                "gets_count": count_gets,
                "gets_total": store.gets.load(Ordering::Relaxed),
                "bytes_read": store.get_bytes.load(Ordering::Relaxed),
                "packs_deleted": delete,
                "packs_rewritten": repack,
                "packs_kept": kept,
                "index_objects_replaced": replaced,
            },
            "peak_rss_mib": rss_mib("VmHWM:"),
        })
    );
}
