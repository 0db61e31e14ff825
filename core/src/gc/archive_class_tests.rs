//! gc over packs in an archive class: a repository made with `init
//! --data-storage-class DEEP_ARCHIVE`, packs an S3 lifecycle rule moved
//! to Glacier (the listing says so), and packs in an archive tier the
//! listing does not show (Intelligent-Tiering): none is read to be
//! rewritten, or, when one answers "archived", the sweep keeps it with
//! its waste and goes on. Nothing is lost and the dead packs still go.

use std::sync::Arc;

use chrono::Duration;

use super::pack_sweep_tests::{Chunk, chunk, point};
use super::test_packs::{put_pack, read_chunk, store_pack};
use super::{GcReport, PackOptions};
use crate::archive::IT_DEEP_ARCHIVE;
use crate::backend::Backend;
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::keys;
use crate::repo::Repository;
use crate::testing::{ArchiveSim, MemBackend};

fn config() -> RepoConfig {
    RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap()
}

/// A repository written through a store without classes, to be opened
/// again through an [`ArchiveSim`] once some packs are "archived".
async fn hot_repo() -> (Arc<MemBackend>, Repository) {
    let mem = Arc::new(MemBackend::default());
    let hot = Repository::init(mem.clone(), config()).await.unwrap();
    (mem, hot)
}

async fn gc(repo: &Repository) -> crate::Result<GcReport> {
    let progress = Arc::new(crate::progress::Progress::default());
    // What `prune` runs: the default (hot) rules.
    super::run_with(repo, false, PackOptions::default(), &progress).await
}

#[tokio::test]
async fn a_pack_to_rewrite_found_archived_is_kept_with_its_waste() {
    let (mem, hot) = hot_repo().await;
    let c: Vec<Chunk> = (0..8).map(chunk).collect();
    // Half dead: the hot rules rewrite it.
    let (wasteful, _) = store_pack(&hot, &c[0..4]).await;
    // All dead: deleted, archived or not.
    let (dead, _) = store_pack(&hot, &c[4..8]).await;
    point(&hot, 1, &c[0..2]).await;
    // Listed as INTELLIGENT_TIERING (hot), in its deep archive tier.
    let sim = Arc::new(ArchiveSim::in_class(mem.clone(), IT_DEEP_ARCHIVE));
    for p in [&wasteful, &dead] {
        sim.archive(&keys::pack(p));
    }
    let repo = Repository::open(sim.clone()).await.unwrap();
    mem.clock().advance(Duration::days(400));

    let r = gc(&repo)
        .await
        .expect("an archived pack must not fail the sweep");
    assert_eq!((r.packs_rewritten, r.packs_archived), (0, 1), "{r:?}");
    assert!(r.waste_bytes_left > 0, "{r:?}");
    assert!(mem.head(&keys::pack(&wasteful)).await.is_ok());
    assert!(mem.head(&keys::pack(&dead)).await.is_err(), "{r:?}");
    // The kept pack is still indexed: its live chunks read once thawed.
    for (id, d) in &c[0..2] {
        assert_eq!(&read_chunk(&hot, id).await.unwrap(), d);
    }
    // The next sweep finds it archived again, and keeps it again.
    let again = gc(&repo).await.unwrap();
    assert_eq!((again.packs_rewritten, again.packs_archived), (0, 1));
}

/// The options `gc` and `prune` take: the class the client names wins,
/// else the repository's, with the repository's minimum durations.
#[test]
fn options_follow_the_client_then_the_repository() {
    use std::collections::BTreeMap;
    let mut cfg = config();
    let hot = PackOptions::for_repository(&cfg, None).rules;
    assert!(!hot.archive && hot.min_storage == Duration::zero());
    cfg.store.data_storage_class = Some("DEEP_ARCHIVE".into());
    assert!(PackOptions::for_repository(&cfg, None).rules.archive);
    let ia = PackOptions::for_repository(&cfg, Some("STANDARD_IA")).rules;
    assert!(!ia.archive && ia.min_storage == Duration::days(30));
    cfg.store.min_storage_days = BTreeMap::from([("STANDARD".into(), 90)]);
    let wasabi = PackOptions::for_repository(&cfg, Some("STANDARD")).rules;
    assert!(!wasabi.archive && wasabi.min_storage == Duration::days(90));
}

/// A repository made with an archive data class, on a store whose
/// listing reports no class: its sweeps never plan to rewrite a pack (the
/// default, hot rules would).
#[tokio::test]
async fn an_archive_repository_s_sweep_reads_no_pack() {
    let mem = Arc::new(MemBackend::default());
    let mut cfg = config();
    cfg.store.data_storage_class = Some("DEEP_ARCHIVE".into());
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    let c: Vec<Chunk> = (0..4).map(chunk).collect();
    store_pack(&repo, &c).await;
    point(&repo, 1, &c[0..1]).await;
    mem.clock().advance(Duration::days(400));
    let progress = Arc::new(crate::progress::Progress::default());
    let hot = super::run_with(&repo, true, PackOptions::default(), &progress)
        .await
        .unwrap();
    assert_eq!(hot.packs_rewritten, 1, "hot rules would: {hot:?}");
    let opts = PackOptions::for_repository(repo.config(), None);
    let r = super::run_with(&repo, false, opts, &progress)
        .await
        .unwrap();
    assert_eq!((r.packs_rewritten, r.packs_archived), (0, 0), "{r:?}");
    assert!(r.waste_bytes_left > 0, "{r:?}");
}

/// An old pack no index object names (a backup killed before its index
/// object) stored straight into an archive class: its trailer answers
/// "archived", so what it holds is unknown; it stays, and the sweep goes
/// on (it failed every sweep before).
#[tokio::test]
async fn an_archived_orphan_is_kept_and_the_sweep_goes_on() {
    let (mem, hot) = hot_repo().await;
    let c: Vec<Chunk> = (0..6).map(chunk).collect();
    let (dead, _) = store_pack(&hot, &c[0..2]).await;
    let orphan = put_pack(&hot, &c[2..4]).await;
    point(&hot, 1, &c[4..6]).await;
    store_pack(&hot, &c[4..6]).await;
    let sim = Arc::new(ArchiveSim::in_class(mem.clone(), IT_DEEP_ARCHIVE));
    sim.archive(&keys::pack(&orphan));
    let repo = Repository::open(sim).await.unwrap();
    mem.clock().advance(Duration::days(2));
    let r = gc(&repo)
        .await
        .expect("an archived orphan must not fail the sweep");
    assert_eq!(r.packs_archived, 1, "{r:?}");
    assert!(mem.head(&keys::pack(&orphan)).await.is_ok());
    assert!(mem.head(&keys::pack(&dead)).await.is_err(), "{r:?}");
}

/// Packs a lifecycle rule moved to DEEP_ARCHIVE, in a repository that
/// says nothing of it: the listing's class decides, so none is read.
#[tokio::test]
async fn a_pack_listed_in_an_archive_class_is_judged_by_it() {
    let (mem, hot) = hot_repo().await;
    let c: Vec<Chunk> = (0..8).map(chunk).collect();
    let (moved, _) = store_pack(&hot, &c[0..4]).await;
    let (stayed, _) = store_pack(&hot, &c[4..8]).await;
    point(&hot, 1, &[&c[0..1], &c[4..5]].concat()).await;
    let sim = Arc::new(ArchiveSim::new(mem.clone()));
    sim.archive(&keys::pack(&moved));
    let repo = Repository::open(sim).await.unwrap();
    mem.clock().advance(Duration::days(400));
    let r = gc(&repo).await.unwrap();
    // The hot one is rewritten; the archived one is not even read.
    assert_eq!((r.packs_rewritten, r.packs_archived), (1, 0), "{r:?}");
    assert!(mem.head(&keys::pack(&moved)).await.is_ok());
    assert!(mem.head(&keys::pack(&stayed)).await.is_err());
    for (id, d) in [&c[0..1], &c[4..5]].concat() {
        assert_eq!(read_chunk(&hot, &id).await.unwrap(), d);
    }
}

/// A live chunk stored twice, its older copy's pack in an
/// Intelligent-Tiering archive tier the listing does not show: the keeper
/// check reads it and gets "archived". That chunk keeps both copies and
/// the sweep goes on (it failed, and so every later one, before: found by
/// review).
#[tokio::test]
async fn an_archived_keeper_keeps_every_copy_and_the_sweep_goes_on() {
    let (mem, hot) = hot_repo().await;
    let c: Vec<Chunk> = (0..4).map(chunk).collect();
    let (older, _) = store_pack(&hot, &c[0..2]).await;
    mem.clock().advance(Duration::minutes(1));
    let (newer, _) = store_pack(&hot, &c[0..3]).await;
    let (dead, _) = store_pack(&hot, &c[3..4]).await;
    point(&hot, 1, &c[0..2]).await;
    let sim = Arc::new(ArchiveSim::in_class(mem.clone(), IT_DEEP_ARCHIVE));
    sim.archive(&keys::pack(&older));
    let repo = Repository::open(sim.clone()).await.unwrap();
    mem.clock().advance(Duration::days(400));
    let r = gc(&repo).await;
    let r = r.expect("an archived keeper must not fail the sweep");
    assert!(mem.head(&keys::pack(&dead)).await.is_err(), "{r:?}");
    assert!(mem.head(&keys::pack(&newer)).await.is_ok(), "{r:?}");
    assert_eq!(r.copies_kept_bad_keeper, 2, "{r:?}");
}
