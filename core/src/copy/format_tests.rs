//! Copies between repositories of different formats: stored bytes move
//! verbatim, so chunk data sealed for format 4 (AES-256-GCM) must not
//! reach a format 2 target, whose builds could not read it; the other way
//! is read by this build.

use std::sync::Arc;

use super::tests::{FAST, back_up, data, every_point, pw, restored, run};
use crate::config::RepoConfig;
use crate::crypto::DataCipher;
use crate::error::Error;
use crate::repo::Repository;
use crate::testing::MemBackend;

fn config(format: u32) -> RepoConfig {
    let cfg = RepoConfig::new(1 << 20, crate::chunker::ChunkParams::from_avg(16 << 10), 3);
    RepoConfig {
        format,
        ..cfg.unwrap()
    }
}

async fn encrypted(format: u32) -> Repository {
    let backend = Arc::new(MemBackend::default());
    Repository::init_encrypted(backend, config(format), &pw("source"), FAST)
        .await
        .unwrap()
}

/// A repository with `source`'s keys and constants, of `format`: what
/// `init --like` makes (of the source's format), or for `format` other
/// than the source's, what no command makes today.
async fn like(source: &Repository, format: u32) -> Repository {
    let backend = Arc::new(MemBackend::default());
    let keys = source.codec().master_keys();
    Repository::init_encrypted_with(backend, config(format), &pw("t"), FAST, keys)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_format_2_repository_stays_xchacha_and_init_like_keeps_its_format() {
    let dir = tempfile::tempdir().unwrap();
    let old = encrypted(2).await;
    assert_eq!(old.config().data_cipher(), DataCipher::XChaCha20Poly1305);
    let bytes = data(1 << 20, 3);
    let m = back_up(&old, &dir, "a", &bytes).await;
    // Reopened, it is still format 2 and still seals with mode 2.
    let reopened = Repository::open_with(old.backend().clone(), || Ok(pw("source")))
        .await
        .unwrap();
    assert_eq!(reopened.config().stored_format(), 2);
    let id = reopened.codec().chunk_id(b"x");
    assert_eq!(reopened.codec().encode_chunk(&id, b"x", 3).unwrap()[5], 2);
    // `init --like` asks for format 4 and gets the source's: the copy
    // stays readable by the builds that read the source.
    let backend = Arc::new(MemBackend::default());
    let copy = Repository::init_like(backend, config(4), &old, Some(&pw("t")), FAST)
        .await
        .unwrap();
    assert_eq!(copy.config().stored_format(), 2);
    run(&old, &copy, every_point(&[&m])).await.unwrap();
    assert_eq!(restored(&copy, &dir, &m).await, bytes);
}

#[tokio::test]
async fn format_2_chunk_data_reads_in_a_format_4_repository() {
    let dir = tempfile::tempdir().unwrap();
    let old = encrypted(2).await;
    let bytes = data(1 << 20, 5);
    let m = back_up(&old, &dir, "a", &bytes).await;
    let new = like(&old, 4).await;
    let id = new.codec().chunk_id(b"x");
    assert_eq!(new.codec().encode_chunk(&id, b"x", 3).unwrap()[5], 3);
    // Mode 2 chunks copied verbatim read there, bit-exact.
    run(&old, &new, every_point(&[&m])).await.unwrap();
    assert_eq!(restored(&new, &dir, &m).await, bytes);
}

#[tokio::test]
async fn an_unencrypted_repository_is_format_2() {
    let backend = Arc::new(MemBackend::default());
    let repo = Repository::init(backend, config(4)).await.unwrap();
    assert_eq!(repo.config().stored_format(), 2);
}

#[tokio::test]
async fn format_4_chunk_data_is_not_copied_into_a_format_2_repository() {
    let dir = tempfile::tempdir().unwrap();
    let source = encrypted(4).await;
    let m = back_up(&source, &dir, "a", &data(1 << 20, 4)).await;
    let target = like(&source, 2).await;
    let e = run(&source, &target, every_point(&[&m])).await.unwrap_err();
    assert!(matches!(e, Error::NotLike { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("format 2") && msg.contains("AES-256-GCM"),
        "{msg}"
    );
}
