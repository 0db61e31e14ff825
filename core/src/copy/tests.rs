//! The copy engine over the in-memory backend: copies restore bit-exact
//! and verify clean, a second copy sends nothing, an interrupted copy is
//! finished by a re-run, a damaged source chunk never reaches the target,
//! and a target not made `--like` the source is refused untouched.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;

use super::*;
use crate::backend::{Backend, PutMode};
use crate::backup::{BackupRequest, backup};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::crypto::{Argon2Params, Secret};
use crate::keys;
use crate::manifest::Manifest;
use crate::placement::pack_read::read_trailer;
use crate::restore::{RestoreOptions, Target, restore};
use crate::testing::{FaultPlan, FaultyBackend, MemBackend};
use crate::verify::{VerifyOptions, verify};

pub(super) const FAST: Argon2Params = Argon2Params {
    m_kib: 64,
    t: 1,
    p: 1,
};

pub(super) fn pw(s: &str) -> Secret {
    Secret::password(s.as_bytes().to_vec(), format!("password {s:?}"))
}

fn config() -> RepoConfig {
    RepoConfig::new(1 << 20, ChunkParams::from_avg(16 << 10), 3).unwrap()
}

pub(super) async fn init(b: &Arc<MemBackend>, encrypted: bool) -> Repository {
    let backend: Arc<dyn Backend> = b.clone();
    if encrypted {
        Repository::init_encrypted(backend, config(), &pw("source"), FAST)
            .await
            .unwrap()
    } else {
        Repository::init(backend, config()).await.unwrap()
    }
}

pub(super) async fn init_like(b: &Arc<MemBackend>, source: &Repository) -> Repository {
    let secret = pw("target");
    Repository::init_like(b.clone(), config(), source, Some(&secret), FAST)
        .await
        .unwrap()
}

/// A source (encrypted or not) and a target made like it, each on an
/// in-memory store of its own, with a directory for images.
pub(super) async fn pair(
    encrypted: bool,
) -> (
    tempfile::TempDir,
    Arc<MemBackend>,
    Arc<MemBackend>,
    Repository,
    Repository,
) {
    let dir = tempfile::tempdir().unwrap();
    let (sb, tb) = (
        Arc::new(MemBackend::default()),
        Arc::new(MemBackend::default()),
    );
    let source = init(&sb, encrypted).await;
    let target = init_like(&tb, &source).await;
    (dir, sb, tb, source, target)
}

/// The target opened again, through `backend` (e.g. a faulty view).
pub(super) async fn reopen(backend: Arc<dyn Backend>, encrypted: bool) -> Repository {
    if encrypted {
        Repository::open_with(backend, || Ok(pw("target")))
            .await
            .unwrap()
    } else {
        Repository::open(backend).await.unwrap()
    }
}

/// Pseudo-random bytes (incompressible, so chunks are distinct).
pub(super) use crate::testing::seeded_bytes as data;

pub(super) async fn back_up(
    repo: &Repository,
    dir: &tempfile::TempDir,
    vm: &str,
    bytes: &[u8],
) -> Manifest {
    let path = dir
        .path()
        .join(format!("{vm}-{}.img", rand::random::<u32>()));
    std::fs::write(&path, bytes).unwrap();
    let req = BackupRequest::new(
        vm.parse().unwrap(),
        vec![("d".parse().unwrap(), path)],
        "test",
    );
    backup(repo, req, Arc::new(Progress::default()))
        .await
        .unwrap()
}

pub(super) async fn restored(repo: &Repository, dir: &tempfile::TempDir, m: &Manifest) -> Vec<u8> {
    let m = repo.load_manifest(&m.vm, &m.id).await.unwrap();
    let to = dir.path().join(format!("r-{}", rand::random::<u64>()));
    let target = Target::parse(to.to_str().unwrap()).unwrap();
    let opts = RestoreOptions {
        image_hash: false,
        ..RestoreOptions::default()
    };
    restore(repo, &m, "d", &target, opts, Arc::new(Progress::default()))
        .await
        .unwrap();
    std::fs::read(&to).unwrap()
}

pub(super) fn every_point(ms: &[&Manifest]) -> CopyRequest {
    CopyRequest {
        points: ms.iter().map(|m| (m.vm.clone(), m.id.clone())).collect(),
        host: "copier".into(),
    }
}

pub(super) async fn run(
    source: &Repository,
    target: &Repository,
    req: CopyRequest,
) -> Result<CopyOutcome> {
    copy(source, target, req, Arc::new(Progress::default())).await
}

async fn clean(repo: &Repository) {
    let opts = VerifyOptions {
        read_data: true,
        ..VerifyOptions::default()
    };
    let report = verify(repo, &[], &opts, Arc::new(Progress::default()))
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
}

async fn keys_of(b: &MemBackend, prefix: &str) -> Vec<String> {
    let metas: Vec<_> = b.list(prefix).try_collect().await.unwrap();
    metas.into_iter().map(|m| m.key).collect()
}

fn puts(b: &MemBackend) -> u64 {
    b.request_counts().get("put").copied().unwrap_or(0)
}

/// Three points (two of one VM, the second mostly the first), copied,
/// restore bit-exact and verify clean; the second point sends only what
/// changed; copying again sends nothing at all.
async fn copies_then_nothing(encrypted: bool) {
    let (dir, sb, tb, source, target) = pair(encrypted).await;
    let one = data(3 << 20, 1);
    let mut two = one.clone();
    two[(1 << 20) + 5..(1 << 20) + 70_000].copy_from_slice(&data(69_995, 9));
    let other = data(1 << 20, 3);
    let a1 = back_up(&source, &dir, "a", &one).await;
    let a2 = back_up(&source, &dir, "a", &two).await;
    let b1 = back_up(&source, &dir, "b", &other).await;

    let out = run(&source, &target, every_point(&[&a1, &a2, &b1]))
        .await
        .unwrap();
    assert_eq!(out.copied(), 3, "{out:?}");
    let first = out.points[0].counts;
    let second = out.points[1].counts;
    assert!(
        first.chunks_copied > 0 && first.packs_written > 0,
        "{out:?}"
    );
    // The second point builds on the first: most of it is there.
    assert!(second.nodes_present >= 2, "{out:?}");
    assert!(second.chunks_copied * 4 < first.chunks_copied, "{out:?}");
    assert_eq!(
        out.totals.chunks_copied,
        out.points
            .iter()
            .map(|p| p.counts.chunks_copied)
            .sum::<u64>()
    );
    for (m, bytes) in [(&a1, &one), (&a2, &two), (&b1, &other)] {
        assert_eq!(
            &restored(&target, &dir, m).await,
            bytes,
            "{}",
            m.point_name()
        );
    }
    clean(&target).await;
    // Chunks went as stored: every point's data has the same ids there.
    assert_eq!(
        source.chunks().list_ids().await.unwrap(),
        target.chunks().list_ids().await.unwrap()
    );

    let before = puts(&tb);
    let source_before = sb.request_counts();
    let again = run(&source, &target, every_point(&[&a1, &a2, &b1]))
        .await
        .unwrap();
    assert_eq!(again.copied(), 0, "{again:?}");
    assert_eq!(again.totals, CopyCounts::default(), "{again:?}");
    assert_eq!(puts(&tb), before, "a second copy writes nothing");
    // Nor reads the source (its chunk index is opened for a point to
    // copy only).
    assert_eq!(
        sb.request_counts(),
        source_before,
        "a second copy read the source"
    );
    // Leases of the first copy are ended, none is left running.
    for key in keys_of(&tb, keys::LEASES).await {
        let lease = crate::lease::LeaseRecord::load(&target, &key)
            .await
            .unwrap()
            .unwrap();
        assert!(lease.ended.is_some(), "{key}");
    }
}

#[tokio::test]
async fn encrypted_copies_restore_bit_exact_and_a_second_copy_sends_nothing() {
    copies_then_nothing(true).await;
}

#[tokio::test]
async fn unencrypted_copies_restore_bit_exact_and_a_second_copy_sends_nothing() {
    copies_then_nothing(false).await;
}

/// The target fails every request after the `n`th (the copy dies
/// there); a re-run finishes, and the points restore bit-exact.
#[tokio::test]
async fn an_interrupted_copy_is_finished_by_running_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Arc::new(MemBackend::default());
    let source = init(&sb, true).await;
    let one = data(5 << 20, 4);
    let mut two = one.clone();
    two[3 << 20..(3 << 20) + 300_000].copy_from_slice(&data(300_000, 5));
    let a1 = back_up(&source, &dir, "a", &one).await;
    let a2 = back_up(&source, &dir, "a", &two).await;
    let mut interrupted = 0;
    for n in [12, 18, 25, 35, 50, 80] {
        let tb = Arc::new(MemBackend::default());
        init_like(&tb, &source).await;
        let plan = FaultPlan {
            outage_after: Some(n),
            ..FaultPlan::default()
        };
        let faulty = reopen(Arc::new(FaultyBackend::new(tb.clone(), plan)), true).await;
        let first = run(&source, &faulty, every_point(&[&a1, &a2])).await;
        let target = reopen(tb.clone(), true).await;
        if let Err(e) = &first {
            interrupted += 1;
            assert!(e.to_string().contains("injected fault"), "{e}");
            // What a dead copy leaves is never a point that lacks data.
            for key in keys_of(&tb, keys::POINTS).await {
                let (vm, id) = keys::parse_point(&key).unwrap();
                let m = target.load_manifest(&vm, &id).await.unwrap();
                let want = if m.id == a1.id { &one } else { &two };
                assert_eq!(&restored(&target, &dir, &m).await, want, "n = {n}");
            }
        }
        let out = run(&source, &target, every_point(&[&a1, &a2]))
            .await
            .unwrap();
        assert_eq!(out.points.len(), 2, "n = {n}");
        assert_eq!(&restored(&target, &dir, &a1).await, &one, "n = {n}");
        assert_eq!(&restored(&target, &dir, &a2).await, &two, "n = {n}");
        clean(&target).await;
        let again = run(&source, &target, every_point(&[&a1, &a2]))
            .await
            .unwrap();
        assert_eq!(again.totals, CopyCounts::default(), "n = {n}");
    }
    assert!(interrupted >= 4, "only {interrupted} runs were interrupted");
}

/// Runs a copy expected to leave points out as damaged in the source:
/// the damage each was left out for (nothing counted for it).
pub(super) async fn left_out(
    source: &Repository,
    target: &Repository,
    req: CopyRequest,
) -> Vec<String> {
    let out = run(source, target, req).await.unwrap();
    let damaged = out
        .points
        .iter()
        .filter(|p| p.status == PointStatus::Damaged);
    damaged
        .map(|p| {
            assert_eq!(p.counts, CopyCounts::default(), "{p:?}");
            p.damage.clone().expect("a damaged point says why")
        })
        .collect()
}

/// Flips a byte of the second blob of the first pack `sb` lists: that
/// blob's entry.
pub(super) async fn flip_a_blob(
    sb: &MemBackend,
    source: &Repository,
) -> crate::placement::pack::PackEntry {
    let pack_key = keys_of(sb, keys::PACKS).await.remove(0);
    let name = keys::parse_pack(&pack_key).unwrap();
    let mut bytes = sb.get(&pack_key).await.unwrap().to_vec();
    let trailer = read_trailer(
        sb,
        source.codec(),
        &name,
        bytes.len() as u64,
        source.config().chunking.max,
    )
    .await
    .unwrap();
    let bad = trailer[1];
    bytes[(bad.offset + u64::from(bad.stored_len) / 2) as usize] ^= 0x40;
    sb.put(&pack_key, Bytes::from(bytes), PutMode::Overwrite)
        .await
        .unwrap();
    bad
}

/// A blob of the source flipped in its pack: the point is left out as
/// damaged, naming the chunk and the source, and the chunk is in no
/// pack of the target (its other chunks may be: unreferenced, gc's).
async fn damaged_source_chunk(encrypted: bool) {
    let (dir, sb, tb, source, target) = pair(encrypted).await;
    let a1 = back_up(&source, &dir, "a", &data(2 << 20, 6)).await;
    let bad = flip_a_blob(&sb, &source).await;

    let damage = left_out(&source, &target, every_point(&[&a1])).await;
    assert_eq!(damage.len(), 1);
    let msg = &damage[0];
    assert!(msg.contains(&bad.id.to_hex()), "{msg}");
    assert!(msg.contains("in the source memory://"), "{msg}");
    assert!(keys_of(&tb, keys::POINTS).await.is_empty());
    for key in keys_of(&tb, keys::PACKS).await {
        let size = tb.head(&key).await.unwrap().size;
        let name = keys::parse_pack(&key).unwrap();
        let entries = read_trailer(&*tb, target.codec(), &name, size, 1 << 20)
            .await
            .unwrap();
        assert!(entries.iter().all(|e| e.id != bad.id), "{key} holds it");
    }
    // No node of the point was put: they come after their chunks.
    assert!(keys_of(&tb, keys::NODES).await.is_empty());
}

#[tokio::test]
async fn a_damaged_source_chunk_is_refused_and_never_written_encrypted() {
    damaged_source_chunk(true).await;
}

#[tokio::test]
async fn a_damaged_source_chunk_is_refused_and_never_written_unencrypted() {
    damaged_source_chunk(false).await;
}

#[tokio::test]
async fn a_target_not_made_like_the_source_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Arc::new(MemBackend::default());
    let source = init(&sb, true).await;
    let a1 = back_up(&source, &dir, "a", &data(1 << 20, 7)).await;

    // Its own keys: the same data would have other ids.
    let tb = Arc::new(MemBackend::default());
    let target = init(&tb, true).await;
    let before = keys_of(&tb, "").await;
    let e = run(&source, &target, every_point(&[&a1]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotLike { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("init --like") && msg.contains("other encryption keys"),
        "{msg}"
    );
    assert_eq!(keys_of(&tb, "").await, before, "nothing written");

    // Unencrypted against encrypted, and other chunking.
    let pb = Arc::new(MemBackend::default());
    let mut cfg = config();
    cfg.chunking = ChunkParams::from_avg(32 << 10);
    let plain = Repository::init(pb.clone(), cfg).await.unwrap();
    let msg = run(&source, &plain, every_point(&[&a1]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("unencrypted") && msg.contains("chunks"),
        "{msg}"
    );

    // The source itself.
    let e = run(&source, &source, every_point(&[&a1]))
        .await
        .unwrap_err();
    assert!(e.is_usage(), "{e}");
}

#[tokio::test]
async fn init_like_shares_the_keys_in_a_slot_of_its_own_and_needs_a_full_key() {
    let sb = Arc::new(MemBackend::default());
    let source = init(&sb, true).await;
    let tb = Arc::new(MemBackend::default());
    let target = init_like(&tb, &source).await;
    assert_ne!(target.config().repo_id, source.config().repo_id);
    assert_eq!(target.config().encryption, source.config().encryption);
    // Its own secret opens it; the source's does not.
    let e = Repository::open_with(tb.clone(), || Ok(pw("source")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongSecret { .. }), "{e}");
    reopen(tb.clone(), true).await;

    // A backup-only key cannot make a slot (it cannot sign one).
    let full = source.codec().master_keys().unwrap();
    crate::crypto::add_slot(
        &*sb,
        full,
        &pw("backup"),
        crate::crypto::Access::BackupOnly,
        FAST,
    )
    .await
    .unwrap();
    let limited = Repository::open_with(sb.clone(), || Ok(pw("backup")))
        .await
        .unwrap();
    let cb = Arc::new(MemBackend::default());
    let e = Repository::init_like(cb.clone(), config(), &limited, Some(&pw("z")), FAST)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::MissingCapability { .. }), "{e}");
    assert!(keys_of(&cb, "").await.is_empty(), "nothing written");
    // Nor copy from it: every chunk is opened on arrival.
    let e = run(&limited, &target, every_point(&[])).await.unwrap_err();
    assert!(matches!(e, Error::MissingCapability { .. }), "{e}");
}

/// A point pruned from the source after the copy listed it is reported
/// gone (a typed warning), and the copy goes on with the next.
#[tokio::test]
async fn a_point_gone_from_the_source_is_reported_and_skipped() {
    let (dir, _sb, _tb, source, target) = pair(false).await;
    let gone = back_up(&source, &dir, "a", &data(1 << 20, 20)).await;
    let kept = back_up(&source, &dir, "b", &data(1 << 20, 21)).await;
    crate::prune::forget::forget(&source, &[(gone.vm.clone(), gone.id.clone())], false)
        .await
        .unwrap();
    let progress = Arc::new(Progress::default());
    let out = copy(
        &source,
        &target,
        every_point(&[&gone, &kept]),
        progress.clone(),
    )
    .await
    .unwrap();
    assert_eq!(out.points[0].status, PointStatus::Gone, "{out:?}");
    assert_eq!(out.points[1].status, PointStatus::Copied, "{out:?}");
    assert_eq!(
        progress.warnings(),
        vec![crate::progress::Warning::CopySourceGone {
            point: gone.point_name()
        }]
    );
    assert_eq!(restored(&target, &dir, &kept).await, data(1 << 20, 21));
}
