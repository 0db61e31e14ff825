//! Integrity end to end: verify's damage reports, damaged parents, SIGKILL
//! at random moments of backups and sweeps, and storage or source failures.
//! Local repositories only: these tests damage files or fill a disk.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use xfull_integration::env::{Env, fails, sha256, walk};
use xfull_integration::{Region, mixed_regions, write_image};

const SHORT_LEASES: &[&str] = &["--lease-ttl", "3s", "--clock-margin", "1s"];

fn scribble(img: &Path, n: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    let size = f.metadata().unwrap().len();
    for _ in 0..n {
        let len = rng.random_range(4096..(128u64 << 10));
        let off = rng.random_range(0..size - len);
        let mut data = vec![0u8; len as usize];
        rng.fill(&mut data[..]);
        f.write_all_at(&data, off).unwrap();
    }
}

fn backup(e: &Env, img: &Path, extra: &[&str]) -> String {
    let disk = format!("d={}", img.display());
    let mut args = vec!["backup", "--vm", "v", "--disk", &disk];
    args.extend_from_slice(extra);
    e.json(&args)["point"].as_str().unwrap().to_string()
}

fn files(e: &Env, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(&e.repo.join(prefix))
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains('#'))
        .collect();
    v.sort();
    v
}

/// Runs `verify` with `args`; returns (exit code, JSON report).
fn verify(e: &Env, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let out = e.x(&all).output().unwrap();
    (
        out.status.code().unwrap(),
        serde_json::from_slice(&out.stdout).unwrap(),
    )
}

fn damaged_points(report: &Value) -> Vec<String> {
    report["report"]["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["point"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn verify_reports_damage_with_byte_ranges() {
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, &mixed_regions(24, 5), 5, false).unwrap();
    let p1 = backup(&e, &img, &[]);
    scribble(&img, 8, 1);
    let p2 = backup(&e, &img, &[]);
    let (code, clean) = verify(&e, &[]);
    assert_eq!((code, clean["clean"].as_bool()), (0, Some(true)), "{clean}");

    // A missing chunk: every point using it is listed, with the chunk's
    // byte range (at most the maximum chunk size of 512 KiB).
    let chunk = files(&e, "chunks")[0].clone();
    let aside = e.path("aside");
    std::fs::rename(&chunk, &aside).unwrap();
    let (code, r) = verify(&e, &[]);
    assert_eq!(code, 3, "{r}");
    assert!(!damaged_points(&r).is_empty());
    for p in r["report"]["damaged"].as_array().unwrap() {
        let d = &p["disks"][0];
        assert_eq!(d["disk"], "d");
        let (s, end) = (
            d["ranges"][0][0].as_u64().unwrap(),
            d["ranges"][0][1].as_u64().unwrap(),
        );
        assert!(end > s && end - s <= 512 << 10, "{d}");
        assert!(
            d["problems"][0].as_str().unwrap().contains("missing"),
            "{d}"
        );
    }
    let (code, err) = fails(e.x(&["verify"]));
    assert_eq!(code, 3, "{err}");
    std::fs::rename(&aside, &chunk).unwrap();
    assert_eq!(verify(&e, &[]).0, 0);

    // A chunk whose bytes changed is listed and decodes as a frame: only
    // reading the data finds it; --subset 1/2 and 2/2 together do too.
    let mut bytes = std::fs::read(&chunk).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&chunk, &bytes).unwrap();
    assert_eq!(verify(&e, &[]).0, 0);
    let (code, r) = verify(&e, &["--read-data"]);
    assert_eq!(code, 3, "{r}");
    let halves: Vec<i32> = ["1/2", "2/2"]
        .iter()
        .map(|s| verify(&e, &["--read-data", "--subset", s]).0)
        .collect();
    assert!(halves.contains(&3) && halves.contains(&0), "{halves:?}");
    let (code, err) = fails(e.x(&["verify", "--read-data", "--subset", "3/2"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--subset"), "{err}");
    std::fs::rename(&aside, &chunk).unwrap_or(());

    // A damaged node: its whole segment (4 MiB, aligned) is damaged.
    let fresh = e.path("fresh");
    let mut ok = std::fs::read(&chunk).unwrap();
    ok[last] ^= 0x55;
    std::fs::write(&fresh, &ok).unwrap();
    std::fs::rename(&fresh, &chunk).unwrap();
    let node = files(&e, "nodes")[0].clone();
    std::fs::write(&node, b"XFN1\x01garbage").unwrap();
    let (code, r) = verify(&e, &[]);
    assert_eq!(code, 3, "{r}");
    let d = &r["report"]["damaged"][0]["disks"][0];
    let (s, end) = (
        d["ranges"][0][0].as_u64().unwrap(),
        d["ranges"][0][1].as_u64().unwrap(),
    );
    assert_eq!(s % (4 << 20), 0, "{d}");
    assert!(end - s <= 4 << 20 && end > s, "{d}");

    // A damaged manifest names its point; naming points limits the check.
    let m2 = e.repo.join("points/v").join(p2.split('@').nth(1).unwrap());
    std::fs::write(&m2, b"XFM1\x01nonsense").unwrap();
    let (code, r) = verify(&e, &[]);
    assert_eq!(code, 3);
    let bad: BTreeMap<String, Value> = r["report"]["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["point"].as_str().unwrap().to_string(), p.clone()))
        .collect();
    assert!(
        bad[&p2]["manifest"].as_str().unwrap().contains("damaged"),
        "{r}"
    );
    let (code, err) = fails(e.x(&["verify", "v@20990101T000000Z-0000"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no point"), "{err}");
    let _ = p1;
}

#[test]
fn a_damaged_parent_node_is_not_reused() {
    let e = Env::init();
    let img = e.path("d.img");
    write_image(
        &img,
        &[Region::Random(10 << 20), Region::Text(6 << 20)],
        2,
        false,
    )
    .unwrap();
    backup(&e, &img, &[]);
    // Damage every node of the parent, then back up with "nothing
    // changed": nothing may be reused from the damaged nodes.
    for n in files(&e, "nodes") {
        std::fs::write(&n, b"XFN1\x01garbage").unwrap();
    }
    let none = e.path("none.json");
    std::fs::write(&none, "[]").unwrap();
    let disk = format!("d={}", img.display());
    let changed = format!("d={}", none.display());
    let out = e
        .x(&[
            "backup",
            "--vm",
            "v",
            "--disk",
            &disk,
            "--changed",
            &changed,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing or damaged"), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let point = v["point"].as_str().unwrap();
    assert!(
        v["disks"][0]["source"]
            .as_str()
            .unwrap()
            .contains("read in full"),
        "{v}"
    );
    let to = e.path("out");
    e.restore(point, "d", &to);
    assert_eq!(sha256(&to), sha256(&img));
    let (code, r) = verify(&e, &[point]);
    assert_eq!(code, 0, "{r}");
}
