//! The pull-mode view: one moment for the disk while the guest goes on
//! writing, the parent's checkpoint exported as the changes, checkpoints
//! kept or dropped by the outcome, and a killed session's leftovers.

use std::time::Duration;

use serde_json::json;
use xfull_core::nbd::{Client, NbdUri, STATE_DIRTY};
use xfull_core::qmp::{DiskRequest, PullOptions, PullSession, Qmp};

use crate::daemon::Daemon;

const SIZE: usize = 4 << 20;

pub(crate) fn options(d: &Daemon, with_guest_server: bool) -> PullOptions {
    PullOptions {
        work_dir: d.work_dir().to_path_buf(),
        bitmap_prefix: "xfull-test".into(),
        nbd_socket: if with_guest_server {
            d.nbd.clone()
        } else {
            None
        },
    }
}

pub(crate) fn disk(since: Option<&str>) -> Vec<DiskRequest> {
    vec![DiskRequest {
        name: "sys".into(),
        node: "disk0".into(),
        since: since.map(String::from),
    }]
}

async fn read_all(uri: &str, contexts: &[&str]) -> (Vec<u8>, Client) {
    let c = Client::connect(&NbdUri::parse(uri).unwrap(), contexts)
        .await
        .unwrap();
    let mut out = Vec::new();
    for off in (0..c.size()).step_by(1 << 20) {
        out.extend_from_slice(&c.read(off, 1 << 20).await.unwrap());
    }
    (out, c)
}

/// The dirty ranges of `context` over the whole export.
async fn dirty(c: &Client, context: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < c.size() {
        for e in c.block_status(context, off..c.size()).await.unwrap() {
            if e.flags & STATE_DIRTY != 0 {
                out.push((off, e.len));
            }
            off += e.len;
        }
    }
    out
}

/// What xfull left in QEMU: exports, jobs and nodes of its own naming.
pub(crate) async fn leftovers(q: &mut Qmp) -> Vec<String> {
    let mut names: Vec<String> = q
        .block_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_name)
        .chain(q.job_ids().await.unwrap())
        .collect();
    let exports = q
        .execute("query-block-exports", serde_json::Value::Null)
        .await
        .unwrap();
    for e in exports.as_array().unwrap() {
        names.push(e["id"].as_str().unwrap().to_string());
    }
    names.retain(|n| n.starts_with("xfull-"));
    names
}

#[tokio::test]
async fn a_view_is_one_moment_and_the_next_reads_only_the_changes() {
    let d = Daemon::start(SIZE, 7, true);
    let mut q = d.connect().await;
    let opts = options(&d, true);

    // First point: no checkpoint yet, so a full read, said so.
    d.guest_write(0, 65536, 1);
    let before = d.disk_bytes();
    let s = PullSession::start(&mut q, &disk(None), &opts)
        .await
        .unwrap();
    let v = &s.disks()[0];
    assert_eq!(v.size, SIZE as u64);
    assert!(v.since.is_none());
    assert!(v.full_read.as_deref().unwrap().contains("first backup"));
    // The guest writes on while the point is read: the view does not move.
    d.guest_write(1 << 20, 65536, 2);
    let (seen, c) = read_all(&v.uri, &[]).await;
    assert!(seen == before, "the view changed under the guest's writes");
    c.close().await.unwrap();
    let first = v.checkpoint.clone();
    let notes = s.finish(&mut q, true).await;
    assert!(notes.is_empty(), "{notes:?}");
    assert!(leftovers(&mut q).await.is_empty());
    assert!(std::fs::read_dir(d.work_dir()).unwrap().all(|e| {
        let n = e.unwrap().file_name();
        !n.to_string_lossy().starts_with("xfull-")
    }));

    // The write after the first moment and one more are the changes.
    d.guest_write(3 << 20, 4096, 3);
    let s = PullSession::start(&mut q, &disk(Some(&first)), &opts)
        .await
        .unwrap();
    let v = &s.disks()[0];
    assert_eq!(v.since.as_deref(), Some(first.as_str()));
    assert!(v.full_read.is_none());
    let ctx = v.bitmap_context().unwrap();
    let (seen, c) = read_all(&v.uri, &[&ctx]).await;
    assert!(seen == d.disk_bytes());
    assert_eq!(
        dirty(&c, &ctx).await,
        vec![(1 << 20, 65536), (3 << 20, 65536)],
        "64 KiB granularity around the two writes"
    );
    c.close().await.unwrap();
    let second = v.checkpoint.clone();
    assert!(s.finish(&mut q, true).await.is_empty());
    let node = q.resolve_node("disk0").await.unwrap();
    assert!(
        node.bitmap(&first).is_none(),
        "the parent's checkpoint is removed once committed"
    );
    assert!(node.bitmap(&second).is_some());
}

#[tokio::test]
async fn a_failed_backup_keeps_the_parents_checkpoint() {
    let d = Daemon::start(SIZE, 0, false);
    let mut q = d.connect().await;
    let opts = options(&d, false);
    // Without a guest server xfull starts its own NBD server.
    let s = PullSession::start(&mut q, &disk(None), &opts)
        .await
        .unwrap();
    let first = s.disks()[0].checkpoint.clone();
    assert!(s.finish(&mut q, true).await.is_empty());

    let s = PullSession::start(&mut q, &disk(Some(&first)), &opts)
        .await
        .unwrap();
    let second = s.disks()[0].checkpoint.clone();
    assert!(s.finish(&mut q, false).await.is_empty());
    let node = q.resolve_node("disk0").await.unwrap();
    assert!(
        node.bitmap(&first).is_some(),
        "the parent's checkpoint survives a failure"
    );
    assert!(
        node.bitmap(&second).is_none(),
        "the failed run's checkpoint is dropped"
    );
    assert!(leftovers(&mut q).await.is_empty());

    // A checkpoint gone behind xfull's back: a full read, and why.
    q.remove_bitmap("disk0", &first).await.unwrap();
    let s = PullSession::start(&mut q, &disk(Some(&first)), &opts)
        .await
        .unwrap();
    let why = s.disks()[0].full_read.clone().unwrap();
    assert!(why.contains(&first) && why.contains("gone"), "{why}");
    assert!(s.disks()[0].since.is_none());
    s.finish(&mut q, false).await;
}

#[tokio::test]
async fn a_killed_sessions_leftovers_are_removed_by_the_next() {
    let d = Daemon::start(SIZE, 0, false);
    let mut q = d.connect().await;
    let opts = options(&d, false);
    let s = PullSession::start(&mut q, &disk(None), &opts)
        .await
        .unwrap();
    let killed_checkpoint = s.disks()[0].checkpoint.clone();
    // As if the process died: its lock is released, nothing torn down.
    drop(s);
    drop(q);
    let mut q = d.connect().await;
    assert!(!leftovers(&mut q).await.is_empty());

    // The NBD server the dead session started is still running: the
    // next session is told to use it.
    let e = PullSession::start(&mut q, &disk(None), &opts)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--qmp-nbd-socket"), "{e}");
    let left = leftovers(&mut q).await;
    assert!(
        left.is_empty(),
        "the start cleaned the dead session's objects and undid its own: {left:?}"
    );
    q.execute("nbd-server-stop", serde_json::Value::Null)
        .await
        .unwrap();
    let s = PullSession::start(&mut q, &disk(None), &opts)
        .await
        .unwrap();
    let node = q.resolve_node("disk0").await.unwrap();
    assert!(node.bitmap(&killed_checkpoint).is_some());
    assert!(s.finish(&mut q, true).await.is_empty());
    let node = q.resolve_node("disk0").await.unwrap();
    assert!(
        node.bitmap(&killed_checkpoint).is_none(),
        "a committed point removes the stale checkpoints of killed runs"
    );
}

#[tokio::test]
async fn an_unknown_disk_names_it_and_leaves_nothing() {
    let d = Daemon::start(SIZE, 0, false);
    let mut q = d.connect().await;
    let req = vec![DiskRequest {
        name: "data".into(),
        node: "vdb".into(),
        since: None,
    }];
    let e = PullSession::start(&mut q, &req, &options(&d, false))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("disk data") && msg.contains("\"vdb\"") && msg.contains("disk0"),
        "{msg}"
    );
    assert!(leftovers(&mut q).await.is_empty());
}

#[tokio::test]
async fn a_checkpoint_is_trusted_only_on_the_disk_it_was_made_for() {
    // Two disks backed up in one point, then named the other way round
    // (node names such as libvirt's `libvirt-N-format` are numbered at
    // each start of the VM, so `qmp:NODE` can point at another disk
    // next time). Each disk's recorded checkpoint must not be found on
    // the other disk's node: its bits say nothing of this disk's writes.
    let d = Daemon::start(SIZE, 0, false);
    let mut q = d.connect().await;
    let second = d.work_dir().join("disk1.raw");
    std::fs::write(&second, vec![9u8; SIZE]).unwrap();
    q.execute(
        "blockdev-add",
        serde_json::json!({"driver": "file", "filename": second.display().to_string(),
                           "node-name": "file1"}),
    )
    .await
    .unwrap();
    q.execute(
        "blockdev-add",
        serde_json::json!({"driver": "raw", "file": "file1", "node-name": "disk1"}),
    )
    .await
    .unwrap();
    let opts = options(&d, false);
    let req = |sys: &str, data: &str, since: [Option<String>; 2]| {
        let [s0, s1] = since;
        vec![
            DiskRequest {
                name: "sys".into(),
                node: sys.into(),
                since: s0,
            },
            DiskRequest {
                name: "data".into(),
                node: data.into(),
                since: s1,
            },
        ]
    };
    let s = PullSession::start(&mut q, &req("disk0", "disk1", [None, None]), &opts)
        .await
        .unwrap();
    let recorded = [
        Some(s.disks()[0].checkpoint.clone()),
        Some(s.disks()[1].checkpoint.clone()),
    ];
    assert!(s.finish(&mut q, true).await.is_empty());

    let s = PullSession::start(&mut q, &req("disk1", "disk0", recorded.clone()), &opts)
        .await
        .unwrap();
    for (v, rec) in s.disks().iter().zip(&recorded) {
        assert!(
            v.since.is_none(),
            "disk {} on node {} trusted checkpoint {rec:?} made for the other disk",
            v.name,
            v.node
        );
    }
    s.finish(&mut q, false).await;
}

#[tokio::test]
async fn a_work_dir_with_uri_characters_gives_a_uri_that_reads() {
    // The export's URI carries the socket's path in its query: '#', '&'
    // and '%' in the work directory must be percent-encoded there, or
    // the URI is refused ('#', '&') or names another path ('%41' is 'A').
    let d = Daemon::start(SIZE, 5, false);
    let mut q = d.connect().await;
    let work = d.work_dir().join("vm #1&%41");
    std::fs::create_dir(&work).unwrap();
    let opts = PullOptions {
        work_dir: work,
        ..options(&d, false)
    };
    let s = PullSession::start(&mut q, &disk(None), &opts)
        .await
        .unwrap();
    let (seen, c) = read_all(&s.disks()[0].uri, &[]).await;
    assert!(seen == d.disk_bytes());
    c.close().await.unwrap();
    assert!(s.finish(&mut q, false).await.is_empty());
}

#[tokio::test]
async fn a_checkpoint_named_for_no_disk_is_not_trusted() {
    // Builds before per-disk names gave every disk of a point one
    // checkpoint name (`PREFIX.TAG`): found on a node, such a bitmap may
    // be another disk's, so it is not trusted, once, after an upgrade.
    let d = Daemon::start(SIZE, 0, false);
    let mut q = d.connect().await;
    let opts = options(&d, false);
    let shared = "xfull-test.0badc0de";
    q.execute(
        "block-dirty-bitmap-add",
        serde_json::json!({"node": "disk0", "name": shared, "persistent": false}),
    )
    .await
    .unwrap();
    let s = PullSession::start(&mut q, &disk(Some(shared)), &opts)
        .await
        .unwrap();
    let v = &s.disks()[0];
    assert!(v.since.is_none(), "trusted {shared} for disk sys");
    let why = v.full_read.clone().unwrap();
    assert!(why.contains(shared) && why.contains("sys"), "{why}");
    s.finish(&mut q, false).await;
}

#[tokio::test]
async fn a_busy_checkpoint_gives_a_full_read_and_is_dropped_once_free() {
    // An export left behind (by hand, or another tool) holds the parent's
    // checkpoint: exported again with the view, QEMU refused it, and
    // every --qmp backup failed until someone removed that export.
    let d = Daemon::start(SIZE, 0, true);
    let mut q = d.connect().await;
    let opts = options(&d, true);
    let s = PullSession::start(&mut q, &disk(None), &opts)
        .await
        .unwrap();
    let first = s.disks()[0].checkpoint.clone();
    assert!(s.finish(&mut q, true).await.is_empty());
    q.execute(
        "block-export-add",
        json!({"type": "nbd", "id": "left-behind", "node-name": "disk0",
               "name": "left-behind", "writable": false,
               "bitmaps": [{"node": "disk0", "name": first}]}),
    )
    .await
    .unwrap();
    let node = q.resolve_node("disk0").await.unwrap();
    assert!(node.bitmap(&first).unwrap().busy);

    let s = PullSession::start(&mut q, &disk(Some(&first)), &opts)
        .await
        .unwrap();
    let v = &s.disks()[0];
    assert!(v.since.is_none(), "a busy bitmap was exported");
    let why = v.full_read.clone().unwrap();
    assert!(why.contains(&first) && why.contains("in use"), "{why}");
    let second = v.checkpoint.clone();
    // Committed: the busy parent checkpoint cannot go yet, and says so;
    // the new one is the next backup's.
    let notes = s.finish(&mut q, true).await;
    assert!(notes.iter().any(|n| n.contains(&first)), "{notes:?}");

    q.execute(
        "block-export-del",
        json!({"id": "left-behind", "mode": "hard"}),
    )
    .await
    .unwrap();
    q.wait_event("removing the export", Duration::from_secs(60), |n, d| {
        n == "BLOCK_EXPORT_DELETED" && d["id"] == "left-behind"
    })
    .await
    .unwrap();
    let s = PullSession::start(&mut q, &disk(Some(&second)), &opts)
        .await
        .unwrap();
    assert_eq!(s.disks()[0].since.as_deref(), Some(second.as_str()));
    assert!(s.finish(&mut q, true).await.is_empty());
    let node = q.resolve_node("disk0").await.unwrap();
    assert!(
        node.bitmap(&first).is_none(),
        "the stale checkpoint is dropped at the first commit after it is free"
    );
}
