//! A change source tells what changed since the VM's newest point. A
//! backup whose parent is an older point (the newest damaged, or without
//! the disk) must not take it against that parent: the writes between
//! the two are in no change source, and the point restored wrong bytes
//! while the backup succeeded (review at stop 49). The disk is read in
//! full instead.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, SubsecRound, Utc};

use crate::backend::{Backend, PutMode};
use crate::backup::plan::ChangeSource;
use crate::backup::{BackupRequest, backup};
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::id::PointId;
use crate::keys;
use crate::manifest::Manifest;
use crate::progress::{Progress, Warning};
use crate::repo::Repository;
use crate::restore::{RestoreOptions, Target, restore};
use crate::testing::{MemBackend, seeded_bytes};

const SEG: u64 = 1 << 20;

async fn repo() -> (Arc<MemBackend>, Repository) {
    repo_with_margin(None).await
}

/// [`repo`] with a clock margin of `secs` seconds when given.
async fn repo_with_margin(secs: Option<u64>) -> (Arc<MemBackend>, Repository) {
    let mem = Arc::new(MemBackend::default());
    let mut cfg = RepoConfig::new(SEG, ChunkParams::from_avg(16 << 10), 3).unwrap();
    if let Some(secs) = secs {
        cfg.protocol.clock_margin_secs = secs;
    }
    let repo = Repository::init(mem.clone(), cfg).await.unwrap();
    (mem, repo)
}

/// A backup of disk `d` (and `e` if given), at `time` if given.
fn request(d: &Path, e: Option<&Path>, time: Option<DateTime<Utc>>) -> BackupRequest {
    let mut disks = vec![("d".parse().unwrap(), d.to_path_buf())];
    disks.extend(e.map(|e| ("e".parse().unwrap(), e.to_path_buf())));
    let mut req = BackupRequest::new("vm".parse().unwrap(), disks, "test");
    req.time = time;
    req
}

fn with_changes(mut req: BackupRequest, file: PathBuf) -> BackupRequest {
    let mut m = BTreeMap::new();
    m.insert("d".parse().unwrap(), ChangeSource::Extents(vec![file]));
    req.changes = m;
    req
}

async fn back_up(repo: &Repository, req: BackupRequest) -> (Manifest, Vec<Warning>) {
    let progress = Arc::new(Progress::default());
    let m = backup(repo, req, progress.clone()).await.unwrap();
    (m, progress.warnings())
}

/// Restores disk `d` of `m` and says whether it equals `img`.
async fn restores_to(repo: &Repository, m: &Manifest, img: &Path) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.img");
    let target = Target::File {
        path: out.clone(),
        overwrite: false,
    };
    let progress = Arc::new(Progress::default());
    restore(repo, m, "d", &target, RestoreOptions::default(), progress)
        .await
        .unwrap();
    std::fs::read(&out).unwrap() == std::fs::read(img).unwrap()
}

fn write_at(img: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

/// A change file naming one write, made after the point before.
fn change_file(dir: &Path, img: &Path, at: u64, seed: u64) -> PathBuf {
    write_at(img, at, &seeded_bytes(4_000, seed));
    let p = dir.join(format!("changes-{seed}.json"));
    let json = serde_json::json!([{"offset": at, "length": 4_000}]);
    std::fs::write(&p, serde_json::to_vec(&json).unwrap()).unwrap();
    p
}

/// A 4-segment image in `dir`.
fn image(dir: &Path) -> PathBuf {
    let img = dir.join("d.img");
    std::fs::write(&img, seeded_bytes(4 * SEG as usize, 1)).unwrap();
    img
}

/// Makes the manifest of `vm@id` unreadable.
async fn damage_point(mem: &MemBackend, id: &PointId) {
    let key = keys::point(&"vm".parse().unwrap(), id);
    let garbage = Bytes::from_static(b"garbage");
    mem.put(&key, garbage, PutMode::Overwrite).await.unwrap();
}

/// Asserts how disk `d` of `m` was read ("extents", "full-scan").
fn assert_read_by(m: &Manifest, how: &str) {
    let source = &m.disks[0].source;
    assert!(source.starts_with(how), "{source}");
}

fn set_aside(warnings: &[Warning]) -> Option<&str> {
    warnings.iter().find_map(|w| match w {
        Warning::ChangesSetAside { reason, .. } => Some(reason.as_str()),
        _ => None,
    })
}

/// The newest point's manifest damaged, in the same second as the point
/// before (so the listing's order drops it silently) and in a later one
/// (so the walk skips it with a warning).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_newest_point_sets_the_change_file_aside() {
    for later in [false, true] {
        let (mem, repo) = repo().await;
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path());
        let t0 = Utc::now() - Duration::hours(1);
        // One second for all, or ten seconds apart.
        let at = |s: i64| Some(t0 + Duration::seconds(if later { s } else { 0 }));
        let (p1, _) = back_up(&repo, request(&img, None, at(0))).await;
        write_at(&img, SEG + 1000, &seeded_bytes(50_000, 2));
        let (p2, _) = back_up(&repo, request(&img, None, at(10))).await;
        damage_point(&mem, &p2.id).await;

        let changes = change_file(dir.path(), &img, 3 * SEG + 77, 3);
        let req = with_changes(request(&img, None, at(20)), changes);
        let (p3, warnings) = back_up(&repo, req).await;
        assert_eq!(p3.disks[0].parent.as_ref(), Some(&p1.id), "later: {later}");
        let why = set_aside(&warnings).expect("a warning that says why");
        assert!(why.contains(p2.id.as_str()), "{why}");
        assert_read_by(&p3, "full-scan");
        assert!(restores_to(&repo, &p3, &img).await, "later: {later}");
    }
}

/// The newest point does not hold the disk: the change file is relative
/// to it (the VM's last backup), not to the older point that holds it.
/// `--parent` naming the older point takes the change file at its word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newest_point_without_the_disk_sets_the_change_file_aside() {
    let (_mem, repo) = repo().await;
    let dir = tempfile::tempdir().unwrap();
    let (img, other) = (dir.path().join("d.img"), dir.path().join("e.img"));
    std::fs::write(&img, seeded_bytes(4 * SEG as usize, 1)).unwrap();
    std::fs::write(&other, seeded_bytes(SEG as usize, 9)).unwrap();
    let (p1, _) = back_up(&repo, request(&img, Some(&other), None)).await;
    write_at(&img, SEG + 1000, &seeded_bytes(50_000, 2));
    let mut only_e = request(&other, None, None);
    only_e.disks[0].0 = "e".parse().unwrap();
    let (p2, _) = back_up(&repo, only_e).await;

    let changes = change_file(dir.path(), &img, 3 * SEG + 77, 3);
    let req = with_changes(request(&img, Some(&other), None), changes.clone());
    let (p3, warnings) = back_up(&repo, req).await;
    assert_eq!(p3.disks[0].parent.as_ref(), Some(&p1.id));
    let why = set_aside(&warnings).expect("a warning that says why");
    assert!(
        why.contains(p2.id.as_str()) && why.contains("does not hold"),
        "{why}"
    );
    assert!(restores_to(&repo, &p3, &img).await);

    // Named, the parent is taken with the change file: here the file
    // (since p3) is right, and only its write is read.
    let changes = change_file(dir.path(), &img, 2 * SEG + 5, 4);
    let mut req = with_changes(request(&img, Some(&other), None), changes);
    req.parent = Some(p3.id.clone());
    let (p4, warnings) = back_up(&repo, req).await;
    assert_eq!(set_aside(&warnings), None);
    assert_read_by(&p4, "extents");
    assert!(restores_to(&repo, &p4, &img).await);
}

/// The usual case keeps its change file: the parent is the newest point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_file_against_the_newest_point_is_used() {
    let (_mem, repo) = repo().await;
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let (p1, _) = back_up(&repo, request(&img, None, None)).await;
    let changes = change_file(dir.path(), &img, 3 * SEG + 77, 3);
    let (p2, warnings) = back_up(&repo, with_changes(request(&img, None, None), changes)).await;
    assert_eq!(p2.disks[0].parent.as_ref(), Some(&p1.id));
    assert_eq!(set_aside(&warnings), None);
    assert_read_by(&p2, "extents");
    assert!(restores_to(&repo, &p2, &img).await);
}

/// A host whose clock is behind the host that made the VM's newest point
/// dated its point before its own parent: the next backup then took that
/// parent as the newest, and its change file (since the point just
/// made) missed the writes in between. Within the clock margin the point
/// is dated just after the newest; beyond it the backup stops (moving
/// points far ahead would pull every later one into that second). Not
/// with `--parent`: a whole id is taken without listing the VM, and the
/// point is dated after that parent only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_made_by_a_clock_behind_is_dated_after_the_newest() {
    let (_mem, repo) = repo().await;
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    back_up(&repo, request(&img, None, None)).await;
    // Made by a host whose clock is 30 s ahead of this one.
    let ahead = request(&img, None, Some(Utc::now() + Duration::seconds(30)));
    let (p1, _) = back_up(&repo, ahead).await;

    let changes = change_file(dir.path(), &img, SEG + 1000, 2);
    let (p2, warnings) = back_up(&repo, with_changes(request(&img, None, None), changes)).await;
    assert!(p2.time > p1.time, "{} {}", p2.time, p1.time);
    let behind = warnings.iter().find_map(|w| match w {
        Warning::ClockBehind { behind_ms, .. } => Some(*behind_ms),
        _ => None,
    });
    assert!(behind.is_some_and(|ms| ms > 20_000), "{warnings:?}");

    let changes = change_file(dir.path(), &img, 3 * SEG + 77, 3);
    let (p3, warnings) = back_up(&repo, with_changes(request(&img, None, None), changes)).await;
    assert_eq!(p3.disks[0].parent.as_ref(), Some(&p2.id));
    assert_eq!(set_aside(&warnings), None);
    assert!(restores_to(&repo, &p3, &img).await);
    let latest = repo.latest(&"vm".parse().unwrap()).await.unwrap();
    assert_eq!(latest, Some(p3.id));
}

/// Beyond the clock margin the backup stops before storing anything,
/// unless it is given its own time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newest_point_far_ahead_stops_the_backup() {
    let (_mem, repo) = repo().await;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.img");
    std::fs::write(&img, seeded_bytes(2 * SEG as usize, 1)).unwrap();
    let mut ahead = request(&img, None, Some(Utc::now() + Duration::hours(1)));
    ahead.allow_future = true;
    let (p1, _) = back_up(&repo, ahead).await;
    let progress = Arc::new(Progress::default());
    let e = backup(&repo, request(&img, None, None), progress)
        .await
        .unwrap_err();
    assert!(
        matches!(e, crate::error::Error::NewestPointAhead { .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains(&format!("vm@{}", p1.id)),
        "names it: {e}"
    );
    let points = repo.list_points(None).await.unwrap();
    assert_eq!(points.len(), 1, "nothing stored");
    let at = Utc::now() + Duration::hours(2);
    let mut given = request(&img, None, Some(at));
    given.allow_future = true;
    let (p, _) = back_up(&repo, given).await;
    assert_eq!(p.time, at.trunc_subsecs(6));
}

/// `--parent` is taken at its word, an unreadable point of a later or the
/// same second notwithstanding (review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_parent_keeps_the_change_file_past_an_unreadable_point() {
    let (mem, repo) = repo().await;
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let t0 = Utc::now() - Duration::hours(1);
    let (p1, _) = back_up(&repo, request(&img, None, Some(t0))).await;
    let (p2, _) = back_up(&repo, request(&img, None, Some(t0))).await;
    damage_point(&mem, &p2.id).await;
    let changes = change_file(dir.path(), &img, 3 * SEG + 77, 3);
    let mut req = with_changes(request(&img, None, None), changes);
    req.parent = Some(p1.id.clone());
    let (p3, warnings) = back_up(&repo, req).await;
    assert_eq!(set_aside(&warnings), None, "{warnings:?}");
    assert_read_by(&p3, "extents");
    assert!(restores_to(&repo, &p3, &img).await);
}

/// `repair` removes the unreadable manifest of a VM's newest point. Before
/// the repair the next backup sees the damaged newest point in the
/// listing and sets its change file aside; after it nothing is left to
/// see, and a change file made since the removed point would be applied
/// to the one before it. So repair says so, as `forget` and `prune` do
/// (`newest_removed`, back up next with `--full-scan`), and the backup it
/// advises restores right; a damaged older point is not the newest
/// (review, stop 51: repair said nothing, and the point restored wrong
/// bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_says_when_it_removes_the_newest_point() {
    let (mem, repo) = repo().await;
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let t0 = Utc::now() - Duration::hours(1);
    let (p1, _) = back_up(&repo, request(&img, None, Some(t0))).await;
    write_at(&img, SEG + 1000, &seeded_bytes(50_000, 2));
    let (p2, _) = back_up(&repo, request(&img, None, Some(t0 + Duration::seconds(10)))).await;
    damage_point(&mem, &p2.id).await;
    let repair = || async {
        crate::repair::repair(
            &repo,
            &crate::repair::RepairOptions::default(),
            Arc::new(Progress::default()),
        )
        .await
        .unwrap()
    };
    let report = repair().await;
    assert_eq!(report.manifests_removed.len(), 1, "{report:?}");
    assert_eq!(report.newest_removed, vec!["vm".to_string()], "{report:?}");
    assert!(
        report.warnings.iter().any(|w| w.contains("in full")),
        "{report:?}"
    );

    // What it advises: a backup that reads the disk whole.
    write_at(&img, 3 * SEG + 77, &seeded_bytes(3, 3));
    let mut req = request(&img, None, None);
    req.audit_percent = 0.0;
    let (p3, _) = back_up(&repo, req).await;
    assert!(restores_to(&repo, &p3, &img).await);

    // A damaged point older than a readable one is not the newest.
    damage_point(&mem, &p1.id).await;
    let report = repair().await;
    assert_eq!(report.manifests_removed.len(), 1, "{report:?}");
    assert!(report.newest_removed.is_empty(), "{report:?}");
}

/// The newest point forgotten: the change file made since it is not
/// relative to the point before, and nothing in the listing says the
/// newest was there. Until stop 53 `forget` only warned and the next
/// backup restored wrong bytes; now its record sets the file aside. The
/// backup after takes its change file (its parent is newer than the
/// record), and gc clears the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_newest_point_sets_the_change_file_aside() {
    let (mem, repo) = repo().await;
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let t0 = Utc::now() - Duration::hours(1);
    let at = |s: i64| Some(t0 + Duration::seconds(s));
    let (p1, _) = back_up(&repo, request(&img, None, at(0))).await;
    write_at(&img, SEG + 1000, &seeded_bytes(50_000, 2));
    let (p2, _) = back_up(&repo, request(&img, None, at(10))).await;
    let vm: crate::names::VmName = "vm".parse().unwrap();
    let gone = [(vm.clone(), p2.id.clone())];
    crate::prune::forget::forget(&repo, &gone, false)
        .await
        .unwrap();

    let changes = change_file(dir.path(), &img, 3 * SEG + 77, 3);
    let (p3, warnings) = back_up(&repo, with_changes(request(&img, None, at(20)), changes)).await;
    assert_eq!(p3.disks[0].parent.as_ref(), Some(&p1.id));
    let why = set_aside(&warnings).expect("a warning that says why");
    assert!(
        why.contains(p2.id.as_str()) && why.contains("removed"),
        "{why}"
    );
    assert_read_by(&p3, "full-scan");
    assert!(restores_to(&repo, &p3, &img).await);

    let changes = change_file(dir.path(), &img, 2 * SEG + 5, 4);
    let (p4, warnings) = back_up(&repo, with_changes(request(&img, None, at(30)), changes)).await;
    assert_eq!(p4.disks[0].parent.as_ref(), Some(&p3.id));
    assert_eq!(set_aside(&warnings), None);
    assert_read_by(&p4, "extents");
    assert!(restores_to(&repo, &p4, &img).await);

    let record = keys::removed_point(&vm, &p2.id);
    assert!(mem.exists(&record).await.unwrap());
    let report = crate::gc::run(&repo, false).await.unwrap();
    assert_eq!(report.removed_records_cleared, 1);
    assert!(!mem.exists(&record).await.unwrap());
}

/// Older points pruned leave no record: the newest stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_older_points_leaves_no_record() {
    let (mem, repo) = repo().await;
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let t0 = Utc::now() - Duration::hours(1);
    let (p1, _) = back_up(&repo, request(&img, None, Some(t0))).await;
    back_up(&repo, request(&img, None, Some(t0 + Duration::seconds(10)))).await;
    let vm: crate::names::VmName = "vm".parse().unwrap();
    let pins = crate::prune::Pins::default();
    crate::prune::remove(&repo, &pins, &[(vm.clone(), p1.id.clone())])
        .await
        .unwrap();
    let listed: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(mem.list(keys::REMOVED))
        .await
        .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

/// A point dated ahead (a host's clock, `--time --allow-future`) removed
/// with `forget`, the fix `NewestPointAhead` names: its record is dated
/// ahead too. The first backup after sets its change file aside, as it
/// must (the file may be relative to the removed point); the backups
/// after it have that backup's point as parent, made after the record
/// and knowing of it, yet every one of them read its disk in full again
/// ("a record may be newer than its parent": its date is), and gc kept
/// the record (no point of a later second), until the clock passed the
/// removed point's date: a day of full reads here, years for a clock
/// set to 2038. The design says a planted record costs one full read.
/// Found by review 88. Now a record counts only for parents made before
/// it was written, or within the clock margin after (0 s here, so the
/// backup right after counts as made after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_point_dated_ahead_sets_aside_one_change_file_only() {
    let (mem, repo) = repo_with_margin(Some(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let (p1, _) = back_up(&repo, request(&img, None, None)).await;
    let mut ahead = request(&img, None, Some(Utc::now() + Duration::days(1)));
    ahead.allow_future = true;
    let (f, _) = back_up(&repo, ahead).await;
    let vm: crate::names::VmName = "vm".parse().unwrap();
    crate::prune::forget::forget(&repo, &[(vm.clone(), f.id.clone())], false)
        .await
        .unwrap();

    write_at(&img, SEG + 1000, &seeded_bytes(50_000, 2));
    let changes = change_file(dir.path(), &img, 3 * SEG + 77, 3);
    let (p3, warnings) = back_up(&repo, with_changes(request(&img, None, None), changes)).await;
    assert_eq!(p3.disks[0].parent.as_ref(), Some(&p1.id));
    assert!(set_aside(&warnings).is_some(), "the first is set aside");
    assert!(restores_to(&repo, &p3, &img).await);

    let changes = change_file(dir.path(), &img, 2 * SEG + 5, 4);
    let (p4, warnings) = back_up(&repo, with_changes(request(&img, None, None), changes)).await;
    assert_eq!(p4.disks[0].parent.as_ref(), Some(&p3.id));
    assert!(restores_to(&repo, &p4, &img).await);
    let record = keys::removed_point(&vm, &f.id);
    crate::gc::run(&repo, false).await.unwrap();
    assert!(
        set_aside(&warnings).is_none() || !mem.exists(&record).await.unwrap(),
        "the change file of the backup after is set aside ({:?}) and gc keeps the record",
        set_aside(&warnings)
    );
    assert_eq!(
        set_aside(&warnings),
        None,
        "one full read, not one per backup"
    );
    assert_read_by(&p4, "extents");
}
