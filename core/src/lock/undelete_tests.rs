//! `undelete` over an in-memory versioned store: delete markers and
//! unlocked versions above a locked one go; keys whose retention ended,
//! and keys never locked, stay as they are.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{Duration, Utc};
use futures::stream::BoxStream;

use super::*;
use crate::backend::{BackendError, ObjectMeta, PutOptions};
use crate::lock::{LockMode, Retention};

/// A key's versions, oldest first, each with its retention.
type History = Vec<(Version, Option<Retention>)>;

/// Versions by key, with a clock: each version is a second after the
/// one added before it (any key).
#[derive(Debug, Default)]
struct Versioned {
    keys: Mutex<BTreeMap<String, History>>,
    tick: Mutex<i64>,
    /// Versions that go when their retention is first read (listed, then
    /// gone): (key, version id).
    vanishing: Mutex<Vec<(String, String)>>,
}

impl Versioned {
    fn add(&self, key: &str, marker: bool, retention: Option<Retention>) {
        let at = {
            let mut t = self.tick.lock().unwrap();
            *t += 1;
            Utc::now() - Duration::days(1) + Duration::seconds(*t)
        };
        let mut keys = self.keys.lock().unwrap();
        let list = keys.entry(key.to_string()).or_default();
        let n = list.len();
        list.push((
            Version {
                key: key.to_string(),
                version_id: format!("v{n}"),
                delete_marker: marker,
                latest: false,
                last_modified: at,
                size: if marker { 0 } else { 10 },
            },
            retention,
        ));
    }

    /// `key`'s version `id` goes before its retention is read.
    fn vanish(&self, key: &str, id: &str) {
        let mut v = self.vanishing.lock().unwrap();
        v.push((key.to_string(), id.to_string()));
    }

    /// The current version of `key`: `None` if gone or hidden.
    fn current(&self, key: &str) -> Option<String> {
        let keys = self.keys.lock().unwrap();
        let (v, _) = keys.get(key)?.last()?;
        (!v.delete_marker).then(|| v.version_id.clone())
    }

    fn unsupported(&self) -> BackendError {
        BackendError::Other {
            location: "mem".into(),
            message: "not in this test".into(),
        }
    }
}

#[async_trait]
impl Backend for Versioned {
    fn location(&self) -> String {
        "versioned-mem".into()
    }
    async fn put_opts(&self, _: &str, _: Bytes, _: PutOptions) -> Result<(), BackendError> {
        Err(self.unsupported())
    }
    async fn get(&self, _: &str) -> Result<Bytes, BackendError> {
        Err(self.unsupported())
    }
    async fn get_range(&self, _: &str, _: Range<u64>) -> Result<Bytes, BackendError> {
        Err(self.unsupported())
    }
    async fn head(&self, _: &str) -> Result<ObjectMeta, BackendError> {
        Err(self.unsupported())
    }
    fn list(&self, _: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        Box::pin(futures::stream::once(async { Err(self.unsupported()) }))
    }
    async fn delete_many(&self, _: &[String]) -> Result<(), BackendError> {
        Err(self.unsupported())
    }
    fn list_versions(&self, prefix: &str) -> BoxStream<'_, Result<Version, BackendError>> {
        let keys = self.keys.lock().unwrap();
        let mut out = Vec::new();
        for (key, list) in keys.range(prefix.to_string()..) {
            if !key.starts_with(prefix) {
                break;
            }
            for (i, (v, _)) in list.iter().enumerate().rev() {
                let mut v = v.clone();
                v.latest = i + 1 == list.len();
                out.push(Ok(v));
            }
        }
        Box::pin(futures::stream::iter(out))
    }
    async fn version_retention(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<Retention>, BackendError> {
        let mut keys = self.keys.lock().unwrap();
        let gone = (key.to_string(), version_id.to_string());
        if self.vanishing.lock().unwrap().contains(&gone)
            && let Some(list) = keys.get_mut(key)
        {
            list.retain(|(v, _)| v.version_id != version_id);
        }
        let (v, r) = keys
            .get(key)
            .and_then(|l| l.iter().find(|(v, _)| v.version_id == version_id))
            .ok_or_else(|| BackendError::NotFound {
                location: "mem".into(),
                key: key.into(),
            })?;
        assert!(!v.delete_marker, "a HEAD of a delete marker");
        Ok(*r)
    }
    async fn delete_versions(&self, versions: &[(String, String)]) -> Result<(), BackendError> {
        let mut keys = self.keys.lock().unwrap();
        for (key, id) in versions {
            let list = keys.get_mut(key).unwrap();
            let i = list.iter().position(|(v, _)| &v.version_id == id).unwrap();
            // A locked version cannot be deleted: the test fails if tried.
            assert!(
                list[i].1.is_none_or(|r| r.until <= Utc::now()),
                "deleted a locked version of {key}"
            );
            list.remove(i);
        }
        Ok(())
    }
}

fn locked(secs: i64) -> Option<Retention> {
    Some(Retention {
        mode: LockMode::Compliance,
        until: Utc::now() + Duration::seconds(secs),
    })
}

const SLOT: &str = "0123456789abcdef";

fn opts(dry_run: bool, slots: &[&str]) -> UndeleteOptions {
    UndeleteOptions {
        dry_run,
        key_slots: slots.iter().map(|s| s.to_string()).collect(),
        config_version: None,
    }
}

#[tokio::test]
async fn what_hides_a_locked_version_goes_and_nothing_else() {
    let b = Versioned::default();
    // An earlier repository at this place: its pack, locked and hidden.
    b.add("packs/00/old", false, locked(7200));
    b.add("packs/00/old", true, None);
    // A key slot hidden (as `key remove` does): listed, not brought back.
    // `init` writes the first slot just before the config.
    b.add(&format!("keys/{SLOT}"), false, locked(7200));
    b.add(&format!("keys/{SLOT}"), true, None);
    // The config replaced by a version without retention.
    b.add("config", false, locked(7200));
    b.add("config", false, None);
    // Deleted: a marker above a locked pack and a locked manifest.
    b.add("packs/aa/aa01", false, locked(7200));
    b.add("packs/aa/aa01", true, None);
    b.add("points/vm/p1", false, locked(7200));
    b.add("points/vm/p1", true, None);
    // Overwritten, then deleted: a forged version and a marker above.
    b.add("nodes/bb/bb01", false, locked(7200));
    b.add("nodes/bb/bb01", false, None);
    b.add("nodes/bb/bb01", true, None);
    // A node stored again (repair): both versions locked, nothing to do.
    b.add("nodes/cc/cc01", false, locked(7200));
    b.add("nodes/cc/cc01", false, locked(7200));
    // The newest version with a retention has ended: xfull's, and gc's
    // to delete; the older locked one under it is not brought back.
    b.add("nodes/gg/gg01", false, locked(7200));
    b.add("nodes/gg/gg01", false, locked(-10));
    b.add("nodes/gg/gg01", true, None);
    // Deleted by gc after its retention ended: stays deleted.
    b.add("packs/dd/dd01", false, locked(-10));
    b.add("packs/dd/dd01", true, None);
    // A retention ending within the margin is not relied on.
    b.add("packs/so/soon", false, locked(60));
    b.add("packs/so/soon", true, None);
    // Sound and alone: not even looked at.
    b.add("packs/ee/ee01", false, locked(7200));
    // Not a locked kind: index objects and leases are never looked at.
    b.add("index/ff01", false, None);
    b.add("index/ff01", true, None);
    b.add("leases/s1", false, None);
    b.add("leases/s1", false, None);
    b.add("configx", false, locked(7200));
    b.add("configx", true, None);

    // The config's forged version is deleted for good, so it must be
    // asked for (`a_config_put_above_the_locked_one_goes_only_when_asked`).
    let named = |dry_run| UndeleteOptions {
        config_version: Some("v0".into()),
        ..opts(dry_run, &[])
    };
    let dry = undelete(&b, &named(true), &Progress::default())
        .await
        .unwrap();
    assert_eq!(
        b.current("points/vm/p1"),
        None,
        "a dry run changed the store"
    );
    let r = undelete(&b, &named(false), &Progress::default())
        .await
        .unwrap();
    for r in [&dry, &r] {
        assert_eq!((r.keys, r.examined), (11, 10), "{r:?}");
        assert_eq!(
            (r.restored, r.markers_removed, r.versions_removed),
            (4, 3, 2),
            "{r:?}"
        );
        assert_eq!((r.hidden_unlocked, r.older_than_config), (3, 1), "{r:?}");
        assert_eq!(r.hidden_key_slots, [SLOT], "{r:?}");
    }
    for key in ["packs/aa/aa01", "points/vm/p1", "nodes/bb/bb01", "config"] {
        assert_eq!(b.current(key).as_deref(), Some("v0"), "{key}");
        assert!(r.restored_keys.contains(&key.to_string()), "{r:?}");
    }
    assert_eq!(b.current("nodes/cc/cc01").as_deref(), Some("v1"));
    for gone in [
        "nodes/gg/gg01",
        "packs/dd/dd01",
        "packs/so/soon",
        "packs/00/old",
        "index/ff01",
        "configx",
    ] {
        assert_eq!(b.current(gone), None, "{gone}");
    }
    assert_eq!(b.current(&format!("keys/{SLOT}")), None);

    // The slot, when named; then nothing is left to do.
    let slot = undelete(&b, &opts(false, &[SLOT]), &Progress::default())
        .await
        .unwrap();
    assert_eq!((slot.restored, slot.markers_removed), (1, 1), "{slot:?}");
    assert_eq!(slot.restored_key_slots, [SLOT], "{slot:?}");
    assert_eq!(b.current(&format!("keys/{SLOT}")).as_deref(), Some("v0"));
    let again = undelete(&b, &opts(false, &[]), &Progress::default())
        .await
        .unwrap();
    assert_eq!(
        (
            again.restored,
            again.markers_removed,
            again.versions_removed
        ),
        (0, 0, 0),
        "{again:?}"
    );
}

/// A heap of delete markers on one key does not stop the rest, nor fill
/// memory: the key is named and left alone.
#[tokio::test]
async fn a_key_with_too_many_versions_is_skipped_not_fatal() {
    let b = Versioned::default();
    b.add("config", false, locked(7200));
    b.add("packs/aa/aa01", false, locked(7200));
    for _ in 0..MAX_VERSIONS + 5 {
        b.add("packs/aa/aa01", true, None);
    }
    b.add("packs/bb/bb01", false, locked(7200));
    b.add("packs/bb/bb01", true, None);
    let r = undelete(&b, &opts(false, &[]), &Progress::default())
        .await
        .unwrap();
    assert_eq!(r.skipped, ["packs/aa/aa01"], "{r:?}");
    assert_eq!(r.restored, 1, "{r:?}");
    assert_eq!(b.current("packs/bb/bb01").as_deref(), Some("v0"));
}

/// Without a locked config nothing dates the repository, and credentials
/// without s3:GetObjectRetention see no retention at all: refused, not
/// "nothing locked".
#[tokio::test]
async fn no_locked_config_is_refused() {
    let b = Versioned::default();
    b.add("config", false, None);
    b.add("packs/aa/aa01", false, None);
    b.add("packs/aa/aa01", true, None);
    let e = undelete(&b, &opts(false, &[]), &Progress::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Backend(BackendError::PermissionDenied {
                operation: Operation::ReadLock,
                ..
            })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("s3:GetObjectRetention"), "{e}");
    assert_eq!(b.current("packs/aa/aa01"), None);
}

#[tokio::test]
async fn a_store_without_versions_is_an_error_not_an_empty_report() {
    let mem = crate::testing::MemBackend::default();
    let e = undelete(&mem, &opts(true, &[]), &Progress::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("keeps no versions"), "{e}");
}

/// Two config versions still locked (an earlier repository at this
/// place, or a forged one put with a retention): refused, naming both,
/// until one is named; the one named dates the repository, and a locked
/// one above it stays (it cannot be removed).
#[tokio::test]
async fn two_locked_configs_need_one_named() {
    let b = Versioned::default();
    b.add("packs/00/old", false, locked(7200));
    b.add("packs/00/old", true, None);
    b.add("config", false, locked(7200));
    b.add("config", true, None);
    b.add("config", false, locked(7200));
    b.add("packs/aa/new", false, locked(7200));
    b.add("packs/aa/new", true, None);
    let e = undelete(&b, &opts(false, &[]), &Progress::default())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        e.is_usage() && msg.contains("v0") && msg.contains("v2"),
        "{msg}"
    );
    assert_eq!(
        b.current("packs/aa/new"),
        None,
        "nothing done before the refusal"
    );
    let mut named = opts(false, &[]);
    named.config_version = Some("v2".into());
    let r = undelete(&b, &named, &Progress::default()).await.unwrap();
    assert_eq!((r.restored, r.older_than_config), (1, 1), "{r:?}");
    assert_eq!(b.current("packs/aa/new").as_deref(), Some("v0"));
    assert_eq!(b.current("packs/00/old"), None);
    // The older one named: the newer, locked, stays current; nothing of
    // the config is removed (that would only uncover the newer one).
    named.config_version = Some("v0".into());
    let r = undelete(&b, &named, &Progress::default()).await.unwrap();
    assert_eq!(r.config_locked_above, 1, "{r:?}");
    assert!(!r.restored_keys.contains(&"config".to_string()), "{r:?}");
    assert_eq!(b.current("config").as_deref(), Some("v2"));
    assert_eq!(
        b.keys.lock().unwrap()["config"].len(),
        3,
        "the marker stays"
    );
    named.config_version = Some("nope".into());
    let e = undelete(&b, &named, &Progress::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--config-version nope"), "{e}");
}

/// A later repository made at this place without a lock (its config a
/// version without retention above the earlier one's, still locked; the
/// earlier one hidden first) looks like a forged config. Deleted by
/// version id it would be gone for good, and the earlier repository back
/// in its place: refused, naming both, until `--config-version` says
/// which is the repository's (review).
#[tokio::test]
async fn a_config_put_above_the_locked_one_goes_only_when_asked() {
    let b = Versioned::default();
    b.add("config", false, locked(7200));
    b.add("packs/aa/old", false, locked(7200));
    b.add("packs/aa/old", true, None);
    b.add("config", true, None);
    b.add("config", false, None);
    for dry_run in [true, false] {
        let e = undelete(&b, &opts(dry_run, &[]), &Progress::default())
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            e.is_usage() && msg.contains("v2") && msg.contains("--config-version v0"),
            "{msg}"
        );
        assert_eq!(b.current("config").as_deref(), Some("v2"));
        assert_eq!(b.current("packs/aa/old"), None);
    }
    // Markers alone above it are no one's data: they go unasked.
    let m = Versioned::default();
    m.add("config", false, locked(7200));
    m.add("config", true, None);
    let r = undelete(&m, &opts(false, &[]), &Progress::default())
        .await
        .unwrap();
    assert_eq!((r.markers_removed, r.versions_removed), (1, 0), "{r:?}");
    assert_eq!(m.current("config").as_deref(), Some("v0"));
    // Asked: the version put above goes.
    let named = UndeleteOptions {
        config_version: Some("v0".into()),
        ..opts(false, &[])
    };
    let r = undelete(&b, &named, &Progress::default()).await.unwrap();
    assert_eq!((r.markers_removed, r.versions_removed), (2, 1), "{r:?}");
    assert_eq!(b.current("config").as_deref(), Some("v0"));
    assert_eq!(b.current("packs/aa/old").as_deref(), Some("v0"));
}

/// A version listed and gone before its retention is read (a lifecycle
/// rule expiring noncurrent versions, another undelete) hides nothing:
/// it is passed over, not the end of the run (review).
#[tokio::test]
async fn a_version_gone_after_the_listing_is_passed_over() {
    let b = Versioned::default();
    b.add("config", false, locked(7200));
    b.add("config", false, None);
    b.add("config", true, None);
    b.add("packs/aa/aa01", false, locked(7200));
    b.add("packs/aa/aa01", false, None);
    b.add("packs/aa/aa01", true, None);
    b.vanish("config", "v1");
    b.vanish("packs/aa/aa01", "v1");
    let r = undelete(&b, &opts(false, &[]), &Progress::default())
        .await
        .unwrap();
    assert_eq!((r.restored, r.versions_removed), (2, 0), "{r:?}");
    assert_eq!(b.current("config").as_deref(), Some("v0"));
    assert_eq!(b.current("packs/aa/aa01").as_deref(), Some("v0"));
}
