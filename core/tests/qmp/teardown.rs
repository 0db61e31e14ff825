//! A session whose teardown fails keeps its lock file, so that the next
//! session finds its leftovers and removes them (review 105.3): removed
//! with the failure, the lock left the objects unclaimed, and every later
//! session left them alone.

use serde_json::json;
use xfull_core::qmp::PullSession;

use crate::daemon::Daemon;
use crate::pull::{disk, leftovers, options};

#[tokio::test]
async fn a_failed_teardown_keeps_the_lock_so_the_next_session_cleans_up() {
    let d = Daemon::start(4 << 20, 0, true);
    let mut q = d.connect().await;
    let opts = options(&d, true);
    let s = PullSession::start(&mut q, &disk(None), &opts)
        .await
        .unwrap();
    let tag = s.tag().to_string();
    let lock = d.work_dir().join(format!("xfull-{tag}.lock"));
    // A node someone stacked on the fleecing image keeps it from being
    // removed.
    let fleece = format!("xfull-{tag}-0");
    q.execute(
        "blockdev-add",
        json!({"driver": "raw", "node-name": "holder", "file": fleece, "read-only": true}),
    )
    .await
    .unwrap();
    let notes = s.finish(&mut q, false).await;
    assert!(notes.iter().any(|n| n.contains(&fleece)), "{notes:?}");
    assert!(lock.exists(), "the lock of a session not torn down is kept");

    // Once the holder is gone, the next session removes what is left.
    q.execute("blockdev-del", json!({"node-name": "holder"}))
        .await
        .unwrap();
    let s = PullSession::start(&mut q, &disk(None), &opts)
        .await
        .unwrap();
    assert!(s.notes().is_empty(), "{:?}", s.notes());
    assert!(!lock.exists(), "the leftovers' lock is removed once clean");
    assert!(s.finish(&mut q, false).await.is_empty());
    assert!(leftovers(&mut q).await.is_empty());
}
