//! Planning with damage records on an in-memory repository: chunk
//! records found through the nodes of the points the rules keep, again
//! after each damaged one, and node records through the manifests.

use std::sync::Arc;

use super::policy::Policy;
use crate::chunker::ChunkParams;
use crate::config::RepoConfig;
use crate::gc::test_packs::write_point;
use crate::id::{ObjectId, PointId};
use crate::keys;
use crate::repo::Repository;
use crate::testing::MemBackend;

/// Four points of VM `a`, oldest first, each of its own chunks (not
/// stored: planning reads nodes only); returns them and their chunks.
async fn four_points(repo: &Repository) -> Vec<(PointId, ObjectId)> {
    let mut out = Vec::new();
    for i in 1..=4u8 {
        let id: PointId = format!("20260101T00000{i}Z-000{i}").parse().unwrap();
        let chunk = ObjectId::of(&[i; 100]);
        write_point(repo, "a", &id, &[(chunk, vec![i; 100])]).await;
        out.push((id, chunk));
    }
    out
}

/// (point, keep, damaged) of the plan of `a`, oldest first.
async fn planned(repo: &Repository, last: u32) -> Vec<(PointId, bool, bool)> {
    let policy = Policy {
        last,
        ..Policy::default()
    };
    let plans = crate::prune::plan(repo, None, &policy).await.unwrap();
    let mut v: Vec<_> = plans[0]
        .decisions
        .iter()
        .map(|d| (d.id.clone(), d.keep, d.damaged.is_some()))
        .collect();
    v.reverse();
    v
}

async fn record(repo: &Repository, key: &str) {
    crate::damage::record(repo, key, "test", "verify")
        .await
        .unwrap();
}

#[tokio::test]
async fn damaged_points_do_not_count_and_nothing_more_is_removed() {
    let cfg = RepoConfig::new(1 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    let repo = Repository::init(Arc::new(MemBackend::default()), cfg)
        .await
        .unwrap();
    let p = four_points(&repo).await;
    let ids: Vec<PointId> = p.iter().map(|(id, _)| id.clone()).collect();
    let plan = |keep: [bool; 4], damaged: [bool; 4]| -> Vec<(PointId, bool, bool)> {
        (0..4)
            .map(|i| (ids[i].clone(), keep[i], damaged[i]))
            .collect()
    };
    // No record: the rules count every point.
    assert_eq!(
        planned(&repo, 2).await,
        plan([false, false, true, true], [false; 4])
    );

    // The two newest points' chunks damaged: both stay (the rules over
    // every point keep them), and two whole points are kept besides.
    record(&repo, &keys::chunk(&p[3].1)).await;
    record(&repo, &keys::chunk(&p[2].1)).await;
    assert_eq!(
        planned(&repo, 2).await,
        plan([true, true, true, true], [false, false, true, true])
    );
    // With one to keep, the damaged one the rules over every point
    // remove goes; it is named damaged all the same.
    assert_eq!(
        planned(&repo, 1).await,
        plan([false, true, false, true], [false, false, true, true])
    );

    // A record of the next point's node: seen in its manifest.
    let node = {
        let m = repo
            .load_manifest(&"a".parse().unwrap(), &ids[1])
            .await
            .unwrap();
        m.disks[0].segments[0].unwrap()
    };
    record(&repo, &keys::node(&node)).await;
    assert_eq!(
        planned(&repo, 1).await,
        plan([true, false, false, true], [false, true, true, true])
    );
}
