//! Encrypted repositories end to end: nothing of the guest's data or its
//! plain hashes in the store, tampering found as damage, wrong secrets
//! refused without a write, keys managed, backup-only keys that back up
//! but cannot read.

use std::path::Path;

use crate::pack_files::packed_chunks;
use xfull_core::backup::segment::chunk_segment;
use xfull_core::chunker::ChunkParams;
use xfull_core::codec::Codec;
use xfull_core::testing::seeded_bytes as random;
use xfull_integration::env::{Env, contents, fails, sha256, stderr};

const KDF: [&str; 4] = ["--kdf-memory-kib", "64", "--kdf-time", "1"];

/// A distinctive 64 KiB pattern (incompressible, so a plain repository
/// stores it as it is) between random data, over two segments.
fn marked_disk(path: &Path) -> Vec<u8> {
    let mut disk = random(3 << 20, 1);
    disk.extend_from_slice(&pattern());
    disk.extend_from_slice(&random(2 << 20, 2));
    std::fs::write(path, &disk).unwrap();
    disk
}

fn pattern() -> Vec<u8> {
    random(64 << 10, 0x00C0_FFEE)
}

fn init_none() -> Env<'static> {
    Env::init_with(&["--encryption", "none"])
}

/// The plain BLAKE3 ids of the disk's chunks, as an unencrypted
/// repository with the test repositories' constants names them.
fn plain_ids(disk: &[u8]) -> Vec<String> {
    let seg = 4 << 20;
    disk.chunks(seg)
        .flat_map(|s| chunk_segment(&ChunkParams::default(), &Codec::plain(), s).entries)
        .filter_map(|e| e.1.map(|id| id.to_hex()))
        .collect()
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn known_plaintext_in(e: &Env) -> (bool, bool) {
    let img = e.path("d.img");
    let disk = marked_disk(&img);
    e.backup("vm", &[("d", &img)]);
    let p = pattern();
    let marker = &p[40_000..40_064];
    let ids = plain_ids(&disk);
    let files = contents(&e.repo);
    let text = files
        .values()
        .any(|b| b.windows(marker.len()).any(|w| w == marker));
    // Chunk ids are in pack tables and index objects (as bytes), or
    // object names.
    let raw: Vec<Vec<u8>> = ids.iter().map(|id| hex_bytes(id)).collect();
    let names = files.iter().any(|(p, b)| {
        let name = p.file_name().unwrap().to_string_lossy();
        ids.iter().any(|id| *id == name) || raw.iter().any(|id| b.windows(32).any(|w| w == id))
    });
    (text, names)
}

#[test]
fn known_plaintext_and_its_plain_hashes_appear_nowhere() {
    // Without encryption both are there: the test can see them.
    assert_eq!(known_plaintext_in(&init_none()), (true, true));
    assert_eq!(known_plaintext_in(&Env::init()), (false, false));
}

#[test]
fn tampered_objects_are_damage() {
    let e = Env::init();
    let img = e.path("d.img");
    marked_disk(&img);
    let one = e.backup("vm", &[("d", &img)]);
    e.backup("other", &[("d", &img)]);
    let nodes = e.files("nodes");
    assert!(nodes.len() >= 2, "{nodes:?}");
    let before = contents(&e.repo);

    // Two node objects swapped.
    let (a, b) = (&nodes[0], &nodes[1]);
    std::fs::write(a, &before[b]).unwrap();
    std::fs::write(b, &before[a]).unwrap();
    let (code, err) = fails(e.x(&["verify"]));
    assert_eq!(code, 3, "{err}");
    std::fs::write(a, &before[a]).unwrap();
    std::fs::write(b, &before[b]).unwrap();
    e.x(&["verify"]).assert().success();

    // A manifest copied under another point's name.
    let points = e.files("points");
    let vm_point = points
        .iter()
        .find(|p| p.starts_with(e.repo.join("points/vm")))
        .unwrap();
    let other = points
        .iter()
        .find(|p| p.starts_with(e.repo.join("points/other")))
        .unwrap();
    std::fs::write(other, &before[vm_point]).unwrap();
    let (code, err) = fails(e.x(&["verify"]));
    assert_eq!(code, 3, "{err}");
    std::fs::write(other, &before[other]).unwrap();

    // A pack truncated in the middle of its first chunk.
    let first = packed_chunks(&e).remove(0);
    let cut = (first.offset + first.len / 2) as usize;
    std::fs::write(&first.file, &before[&first.file][..cut]).unwrap();
    let (code, err) = fails(e.x(&["verify", "--read-data"]));
    assert_eq!(code, 3, "{err}");
    let point = one["point"].as_str().unwrap();
    let to = e.path("r.img").display().to_string();
    let (code, err) = fails(e.x(&["restore", point, "--disk", "d", "--to", &to]));
    assert_eq!(code, 3, "{err}");
}

#[test]
fn a_wrong_password_exits_1_and_writes_nothing() {
    let e = Env::init();
    let img = e.path("d.img");
    marked_disk(&img);
    e.backup("vm", &[("d", &img)]);
    let wrong = e.path("wrong");
    std::fs::write(&wrong, "not the password\n").unwrap();
    let before = contents(&e.repo);
    let disk = format!("d={}", img.display());
    for args in [
        &["backup", "--vm", "vm", "--disk", &disk][..],
        &["points"],
        &["gc"],
        &["prune", "--keep-last", "1"],
        &["key", "list"],
    ] {
        let mut c = e.x(args);
        c.env("XFULL_PASSWORD_FILE", &wrong);
        let (code, err) = fails(c);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(&wrong.display().to_string()),
            "{args:?}: {err}"
        );
    }
    let mut c = e.x(&["points"]);
    c.env_remove("XFULL_PASSWORD_FILE");
    let (code, err) = fails(c);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("XFULL_PASSWORD_FILE"), "{err}");
    assert!(contents(&e.repo) == before, "the repository changed");
}

#[test]
fn points_of_two_vms_deduplicate() {
    let e = Env::init();
    let img = e.path("d.img");
    marked_disk(&img);
    let a = e.backup("a", &[("d", &img)]);
    let b = e.backup("b", &[("d", &img)]);
    assert!(a["stats"]["new_chunks"].as_u64().unwrap() > 0, "{a}");
    assert_eq!(b["stats"]["new_chunks"], 0, "{b}");
}

#[test]
fn a_backup_only_key_backs_up_but_cannot_read() {
    let e = Env::init();
    let img = e.path("d.img");
    marked_disk(&img);
    e.backup("vm", &[("d", &img)]);
    let pw = e.path("backup-pw");
    std::fs::write(&pw, "backup host\n").unwrap();
    let pws = pw.display().to_string();
    let add = [
        &["key", "add", "--backup-only", "--new-password-file", &pws][..],
        &KDF,
    ]
    .concat();
    e.x(&add).assert().success();
    let as_host = |args: &[&str]| {
        let mut c = e.x(args);
        c.env("XFULL_PASSWORD_FILE", &pw);
        c
    };
    let disk = format!("d={}", img.display());
    for _ in 0..2 {
        let out = as_host(&["backup", "--vm", "vm", "--disk", &disk, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(doc["parent"].is_string(), "incremental: {doc}");
        assert_eq!(doc["stats"]["new_chunks"], 0, "{doc}");
    }
    let to = e.path("r.img").display().to_string();
    let (code, err) = fails(as_host(&[
        "restore",
        "vm@latest",
        "--disk",
        "d",
        "--to",
        &to,
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("restore") && err.contains("full-access"),
        "{err}"
    );
    assert!(!Path::new(&to).exists());
    let (code, err) = fails(as_host(&["verify", "--read-data"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("verify --read-data"), "{err}");
    as_host(&["verify"]).assert().success();
    as_host(&["gc"]).assert().success();
    as_host(&["prune", "--keep-last", "2"]).assert().success();
    as_host(&["key", "list"]).assert().success();
    // The full key still restores.
    e.restore("vm@latest", "d", Path::new(&to));
    assert_eq!(sha256(&img), sha256(Path::new(&to)));
}

#[test]
fn encryption_none_round_trips_and_stores_plain_frames() {
    let e = init_none();
    let img = e.path("d.img");
    marked_disk(&img);
    e.backup("vm", &[("d", &img)]);
    // Without a secret at all.
    let to = e.path("r.img");
    let t = to.display().to_string();
    e.x(&["restore", "vm@latest", "--disk", "d", "--to", &t])
        .env_remove("XFULL_PASSWORD_FILE")
        .assert()
        .success();
    assert_eq!(sha256(&img), sha256(&to));
    // A pack's first blob is a plain chunk frame.
    let pack = std::fs::read(&e.files("packs")[0]).unwrap();
    assert_eq!(&pack[..4], b"XFC1");
    assert!(e.files("keys").is_empty());
    let (code, err) = fails(e.x(&["key", "list"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not encrypted"), "{err}");
}

#[test]
fn each_encryption_makes_its_format_and_round_trips() {
    // The default seals chunk data with AES-256-GCM (format 4, envelope
    // mode 3); `--encryption xchacha20-poly1305` makes format 2 (mode 2),
    // which builds of format 2 read.
    for (mode, format, seal_mode) in [("aes-256-gcm", 4, 3), ("xchacha20-poly1305", 2, 2)] {
        let e = Env::init_with(&["--encryption", mode]);
        let config = std::fs::read(e.repo.join("config")).unwrap();
        let config = xfull_core::config::RepoConfig::decode(&config).unwrap();
        assert_eq!(config.stored_format(), format, "{mode}");
        assert_eq!(config.data_cipher().name(), mode);
        let img = e.path("d.img");
        marked_disk(&img);
        e.backup("vm", &[("d", &img)]);
        let pack = std::fs::read(&e.files("packs")[0]).unwrap();
        assert_eq!((&pack[..4], pack[5]), (&b"XFS1"[..], seal_mode), "{mode}");
        let to = e.path("r.img");
        let t = to.display().to_string();
        e.x(&["restore", "vm@latest", "--disk", "d", "--to", &t])
            .assert()
            .success();
        assert_eq!(sha256(&img), sha256(&to), "{mode}");
        e.x(&["verify", "--read-data"]).assert().success();
    }
    // Unencrypted: nothing differs between formats 2 and 4, so 2.
    let e = init_none();
    let config = std::fs::read(e.repo.join("config")).unwrap();
    let config = xfull_core::config::RepoConfig::decode(&config).unwrap();
    assert_eq!(config.stored_format(), 2);
    let e = Env::bare();
    let (code, err) = fails(e.x(&["init", "--encryption", "aes-128-gcm"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("aes-128-gcm"), "{err}");
}

#[test]
fn key_passwd_add_and_remove() {
    let e = Env::init();
    let file = |name: &str, pw: &str| {
        std::fs::write(e.path(name), pw).unwrap();
        e.path(name)
    };
    let (second, third) = (file("second", "second\n"), file("third", "third\n"));
    let s = second.display().to_string();
    let add = [&["key", "add", "--new-password-file", &s][..], &KDF].concat();
    e.x(&add).assert().success();
    let list = e.json(&["key", "list"]);
    let slots = list["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2, "{list}");
    let first = slots.iter().find(|s| s["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // passwd: the old password fails, the new one works.
    let t = third.display().to_string();
    let passwd = [&["key", "passwd", "--new-password-file", &t][..], &KDF].concat();
    e.x(&passwd).assert().success();
    let (code, err) = fails(e.x(&["points"]));
    assert_eq!(code, 1, "{err}");
    e.x(&["points"])
        .env("XFULL_PASSWORD_FILE", &third)
        .assert()
        .success();
    assert!(!e.repo.join("keys").join(&first).exists());
    // The second slot goes; then the last full one is refused.
    let by = |pw: &Path, args: &[&str]| {
        let mut c = e.x(args);
        c.env("XFULL_PASSWORD_FILE", pw);
        c
    };
    let out = by(&third, &["key", "list", "--json"]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<(String, bool)> = doc["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_string(), s["current"] == true))
        .collect();
    assert_eq!(ids.len(), 2, "{doc}");
    let other = &ids.iter().find(|(_, cur)| !cur).unwrap().0;
    let mine = &ids.iter().find(|(_, cur)| *cur).unwrap().0;
    by(&third, &["key", "remove", other]).assert().success();
    let (code, err) = fails(by(&third, &["key", "remove", mine]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("last"), "{err}");
    by(&third, &["points"]).assert().success();
    let (code, err) = fails(by(&second, &["points"]));
    assert_eq!(code, 1, "{err}");
}

/// `key remove` with an id that cannot name a slot (not 16 hex digits)
/// opened the repository first, asking for a password, and then failed
/// as an error (exit 1, "no key slot xyz"). It is a bad argument: exit
/// 2, before anything is opened (here there is no repository at all).
#[test]
fn key_remove_of_a_malformed_id_is_usage_before_opening() {
    let e = Env::bare();
    let (code, err) = fails(e.x(&["key", "remove", "xyz"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("16 hex digits"), "{err}");
}
