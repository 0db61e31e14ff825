//! What the local backend leaves on disk: objects for their owner only,
//! staging files of every key xfull writes cleaned, no key it cannot put.
//! Each test failed when written (review, stop 50).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bytes::Bytes;
use chrono::Utc;
use xfull_core::backend::{Backend, PutMode};
use xfull_core::id::ObjectId;
use xfull_core::keys;
use xfull_local::LocalBackend;

mod common;
use common::{DAY, age};

fn hex_id(fan: &str) -> ObjectId {
    format!("{fan}{}", "5".repeat(62)).parse().unwrap()
}

/// Writes `rel` (a staging file a killed writer left) under `root`, a day
/// old.
fn plant(root: &Path, rel: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, vec![0u8; 4096]).unwrap();
    age(&p, DAY);
}

/// gc writes shard index objects `index/<prefix>-<64 hex>` (placement
/// sweep: the index is merged into shards). A gc killed while writing one
/// leaves `index/<prefix>-<hex>#N` -- up to a shard's size (244 k entries
/// of 80 bytes, ~20 MB) -- and `remove_incomplete` never removes it:
/// `cleanup.rs` `is_object_key` knows `keys::parse_index` (any-id
/// objects, empty prefix) only, not `keys::parse_index_in`.
#[tokio::test]
async fn staging_files_of_shard_index_objects_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = LocalBackend::open(root).unwrap();
    let shard_key = keys::index_in("a3", &hex_id("a3"));
    assert!(keys::parse_index_in(&shard_key).is_some(), "{shard_key}");
    // An any-id index object's staging file is cleaned (control).
    let plain = format!("{}#11", keys::index(&hex_id("77")));
    let shard = format!("{shard_key}#12");
    plant(root, &plain);
    plant(root, &shard);
    let n = b
        .remove_incomplete(Utc::now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    assert!(!root.join(&plain).exists(), "{plain} left");
    assert!(
        !root.join(&shard).exists(),
        "the staging file of shard index object {shard_key} is never removed \
         (removed {n} of 2)"
    );
}

/// Other keys xfull writes whose killed writers' staging files are never
/// removed: key slots (`keys/<16 hex>`, `init`, `key add`), damage records
/// (`damage/<chunk or node key>`, verify/restore) and the probe every gc
/// sweep writes first (`gc/permission-check`). `cleanup.rs` `places()`
/// has no `keys/`, `damage/` or `gc/` entry. Design ("Storage backends"):
/// gc removes "regular files named `<key>#<digits>` whose key is one xfull
/// writes".
#[tokio::test]
async fn staging_files_of_every_key_xfull_writes_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let b = LocalBackend::open(root).unwrap();
    let damage = keys::damage(&keys::chunk(&hex_id("ab")));
    assert!(keys::parse_damage(&damage).is_some(), "{damage}");
    let staged = [
        "keys/0123456789abcdef#3".to_string(),
        format!("{damage}#4"),
        "gc/permission-check#5".to_string(),
    ];
    for s in &staged {
        plant(root, s);
    }
    b.remove_incomplete(Utc::now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    let left: Vec<_> = staged.iter().filter(|s| root.join(s).exists()).collect();
    assert!(left.is_empty(), "staging files never removed: {left:?}");
}

/// The process's umask, read without changing it.
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .unwrap();
    u32::from_str_radix(line.trim(), 8).unwrap()
}

/// Repository objects are created with mode 0666 and directories 0777,
/// less the umask (`staging.rs` `create_staging`, `make_dirs`; `lib.rs`
/// `create` uses `create_dir_all`): under the usual umask 022 every
/// object -- key slots (the password-wrapped master keys: offline
/// guessing), manifests, and in a repository made with `--encryption
/// none` every disk's data -- is readable by every local user. xfull makes
/// its other files holding disk contents or secrets 0600/0700 whatever
/// the umask (NBD sockets, gc spill files, the key file, the serve
/// overlay); restic and borg make repositories owner-only.
#[tokio::test]
async fn repository_objects_are_not_readable_by_other_users() {
    let mask = umask();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let b = LocalBackend::create(&repo).unwrap();
    let keys_ = [
        "keys/0123456789abcdef".to_string(),
        keys::pack(&hex_id("cd")),
        "points/vm1/20261125T194155Z-3fa2".to_string(),
    ];
    for k in &keys_ {
        b.put(k, Bytes::from_static(b"secret"), PutMode::Create)
            .await
            .unwrap();
    }
    let mut open_to_others = Vec::new();
    for p in [
        repo.clone(),
        repo.join("keys"),
        repo.join("packs/cd"),
        repo.join("points/vm1"),
    ]
    .into_iter()
    .chain(keys_.iter().map(|k| repo.join(k)))
    {
        let mode = std::fs::symlink_metadata(&p).unwrap().mode() & 0o777;
        if mode & 0o007 != 0 {
            open_to_others.push(format!("{} {mode:o}", p.display()));
        }
    }
    assert!(
        open_to_others.is_empty(),
        "with umask {mask:03o}, open to every local user: {open_to_others:?}"
    );
}

/// A key whose last component is 235..255 bytes passes `check_key`
/// (`is_component` allows 255) but its staging file `NAME#<up to 20
/// digits>` exceeds NAME_MAX: the put fails with "File name too long"
/// (only when the random number happens to be short does it succeed),
/// while get/head/delete/list take the key, and the in-memory backend
/// stores it. The key should be refused up front as invalid, or staged
/// under a short name.
#[tokio::test]
async fn a_key_check_key_accepts_can_be_put() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open(dir.path()).unwrap();
    let key = format!("v/{}", "a".repeat(250));
    LocalBackend::in_memory()
        .put(&key, Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    let r = b.put(&key, Bytes::from_static(b"x"), PutMode::Create).await;
    match r {
        Ok(()) => {}
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("invalid key"),
                "a key that passed check_key failed at its staging file: {msg}"
            );
        }
    }
    // A key of 255 fails the same way.
    let key = format!("v/{}", "b".repeat(255));
    let e = b
        .put(&key, Bytes::from_static(b"x"), PutMode::Create)
        .await
        .err();
    assert!(
        e.as_ref()
            .is_none_or(|e| e.to_string().contains("invalid key")),
        "{e:?}"
    );
}
