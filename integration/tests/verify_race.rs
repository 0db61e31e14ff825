//! verify racing a prune and the gc after it: a point verify listed is
//! forgotten, and its nodes and packs swept, after verify read its
//! manifest and listed the nodes. What verify then fails to find is no
//! damage: the point is gone, not damaged. Damage of a point that still
//! exists is reported as always, race or not.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use xfull_core::backend::{Backend, PutMode};
use xfull_core::manifest::Manifest;
use xfull_core::progress::Progress;
use xfull_core::repo::Repository;
use xfull_core::testing::{Hook, HookAt, Hooked, MemBackend};
use xfull_core::verify::{VerifyOptions, VerifyReport, verify};
use xfull_integration::{Region, write_image};

use crate::engine::{rt, run_backup, small_config};

#[test]
fn a_point_pruned_and_swept_while_verified_is_not_damage() {
    for read_data in [false, true] {
        race(read_data);
    }
}

/// Two points of one VM, of two images of random bytes (nothing shared),
/// both older than any sweep's cutoff: (store, repository, the older
/// point `gone`, the newer, the older one's image).
struct Two {
    mem: Arc<MemBackend>,
    repo: Repository,
    gone: Manifest,
    kept: Manifest,
    old: PathBuf,
}

async fn two_points(dir: &Path, seed: u64) -> Two {
    let (old, new) = (dir.join("old"), dir.join("new"));
    write_image(&old, &[Region::Random(3 << 20)], seed, false).unwrap();
    write_image(&new, &[Region::Random(3 << 20)], seed + 1, false).unwrap();
    let mem = Arc::new(MemBackend::default());
    let repo = Repository::init(mem.clone(), small_config()).await.unwrap();
    let gone = run_backup(&repo, "vm", &old).await.unwrap();
    let kept = run_backup(&repo, "vm", &new).await.unwrap();
    mem.clock().advance(chrono::Duration::seconds(3600));
    Two {
        mem,
        repo,
        gone,
        kept,
        old,
    }
}

/// Verifies every point in `mem` (recording damage, reading data with
/// `read_data`) with `hook` run before its first node read: the report
/// and the keys of the damage records then in the store.
async fn verify_hooked(
    mem: &Arc<MemBackend>,
    hook: Hook,
    read_data: bool,
) -> (VerifyReport, Vec<String>) {
    let hooked = Hooked::new(mem.clone(), HookAt::Get(xfull_core::keys::NODES), hook);
    let through = Repository::open(hooked.clone()).await.unwrap();
    let opts = VerifyOptions {
        read_data,
        record_damage: true,
        ..VerifyOptions::default()
    };
    let report = verify(&through, &[], &opts, Arc::new(Progress::default()))
        .await
        .unwrap();
    assert!(hooked.fired());
    let records = mem
        .list(xfull_core::keys::DAMAGE)
        .map(|m| m.unwrap().key)
        .collect()
        .await;
    (report, records)
}

fn race(read_data: bool) {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let Two {
            mem,
            repo,
            gone,
            kept,
            ..
        } = two_points(dir.path(), 1).await;
        let lost = xfull_core::keys::node(kept.disks[0].segments[1].as_ref().unwrap());

        // Before verify's first node read: `gone` forgotten and swept, and
        // one node of `kept` lost (real damage, the same moment).
        let hook: Hook = {
            let (repo, mem, lost) = (repo.clone(), mem.clone(), lost.clone());
            let point = (gone.vm.clone(), gone.id.clone());
            Box::new(move || {
                let (repo, mem, point, lost) =
                    (repo.clone(), mem.clone(), point.clone(), lost.clone());
                Box::pin(async move {
                    xfull_core::prune::forget::forget(&repo, &[point], false)
                        .await
                        .unwrap();
                    let swept = xfull_core::gc::run(&repo, false).await.unwrap();
                    assert!(
                        swept.nodes_deleted >= 3 && swept.packs_deleted > 0,
                        "{swept:?}"
                    );
                    mem.delete_many(&[lost]).await.unwrap();
                })
            })
        };
        let (report, records) = verify_hooked(&mem, hook, read_data).await;

        let names: Vec<_> = report.damaged.iter().map(|d| d.point.as_str()).collect();
        assert_eq!(
            names,
            [kept.point_name()],
            "read_data {read_data}: {report:#?}"
        );
        assert_eq!(
            report.objects_damaged + report.objects_missing,
            1,
            "only the lost node of the point that exists, read_data {read_data}: {report:#?}"
        );
        assert!(
            report.warnings.iter().any(|w| w.contains("removed")),
            "{:?}",
            report.warnings
        );
        assert_eq!(records.len(), 1, "{records:?}");
        assert!(records[0].ends_with(&lost), "{records:?} vs {lost}");
    });
}

/// What the hook of [`shared_damage`] does besides removing `gone`.
#[derive(Clone, Copy, Debug)]
enum Meanwhile {
    /// A new point of the same image is backed up (it shares every node
    /// of `gone`), then `gone` is forgotten and swept: gc keeps the
    /// nodes, which the new point uses.
    NewPointSharesNodes,
    /// `gone` is forgotten, and no gc runs: its nodes are still stored.
    ForgottenNotSwept,
}

/// Damage verify must not drop although the point it read is removed:
/// a node of `gone` is damaged (garbage bytes under its key) while it is
/// still stored, whoever uses it.
fn shared_damage(meanwhile: Meanwhile) {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let Two {
            mem,
            repo,
            gone,
            old,
            ..
        } = two_points(dir.path(), 3).await;
        let bad = xfull_core::keys::node(gone.disks[0].segments[0].as_ref().unwrap());
        let hook: Hook = {
            let (repo, mem, bad, old) = (repo.clone(), mem.clone(), bad.clone(), old.clone());
            let point = (gone.vm.clone(), gone.id.clone());
            let segments = gone.disks[0].segments.clone();
            Box::new(move || {
                let (repo, mem, bad, old, point) = (
                    repo.clone(),
                    mem.clone(),
                    bad.clone(),
                    old.clone(),
                    point.clone(),
                );
                let segments = segments.clone();
                Box::pin(async move {
                    if let Meanwhile::NewPointSharesNodes = meanwhile {
                        // On a blocking thread: the hook's future must be
                        // `Send` for any lifetime, which a backup's is not.
                        let (repo, old) = (repo.clone(), old.clone());
                        let again = tokio::task::spawn_blocking(move || {
                            let rt = tokio::runtime::Handle::current();
                            rt.block_on(run_backup(&repo, "other", &old))
                        })
                        .await
                        .unwrap()
                        .unwrap();
                        assert_eq!(again.disks[0].segments, segments);
                    }
                    xfull_core::prune::forget::forget(&repo, &[point], false)
                        .await
                        .unwrap();
                    if let Meanwhile::NewPointSharesNodes = meanwhile {
                        mem.clock().advance(chrono::Duration::seconds(3600));
                        xfull_core::gc::run(&repo, false).await.unwrap();
                    }
                    let garbage = bytes::Bytes::from_static(b"not a node at all");
                    mem.put(&bad, garbage, PutMode::Overwrite).await.unwrap();
                })
            })
        };
        let (report, records) = verify_hooked(&mem, hook, false).await;
        assert_eq!(report.objects_damaged, 1, "{meanwhile:?}: {report:#?}");
        if let Meanwhile::NewPointSharesNodes = meanwhile {
            let names: Vec<_> = report.damaged.iter().map(|d| d.point.as_str()).collect();
            assert!(
                names.len() == 1 && names[0].starts_with("other@"),
                "the new point's damage is reported: {report:#?}"
            );
        }
        assert_eq!(records, [xfull_core::keys::damage(&bad)], "{meanwhile:?}");
    });
}

#[test]
fn damage_a_point_made_meanwhile_shares_with_a_removed_one_is_reported() {
    shared_damage(Meanwhile::NewPointSharesNodes);
}

#[test]
fn damaged_bytes_still_stored_are_reported_though_their_point_was_removed() {
    shared_damage(Meanwhile::ForgottenNotSwept);
}

/// A point the caller named, gone by the time verify reads its manifest
/// (the CLI found it, then a prune removed it): not found, exit 1, not a
/// damaged point (exit 3), which would send the operator to repair a
/// point that no longer exists.
#[test]
fn a_named_point_removed_before_verify_reads_it_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let Two {
            repo, gone, kept, ..
        } = two_points(dir.path(), 3).await;
        let point = (gone.vm.clone(), gone.id.clone());
        xfull_core::prune::forget::forget(&repo, std::slice::from_ref(&point), false)
            .await
            .unwrap();
        let named = [point, (kept.vm.clone(), kept.id.clone())];
        let r = verify(
            &repo,
            &named,
            &VerifyOptions::default(),
            Arc::new(Progress::default()),
        )
        .await;
        match r {
            Err(e @ xfull_core::Error::PointNotFound { .. }) => {
                assert!(e.to_string().contains(&gone.point_name()), "{e}");
                assert!(!e.is_damage());
            }
            other => panic!("a removed named point is not damage: {other:?}"),
        }
    });
}
