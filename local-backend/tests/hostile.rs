//! The local backend in a directory a hostile user planted things in:
//! symbolic links, FIFOs, directories where objects should be, files that
//! look like staging files. Nothing outside the repository is ever read,
//! written or deleted, and nothing blocks.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::TryStreamExt;
use xfull_core::backend::{Backend, BackendError, PutMode};
use xfull_local::LocalBackend;

mod common;
use common::{DAY, age};

/// A key of the form the repository uses for content objects.
fn content_key(prefix: &str, fan: &str) -> String {
    format!("{prefix}{fan}/{fan}{}", "0".repeat(62))
}

fn mkfifo(p: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
}

/// Runs `f`, failing the test if it has not ended after a generous time
/// (a read of a FIFO blocks forever). On expiry, `unblock` opens the FIFO
/// for writing so that the blocked reader (and the runtime) can end.
async fn ends<T>(fifo: &Path, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), f).await {
        Ok(v) => v,
        Err(_) => {
            let _ = std::fs::OpenOptions::new().write(true).open(fifo);
            panic!("reading a FIFO in place of an object blocked");
        }
    }
}

fn expect_corrupt(r: Result<impl std::fmt::Debug, BackendError>, key: &str, what: &str) {
    match r {
        Err(e @ BackendError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(key), "names the key: {msg}");
            assert!(msg.contains(what), "says it is {what}: {msg}");
        }
        other => panic!("{key}: expected Corrupt ({what}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_place_of_an_object_is_damage_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open(dir.path()).unwrap();
    let key = content_key("chunks/", "ab");
    std::fs::create_dir_all(dir.path().join("chunks/ab")).unwrap();
    let fifo = dir.path().join(&key);
    mkfifo(&fifo);
    expect_corrupt(ends(&fifo, b.get(&key)).await, &key, "FIFO");
    expect_corrupt(ends(&fifo, b.get_range(&key, 0..1)).await, &key, "FIFO");
    expect_corrupt(ends(&fifo, b.head(&key)).await, &key, "FIFO");
    let cfg = dir.path().join("config");
    mkfifo(&cfg);
    expect_corrupt(ends(&cfg, b.get("config")).await, "config", "FIFO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_in_place_of_an_object_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    expect_corrupt(b.get("config").await, "config", "directory");
    expect_corrupt(b.head("config").await, "config", "directory");
    // A create never replaces it, and a delete never removes it.
    assert!(
        b.put("config", Bytes::from_static(b"x"), PutMode::Create)
            .await
            .is_err()
    );
    assert!(b.delete_many(&["config".to_string()]).await.is_err());
    assert!(dir.path().join("config").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_in_place_of_an_object_is_damage_and_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let b = LocalBackend::open(dir.path()).unwrap();
    // A valid object elsewhere, and a link to it under a key.
    let key = content_key("chunks/", "cd");
    b.put("elsewhere/x", Bytes::from_static(b"valid"), PutMode::Create)
        .await
        .unwrap();
    std::fs::create_dir_all(dir.path().join("chunks/cd")).unwrap();
    symlink(dir.path().join("elsewhere/x"), dir.path().join(&key)).unwrap();
    expect_corrupt(b.get(&key).await, &key, "symbolic link");
    expect_corrupt(b.get_range(&key, 0..1).await, &key, "symbolic link");
    expect_corrupt(b.head(&key).await, &key, "symbolic link");
    // A create does not take the link for the object.
    expect_corrupt(
        b.put(&key, Bytes::from_static(b"new"), PutMode::Create)
            .await,
        &key,
        "symbolic link",
    );
    // A symlinked directory on the way is refused too.
    std::fs::write(outside.path().join("cafe"), b"outside").unwrap();
    symlink(outside.path(), dir.path().join("nodes")).unwrap();
    expect_corrupt(b.get("nodes/cafe").await, "nodes", "symbolic link");
    // Deleting through or at a link removes nothing.
    assert!(
        b.delete_many(&["nodes/cafe".to_string(), key.clone()])
            .await
            .is_err()
    );
    assert!(outside.path().join("cafe").exists());
    assert!(dir.path().join(&key).symlink_metadata().is_ok());
    assert_eq!(b.get("elsewhere/x").await.unwrap(), &b"valid"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_never_writes_through_a_symlinked_directory() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let b = LocalBackend::open(dir.path()).unwrap();
    std::fs::create_dir(dir.path().join("nodes")).unwrap();
    symlink(outside.path(), dir.path().join("nodes/ab")).unwrap();
    let key = content_key("nodes/", "ab");
    for mode in [PutMode::Create, PutMode::Overwrite] {
        let r = b.put(&key, Bytes::from_static(b"node"), mode).await;
        expect_corrupt(r, "nodes/ab", "symbolic link");
    }
    // A symlinked top-level directory, and one deeper down.
    symlink(outside.path(), dir.path().join("points")).unwrap();
    let r = b
        .put("points/vm/p", Bytes::from_static(b"m"), PutMode::Create)
        .await;
    expect_corrupt(r, "points", "symbolic link");
    let entries: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
    assert!(entries.is_empty(), "wrote outside: {entries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_never_walks_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let b = LocalBackend::open(dir.path()).unwrap();
    b.put("points/vm1/p1", Bytes::from_static(b"m"), PutMode::Create)
        .await
        .unwrap();
    std::fs::create_dir(outside.path().join("vm3")).unwrap();
    std::fs::write(outside.path().join("p2"), b"outside").unwrap();
    std::fs::write(outside.path().join("vm3/p3"), b"outside").unwrap();
    symlink(outside.path(), dir.path().join("points/vm2")).unwrap();
    symlink(outside.path().join("p2"), dir.path().join("points/vm1/p2")).unwrap();
    // A link where an object or a directory of them could be is damage
    // naming it, never a walk and never a silent gap (gc took a listing
    // with a gap for the repository's points; review, stop 50).
    let links = ["points/vm1/p2", "points/vm2"];
    for prefix in ["points/", "points/vm1/", "", "points/vm", "points/vm1/p"] {
        match b.list(prefix).try_collect::<Vec<_>>().await {
            Err(e @ BackendError::Corrupt { .. }) => {
                let msg = e.to_string();
                assert!(links.iter().any(|l| msg.contains(l)), "{prefix:?}: {msg}");
                assert!(msg.contains("symbolic link"), "{prefix:?}: {msg}");
            }
            other => panic!("listing {prefix:?}: expected damage, got {other:?}"),
        }
    }
    // One outside the key space (a user's) is no place of an object: a
    // listing of everything (`stats`) goes on.
    std::fs::remove_file(dir.path().join("points/vm2")).unwrap();
    std::fs::remove_file(dir.path().join("points/vm1/p2")).unwrap();
    std::fs::create_dir(dir.path().join("notes")).unwrap();
    symlink(outside.path(), dir.path().join("notes/x")).unwrap();
    symlink(outside.path(), dir.path().join("mine")).unwrap();
    let got: Vec<_> = b.list("").try_collect().await.unwrap();
    assert_eq!(got.len(), 1);
    symlink(outside.path(), dir.path().join("points/vm2")).unwrap();
    symlink(outside.path().join("p2"), dir.path().join("points/vm1/p2")).unwrap();
    // One the prefix leaves out is not looked at.
    let got: Vec<_> = b.list("points/vm1/p1").try_collect().await.unwrap();
    assert_eq!(got.len(), 1);
    // Listing a prefix whose directory is a link is damage, not a walk.
    expect_corrupt(
        b.list("points/vm2/").try_collect::<Vec<_>>().await,
        "points/vm2",
        "symbolic link",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_skip_staging_files_and_names_no_key_has() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open(dir.path()).unwrap();
    b.put("leases/s1", Bytes::from_static(b"l"), PutMode::Create)
        .await
        .unwrap();
    for junk in ["s1#123", "has space", ".", "x\u{e9}"] {
        let _ = std::fs::write(dir.path().join("leases").join(junk), b"j");
    }
    let got: Vec<_> = b.list("leases/").try_collect().await.unwrap();
    let keys: Vec<_> = got.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, ["leases/s1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_only_staging_files_of_repository_keys() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = LocalBackend::open(root).unwrap();
    b.put(
        &content_key("chunks/", "ab"),
        Bytes::from_static(b"c"),
        PutMode::Create,
    )
    .await
    .unwrap();
    // What killed writers left: these go.
    let chunk_staging = format!("{}#123", content_key("chunks/", "ab"));
    let staging = [
        chunk_staging.as_str(),
        "config#77",
        "points/vm1/20261125T194155Z-3fa2#5",
        "leases/20261125T194155Z-0123456789abcdef#9",
        "gc/sweeps/0000000000000003#1",
    ];
    // What a user or an attacker put there: these stay.
    let chunk_named = content_key("", "ff");
    let kept = [
        "mydocs/meeting#1",
        "notes#2",
        "chunks/ab/junk#1",
        "points/vm1/not-a-point#1",
        "gc/sweeps/12#1",
        "chunks/ab/feed#x",
    ];
    for p in staging.iter().chain(&kept) {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"x").unwrap();
        age(&p, DAY);
    }
    // A symlinked fan directory holding look-alikes of staging files.
    std::fs::write(outside.path().join("x#1"), b"outside").unwrap();
    let fake = outside
        .path()
        .join(format!("{}#1", chunk_named.trim_start_matches("ff/")));
    std::fs::write(&fake, b"outside").unwrap();
    age(&outside.path().join("x#1"), DAY);
    age(&fake, DAY);
    symlink(outside.path(), root.join("chunks/ff")).unwrap();
    // A fresh staging file belongs to a running writer: it stays.
    let fresh = format!("{}#4", content_key("nodes/", "12"));
    std::fs::create_dir_all(root.join("nodes/12")).unwrap();
    std::fs::write(root.join(&fresh), b"x").unwrap();

    let cutoff = Utc::now() - chrono::Duration::hours(1);
    let n = b.remove_incomplete(cutoff).await.unwrap();
    assert_eq!(n, staging.len() as u64);
    for p in staging {
        assert!(!root.join(p).exists(), "{p} left");
    }
    for p in kept.iter().chain([&fresh.as_str()]) {
        assert!(root.join(p).exists(), "{p} removed");
    }
    assert!(outside.path().join("x#1").exists());
    assert!(fake.exists());
    assert!(b.get(&content_key("chunks/", "ab")).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_refuses_a_directory_that_is_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mydocs")).unwrap();
    std::fs::write(dir.path().join("mydocs/meeting#1"), b"notes").unwrap();
    let err = LocalBackend::create(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not empty"), "{err}");
    assert!(err.contains("mydocs"), "{err}");
    assert!(
        err.contains(&dir.path().display().to_string()),
        "names the directory: {err}"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "nothing written");

    // An empty directory, and one that does not exist yet, are fine.
    let empty = tempfile::tempdir().unwrap();
    LocalBackend::create(empty.path()).unwrap();
    LocalBackend::create(&empty.path().join("new/deeper")).unwrap();
}
