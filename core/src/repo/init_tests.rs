//! `init` against stores that fail in the ways that leave it unsure what
//! it wrote (in-memory backend, `testing::FaultyBackend`).

use std::sync::Arc;

use crate::crypto::{Argon2Params, keyfile};
use crate::error::Error;
use crate::keys;
use crate::repo::Repository;
use crate::testing::{FaultPlan, FaultyBackend, MemBackend};

const FAST: Argon2Params = Argon2Params {
    m_kib: 64,
    t: 1,
    p: 1,
};

fn cfg() -> crate::config::RepoConfig {
    crate::config::RepoConfig::new(1 << 20, crate::chunker::ChunkParams::from_avg(64 << 10), 3)
        .unwrap()
}

/// The config's put lands but its reply is lost, and the read that
/// would tell whether it landed fails too. The slot stays (the config
/// may be there and need it), and the error said only the put's
/// failure: the CLI then deleted the key file it made, the one secret
/// that opens that slot (review, 2026-12-07). Now the error says the
/// outcome is unknown, and the key file still opens the repository.
#[tokio::test]
async fn an_init_that_cannot_tell_whether_its_config_landed_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let key = keyfile::generate(&path).unwrap();
    let mem = Arc::new(MemBackend::default());
    let faulty = FaultyBackend::new(
        mem.clone(),
        FaultPlan {
            only_prefix: Some(keys::CONFIG.into()),
            lost_reply_rate: 1.0,
            get_error_rate: 1.0,
            ..FaultPlan::default()
        },
    );
    let e = Repository::init_encrypted(Arc::new(faulty), cfg(), &key, FAST)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InitOutcomeUnknown { .. }), "{e}");
    assert!(e.to_string().contains("may have been created"), "{e}");
    assert!(!e.is_usage() && !e.is_damage(), "{e}");
    let again = keyfile::read(&path).unwrap();
    Repository::open_with(mem, || Ok(again)).await.unwrap();
}

fn pw(s: &str) -> crate::crypto::Secret {
    crate::crypto::Secret::password(s.as_bytes().to_vec(), format!("password {s:?}"))
}

async fn stored_keys(mem: &MemBackend) -> Vec<String> {
    use futures::TryStreamExt;
    let listed: Vec<_> = crate::backend::Backend::list(mem, "")
        .try_collect()
        .await
        .unwrap();
    listed.into_iter().map(|m| m.key).collect()
}

/// A failed encrypted init (or one still running) leaves a slot and no
/// config. A plain `init --encryption none` never looked at `keys/` and
/// made its config beside the slot: every later command then reported
/// the config as tampered with (damage, exit 3). It is refused, naming
/// `keys/`; so is an encrypted init there, which said "a repository
/// already exists" where none does.
#[tokio::test]
async fn init_over_key_slots_without_a_config_is_refused_naming_keys() {
    let mem = Arc::new(MemBackend::default());
    crate::crypto::create_keys(mem.as_ref(), &pw("a"), FAST)
        .await
        .unwrap();
    let before = stored_keys(&mem).await;
    let e = Repository::init(mem.clone(), cfg()).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("keys/ holds key slots but there is no config"),
        "{e}"
    );
    assert!(!e.is_damage(), "{e}");
    let e = Repository::init_encrypted(mem.clone(), cfg(), &pw("b"), FAST)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("keys/ holds key slots but there is no config"),
        "{e}"
    );
    assert_eq!(stored_keys(&mem).await, before, "nothing written");
}

/// `init` looked for a config with a HEAD and took any failure (a
/// timeout, a denied request) for "no config": it went on and wrote a
/// key slot into what may be a repository. Only "not found" means none.
#[tokio::test]
async fn a_failed_look_for_the_config_stops_init() {
    let mem = Arc::new(MemBackend::default());
    // Every request for the config fails, the HEAD that looks for it
    // first.
    let faulty = FaultyBackend::new(
        mem.clone(),
        FaultPlan {
            only_prefix: Some(keys::CONFIG.into()),
            error_rate: 1.0,
            ..FaultPlan::default()
        },
    );
    let e = Repository::init_encrypted(Arc::new(faulty), cfg(), &pw("a"), FAST)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("injected fault: head"), "{e}");
    assert!(stored_keys(&mem).await.is_empty(), "nothing written");
}
