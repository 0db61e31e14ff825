//! The backend conformance suite: every backend's own tests call
//! [`run_all`] on a fresh, empty store. Each check names the contract
//! clause of [`crate::backend`] it tests.

use bytes::Bytes;
use futures::TryStreamExt;

use crate::backend::{Backend, BackendError, PutMode};

/// Runs every check; panics with the clause that failed.
pub async fn run_all(b: &dyn Backend) {
    put_get_round_trip(b).await;
    create_never_overwrites(b).await;
    overwrite_replaces(b).await;
    missing_keys_are_not_found(b).await;
    ranges(b).await;
    listing(b).await;
    delete_many_is_idempotent(b).await;
    large_object(b).await;
    concurrent_creates_have_one_winner(b).await;
}

pub async fn put_get_round_trip(b: &dyn Backend) {
    let data = Bytes::from_static(b"hello xfull");
    b.put("rt/a", data.clone(), PutMode::Create).await.unwrap();
    assert_eq!(b.get("rt/a").await.unwrap(), data);
    let meta = b.head("rt/a").await.unwrap();
    assert_eq!(meta.key, "rt/a");
    assert_eq!(meta.size, data.len() as u64);
    b.put("rt/empty", Bytes::new(), PutMode::Create)
        .await
        .unwrap();
    assert!(b.get("rt/empty").await.unwrap().is_empty());
}

pub async fn create_never_overwrites(b: &dyn Backend) {
    b.put("cr/x", Bytes::from_static(b"first"), PutMode::Create)
        .await
        .unwrap();
    let err = b
        .put("cr/x", Bytes::from_static(b"second"), PutMode::Create)
        .await
        .unwrap_err();
    assert!(err.is_already_exists(), "create on existing key: {err}");
    assert_eq!(b.get("cr/x").await.unwrap(), Bytes::from_static(b"first"));
}

pub async fn overwrite_replaces(b: &dyn Backend) {
    b.put("ow/x", Bytes::from_static(b"one"), PutMode::Overwrite)
        .await
        .unwrap();
    b.put("ow/x", Bytes::from_static(b"two"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(b.get("ow/x").await.unwrap(), Bytes::from_static(b"two"));
}

pub async fn missing_keys_are_not_found(b: &dyn Backend) {
    for r in [
        b.get("missing/x").await.map(|_| ()),
        b.head("missing/x").await.map(|_| ()),
        b.get_range("missing/x", 0..1).await.map(|_| ()),
    ] {
        match r {
            Err(BackendError::NotFound { .. }) => {}
            other => panic!("missing key must be NotFound, got {other:?}"),
        }
    }
}

pub async fn ranges(b: &dyn Backend) {
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    b.put("rg/x", data.clone().into(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(b.get_range("rg/x", 10..20).await.unwrap(), data[10..20]);
    assert_eq!(
        b.get_range("rg/x", 9_990..10_000).await.unwrap(),
        data[9_990..]
    );
}

pub async fn listing(b: &dyn Backend) {
    let keys = ["ls/a/1", "ls/a/2", "ls/b/3", "lsx/4"];
    for k in keys {
        b.put(k, Bytes::from(k.as_bytes().to_vec()), PutMode::Create)
            .await
            .unwrap();
    }
    let mut got: Vec<_> = b.list("ls/").try_collect().await.unwrap();
    got.sort_by(|x, y| x.key.cmp(&y.key));
    let names: Vec<_> = got.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(names, ["ls/a/1", "ls/a/2", "ls/b/3"]);
    assert!(got.iter().all(|m| m.size == 6));
    let none: Vec<_> = b.list("nothing-here/").try_collect().await.unwrap();
    assert!(none.is_empty());
}

pub async fn delete_many_is_idempotent(b: &dyn Backend) {
    b.put("dl/a", Bytes::from_static(b"a"), PutMode::Create)
        .await
        .unwrap();
    b.put("dl/b", Bytes::from_static(b"b"), PutMode::Create)
        .await
        .unwrap();
    let keys = vec!["dl/a".to_string(), "dl/b".into(), "dl/never".into()];
    b.delete_many(&keys).await.unwrap();
    b.delete_many(&keys).await.unwrap();
    assert!(b.get("dl/a").await.unwrap_err().is_not_found());
    let left: Vec<_> = b.list("dl/").try_collect().await.unwrap();
    assert!(left.is_empty());
    // A deleted key can be created again.
    b.put("dl/a", Bytes::from_static(b"again"), PutMode::Create)
        .await
        .unwrap();
}

pub async fn large_object(b: &dyn Backend) {
    let data: Vec<u8> = (0..(9 << 20)).map(|i: u32| (i % 251) as u8).collect();
    b.put("big/x", data.clone().into(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(b.get("big/x").await.unwrap(), data);
}

pub async fn concurrent_creates_have_one_winner(b: &dyn Backend) {
    let puts = (0..8u8).map(|i| b.put("race/x", Bytes::from(vec![i; 1000]), PutMode::Create));
    let results = futures::future::join_all(puts).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "exactly one create wins: {results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(BackendError::is_already_exists)
    );
    let data = b.get("race/x").await.unwrap();
    assert_eq!(data.len(), 1000);
    assert!(data.iter().all(|&x| x == data[0]), "no torn object");
}
