//! The audit of a change source: a write it missed is found (in an
//! unchanged segment or a touched one) and the disk scanned in full, and
//! the point restores the truth however the workers' other work stood.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Output;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use xfull_integration::env::{Env, sha256, stderr};
use xfull_integration::{Region, write_image};

use super::incremental::write_extents;

/// `backup --changed FILE --audit-unchanged 100 --json` of disk `d`.
fn audited_backup(e: &Env, img: &Path, file: &Path) -> Output {
    e.x(&[
        "backup",
        "--vm",
        "vm",
        "--disk",
        &format!("d={}", img.display()),
        "--changed",
        &format!("d={}", file.display()),
        "--audit-unchanged",
        "100",
        "--json",
    ])
    .output()
    .unwrap()
}

#[test]
fn a_change_file_that_misses_a_write_is_caught_by_the_audit() {
    // The lie sits in a segment the file calls unchanged, then in one
    // where it reports another write (far from the lie, 4 MiB segments).
    for (reported, lie) in [(1u64 << 20, 13u64 << 20), ((12 << 20) + 5000, 15 << 20)] {
        let e = Env::init();
        let img = e.path("d.img");
        let regions = [
            Region::Random(6 << 20),
            Region::Text(10 << 20),
            Region::Hole(8 << 20),
        ];
        write_image(&img, &regions, 4, false).unwrap();
        e.backup("vm", &[("d", &img)]);
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(b"reported write", reported).unwrap();
        f.write_all_at(b"unreported write", lie).unwrap();
        let file = e.path("c.json");
        write_extents(&file, &[reported..reported + 14]);
        let out = audited_backup(&e, &img, &file);
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("WARNING") && err.contains("missed"),
            "lie at {lie}: {err:?}"
        );
        let b: Value = serde_json::from_slice(&out.stdout).unwrap();
        let d = &b["disks"][0];
        assert_eq!(d["audit"]["mismatch_at"], (lie >> 22) << 22, "{d}");
        assert!(
            d["source"]
                .as_str()
                .unwrap()
                .starts_with("full-scan: the audit"),
            "{d}"
        );
        let restored = e.path("r.img");
        e.restore("vm@latest", "d", &restored);
        assert_eq!(
            sha256(&restored),
            sha256(&img),
            "the fallback full scan stored the truth"
        );
        let text = e.x(&["show", "vm@latest"]).output().unwrap();
        assert!(String::from_utf8_lossy(&text.stdout).contains("MISMATCH"));
    }
}

#[test]
fn a_lie_in_an_unchanged_segment_found_while_others_store_leaves_a_whole_point() {
    // The workers audit unchanged segments beside the touched ones: when
    // the audit finds the lie, other segments' new chunks are being
    // packed and stored. The fallback full scan must not count on any of
    // them unless stored, and the point must restore the truth.
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(64 << 20)], 9, false).unwrap();
    e.backup("vm", &[("d", &img)]);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let mut rng = StdRng::seed_from_u64(90);
    let mut reported = Vec::new();
    for seg in 0..10u64 {
        let mut fresh = vec![0u8; 1 << 20];
        rng.fill(&mut fresh[..]);
        let at = (seg << 22) + 4096;
        f.write_all_at(&fresh, at).unwrap();
        reported.push(at..at + fresh.len() as u64);
    }
    let lie = (15u64 << 22) + 100_000;
    f.write_all_at(b"unreported write", lie).unwrap();
    let file = e.path("c.json");
    write_extents(&file, &reported);
    let out = audited_backup(&e, &img, &file);
    assert!(out.status.success(), "{}", stderr(&out));
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &b["disks"][0];
    assert_eq!(d["audit"]["mismatch_at"], 15u64 << 22, "{d}");
    let restored = e.path("r.img");
    e.restore("vm@latest", "d", &restored);
    assert_eq!(sha256(&restored), sha256(&img));
    let v = e.x(&["verify", "--read-data"]).output().unwrap();
    assert!(v.status.success(), "{}", stderr(&v));
}

#[test]
fn a_disk_shrunk_and_grown_back_unreported_is_scanned_in_full() {
    // QEMU grows a dirty bitmap clean with its disk: after a shrink and
    // a grow back the regrown range reads as zeros and no bit says so.
    // Reused segments that read as zeros throughout while their parent
    // node holds data are found without reading them, even with the
    // sampling audit off.
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(24 << 20)], 11, false).unwrap();
    e.backup("vm", &[("d", &img)]);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(10 << 20).unwrap();
    f.set_len(24 << 20).unwrap();
    drop(f);
    let file = e.path("c.json");
    write_extents(&file, &[]);
    let out = e
        .x(&[
            "backup",
            "--vm",
            "vm",
            "--disk",
            &format!("d={}", img.display()),
            "--changed",
            &format!("d={}", file.display()),
            "--audit-unchanged",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("WARNING") && err.contains("missed"), "{err}");
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &b["disks"][0];
    // 8..12 MiB keeps data below 10 MiB; 12..16 MiB is the first segment
    // gone to zeros whole.
    assert_eq!(d["audit"]["mismatch_at"], 12u64 << 20, "{d}");
    assert!(
        d["source"]
            .as_str()
            .unwrap()
            .starts_with("full-scan: the audit found zeros"),
        "{d}"
    );
    let restored = e.path("r.img");
    e.restore("vm@latest", "d", &restored);
    assert_eq!(sha256(&restored), sha256(&img));
}
