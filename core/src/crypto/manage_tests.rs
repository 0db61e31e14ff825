//! Key management against the in-memory backend.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::TryStreamExt;

use crate::backend::{Backend, PutMode};
use crate::crypto::keyfile;
use crate::crypto::manage::*;
use crate::crypto::master::{Access, MasterKeys};
use crate::crypto::seal::SealKind;
use crate::crypto::secret::Secret;
use crate::crypto::slot::{self, Argon2Params, KeySlot};
use crate::error::Error;
use crate::testing::MemBackend;

pub(super) const FAST: Argon2Params = Argon2Params {
    m_kib: 64,
    t: 1,
    p: 1,
};

pub(super) fn pw(s: &str) -> Secret {
    Secret::password(s.as_bytes().to_vec(), format!("password {s:?}"))
}

pub(super) async fn snapshot(b: &MemBackend) -> BTreeMap<String, Bytes> {
    let mut out = BTreeMap::new();
    for m in b.list("").try_collect::<Vec<_>>().await.unwrap() {
        out.insert(m.key.clone(), b.get(&m.key).await.unwrap());
    }
    out
}

#[tokio::test]
async fn create_then_unlock_and_a_wrong_password_writes_nothing() {
    let b = MemBackend::default();
    let keys = create_keys(&b, &pw("right"), FAST).await.unwrap();
    assert_eq!(keys.access(), Access::Full);
    let unlocked = unlock(&b, &pw("right")).await.unwrap();
    assert!(unlocked.same_repository(&keys));
    assert_eq!(unlocked.slot(), keys.slot());

    let before = snapshot(&b).await;
    let e = unlock(&b, &pw("wrong")).await.unwrap_err();
    assert!(
        matches!(&e, Error::WrongSecret { secret, .. } if secret == "password \"wrong\""),
        "{e}"
    );
    assert!(!e.is_damage() && !e.is_usage());
    assert_eq!(snapshot(&b).await, before, "nothing written");

    let e = create_keys(&b, &pw("again"), FAST).await.unwrap_err();
    assert!(matches!(e, Error::KeysExist { .. }), "{e}");
    assert_eq!(snapshot(&b).await, before, "nothing written");
}

#[tokio::test]
async fn passwd_then_the_old_password_fails_and_the_new_works() {
    let b = MemBackend::default();
    let keys = create_keys(&b, &pw("old"), FAST).await.unwrap();
    let id = change_secret(&b, &keys, &pw("new"), FAST).await.unwrap();
    assert_ne!(id, keys.slot());
    assert!(matches!(
        unlock(&b, &pw("old")).await.unwrap_err(),
        Error::WrongSecret { .. }
    ));
    let k = unlock(&b, &pw("new")).await.unwrap();
    assert!(k.same_repository(&keys));
    assert_eq!(k.slot(), id);
    assert_eq!(list_slots(&b, &k).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_backup_only_key_backs_up_but_cannot_read_data_or_manage_keys() {
    let b = MemBackend::default();
    let full = create_keys(&b, &pw("admin"), FAST).await.unwrap();
    add_slot(&b, &full, &pw("host"), Access::BackupOnly, FAST)
        .await
        .unwrap();
    let host = unlock(&b, &pw("host")).await.unwrap();
    assert_eq!(host.access(), Access::BackupOnly);
    // Dedup and incremental backups: same ids, parents' metadata readable.
    assert_eq!(host.id_hasher().id(b"c"), full.id_hasher().id(b"c"));
    let node = full.seal_meta(SealKind::Node, "nodes/aa/aa", b"parent node");
    assert_eq!(
        host.open_meta(SealKind::Node, "nodes/aa/aa", &node)
            .unwrap(),
        b"parent node"
    );
    // Writes data only the full key reads.
    let chunk = host.data_sealer(crate::crypto::DataCipher::Aes256Gcm).seal(
        SealKind::Chunk,
        "c",
        b"disk data",
    );
    let e = host.data_opener("restore").unwrap_err();
    assert!(matches!(e, Error::MissingCapability { .. }), "{e}");
    let opened = full.data_opener("restore").unwrap();
    assert_eq!(
        opened.open(SealKind::Chunk, "c", &chunk).unwrap(),
        b"disk data"
    );
    // Key management needs the full key, and the host's attempts write nothing.
    let before = snapshot(&b).await;
    for e in [
        add_slot(&b, &host, &pw("x"), Access::Full, FAST)
            .await
            .unwrap_err(),
        add_slot(&b, &host, &pw("x"), Access::BackupOnly, FAST)
            .await
            .unwrap_err(),
        remove_slot(&b, &host, full.slot()).await.unwrap_err(),
        change_secret(&b, &host, &pw("x"), FAST).await.unwrap_err(),
    ] {
        assert!(matches!(e, Error::MissingCapability { .. }), "{e}");
    }
    assert_eq!(snapshot(&b).await, before);
    let listed = list_slots(&b, &host).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|s| s.authentic.is_none()));
}

#[tokio::test]
async fn the_last_full_access_slot_is_never_removed() {
    let b = MemBackend::default();
    let full = create_keys(&b, &pw("a"), FAST).await.unwrap();
    let backup = add_slot(&b, &full, &pw("b"), Access::BackupOnly, FAST)
        .await
        .unwrap();
    let e = remove_slot(&b, &full, full.slot()).await.unwrap_err();
    assert!(matches!(e, Error::LastFullKeySlot { .. }), "{e}");
    let e = remove_slot(&b, &full, "0000000000000000")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::KeySlotNotFound { .. }), "{e}");
    // A backup-only slot goes; then, with a second full slot, the first.
    remove_slot(&b, &full, &backup).await.unwrap();
    assert!(unlock(&b, &pw("b")).await.is_err());
    let second = add_slot(&b, &full, &pw("c"), Access::Full, FAST)
        .await
        .unwrap();
    remove_slot(&b, &full, full.slot()).await.unwrap();
    assert!(unlock(&b, &pw("a")).await.is_err());
    let c = unlock(&b, &pw("c")).await.unwrap();
    assert_eq!(c.slot(), second);
    let e = remove_slot(&b, &c, &second).await.unwrap_err();
    assert!(matches!(e, Error::LastFullKeySlot { .. }), "{e}");
}

#[tokio::test]
async fn a_forged_full_slot_does_not_count_as_one() {
    // An attacker with write access copies a full slot of another
    // repository in: it looks like a second full slot, but is not this
    // repository's, so the real last one must still be kept.
    let b = MemBackend::default();
    let full = create_keys(&b, &pw("a"), FAST).await.unwrap();
    let other = MemBackend::default();
    let theirs = create_keys(&other, &pw("evil"), FAST).await.unwrap();
    let bytes = other.get(&slot::slot_key(theirs.slot())).await.unwrap();
    let forged = slot::slot_key("ffffffffffffffff");
    b.put(&forged, bytes, PutMode::Create).await.unwrap();
    let e = remove_slot(&b, &full, full.slot()).await.unwrap_err();
    assert!(matches!(e, Error::LastFullKeySlot { .. }), "{e}");
    let listed = list_slots(&b, &full).await.unwrap();
    let forged_info = listed.iter().find(|s| s.id == "ffffffffffffffff").unwrap();
    assert_eq!(forged_info.authentic, Some(false));
    assert!(
        listed
            .iter()
            .any(|s| s.current && s.authentic == Some(true))
    );
}

#[tokio::test]
async fn key_file_slots_unlock_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = MemBackend::default();
    let full = create_keys(&b, &pw("a"), FAST).await.unwrap();
    let file = keyfile::generate(&dir.path().join("k")).unwrap();
    add_slot(&b, &full, &file, Access::Full, FAST)
        .await
        .unwrap();
    let k = unlock(&b, &keyfile::read(&dir.path().join("k")).unwrap())
        .await
        .unwrap();
    assert!(k.same_repository(&full));
    // Another key file is a wrong secret naming the file.
    let wrong = keyfile::generate(&dir.path().join("other")).unwrap();
    let e = unlock(&b, &wrong).await.unwrap_err();
    assert!(e.to_string().contains("key file"), "{e}");
    assert!(e.to_string().contains("other"), "{e}");
}

#[tokio::test]
async fn damaged_slots_are_damage_when_nothing_else_opens() {
    let b = MemBackend::default();
    let full = create_keys(&b, &pw("a"), FAST).await.unwrap();
    let key = slot::slot_key(full.slot());
    let mut bytes = b.get(&key).await.unwrap().to_vec();
    let n = bytes.len();
    bytes[n - 40] ^= 1; // inside the wrapped keys
    b.put(&key, bytes.into(), PutMode::Overwrite).await.unwrap();
    let e = unlock(&b, &pw("a")).await.unwrap_err();
    assert!(matches!(e, Error::WrongSecret { .. }), "{e}");
    // A slot that does not decode is damage naming it.
    b.put(&key, Bytes::from_static(b"XFK1junk"), PutMode::Overwrite)
        .await
        .unwrap();
    let e = unlock(&b, &pw("a")).await.unwrap_err();
    assert!(e.is_damage(), "{e}");
    assert!(e.to_string().contains(&key), "{e}");
    // No slots at all.
    b.delete_many(&[key]).await.unwrap();
    assert!(unlock(&b, &pw("a")).await.unwrap_err().is_damage());
    // Stray names under keys/ are not slots.
    b.put("keys/README", Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    assert!(unlock(&b, &pw("a")).await.unwrap_err().is_damage());
    let _ = KeySlot::decode; // the decoder is fuzzed separately
    let _ = MasterKeys::generate;
}

/// A command reads the key slots together (a password's, a key file's, a
/// backup-only key's...): each is a round trip it waits for.
#[tokio::test]
async fn the_slots_are_read_together() {
    let dir = tempfile::tempdir().unwrap();
    let b = crate::testing::InFlight::default();
    let full = create_keys(&b, &pw("a"), FAST).await.unwrap();
    for k in ["k1", "k2"] {
        let file = keyfile::generate(&dir.path().join(k)).unwrap();
        add_slot(&b, &full, &file, Access::Full, FAST)
            .await
            .unwrap();
    }
    let k = unlock(&b, &keyfile::read(&dir.path().join("k2")).unwrap())
        .await
        .unwrap();
    assert!(k.same_repository(&full));
    assert!(b.most() > 1, "slot reads in flight at once: {}", b.most());
}

/// A new encrypted repository in memory, its one slot opened by `secret`.
async fn encrypted_repository(secret: &Secret) -> std::sync::Arc<MemBackend> {
    let mem = std::sync::Arc::new(MemBackend::default());
    let cfg =
        crate::config::RepoConfig::new(1 << 20, crate::chunker::ChunkParams::from_avg(64 << 10), 3)
            .unwrap();
    crate::repo::Repository::init_encrypted(mem.clone(), cfg, secret, FAST)
        .await
        .unwrap();
    mem
}

/// Opening reads the config and lists the key slots at once: it needs
/// both whether the repository is encrypted or not.
#[tokio::test]
async fn opening_reads_the_config_and_the_slot_listing_together() {
    use std::sync::Arc;
    let mem = encrypted_repository(&pw("a")).await;
    // One slot: the slots' own reads cannot overlap.
    let b = Arc::new(crate::testing::InFlight::new(mem.fork()));
    crate::repo::Repository::open_with(b.clone(), || Ok(pw("a")))
        .await
        .unwrap();
    assert!(b.most() > 1, "reads in flight at once: {}", b.most());
}

/// Opening lists the key slots with the config, before the secret is
/// asked for (a prompt can wait minutes). A `key passwd` meanwhile
/// replaces the slot listed: the new password still opens, from a fresh
/// listing, rather than failing as "no key slots" damage.
#[tokio::test]
async fn a_slot_replaced_while_the_secret_is_asked_for_is_found_again() {
    let mem = encrypted_repository(&pw("old")).await;
    let stale = crate::repo::Opening::read(mem.as_ref())
        .await
        .unwrap()
        .unwrap();
    let keys = unlock(mem.as_ref(), &pw("old")).await.unwrap();
    change_secret(mem.as_ref(), &keys, &pw("new"), FAST)
        .await
        .unwrap();
    crate::repo::Repository::open_config(mem.clone(), stale, || Ok(pw("new")))
        .await
        .unwrap();
}

/// Two `key remove` at once, of the only two full-access slots: each
/// reads both slots before the other deletes, so each sees another full
/// slot left. Without a look after the delete both would go and nobody
/// could open the repository again. The removal that finds no full slot
/// left after its delete puts its slot back and says so.
#[tokio::test]
async fn two_removals_at_once_leave_a_full_access_slot() {
    use std::sync::Arc;

    use crate::testing::{HookAt, Hooked};
    let mem = Arc::new(MemBackend::default());
    let a = create_keys(mem.as_ref(), &pw("a"), FAST).await.unwrap();
    let b_id = add_slot(mem.as_ref(), &a, &pw("b"), Access::Full, FAST)
        .await
        .unwrap();
    let b = unlock(mem.as_ref(), &pw("b")).await.unwrap();
    // The other removal runs whole just before this one's delete.
    let (inner, other) = (mem.clone(), b_id.clone());
    let hooked = Hooked::new(
        mem.clone(),
        HookAt::Delete("keys/"),
        Box::new(move || {
            let (inner, other, b) = (inner.clone(), other.clone(), b.clone());
            Box::pin(async move {
                remove_slot(inner.as_ref(), &b, &other).await.unwrap();
            })
        }),
    );
    let e = remove_slot(hooked.as_ref(), &a, a.slot())
        .await
        .unwrap_err();
    assert!(hooked.fired());
    assert!(matches!(e, Error::KeyRemovalRaced { .. }), "{e}");
    assert!(e.to_string().contains(a.slot()), "{e}");
    // Slot b went, slot a is back: "a" opens the repository, "b" not.
    let back = unlock(mem.as_ref(), &pw("a")).await.unwrap();
    assert_eq!(back.slot(), a.slot());
    assert!(unlock(mem.as_ref(), &pw("b")).await.is_err());
}

/// `init` writes its slot, then the config (create-only); when the
/// config's put failed it deleted the slot ("useless without this
/// config"). But a put whose reply was lost (a timeout, a dropped
/// connection) did store the config: the repository was left with a
/// config and no slot, opened by nobody, and `init` again said it exists
/// (review, stop 50). Now a failed put is looked at: the config stored is
/// this init's, so the init succeeded.
#[tokio::test]
async fn an_init_whose_config_reply_was_lost_leaves_a_repository_that_opens() {
    use std::sync::Arc;

    use crate::testing::{FaultPlan, FaultyBackend};
    let mem = Arc::new(MemBackend::default());
    let faulty = Arc::new(FaultyBackend::new(
        mem.clone(),
        FaultPlan {
            lost_reply_rate: 1.0,
            only_prefix: Some(crate::keys::CONFIG.into()),
            ..FaultPlan::default()
        },
    ));
    let cfg =
        crate::config::RepoConfig::new(1 << 20, crate::chunker::ChunkParams::from_avg(64 << 10), 3)
            .unwrap();
    crate::repo::Repository::init_encrypted(faulty, cfg, &pw("a"), FAST)
        .await
        .unwrap();
    let left: Vec<String> = snapshot(&mem).await.into_keys().collect();
    if let Err(e) = crate::repo::Repository::open_with(mem.clone(), || Ok(pw("a"))).await {
        panic!("init left {left:?}, which does not open with its password: {e}");
    }
}

/// Slots are tried cheapest derivation first: planted slots (a backup-only
/// host may create objects) whose names sort first at a larger cost each
/// cost every unlock a derivation before the real slot (review, stop 50:
/// 1 GiB and 64 passes are accepted, a minute or more each).
#[tokio::test]
async fn slots_are_tried_cheapest_first() {
    let mem = MemBackend::default();
    let keys = create_keys(&mem, &pw("a"), FAST).await.unwrap();
    let costly = Argon2Params { m_kib: 128, ..FAST };
    let mut slots = Vec::new();
    for id in ["0000000000000000", "0000000000000001"] {
        let planted = KeySlot::create(id, &keys, &keys, &pw("x"), costly, chrono::Utc::now());
        slots.push((id.to_string(), planted));
    }
    let damaged = KeySlot::decode("keys/0000000000000002", b"XFK1junk");
    slots.push(("0000000000000002".to_string(), damaged));
    let real = keys.slot().to_string();
    let stored = mem.get(&slot::slot_key(&real)).await.unwrap();
    let key = slot::slot_key(&real);
    slots.push((real.clone(), KeySlot::decode(&key, &stored)));
    in_trial_order(&mut slots);
    let order: Vec<&str> = slots.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        order,
        [
            &real,
            "0000000000000000",
            "0000000000000001",
            "0000000000000002"
        ]
    );
}

/// A slot copied from another repository whose password is the same
/// opens, to that repository's keys: anyone who may create objects can
/// plant one, and it is tried first when it is cheaper or sorts first.
/// It failed every open ("not this repository's"); now it is passed over
/// and the next slot tried (review, stop 50).
#[tokio::test]
async fn a_slot_of_another_repository_is_passed_over() {
    use std::sync::Arc;

    let cfg = || {
        crate::config::RepoConfig::new(1 << 20, crate::chunker::ChunkParams::from_avg(64 << 10), 3)
            .unwrap()
    };
    let (a, b) = (
        Arc::new(MemBackend::default()),
        Arc::new(MemBackend::default()),
    );
    // This repository's slot costs more: the other's is tried first.
    let costlier = Argon2Params { m_kib: 128, ..FAST };
    crate::repo::Repository::init_encrypted(a.clone(), cfg(), &pw("same"), costlier)
        .await
        .unwrap();
    crate::repo::Repository::init_encrypted(b.clone(), cfg(), &pw("same"), FAST)
        .await
        .unwrap();
    let theirs = snapshot(&b)
        .await
        .into_iter()
        .find(|(k, _)| k.starts_with(slot::SLOTS))
        .unwrap();
    a.put(&theirs.0, theirs.1.clone(), PutMode::Create)
        .await
        .unwrap();
    let mine = crate::repo::Repository::open_with(a.clone(), || Ok(pw("same"))).await;
    assert!(mine.is_ok(), "{:?}", mine.err());
    // Its own slot removed, only the other's opens: damage naming it.
    for k in snapshot(&a).await.into_keys() {
        if k.starts_with(slot::SLOTS) && k != theirs.0 {
            a.delete_many(&[k]).await.unwrap();
        }
    }
    let e = crate::repo::Repository::open_with(a, || Ok(pw("same")))
        .await
        .unwrap_err();
    assert!(e.is_damage() && e.to_string().contains(&theirs.0), "{e}");
}
