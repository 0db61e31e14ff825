//! Key management: what writing a slot accepts and refuses, and the
//! order slots are tried in (in-memory backend; review, 2026-12-07).

use std::sync::Arc;

use crate::backend::{Backend, PutMode};
use crate::crypto::manage::*;
use crate::crypto::master::Access;
use crate::crypto::slot::{self, Argon2Params, Kdf, KeySlot, SlotHeader};
use crate::testing::{FaultPlan, FaultyBackend, MemBackend};

use super::manage_tests::{FAST, pw, snapshot};

/// An S3 SDK retries a create-only put whose first attempt landed but
/// whose reply was lost; the store refuses the retry (412), and the
/// slot write failed although the slot stored is exactly ours: `init`
/// then left a slot and no config. "Already exists" with our bytes
/// stored is success.
#[tokio::test]
async fn a_slot_put_refused_on_retry_after_it_landed_is_written() {
    let mem = Arc::new(MemBackend::default());
    let retried = FaultyBackend::new(
        mem.clone(),
        FaultPlan {
            only_prefix: Some(slot::SLOTS.into()),
            lost_reply_rate: 1.0,
            lost_reply_exists: true,
            ..FaultPlan::default()
        },
    );
    let keys = create_keys(&retried, &pw("a"), FAST).await.unwrap();
    let k = unlock(mem.as_ref(), &pw("a")).await.unwrap();
    assert_eq!(k.slot(), keys.slot());
}

/// A slot with the given argon2 costs, as a planted one would be: its
/// header only matters for the order (never opened here).
fn with_costs(id: &str, params: Argon2Params) -> (String, crate::error::Result<KeySlot>) {
    use ciborium::Value;
    let header = SlotHeader {
        access: Access::Full,
        created: chrono::Utc::now(),
        kdf: Kdf::Argon2id {
            params,
            salt: [0; 16],
        },
    };
    let mut header_bytes = Vec::new();
    ciborium::into_writer(&header, &mut header_bytes).unwrap();
    let stored = Value::Map(vec![
        (Value::from("header"), Value::Bytes(header_bytes)),
        (Value::from("nonce"), Value::Bytes(vec![0; 24])),
        (Value::from("wrapped"), Value::Bytes(vec![0; 80])),
        (Value::from("auth"), Value::Bytes(vec![0; 32])),
    ]);
    let mut bytes = b"XFK1".to_vec();
    ciborium::into_writer(&stored, &mut bytes).unwrap();
    let key = slot::slot_key(id);
    (id.to_string(), KeySlot::decode(&key, &bytes))
}

/// Ordered by memory times passes, a planted slot of one pass and all
/// but 1 KiB of the real slot's product (384 MiB against the default
/// 64 MiB and 6 passes) sorted first and cost six times the default's
/// memory on every unlock. No slot tried before a default-cost one may
/// need more memory than it.
#[test]
fn a_slot_of_one_pass_and_more_memory_is_not_tried_first() {
    let d = Argon2Params::DEFAULT;
    let planted = Argon2Params {
        m_kib: d.m_kib * d.t - 1,
        t: 1,
        p: 1,
    };
    let mut slots = vec![
        with_costs("0000000000000000", planted),
        with_costs("0000000000000001", d),
    ];
    assert!(slots.iter().all(|(_, s)| s.is_ok()));
    in_trial_order(&mut slots);
    assert_eq!(slots[0].0, "0000000000000001");
}

/// A new password that already opens a slot: `key passwd` to the same
/// (leaked) password rotated nothing, and `key add` of a full slot with
/// a backup-only slot's password gave every host that has it full
/// access, silently. Both are refused, and write nothing.
#[tokio::test]
async fn a_new_password_that_opens_a_slot_already_is_refused() {
    let b = MemBackend::default();
    let keys = create_keys(&b, &pw("a"), FAST).await.unwrap();
    let host = add_slot(&b, &keys, &pw("host"), Access::BackupOnly, FAST)
        .await
        .unwrap();
    let before = snapshot(&b).await;
    let e = change_secret(&b, &keys, &pw("a"), FAST).await.unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("already opens key slot {}", keys.slot())),
        "{e}"
    );
    let e = add_slot(&b, &keys, &pw("host"), Access::Full, FAST)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("already opens key slot {host}")),
        "{e}"
    );
    assert_eq!(snapshot(&b).await, before, "nothing written");
}

/// `key passwd` took the new slot's access from the stored slot's
/// header, read again after the unlock and not authenticated then: a
/// header rewritten to "backup-only" made the new slot backup-only, and
/// the old full one was deleted. The access is the unlocked keys'.
#[tokio::test]
async fn passwd_keeps_the_access_of_the_keys_not_of_the_stored_header() {
    let b = MemBackend::default();
    let keys = create_keys(&b, &pw("old"), FAST).await.unwrap();
    let swapped = KeySlot::create(
        keys.slot(),
        &keys.backup_only(),
        &keys,
        &pw("x"),
        FAST,
        chrono::Utc::now(),
    )
    .unwrap();
    b.put(&swapped.key(), swapped.encode().into(), PutMode::Overwrite)
        .await
        .unwrap();
    change_secret(&b, &keys, &pw("new"), FAST).await.unwrap();
    let k = unlock(&b, &pw("new")).await.unwrap();
    assert_eq!(k.access(), Access::Full);
}
