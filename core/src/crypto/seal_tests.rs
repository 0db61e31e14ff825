use chacha20poly1305::aead::{Aead, Payload};

use super::*;

fn key(b: u8) -> SecretKey {
    SecretKey::from_bytes([b; 32])
}

#[test]
fn round_trip_and_overhead() {
    for kind in SealKind::ALL {
        let s = seal(kind, &key(1), "nodes/ab/cd", b"hello");
        assert_eq!(s.len(), 5 + META_OVERHEAD);
        assert_eq!(open(kind, &key(1), "nodes/ab/cd", &s).unwrap(), b"hello");
    }
    let empty = seal(SealKind::Lease, &key(1), "leases/x", b"");
    assert_eq!(
        open(SealKind::Lease, &key(1), "leases/x", &empty).unwrap(),
        b""
    );
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// The XChaCha20-Poly1305 test vector of draft-irtf-cfrg-xchacha-03,
/// appendix A.3.1, through the crate as this module calls it (detached
/// tag, in place): the primitive is the published one.
#[test]
fn xchacha20_poly1305_known_answer() {
    let key: [u8; 32] = unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
        .try_into()
        .unwrap();
    let nonce: [u8; 24] = unhex("404142434445464748494a4b4c4d4e4f5051525354555657")
        .try_into()
        .unwrap();
    let aad = unhex("50515253c0c1c2c3c4c5c6c7");
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only \
        one tip for the future, sunscreen would be it.";
    let want = unhex(concat!(
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb",
        "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452",
        "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9",
        "21f9664c97637da9768812f615c68b13b52e",
    ));
    let want_tag = unhex("c0875924c1c7987947deafd8780acf49");
    let cipher = XChaCha20Poly1305::new(&key.into());
    let mut buf = plaintext.to_vec();
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(nonce), &aad, buf.as_mut_slice().into())
        .unwrap();
    assert_eq!(buf, want);
    assert_eq!(tag.as_slice(), want_tag.as_slice());
    let mut sealed = want.clone();
    sealed.extend_from_slice(&want_tag);
    let opened = cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &sealed,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(opened, plaintext);
}

/// The envelope is exactly what the module comment says: header, nonce,
/// then XChaCha20-Poly1305 of the plaintext with the label, header and
/// length-prefixed name as associated data. Worked out here from the
/// layout with the crate's plain API, and pinned as bytes, so that a
/// change to the format cannot pass unnoticed (objects already stored
/// would stop opening).
#[test]
fn the_envelope_known_answer() {
    let key = key(7);
    let (name, plaintext, nonce) = ("nodes/ab/cd", b"xfull", [9u8; NONCE_LEN]);
    let mut header = b"XFS1".to_vec();
    header.extend_from_slice(&[SealKind::Node.letter(), 1]);
    let got = seal_under_nonce(header.clone(), &key, name, plaintext, nonce);

    let mut aad = b"xfull sealed object v1\0".to_vec();
    aad.extend_from_slice(&header);
    aad.extend_from_slice(&(name.len() as u64).to_le_bytes());
    aad.extend_from_slice(name.as_bytes());
    let ct = XChaCha20Poly1305::new(key.as_bytes().into())
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .unwrap();
    let mut want = header;
    want.extend_from_slice(&nonce);
    want.extend_from_slice(&ct);
    assert_eq!(got, want);
    assert_eq!(
        hex::encode(&got),
        "584653314e01090909090909090909090909090909090909090909090909c61497e6104743940f542997970deaa9fca1319665"
    );
    assert_eq!(open(SealKind::Node, &key, name, &got).unwrap(), plaintext);
}

#[test]
fn nonces_are_fresh() {
    let a = seal(SealKind::Node, &key(1), "n", b"same");
    let b = seal(SealKind::Node, &key(1), "n", b"same");
    assert_ne!(a, b);
}

fn is_corrupt_naming(e: Error, name: &str) -> bool {
    matches!(&e, Error::Corrupt { key, .. } if key == name) && e.is_damage()
}

#[test]
fn tampering_is_damage_naming_the_object() {
    let name = "points/vm1/20261125T194155Z-3fa2";
    let s = seal(SealKind::Manifest, &key(1), name, b"the manifest");
    // Every single-byte change, anywhere.
    for i in 0..s.len() {
        let mut t = s.clone();
        t[i] ^= 0x01;
        let e = open(SealKind::Manifest, &key(1), name, &t).unwrap_err();
        if i == 3 {
            // The version digit: another envelope version, refused as
            // such (as frame.rs does).
            assert!(matches!(e, Error::UnsupportedFormat { .. }), "{e}");
            continue;
        }
        assert!(is_corrupt_naming(e, name), "byte {i}");
    }
    // Every truncation.
    for n in 0..s.len() {
        let e = open(SealKind::Manifest, &key(1), name, &s[..n]).unwrap_err();
        assert!(is_corrupt_naming(e, name), "cut at {n}");
    }
    // Moved under another name, read as another kind, other keys.
    let other = "points/vm1/20261125T194155Z-3fa3";
    assert!(is_corrupt_naming(
        open(SealKind::Manifest, &key(1), other, &s).unwrap_err(),
        other
    ));
    assert!(
        open(SealKind::Node, &key(1), name, &s)
            .unwrap_err()
            .is_damage()
    );
    assert!(
        open(SealKind::Manifest, &key(2), name, &s)
            .unwrap_err()
            .is_damage()
    );
    // Appended bytes.
    let mut longer = s.clone();
    longer.push(0);
    assert!(
        open(SealKind::Manifest, &key(1), name, &longer)
            .unwrap_err()
            .is_damage()
    );
}

#[test]
fn names_that_differ_only_in_framing_do_not_collide() {
    // The name is length-prefixed, so no two (header, name) pairs give
    // the same associated data.
    assert_ne!(associated_data(b"ab", "c"), associated_data(b"a", "bc"));
}

#[test]
fn plain_and_future_objects_are_told_apart() {
    let e = open(
        SealKind::Node,
        &key(1),
        "k",
        b"XFN1\x01rest-of-a-plain-node",
    )
    .unwrap_err();
    assert!(e.is_damage());
    let mut future = seal(SealKind::Node, &key(1), "k", b"x");
    future[3] = b'2';
    let e = open(SealKind::Node, &key(1), "k", &future).unwrap_err();
    assert!(matches!(e, Error::UnsupportedFormat { .. }), "{e}");
}
