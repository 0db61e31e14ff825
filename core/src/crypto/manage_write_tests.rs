//! Key management: what writing a slot accepts and refuses, and the
//! order slots are tried in (in-memory backend; review, 2026-12-07).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;

use crate::backend::{Backend, PutMode};
use crate::crypto::manage::*;
use crate::crypto::master::Access;
use crate::crypto::secret::Secret;
use crate::crypto::slot::{self, Argon2Params, Kdf, KeySlot, SlotHeader};
use crate::testing::{MemBackend, PutThen, Scripted};

const FAST: Argon2Params = Argon2Params {
    m_kib: 64,
    t: 1,
    p: 1,
};

fn pw(s: &str) -> Secret {
    Secret::password(s.as_bytes().to_vec(), format!("password {s:?}"))
}

async fn snapshot(b: &MemBackend) -> BTreeMap<String, Bytes> {
    let mut out = BTreeMap::new();
    for m in b.list("").try_collect::<Vec<_>>().await.unwrap() {
        out.insert(m.key.clone(), b.get(&m.key).await.unwrap());
    }
    out
}

/// An S3 SDK retries a create-only put whose first attempt landed but
/// whose reply was lost; the store refuses the retry (412), and the
/// slot write failed although the slot stored is exactly ours: `init`
/// then left a slot and no config. "Already exists" with our bytes
/// stored is success.
#[tokio::test]
async fn a_slot_put_refused_on_retry_after_it_landed_is_written() {
    let mem = Arc::new(MemBackend::default());
    let mut scripted = Scripted::new(mem.clone());
    scripted.puts = Some((slot::SLOTS, PutThen::Exists));
    let keys = create_keys(&scripted, &pw("a"), FAST).await.unwrap();
    let k = unlock(mem.as_ref(), &pw("a")).await.unwrap();
    assert_eq!(k.slot(), keys.slot());
}
