//! Object lock against objects someone else hid or replaced: a backup
//! must not commit a point on what it found gone, nor lock a version it
//! did not write (which `undelete` would then take for xfull's and keep
//! above the repository's own).

use std::sync::Arc;

use futures::TryStreamExt;
use xfull_core::backend::Backend;
use xfull_core::backup::backup;
use xfull_core::lock::{LockMode, ObjectLock};
use xfull_core::progress::Progress;
use xfull_integration::s3::S3Server;
use xfull_integration::{Region, write_image};

use crate::engine::request;
use crate::object_lock::locked_sim;

/// Packs hidden behind delete markers (here: gone from the store) while
/// their locked versions stay. The first backup of a new generation
/// renews what its disk inherits unread (an incremental backup reads only
/// what changed): it found every pack gone when it read their retention,
/// and committed the point anyway, saying nothing (the `gone` count is
/// not even printed), with the new generation recorded so that later
/// backups trust it. The point cannot be restored, and the hidden
/// versions, no longer extended, are lost for good once their old
/// retention ends, while `undelete` could still have brought them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_does_not_commit_a_point_on_packs_it_found_gone() {
    use xfull_core::backup::plan::ChangeSource;
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk");
    write_image(&image, &[Region::Random(2 << 20)], 11, true).unwrap();
    let none = dir.path().join("none.json");
    std::fs::write(&none, "[]").unwrap();
    let lock = ObjectLock {
        mode: LockMode::Compliance,
        retain_secs: 3_600,
        generation_secs: 2,
    };
    let (mem, _sim, repo) = locked_sim(lock, Some(0)).await;
    let a = backup(&repo, request("vm", &image), Arc::new(Progress::default()))
        .await
        .unwrap();
    // Hidden: gone from every listing and HEAD, the index still names it.
    let packs: Vec<String> = mem
        .list("packs/")
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap();
    assert!(!packs.is_empty());
    mem.delete_many(&packs).await.unwrap();
    let g = a.disks[0].lock_generation.unwrap();
    while lock.generation_of(chrono::Utc::now()) == g {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Nothing changed: every segment is the parent's, unread.
    let mut req = request("vm", &image);
    req.audit_percent = 0.0;
    req.changes
        .insert("d".parse().unwrap(), ChangeSource::Extents(vec![none]));
    let got = backup(&repo, req, Arc::new(Progress::default())).await;
    match got {
        Ok(m) => panic!(
            "a point relying on hidden packs was committed as locked: {:?}",
            m.stats.lock
        ),
        Err(e) => assert!(e.to_string().contains("undelete"), "{e}"),
    }
    let points: Vec<_> = mem.list("points/vm/").try_collect().await.unwrap();
    assert_eq!(points.len(), 1, "{points:?}");
}

/// A node overwritten by someone allowed `s3:PutObject` (a new version
/// without retention above the locked one). `undelete` takes such a
/// version away, unless a backup has meanwhile relied on the node: it read
/// "no retention" and extended the retention of the current version, the
/// forged one, which `undelete` then takes for xfull's and keeps. The
/// backup must refuse instead (as gc and prune do), so that `undelete`
/// still brings the original back.
#[test]
fn a_backup_does_not_lock_a_version_it_did_not_write() {
    let server = S3Server::start();
    let rt = crate::s3_object_lock::runtime();
    let bucket = "xfull-locked-forged";
    let Some((c, e)) = crate::s3_object_lock::locked_repo(&server, &rt, bucket, "7200,60") else {
        return;
    };
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(2 << 20)], 12, false).unwrap();
    let twin = e.path("twin.img");
    std::fs::copy(&img, &twin).unwrap();
    let disk = format!("d={}", img.display());
    e.x(&["backup", "--vm", "vm", "--disk", &disk])
        .assert()
        .success();
    let node = rt
        .block_on(
            c.list_objects_v2()
                .bucket(bucket)
                .prefix("repo/nodes/")
                .send(),
        )
        .unwrap()
        .contents()[0]
        .key()
        .unwrap()
        .to_string();
    rt.block_on(
        c.put_object()
            .bucket(bucket)
            .key(&node)
            .body(b"forged".to_vec().into())
            .send(),
    )
    .unwrap();

    // The same data under another VM: its node's create-only put finds
    // the forged version there.
    let disk = format!("d={}", twin.display());
    let twin_backup = e
        .x(&["backup", "--vm", "twin", "--disk", &disk])
        .output()
        .unwrap();
    let head = rt
        .block_on(c.head_object().bucket(bucket).key(&node).send())
        .unwrap();
    let forged_lock = head.object_lock_retain_until_date().is_some();

    let done = e.json(&["undelete"]);
    let verify = e.x(&["verify", "--read-data"]).output().unwrap();
    assert!(
        verify.status.success() && done["versions_removed"] == 1,
        "undelete left the forged node current ({done}); verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        !forged_lock,
        "the backup locked the forged version of {node}"
    );
    assert!(
        !twin_backup.status.success(),
        "the backup relied on a forged node without a word"
    );
}

/// A manifest that does not open, locked: `repair` hands it to prune's
/// removal, which rightly keeps a locked manifest, and then reported it
/// removed anyway ("removed the unreadable manifest of point …") while
/// it is still there, and said nothing of the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_does_not_report_a_locked_manifest_removed() {
    use xfull_core::backend::PutMode;
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk");
    write_image(&image, &[Region::Random(1 << 20)], 13, true).unwrap();
    let lock = ObjectLock {
        mode: LockMode::Compliance,
        retain_secs: 3_600,
        generation_secs: 3_600,
    };
    let (mem, sim, repo) = locked_sim(lock, None).await;
    let a = backup(&repo, request("vm", &image), Arc::new(Progress::default()))
        .await
        .unwrap();
    backup(&repo, request("vm", &image), Arc::new(Progress::default()))
        .await
        .unwrap();
    // Damaged in place (its locked version, as the store rots it).
    let key = xfull_core::keys::point(&a.vm, &a.id);
    mem.put(&key, b"rotten".to_vec().into(), PutMode::Overwrite)
        .await
        .unwrap();

    let opts = xfull_core::repair::RepairOptions::default();
    let r = xfull_core::repair::repair(&repo, &opts, Arc::new(Progress::default()))
        .await
        .unwrap();
    assert!(mem.exists(&key).await.unwrap(), "a locked manifest went");
    assert!(
        r.manifests_removed.is_empty(),
        "reported removed, still there: {:?}",
        r.manifests_removed
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("object lock")),
        "{:?}",
        r.warnings
    );
    assert_eq!(sim.refused_deletes(), 0);
}
