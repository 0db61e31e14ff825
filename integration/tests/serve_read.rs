//! `xfull serve` read by the real tools (nbdcopy, qemu-img, nbdinfo,
//! qemu-io): copies equal the restored image, holes show in the map,
//! random reads match, two clients at once, several disks as several
//! exports, on a unix socket or TCP.

use std::path::Path;
use std::process::{Command, Output};

use xfull_integration::env::{Env, stderr, walk};

use crate::serve::{
    Fill, MIB, PATTERNS, Served, b3, backed_up, image, leases_of, ok, patterned, run, socket,
};

/// Zeros (a null segment), random data, repeated bytes, zeros again.
const MIXED: &[(Fill, u64)] = &[
    (Fill::Random(7), 3),
    (Fill::Byte(0), 6),
    (Fill::Byte(0x5a), 3),
    (Fill::Random(9), 2),
    (Fill::Byte(0), 2),
];

#[test]
fn nbdcopy_and_qemu_img_copies_equal_the_restored_image() {
    let (e, restored) = backed_up(MIXED);
    let sock = socket(&e);
    let leases = leases_of(&e);
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 1);
    assert_eq!(
        leases_of(&e).len(),
        leases.len() + 1,
        "a lease while serving"
    );
    let uri = s.uris[0].clone();
    assert!(uri.starts_with("nbd+unix:///d?socket="), "{uri}");
    let a = e.path("nbdcopy.img");
    let b = e.path("qemu-img.img");
    ok(&["nbdcopy", &uri, a.to_str().unwrap()]);
    ok(&[
        "qemu-img",
        "convert",
        "-f",
        "raw",
        "-O",
        "raw",
        &uri,
        b.to_str().unwrap(),
    ]);
    assert_eq!(b3(&a), b3(&restored), "nbdcopy's copy");
    assert_eq!(b3(&b), b3(&restored), "qemu-img's copy");
    let (code, err) = s.stop();
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("lease"), "says the lease was released: {err}");
    assert_eq!(leases_of(&e), leases, "the server's lease is gone");
}

#[test]
fn nbdinfo_map_shows_the_holes() {
    let (e, _) = backed_up(MIXED);
    let sock = socket(&e);
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 1);
    let out = ok(&["nbdinfo", "--map", "--json", &s.uris[0]]);
    let map: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let zero_at = |off: u64| {
        map.as_array().unwrap().iter().any(|x| {
            let (o, l, t) = (
                x["offset"].as_u64().unwrap(),
                x["length"].as_u64().unwrap(),
                x["type"].as_u64().unwrap(),
            );
            o <= off && off < o + l && t & 3 == 3
        })
    };
    // The 6 MiB hole from 3 MiB: a whole null segment (4-8 MiB) and zero
    // chunks; the trailing 2 MiB too.
    for off in [4 * MIB, 6 * MIB, 8 * MIB - 1, 15 * MIB] {
        assert!(zero_at(off), "hole at {off}: {map}");
    }
    for off in [0, MIB, 10 * MIB, 13 * MIB] {
        assert!(!zero_at(off), "data at {off}: {map}");
    }
    s.stop();
}

/// `count` qemu-io reads of 4 KiB to 8 MiB, each inside one region and
/// checked against its byte with `read -P`.
fn random_reads(uri: &str, count: usize, seed: u64) -> Output {
    let region = 8 * MIB;
    let mut x = seed;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut args = vec![
        "qemu-io".to_string(),
        "-r".into(),
        "-f".into(),
        "raw".into(),
    ];
    for _ in 0..count {
        let len = (4096 + next(8 * MIB - 4096)) / 512 * 512;
        let k = next(PATTERNS.len() as u64);
        let off = k * region + next(region - len + 1) / 512 * 512;
        args.push("-c".into());
        args.push(format!("read -P {} {off} {len}", PATTERNS[k as usize]));
    }
    args.push(uri.into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&a)
}

#[test]
fn qemu_io_random_reads_match_the_source() {
    let (e, _) = patterned();
    let sock = socket(&e);
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 1);
    let out = random_reads(&s.uris[0], 40, 0x9e3779b9);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("fail") && !text.contains("error"), "{text}");
    assert_eq!(text.matches("read ").count(), 40, "{text}");
    s.stop();
}

#[test]
fn two_clients_at_once_read_the_same_image() {
    let (e, restored) = backed_up(MIXED);
    let sock = socket(&e);
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 1);
    let (a, b) = (e.path("a.img"), e.path("b.img"));
    let spawn = |to: &Path| {
        Command::new("nbdcopy")
            .args([&s.uris[0], to.to_str().unwrap()])
            .spawn()
            .unwrap()
    };
    let (mut ca, mut cb) = (spawn(&a), spawn(&b));
    assert!(ca.wait().unwrap().success() && cb.wait().unwrap().success());
    assert_eq!(b3(&a), b3(&restored));
    assert_eq!(b3(&b), b3(&restored));
    s.stop();
}

#[test]
fn several_disks_are_several_exports_named_after_them() {
    let e = Env::init_with(&["--clock-margin", "0s"]);
    let (a, b) = (e.path("a.img"), e.path("b.img"));
    image(&a, &[(Fill::Byte(1), 1)]);
    image(&b, &[(Fill::Byte(2), 2)]);
    e.backup("vm", &[("sda", &a), ("sdb", &b)]);
    let sock = socket(&e);
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 2);
    assert!(
        s.uris[0].contains("/sda?") && s.uris[1].contains("/sdb?"),
        "{:?}",
        s.uris
    );
    let out = ok(&["nbdinfo", "--size", &s.uris[1]]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (2 * MIB).to_string()
    );
    s.stop();
    // An unknown disk: refused before anything is served.
    let out = e
        .x(&["serve", "vm@latest", "--disk", "sdz", "--socket", &sock])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("sdz"));
    // TCP on loopback.
    let s = Served::start(
        &e,
        &["vm@latest", "--disk", "sdb", "--listen", "127.0.0.1:0"],
        1,
    );
    assert!(s.uris[0].starts_with("nbd://127.0.0.1:"), "{:?}", s.uris);
    ok(&["nbdinfo", "--size", &s.uris[0]]);
    s.stop();
}

/// Segments larger than a part (32 MiB here) are served 16 MiB at a time:
/// copies are exact, a read across a part boundary inside a segment reads
/// right, and a damaged node, met by a part that is not its segment's
/// first, is an EIO for that segment only.
#[test]
fn segments_larger_than_a_part_are_served_in_parts() {
    let e = Env::init_segments("32M", &[]);
    let img = e.path("d.img");
    // 0x5a across the part boundary at 16 MiB; the second segment
    // random, then repeated bytes.
    let regions = [
        (Fill::Random(3), 12),
        (Fill::Byte(0x5a), 8),
        (Fill::Byte(0), 12),
        (Fill::Random(4), 20),
        (Fill::Byte(0x77), 12),
    ];
    image(&img, &regions);
    e.backup("vm", &[("d", &img)]);
    let restored = e.path("restored.img");
    e.restore("vm@latest", "d", &restored);
    let sock = socket(&e);
    // A cache that holds a part, not a segment.
    let s = Served::start(&e, &["vm@latest", "--socket", &sock, "--cache", "20M"], 1);
    let uri = s.uris[0].clone();
    let copy = e.path("copy.img");
    ok(&["nbdcopy", &uri, copy.to_str().unwrap()]);
    assert_eq!(b3(&copy), b3(&restored));
    assert_eq!(b3(&copy), b3(&img));
    let read = |cmd: String| run(&["qemu-io", "-r", "-f", "raw", "-c", &cmd, &uri]);
    let out = read(format!("read -P 0x5a {} {}", 12 * MIB, 8 * MIB));
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, err) = s.stop();
    assert_eq!(code, 130, "{err}");

    // Damage one of the two nodes: reads in the second part of its
    // segment fail, the other segment reads right.
    let nodes: Vec<_> = walk(&e.repo.join("nodes"));
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let mut bytes = std::fs::read(&nodes[0]).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&nodes[0], &bytes).unwrap();
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 1);
    let uri = s.uris[0].clone();
    let read = |cmd: String| run(&["qemu-io", "-r", "-f", "raw", "-c", &cmd, &uri]);
    let eio = |out: &Output| {
        format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out))
            .contains("Input/output error")
    };
    let second = read(format!("read -P 0x77 {} {}", 52 * MIB, MIB));
    let first = read(format!("read -P 0 {} {}", 20 * MIB, MIB));
    assert!(
        eio(&first) != eio(&second),
        "one segment fails, the other reads: {}{} / {}{}",
        String::from_utf8_lossy(&first.stdout),
        stderr(&first),
        String::from_utf8_lossy(&second.stdout),
        stderr(&second)
    );
    assert!(first.status.success() || second.status.success());
    let (code, err) = s.stop();
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("damaged"), "a warning names the damage: {err}");
}
