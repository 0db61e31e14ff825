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
//! The repository (`synthetic_repo`): entry `j` of shard `k` lies in
//! pack `(j * shards + k) / 128`. Pack `p` is dead if `p % 50 == 0`
//! (deleted), half dead if
//! `p % 50 == 1` (rewritten); one chunk in 10 of the others is dead
//! (waste kept). A shard object is generated again for each request to
//! another shard than the last (the store keeps the last one only: its
//! memory, about 112 bytes per entry of a shard while encoding, is in the
//! peak RSS).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

mod synthetic;
mod synthetic_repo;

use chrono::{Duration, Utc};
use futures::TryStreamExt;
use synthetic::arg;
use synthetic_repo::{PER_PACK, Synthetic, node_name, rss_mib, splitmix};
use xfull_core::backend::Backend;
use xfull_core::codec::Codec;
use xfull_core::gc::census::{Census, Decide, Fate, PackInfo};
use xfull_core::gc::marks::Marks;
use xfull_core::gc::pack_plan::{PackFate, class_rules};
use xfull_core::placement::shard::SHARD_ENTRIES;
use xfull_core::placement::sweep::{list_index, list_packs, read_head, read_table};

/// Whether global entry `g` (in pack `g / 128`) is live.
fn live(g: u64) -> bool {
    match (g / PER_PACK) % 50 {
        0 => false,
        1 => g.is_multiple_of(2),
        _ => !splitmix(g ^ 0x5555).is_multiple_of(10),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let entries = arg(&args, "--entries", 200_000_000);
    let budget = arg(&args, "--mark-memory", 64 << 20) as usize;
    let seed = arg(&args, "--seed", 1);
    let now = Utc::now();
    let store = Arc::new(Synthetic::new(entries, seed, now - Duration::days(30)));
    let depth = store.depth;
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
                marks.node(node_name(g / PER_PACK));
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
    // As a sweep with a full key: copies of live chunks are looked for.
    let mut copies = xfull_core::gc::copies::Copies::new(vec![true]);
    census
        .count(
            backend,
            &mut marks,
            &mut orphan_live,
            Some(&mut copies),
            &never,
        )
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
            "entries": store.entries_total(),
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
                "list_requests": store.list_requests(),
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
