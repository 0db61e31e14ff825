use proptest::prelude::*;

use super::*;

/// Cheap costs: the tests check the logic, not the stretching.
const FAST: Argon2Params = Argon2Params {
    m_kib: 64,
    t: 1,
    p: 1,
};

fn pw(s: &str) -> Secret {
    Secret::password(s.as_bytes().to_vec(), "test password")
}

fn made(id: &str, keys: &MasterKeys) -> KeySlot {
    KeySlot::create(id, keys, keys, &pw("pw"), FAST, Utc::now()).unwrap()
}

#[test]
fn round_trip_opens_with_its_password_only() {
    let keys = MasterKeys::generate();
    let slot = made("0123456789abcdef", &keys);
    let bytes = slot.encode();
    assert!(bytes.len() < 600, "{}", bytes.len());
    let back = KeySlot::decode("keys/0123456789abcdef", &bytes).unwrap();
    assert_eq!(back.header, slot.header);
    let opened = back.open(&pw("pw")).unwrap().unwrap();
    assert!(opened.same_repository(&keys));
    assert_eq!(opened.slot(), "0123456789abcdef");
    assert!(back.open(&pw("wrong")).unwrap().is_none());
    assert!(back.is_authentic(&keys).unwrap());
    assert!(!back.is_authentic(&MasterKeys::generate()).unwrap());
}

#[test]
fn a_slot_moved_or_edited_does_not_open() {
    let keys = MasterKeys::generate();
    let bytes = made("0123456789abcdef", &keys).encode();
    let moved = KeySlot::decode("keys/fedcba9876543210", &bytes).unwrap();
    assert!(moved.open(&pw("pw")).unwrap().is_none());
    assert!(!moved.is_authentic(&keys).unwrap());
    // A backup-only slot whose header claims full access.
    let b = KeySlot::create(
        "0123456789abcdef",
        &keys.backup_only(),
        &keys,
        &pw("pw"),
        FAST,
        Utc::now(),
    )
    .unwrap();
    let mut forged = b.clone();
    forged.header.access = Access::Full;
    ciborium::into_writer(&forged.header, {
        forged.header_bytes.clear();
        &mut forged.header_bytes
    })
    .unwrap();
    let forged = KeySlot::decode(&forged.key(), &forged.encode()).unwrap();
    assert_eq!(forged.header.access, Access::Full);
    assert!(forged.open(&pw("pw")).unwrap().is_none());
    assert!(!forged.is_authentic(&keys).unwrap());
}

#[test]
fn hostile_costs_are_refused_before_any_is_spent() {
    let keys = MasterKeys::generate();
    for params in [
        Argon2Params {
            m_kib: u32::MAX,
            ..FAST
        },
        Argon2Params {
            m_kib: MAX_M_KIB + 1,
            ..FAST
        },
        Argon2Params { t: 1000, ..FAST },
        Argon2Params { p: 0, ..FAST },
        Argon2Params { p: 64, ..FAST },
        Argon2Params { m_kib: 4, ..FAST },
    ] {
        let mut slot = made("0123456789abcdef", &keys);
        slot.header.kdf = Kdf::Argon2id {
            params,
            salt: [0; 16],
        };
        slot.header_bytes.clear();
        ciborium::into_writer(&slot.header, &mut slot.header_bytes).unwrap();
        let e = KeySlot::decode(&slot.key(), &slot.encode()).unwrap_err();
        assert!(
            e.is_damage() && e.to_string().contains("argon2"),
            "{params:?}: {e}"
        );
    }
    let big = vec![0u8; MAX_SLOT_LEN + 1];
    assert!(
        KeySlot::decode("keys/0123456789abcdef", &big)
            .unwrap_err()
            .is_damage()
    );
    assert!(
        KeySlot::decode("keys/notahexname!!", b"XFK1")
            .unwrap_err()
            .is_damage()
    );
    let e = KeySlot::decode("keys/0123456789abcdef", b"XFK2\xa0").unwrap_err();
    assert!(matches!(e, Error::UnsupportedFormat { .. }), "{e}");
}

#[test]
fn default_costs_are_acceptable_to_the_decoder() {
    Argon2Params::DEFAULT.check().unwrap();
}

proptest! {
    #[test]
    fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = KeySlot::decode("keys/0123456789abcdef", &bytes);
        let mut framed = MAGIC.to_vec();
        framed.extend_from_slice(&bytes);
        let _ = KeySlot::decode("keys/0123456789abcdef", &framed);
    }
}
