//! Least privilege (docs/least-privilege.md), at the engine over the
//! in-memory store behind `RoleBackend`, which refuses what the backup
//! role's S3 policy refuses (deletes, and puts without If-None-Match,
//! outside `leases/`) with the error S3's 403 maps to: backups need no
//! more, and gc and prune with such credentials fail naming the refused
//! operation and change nothing.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use xfull_core::Error;
use xfull_core::backend::{Backend, BackendError, Operation, PutMode};
use xfull_core::backup::backup;
use xfull_core::chunker::ChunkParams;
use xfull_core::config::RepoConfig;
use xfull_core::keys;
use xfull_core::manifest::Manifest;
use xfull_core::progress::{Progress, Warning};
use xfull_core::repair::{RepairOptions, repair};
use xfull_core::repo::Repository;
use xfull_core::testing::{MemBackend, Role, RoleBackend};
use xfull_core::verify::{VerifyOptions, verify};
use xfull_integration::{Region, write_image};

use crate::engine::request;

const SEG: u64 = 1 << 20;

/// One store seen with full rights (`admin`) and through the backup role.
struct Store {
    mem: Arc<MemBackend>,
    role: Arc<RoleBackend>,
    admin: Repository,
    backup: Repository,
}

async fn store() -> Store {
    let mem = Arc::new(MemBackend::default());
    let cfg = RepoConfig::new(SEG, ChunkParams::from_avg(16 << 10), 3).unwrap();
    let admin = Repository::init(mem.clone(), cfg).await.unwrap();
    let role = Arc::new(RoleBackend::new(mem.clone(), Role::Backup));
    let backup = Repository::open(role.clone()).await.unwrap();
    Store {
        mem,
        role,
        admin,
        backup,
    }
}

fn image(path: &Path, seed: u64) {
    let regions = [
        Region::Random(3 * SEG + 5000),
        Region::Zeros(SEG),
        Region::Text(SEG / 2),
    ];
    write_image(path, &regions, seed, true).unwrap();
}

async fn back_up(repo: &Repository, disk: &Path) -> (xfull_core::Result<Manifest>, Vec<Warning>) {
    let progress = Arc::new(Progress::default());
    let r = backup(repo, request("vm", disk), progress.clone()).await;
    (r, progress.warnings())
}

async fn verify_clean(repo: &Repository) {
    let p = Arc::new(Progress::default());
    let report = verify(repo, &[], &VerifyOptions::default(), p)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.damaged);
}

fn node_keys(m: &Manifest) -> Vec<String> {
    m.disks[0]
        .segments
        .iter()
        .flatten()
        .map(keys::node)
        .collect()
}

/// Every key and the hash of its bytes, to show a refused command
/// changed nothing.
async fn snapshot(mem: &MemBackend) -> Vec<(String, String)> {
    use futures::TryStreamExt;
    let mut out = Vec::new();
    let metas: Vec<_> = mem.list("").try_collect().await.unwrap();
    for m in metas {
        let bytes = mem.get(&m.key).await.unwrap();
        out.push((m.key.clone(), blake3::hash(&bytes).to_hex().to_string()));
    }
    out.sort();
    out
}

fn refused(e: &Error, op: Operation) -> &str {
    match e {
        Error::Backend(BackendError::PermissionDenied { operation, key, .. })
            if *operation == op =>
        {
            key
        }
        other => panic!("expected a refused {op}, got {other}"),
    }
}

#[tokio::test]
async fn the_backup_role_backs_up_in_full_and_incrementally() {
    let s = store().await;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.img");
    image(&img, 1);
    let (first, w) = back_up(&s.backup, &img).await;
    let first = first.unwrap();
    assert!(w.is_empty(), "{w:?}");
    image(&img, 2);
    let (second, w) = back_up(&s.backup, &img).await;
    let second = second.unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(second.parent.as_ref(), Some(&first.id));
    assert_eq!(
        s.role.refused(),
        0,
        "a clean backup asks for nothing refused"
    );
    verify_clean(&s.admin).await;
}

/// Damage records of objects the backup stores again (or finds sound) are
/// deleted after the commit: refused, the backup still succeeds, says so
/// in a typed warning naming the permission, and the records stay for
/// `repair` (with delete rights) to remove.
#[tokio::test]
async fn damage_records_the_backup_role_cannot_clear_stay_and_are_reported() {
    let s = store().await;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.img");
    image(&img, 3);
    let first = back_up(&s.admin, &img).await.0.unwrap();
    // A stale record (the node is sound), and a node that really went.
    let nodes = node_keys(&first);
    let (stale, gone) = (&nodes[0], &nodes[1]);
    for k in [stale, gone] {
        xfull_core::damage::record(&s.admin, k, "test", "verify")
            .await
            .unwrap();
    }
    s.mem.delete_many(std::slice::from_ref(gone)).await.unwrap();

    let (m, w) = back_up(&s.backup, &img).await;
    let m = m.unwrap();
    assert_eq!(m.disks[0].segments, first.disks[0].segments);
    let kept: Vec<_> = w
        .iter()
        .filter_map(|w| match w {
            Warning::DamageRecordsKept { records, reason } => Some((*records, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(kept.len(), 1, "{w:?}");
    assert_eq!(kept[0].0, 2, "{w:?}");
    assert!(kept[0].1.contains("s3:DeleteObject"), "{}", kept[0].1);
    let text = w
        .iter()
        .find(|w| matches!(w, Warning::DamageRecordsKept { .. }))
        .unwrap()
        .to_string();
    assert!(text.contains("xfull repair"), "{text}");
    // Both nodes are whole; the records are still there.
    for k in [stale, gone] {
        s.mem.head(k).await.unwrap();
        s.mem.head(&keys::damage(k)).await.unwrap();
    }
    verify_clean(&s.admin).await;

    // The next backup with the records still there succeeds too.
    let (again, w) = back_up(&s.backup, &img).await;
    again.unwrap();
    assert!(
        w.iter()
            .any(|w| matches!(w, Warning::DamageRecordsKept { .. })),
        "{w:?}"
    );
    // Maintenance removes the stale records.
    let p = Arc::new(Progress::default());
    repair(&s.admin, &RepairOptions::default(), p)
        .await
        .unwrap();
    for k in [stale, gone] {
        assert!(
            s.mem
                .head(&keys::damage(k))
                .await
                .unwrap_err()
                .is_not_found()
        );
    }
}

/// A node really damaged under its key can only be mended by replacing it,
/// which the role may not: the backup fails naming the node and the
/// refused overwrite, commits no point relying on the damaged copy, and
/// succeeds once `repair` has removed the damaged node.
#[tokio::test]
async fn the_backup_role_never_relies_on_a_damaged_node_it_cannot_replace() {
    let s = store().await;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.img");
    image(&img, 4);
    let first = back_up(&s.admin, &img).await.0.unwrap();
    let node = node_keys(&first)[0].clone();
    // One byte of the node's payload flipped: its hash no longer matches.
    let mut bytes = s.mem.get(&node).await.unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    s.mem
        .put(&node, Bytes::from(bytes), PutMode::Overwrite)
        .await
        .unwrap();
    xfull_core::damage::record(&s.admin, &node, "test", "verify")
        .await
        .unwrap();
    let points = s.admin.list_points(None).await.unwrap().len();

    let e = back_up(&s.backup, &img).await.0.unwrap_err();
    assert_eq!(refused(&e, Operation::Overwrite), node);
    assert!(e.to_string().contains("s3:PutObject"), "{e}");
    assert_eq!(s.admin.list_points(None).await.unwrap().len(), points);

    let p = Arc::new(Progress::default());
    repair(&s.admin, &RepairOptions::default(), p)
        .await
        .unwrap();
    back_up(&s.backup, &img).await.0.unwrap();
    verify_clean(&s.admin).await;
}

/// gc and prune need to delete: with the backup role they fail naming the
/// refused delete or overwrite, leave every object as it was, and a later
/// gc with full rights runs and leaves a sound repository.
#[tokio::test]
async fn gc_and_prune_with_the_backup_role_fail_and_change_nothing() {
    let s = store().await;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.img");
    image(&img, 5);
    let old = back_up(&s.backup, &img).await.0.unwrap();
    image(&img, 6);
    back_up(&s.backup, &img).await.0.unwrap();
    let before = snapshot(&s.mem).await;

    let pins = xfull_core::prune::read_pins(&s.backup).await.unwrap();
    let doomed = [(old.vm.clone(), old.id.clone())];
    let e = xfull_core::prune::remove(&s.backup, &pins, &doomed)
        .await
        .unwrap_err();
    assert_eq!(
        refused(&e, Operation::Delete),
        keys::point(&old.vm, &old.id)
    );
    // Both points are of one second, so the old one may be the newest:
    // its record under removed/ is written before the refused delete (a
    // create the role may do). Advisory: it costs the next backup one
    // full read, and gc clears it once a later point exists.
    let mut now = snapshot(&s.mem).await;
    now.retain(|(k, _)| k != &keys::removed_point(&old.vm, &old.id));
    assert_eq!(now, before);

    let e = xfull_core::gc::run(&s.backup, false).await.unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Backend(BackendError::PermissionDenied {
                operation: Operation::Overwrite | Operation::Delete,
                ..
            })
        ),
        "{e}"
    );
    let mut now = snapshot(&s.mem).await;
    now.retain(|(k, _)| !k.starts_with(keys::REMOVED));
    assert_eq!(now, before, "gc changed nothing");

    // With full rights: prune, then gc, frees what the old point held.
    let pins = xfull_core::prune::read_pins(&s.admin).await.unwrap();
    xfull_core::prune::remove(&s.admin, &pins, &doomed)
        .await
        .unwrap();
    let report = xfull_core::gc::run(&s.admin, false).await.unwrap();
    assert!(report.skipped.is_none(), "{report:?}");
    verify_clean(&s.admin).await;
}

/// A local repository whose files the file system refuses to remove (an
/// immutable manifest, `chattr +i`): prune fails with exit 1 naming the
/// command, the refused delete and the key, not a bare "storage error".
#[test]
fn a_local_delete_the_file_system_refuses_names_the_permission() {
    use xfull_integration::env::{Env, fails};
    let e = Env::init();
    let img = e.path("d.img");
    let disk = format!("d={}", img.display());
    for seed in [1, 2] {
        write_image(&img, &[Region::Random(SEG)], seed, false).unwrap();
        e.x(&["backup", "--vm", "vm", "--disk", &disk])
            .assert()
            .success();
    }
    let points = e.json(&["points"])["points"].clone();
    let oldest = points[0]["id"].as_str().unwrap().to_string();
    let manifest = e.repo.join("points/vm").join(&oldest);
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .args([flag, manifest.to_str().unwrap()])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        eprintln!("skipped: this file system has no immutable flag (chattr +i)");
        return;
    }
    let out = fails(e.x(&["prune", "--keep-last", "1"]));
    chattr("-i");
    let (code, err) = out;
    assert_eq!(code, 1, "{err}");
    for want in [
        "prune stopped while removing the 1 points its plan removes",
        "prune needs permission to delete objects",
        &format!("refused to delete points/vm/{oldest}"),
    ] {
        assert!(err.contains(want), "want {want:?} in {err}");
    }
    e.x(&["prune", "--keep-last", "1"]).assert().success();
}
