//! A restore racing a prune: the point it reads is removed (its manifest
//! deleted, then its objects swept) after the restore read the manifest.
//! That is not damage: the restore says the point was removed, exit 1,
//! and records nothing (found by a crash walk: exit 3 "damaged object
//! nodes/...: missing", and a damage record that verify did not share).

use std::sync::Arc;

use futures::StreamExt;
use xfull_core::backend::{Backend, PutMode};
use xfull_core::repo::Repository;
use xfull_core::testing::MemBackend;
use xfull_integration::{Region, write_image};

use crate::engine::{restore_to, rt, run_backup, small_config};

#[test]
fn a_point_pruned_while_restored_is_reported_removed_not_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    write_image(&old, &[Region::Random(3 << 20)], 1, false).unwrap();
    write_image(&new, &[Region::Random(3 << 20)], 2, false).unwrap();
    rt().block_on(async {
        let mem = Arc::new(MemBackend::default());
        let repo = Repository::init(mem.clone(), small_config()).await.unwrap();
        let gone = run_backup(&repo, "vm", &old).await.unwrap();
        let kept = run_backup(&repo, "vm", &new).await.unwrap();
        // What a prune and the sweep after it remove of `gone`: its
        // manifest, then the nodes no other point uses.
        let kept_nodes: Vec<_> = kept.disks[0].segments.iter().flatten().collect();
        let mut doomed = vec![xfull_core::keys::point(&gone.vm, &gone.id)];
        for id in gone.disks[0].segments.iter().flatten() {
            if !kept_nodes.contains(&id) {
                doomed.push(xfull_core::keys::node(id));
            }
        }
        assert!(doomed.len() > 1, "the points share every node");
        mem.delete_many(&doomed).await.unwrap();
        let out = dir.path().join("out");
        let err = restore_to(&repo, &gone, &out).await.unwrap_err();
        assert!(!err.is_damage(), "reported as damage: {err}");
        let text = err.to_string();
        assert!(
            text.contains("removed") && text.contains(&gone.point_name()),
            "{text}"
        );
        let records: Vec<_> = mem.list(xfull_core::keys::DAMAGE).collect().await;
        assert!(records.is_empty(), "damage recorded: {records:?}");
        assert!(!out.exists(), "a partial image left");
        // A point whose objects go missing while it still exists is damage, as before.
        mem.delete_many(&[xfull_core::keys::node(kept_nodes[0])])
            .await
            .unwrap();
        let err = restore_to(&repo, &kept, &out).await.unwrap_err();
        assert!(err.is_damage(), "{err}");
    });
}

/// A point prune moved to `trash/` (a running backup pins it: gc keeps
/// what it references) is not gone: a node of it missing is damage, and
/// recorded, as the pinning backup must not rely on it.
#[test]
fn a_trashed_points_missing_node_is_damage_not_removal() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    write_image(&img, &[Region::Random(3 << 20)], 7, false).unwrap();
    rt().block_on(async {
        let mem = Arc::new(MemBackend::default());
        let repo = Repository::init(mem.clone(), small_config()).await.unwrap();
        let m = run_backup(&repo, "vm", &img).await.unwrap();
        let (key, trashed) = (
            xfull_core::keys::point(&m.vm, &m.id),
            xfull_core::keys::trashed_point(&m.vm, &m.id),
        );
        let manifest = mem.get(&key).await.unwrap();
        mem.put(&trashed, manifest, PutMode::Create).await.unwrap();
        let node = xfull_core::keys::node(m.disks[0].segments[1].as_ref().unwrap());
        mem.delete_many(&[key, node.clone()]).await.unwrap();
        let err = restore_to(&repo, &m, &dir.path().join("out"))
            .await
            .unwrap_err();
        assert!(err.is_damage(), "{err}");
        let records: Vec<String> = mem
            .list(xfull_core::keys::DAMAGE)
            .map(|r| r.unwrap().key)
            .collect()
            .await;
        assert_eq!(records, [xfull_core::keys::damage(&node)]);
    });
}
