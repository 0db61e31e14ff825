//! The audit of a change source: a write it missed is found (in an
//! unchanged segment or a touched one) and the disk scanned in full, and
//! the point restores the truth however the workers' other work stood.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
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
        restores(&e, &img, "the fallback full scan stored the truth");
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
    restores(&e, &img, "the point holds the image's bytes");
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
    let (img, _) = backed_up_then_shrunk(&e, &[Region::Random(24 << 20)], 11, 10 << 20);
    let (b, err) = unaudited_backup(&e, &img, &[]);
    assert!(err.contains("WARNING") && err.contains("missed"), "{err}");
    let d = &b["disks"][0];
    // 8..12 MiB keeps data below 10 MiB, and zeros from before where
    // its parent's last chunk of data started (its last-data mark).
    found_zeros_at(d, 8 << 20);
    restores(&e, &img, "the point holds the image's bytes");
}

/// The backup of disk `d` (its JSON) found zeros the change source did
/// not report in the segment at `at`, and scanned the disk in full.
fn found_zeros_at(d: &Value, at: u64) {
    assert_eq!(d["audit"]["mismatch_at"], at, "{d}");
    assert!(
        d["source"]
            .as_str()
            .unwrap()
            .starts_with("full-scan: the audit found zeros"),
        "{d}"
    );
}

/// `vm@latest`'s disk `d` restores `img`'s bytes (`why` if not).
fn restores(e: &Env, img: &Path, why: &str) {
    let restored = e.path("r.img");
    e.restore("vm@latest", "d", &restored);
    assert_eq!(sha256(&restored), sha256(img), "{why}");
}

/// Writes `regions` (with `seed`) as disk `d`, backs it up as `vm`, then
/// shrinks the image to `to` and grows it back: what QEMU's bitmaps do
/// not report. The image, and it open for writing.
fn backed_up_then_shrunk(e: &Env, regions: &[Region], seed: u64, to: u64) -> (PathBuf, File) {
    let img = e.path("d.img");
    write_image(&img, regions, seed, false).unwrap();
    let size: u64 = regions.iter().map(Region::len).sum();
    e.backup("vm", &[("d", &img)]);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(to).unwrap();
    f.set_len(size).unwrap();
    (img, f)
}

/// Data over 0..10 MiB of a 24 MiB disk (4 MiB segments): a shrink to
/// 8.5 MiB cuts into the segment at 8 MiB, whose parent held data up to
/// 10 MiB.
const CUT_INTO_A_SEGMENT: [Region; 2] = [Region::Random(10 << 20), Region::Hole(14 << 20)];

/// `backup --changed FILE --audit-unchanged 0 --json` of disk `d`
/// (no sampling: what the zero check sees alone), with `changed` in FILE:
/// its JSON and stderr.
fn unaudited_backup(e: &Env, img: &Path, changed: &[std::ops::Range<u64>]) -> (Value, String) {
    let file = e.path("c.json");
    write_extents(&file, changed);
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
    (serde_json::from_slice(&out.stdout).unwrap(), err)
}

/// Until 2026-12-07 a shrink and regrow followed by a write at the disk's
/// end (which the change file reports) kept the parent's data past the
/// cut: the zeros no longer reached the end, and no whole segment that
/// held data read zeros. The parent's last-data marks show it without a
/// node fetched: the segment the shrink cut into reads zeros from before
/// where its parent's last chunk of data started.
#[test]
fn a_shrink_regrow_and_write_at_the_end_is_found_by_the_last_data_marks() {
    let e = Env::init();
    let (img, f) = backed_up_then_shrunk(&e, &CUT_INTO_A_SEGMENT, 12, (8 << 20) + (512 << 10));
    let end = (24u64 << 20) - (64 << 10);
    f.write_all_at(&[9u8; 64 << 10], end).unwrap();
    drop(f);
    let (b, _) = unaudited_backup(&e, &img, &[end..24 << 20]);
    let d = &b["disks"][0];
    found_zeros_at(d, 8 << 20);
    restores(&e, &img, "the point holds the image's bytes");
}

/// The same with a reported write early in the segment the shrink cut
/// into: that segment is re-chunked around the write, which would keep the
/// parent's chunks past it unread, data the shrink took away. No reported
/// change reaches its parent's last chunk of data, which now reads zeros:
/// a missed change, found from the mark.
#[test]
fn a_shrink_regrow_and_a_write_before_the_cut_are_found_by_the_last_data_marks() {
    let e = Env::init();
    let (img, f) = backed_up_then_shrunk(&e, &CUT_INTO_A_SEGMENT, 14, (8 << 20) + (512 << 10));
    f.write_all_at(&[7u8; 64 << 10], 8 << 20).unwrap();
    drop(f);
    let written = (8u64 << 20)..(8 << 20) + (64 << 10);
    let (b, _) = unaudited_backup(&e, &img, &[written]);
    found_zeros_at(&b["disks"][0], 8 << 20);
    restores(&e, &img, "the point holds the image's bytes");
}

/// The marks cost an unchanged disk nothing: a segment whose data ends
/// before its end, a hole after, reads zeros only past its last chunk of
/// data, so it is reused unread, not taken for a shrink.
#[test]
fn an_unchanged_disk_with_data_ending_inside_segments_is_not_read_again() {
    let e = Env::init();
    let img = e.path("d.img");
    let regions = [
        Region::Random(5 << 20),
        Region::Hole(3 << 20),
        Region::Text((2 << 20) + (300 << 10)),
        Region::Hole((14 << 20) - (300 << 10)),
    ];
    write_image(&img, &regions, 13, false).unwrap();
    e.backup("vm", &[("d", &img)]);
    let (b, _) = unaudited_backup(&e, &img, &[]);
    let d = &b["disks"][0];
    assert_eq!(d["audit"], Value::Null, "{d}");
    assert_eq!(d["stats"]["bytes_read"], 0, "{d}");
    assert!(
        !d["source"].as_str().unwrap().starts_with("full-scan"),
        "{d}"
    );
}
