//! `init` against stores that fail in the ways that leave it unsure what
//! it wrote (in-memory backend, `testing::Scripted`).

use std::sync::Arc;

use crate::crypto::{Argon2Params, keyfile};
use crate::error::Error;
use crate::keys;
use crate::repo::Repository;
use crate::testing::{MemBackend, PutThen, Scripted};

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
    let mut scripted = Scripted::new(mem.clone());
    scripted.puts = Some((keys::CONFIG, PutThen::Lost));
    scripted.failing_reads = Some(keys::CONFIG);
    let e = Repository::init_encrypted(Arc::new(scripted), cfg(), &key, FAST)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InitOutcomeUnknown { .. }), "{e}");
    assert!(e.to_string().contains("may have been created"), "{e}");
    assert!(!e.is_usage() && !e.is_damage(), "{e}");
    let again = keyfile::read(&path).unwrap();
    Repository::open_with(mem, || Ok(again)).await.unwrap();
}
