//! A census in passes (chunk marks on disk, loaded one range of ids at a
//! time) decides exactly what a census in memory decides: the same
//! deletions, rewrites and index, on the same repository.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Duration;

use super::pack_plan::class_rules;
use super::pack_sweep_tests::{Chunk, chunk, point};
use super::test_packs::{put_pack, read_chunk, store_pack};
use super::{GcReport, PackOptions};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::repo::Repository;
use crate::testing::MemBackend;

/// The chunks the index places that points reference, and the
/// repository: dead packs, half-dead packs to rewrite, a quarter-dead one kept,
/// orphans (dead, holding the only copy of a live chunk, covered), index
/// objects of any ids to distribute into shards of 16 entries, and 8
/// points over 43 live chunks.
async fn repository() -> (Arc<MemBackend>, Vec<Chunk>) {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    let c: Vec<Chunk> = (0..100).map(chunk).collect();
    let mut live = Vec::new();
    for (i, part) in c[..80].chunks(8).enumerate() {
        store_pack(&repo, part).await;
        // Packs 0-2 all live, 3-5 half, 6 three quarters, 7-9 dead.
        let keep = match i {
            0..=2 => 8,
            3..=5 => 4,
            6 => 6,
            _ => 0,
        };
        live.extend_from_slice(&part[..keep]);
    }
    put_pack(&repo, &c[80..84]).await;
    put_pack(&repo, &c[84..85]).await;
    put_pack(&repo, &c[0..2]).await;
    let indexed = live.clone();
    // Live, in an orphan only (its index object lost): kept, unindexed.
    live.push(c[84].clone());
    for (n, part) in live.chunks(6).enumerate() {
        point(&repo, n as u8, part).await;
    }
    mem.clock().advance(Duration::days(40));
    (mem, indexed)
}

fn options(passes: bool, marks: &std::path::Path) -> PackOptions {
    PackOptions {
        rules: class_rules("STANDARD", &BTreeMap::new()),
        shard_entries: 16,
        mark_memory: if passes { 4 * 8 } else { 64 << 20 },
        mark_dir: Some(marks.into()),
        ..Default::default()
    }
}

async fn stored(mem: &MemBackend) -> BTreeMap<String, Bytes> {
    let mut out = BTreeMap::new();
    for prefix in ["packs/", "index/", "nodes/"] {
        let listed: Vec<_> =
            futures::TryStreamExt::try_collect(crate::backend::Backend::list(mem, prefix))
                .await
                .unwrap();
        for m in listed {
            let bytes = crate::backend::Backend::get(mem, &m.key).await.unwrap();
            out.insert(m.key, bytes);
        }
    }
    out
}

/// What two sweeps must agree on (not requests, times or memory).
fn decisions(r: &GcReport) -> Vec<u64> {
    vec![
        r.nodes_deleted,
        r.chunks_marked,
        r.packs_listed,
        r.packs_deleted,
        r.packs_rewritten,
        r.packs_written,
        r.live_bytes_moved,
        r.waste_bytes_left,
        r.packs_orphaned,
        r.packs_unindexed_live,
        r.index_objects_read,
        r.index_objects_written,
        r.index_objects_deleted,
        r.bytes_freed,
    ]
}

#[tokio::test]
async fn a_census_in_passes_decides_what_one_in_memory_does() {
    let (mem, live) = repository().await;
    let marks = tempfile::tempdir().unwrap();
    let progress = Arc::new(crate::progress::Progress::default());
    let mut after = Vec::new();
    for passes in [false, true] {
        let mem = Arc::new(mem.fork());
        let repo = Repository::open(mem.clone()).await.unwrap();
        let opts = options(passes, marks.path());
        let r = super::run_with(&repo, false, opts, &progress)
            .await
            .unwrap();
        // Not vacuous: every kind of decision is there.
        assert!(r.packs_deleted >= 3 && r.packs_rewritten == 3, "{r:?}");
        assert!(
            r.packs_orphaned == 2 && r.packs_unindexed_live == 1,
            "{r:?}"
        );
        assert!(
            r.index_objects_written > 1 && r.waste_bytes_left > 0,
            "{r:?}"
        );
        for (id, d) in &live {
            assert_eq!(&read_chunk(&repo, id).await.unwrap(), d);
        }
        if passes {
            // 4 marks in memory at most: 43 marks in 11 parts.
            assert!(r.mark_passes >= 10, "{r:?}");
            assert!(r.mark_state_bytes < 64 << 10, "{r:?}");
        } else {
            assert_eq!(r.mark_passes, 1);
        }
        assert_eq!(std::fs::read_dir(marks.path()).unwrap().count(), 0);
        after.push((decisions(&r), stored(&mem).await));
    }
    assert_eq!(after[0].0, after[1].0);
    assert!(
        after[0].1 == after[1].1,
        "different objects after the sweep"
    );
}

/// A sweep says where it is: the points and leases it read, that marking
/// is done, and after every delete batch the totals so far, which end at
/// the report's (what `xfull gc` logs for a long sweep).
#[tokio::test]
async fn a_sweep_reports_its_steps_as_it_goes() {
    use crate::progress::{GcStep, Notice};
    let (mem, _) = repository().await;
    let repo = Repository::open(mem).await.unwrap();
    let progress = Arc::new(crate::progress::Progress::default());
    let r = super::run_batched(&repo, false, PackOptions::default(), 2, &progress)
        .await
        .unwrap();
    let steps: Vec<GcStep> = progress
        .take_notices()
        .into_iter()
        .filter_map(|n| match n {
            Notice::GcStep(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps[0],
        GcStep::Listed {
            points: 8,
            live_leases: 0
        },
        "{steps:?}"
    );
    assert_eq!(
        steps[1],
        GcStep::Marked {
            nodes: r.nodes_marked,
            chunks: r.chunks_marked
        },
        "{steps:?}"
    );
    let deleted: Vec<&GcStep> = steps[2..].iter().collect();
    assert_eq!(deleted.len() as u64, r.batches, "{steps:?}");
    assert!(r.batches >= 2, "{r:?}");
    assert_eq!(
        deleted.last(),
        Some(&&GcStep::Deleted {
            batches: r.batches,
            nodes: r.nodes_deleted,
            packs: r.packs_deleted,
            bytes: r.bytes_freed,
        }),
        "{steps:?}"
    );
}
