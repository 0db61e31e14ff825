//! End-to-end tests of incremental backups and change sources.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command as Std;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use xfull_integration::env::{Env, Scenario, fails, sha256, stderr};
use xfull_integration::s3::S3Server;
use xfull_integration::{Region, mixed_regions, write_image};

/// Applies `n` seeded writes (random data, some zeros) to `img`; returns
/// the exact ranges written.
fn seeded_writes(img: &Path, n: usize, seed: u64) -> Vec<Range<u64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    let size = f.metadata().unwrap().len();
    (0..n)
        .map(|i| {
            let len = rng.random_range(1..(96u64 << 10)).min(size);
            let off = rng.random_range(0..size - len + 1);
            let mut data = vec![0u8; len as usize];
            if i % 5 != 4 {
                rng.fill(&mut data[..]);
            }
            f.write_all_at(&data, off).unwrap();
            off..off + len
        })
        .collect()
}

fn merged(ranges: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut v = ranges.to_vec();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(l) if r.start <= l.end => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

pub(crate) fn write_extents(path: &Path, ranges: &[Range<u64>]) {
    let v: Vec<Value> = ranges
        .iter()
        .map(|r| json!({"offset": r.start, "length": r.end - r.start}))
        .collect();
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn backup_changed(e: &Env, vm: &str, img: &Path, files: &[&Path], extra: &[&str]) -> Value {
    let mut args = vec![
        "backup".to_string(),
        "--vm".into(),
        vm.into(),
        "--disk".into(),
        format!("d={}", img.display()),
    ];
    for f in files {
        args.push("--changed".into());
        args.push(format!("d={}", f.display()));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    e.json(&a)
}

fn no_diff(e: &Env, a: &str, b: &str) {
    if a.split('@').next() != b.split('@').next() {
        // `diff` compares points of one VM: compare the images instead.
        let (ra, rb) = (e.path("no-diff-a.img"), e.path("no-diff-b.img"));
        e.restore(a, "d", &ra);
        e.restore(b, "d", &rb);
        assert_eq!(sha256(&ra), sha256(&rb), "{a} vs {b}");
        std::fs::remove_file(&ra).unwrap();
        std::fs::remove_file(&rb).unwrap();
        return;
    }
    assert_eq!(
        e.json(&["diff", a, b, "--disk", "d", "--extents"]),
        json!([]),
        "{a} vs {b}"
    );
}

#[test]
fn a_series_of_incremental_points_all_restore_bit_exact() {
    a_series_of_incremental_points_all_restore_bit_exact_on(&Env::init());
}

fn a_series_of_incremental_points_all_restore_bit_exact_on(e: &Env) {
    let img = e.path("disk.img");
    write_image(&img, &mixed_regions(48, 21), 21, false).unwrap();
    let first = e.backup("vm", &[("d", &img)]);
    let mut points = vec![(first["point"].as_str().unwrap().to_string(), sha256(&img))];
    for k in 1..=5u64 {
        let mut changed = seeded_writes(&img, 40, k);
        if k == 3 {
            // The disk grows by 5 MiB and a bit: the tail is new.
            let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
            let old = f.metadata().unwrap().len();
            f.set_len(old + (5 << 20) + 123).unwrap();
            f.write_all_at(b"tail data", old + 1000).unwrap();
        }
        if k == 4 {
            // ... and shrinks into the middle of a segment.
            let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
            f.set_len((30 << 20) + 777).unwrap();
            changed.retain(|r| r.start < (30 << 20) + 777);
        }
        let file = e.path(&format!("changed.p{k}.json"));
        write_extents(&file, &changed);
        let b = backup_changed(e, "vm", &img, &[&file], &[]);
        let d = &b["disks"][0];
        assert!(d["source"].as_str().unwrap().starts_with("extents"), "{d}");
        // Reads stay near the changes: at most 1.5x the changed bytes plus
        // two maximum-size chunks (512 KiB) per extent, plus the audited
        // segments (4 MiB each here) and, where the disk grew, its tail.
        let extents = merged(&changed).len() as u64;
        let reported = d["stats"]["bytes_changed"].as_u64().unwrap();
        let audited = d["audit"]["segments"].as_u64().unwrap();
        let read = b["stats"]["bytes_read"].as_u64().unwrap();
        let bound = reported * 3 / 2 + extents * (1 << 20) + audited * (4 << 20);
        assert!(read <= bound, "point {k}: read {read} > {bound}");
        points.push((b["point"].as_str().unwrap().to_string(), sha256(&img)));
    }
    // Every point, the oldest included, restores on its own.
    for (i, (point, want)) in points.iter().enumerate() {
        let out = e.path(&format!("restored{i}.img"));
        e.restore(point, "d", &out);
        assert_eq!(&sha256(&out), want, "point {i} ({point})");
    }
    let show = e.json(&["show", "vm@latest"]);
    assert_eq!(
        show["disks"][0]["parent"],
        points[4].0.split('@').nth(1).unwrap()
    );
}

#[test]
fn per_node_files_give_the_same_point_as_their_union() {
    per_node_files_give_the_same_point_as_their_union_on(&Env::init());
}

fn per_node_files_give_the_same_point_as_their_union_on(e: &Env) {
    let (a, b) = (e.path("a.img"), e.path("b.img"));
    write_image(&a, &mixed_regions(24, 3), 3, false).unwrap();
    std::fs::copy(&a, &b).unwrap();
    e.backup("one", &[("d", &a)]);
    e.backup("three", &[("d", &b)]);
    let changed = seeded_writes(&a, 30, 9);
    seeded_writes(&b, 30, 9);
    // Three cluster nodes each saw some writes, with overlaps.
    let parts: Vec<Vec<Range<u64>>> = (0..3)
        .map(|n| {
            changed
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 3 == n || i % 7 == 0)
                .map(|(_, r)| r.clone())
                .collect()
        })
        .collect();
    let all = e.path("all.json");
    write_extents(&all, &changed);
    let files: Vec<_> = (0..3).map(|n| e.path(&format!("node{n}.json"))).collect();
    for (f, p) in files.iter().zip(&parts) {
        write_extents(f, p);
    }
    backup_changed(e, "one", &a, &[&all], &[]);
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let three = backup_changed(e, "three", &b, &refs, &[]);
    assert!(
        three["disks"][0]["source"]
            .as_str()
            .unwrap()
            .contains("node2.json")
    );
    no_diff(e, "one@latest", "three@latest");
}

#[test]
fn incremental_points_report_the_data_they_hold() {
    incremental_points_report_the_data_they_hold_on(&Env::init());
}

/// A point's data bytes (and so its dedup ratio) describe the point,
/// segments reused unread included, while what the run newly stored
/// describes the run: an incremental point reports the data bytes a full
/// scan of the same image reports.
fn incremental_points_report_the_data_they_hold_on(e: &Env) {
    let img = e.path("disk.img");
    write_image(&img, &mixed_regions(40, 31), 31, false).unwrap();
    let old = e.path("old.img");
    std::fs::copy(&img, &old).unwrap();
    let data = |b: &Value| b["stats"]["bytes_data"].as_u64().unwrap();
    let full = e.backup("vm", &[("d", &img)]);
    assert!(data(&full) > 0, "{full}");

    // Nothing changed: every segment is reused unread, nothing new stored
    // but the manifest.
    let none = e.path("none.json");
    write_extents(&none, &[]);
    let same = backup_changed(e, "vm", &img, &[&none], &[]);
    assert_eq!(data(&same), data(&full), "{same}");
    assert_eq!(data(&same["disks"][0]), data(&full), "{same}");
    assert_eq!(same["stats"]["new_chunks"], 0, "{same}");
    // Only the manifest was stored: no ratio is claimed (it once said
    // "dedup 221022.9x"); all the data is reused.
    assert_eq!(same["stats"]["dedup_ratio"], Value::Null, "{same}");
    assert_eq!(same["stats"]["store_ratio"], Value::Null, "{same}");
    assert_eq!(same["stats"]["bytes_reused"], data(&full), "{same}");
    // What `show` reads back from the manifest says the same.
    let shown = e.json(&["show", same["point"].as_str().unwrap()]);
    assert_eq!(data(&shown), data(&full), "{shown}");

    // Some writes, backed up from a change file and from the old snapshot:
    // the data bytes of a full scan of the same image.
    let changed = seeded_writes(&img, 12, 77);
    let file = e.path("changed.json");
    write_extents(&file, &changed);
    let inc = backup_changed(e, "vm", &img, &[&file], &[]);
    assert!(inc["stats"]["new_chunks"].as_u64().unwrap() > 0, "{inc}");
    let base = e.json(&[
        "backup",
        "--vm",
        "vm",
        "--disk",
        &format!("d={}", img.display()),
        "--base",
        &format!("d={}", old.display()),
    ]);
    let scan = e.json(&[
        "backup",
        "--vm",
        "vm",
        "--disk",
        &format!("d={}", img.display()),
        "--full-scan",
    ]);
    assert_eq!(data(&inc), data(&scan), "{inc}\n{scan}");
    assert_eq!(data(&base), data(&scan), "{base}\n{scan}");
    no_diff(
        e,
        inc["point"].as_str().unwrap(),
        scan["point"].as_str().unwrap(),
    );
}

#[test]
fn snapshot_diff_covers_every_write_and_base_matches_changed() {
    snapshot_diff_covers_every_write_and_base_matches_changed_on(&Env::init());
}

fn snapshot_diff_covers_every_write_and_base_matches_changed_on(e: &Env) {
    let (old, new) = (e.path("old.img"), e.path("new.img"));
    write_image(&old, &mixed_regions(32, 5), 5, false).unwrap();
    std::fs::copy(&old, &new).unwrap();
    let written = seeded_writes(&new, 25, 17);
    let out = e
        .x(&[
            "snapshot-diff",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let extents: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<Range<u64>> = extents
        .iter()
        .map(|x| {
            x["offset"].as_u64().unwrap()
                ..x["offset"].as_u64().unwrap() + x["length"].as_u64().unwrap()
        })
        .collect();
    for w in &written {
        // Written bytes equal to what was there need not show; all others must.
        let (a, b) = (std::fs::read(&old).unwrap(), std::fs::read(&new).unwrap());
        for x in w.clone() {
            if a[x as usize] != b[x as usize] {
                assert!(
                    got.iter().any(|r| r.contains(&x)),
                    "byte {x} of write {w:?} not covered"
                );
            }
        }
    }
    assert!(
        got.iter().all(|r| r.start % 4096 == 0),
        "4 KiB blocks by default"
    );
    let (c1, c2) = (e.path("p.img"), e.path("q.img"));
    std::fs::copy(&old, &c1).unwrap();
    std::fs::copy(&old, &c2).unwrap();
    e.backup("viabase", &[("d", &c1)]);
    e.backup("viachanged", &[("d", &c2)]);
    let diff_file = e.path("diff.json");
    std::fs::write(&diff_file, &out.stdout).unwrap();
    let base = e.json(&[
        "backup",
        "--vm",
        "viabase",
        "--disk",
        &format!("d={}", new.display()),
        "--base",
        &format!("d={}", old.display()),
    ]);
    assert!(
        base["disks"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with("snapshot diff")
    );
    backup_changed(e, "viachanged", &new, &[&diff_file], &[]);
    // Both ways give the same image (diff compares points of one VM only).
    let (a, b) = (e.path("via-base.img"), e.path("via-changed.img"));
    e.restore("viabase@latest", "d", &a);
    e.restore("viachanged@latest", "d", &b);
    assert_eq!(sha256(&a), sha256(&b));
    assert_eq!(sha256(&a), sha256(&new));
}

#[test]
fn an_overlay_map_from_qemu_img_is_a_change_source() {
    an_overlay_map_from_qemu_img_is_a_change_source_on(&Env::init());
}

fn an_overlay_map_from_qemu_img_is_a_change_source_on(e: &Env) {
    let q = |args: &[&str]| {
        let out = Std::new(args[0])
            .args(&args[1..])
            .current_dir(e.dir.path())
            .output()
            .unwrap_or_else(|err| panic!("{} (qemu-utils must be installed): {err}", args[0]));
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out.stdout
    };
    q(&[
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "base.qcow2",
        "64M",
    ]);
    q(&[
        "qemu-io",
        "-c",
        "write -P 0x11 0 8M",
        "-c",
        "write -P 0x22 20M 3M",
        "base.qcow2",
    ]);
    q(&["qemu-img", "convert", "-O", "raw", "base.qcow2", "base.raw"]);
    q(&[
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        "top.qcow2",
    ]);
    q(&[
        "qemu-io",
        "-c",
        "write -P 0x5a 1M 64k",
        "-c",
        "write -z 21M 128k",
        "-c",
        "write -P 0x33 40M 300k",
        "-c",
        "write -P 0x44 63M 1M",
        "top.qcow2",
    ]);
    let map = q(&["qemu-img", "map", "--output=json", "top.qcow2"]);
    std::fs::write(e.path("map.json"), &map).unwrap();
    q(&["qemu-img", "convert", "-O", "raw", "top.qcow2", "top.raw"]);
    e.backup("vm", &[("d", &e.path("base.raw"))]);
    let b = backup_changed(
        e,
        "vm",
        &e.path("top.raw"),
        &[&e.path("map.json")],
        &["--audit-unchanged", "100"],
    );
    let d = &b["disks"][0];
    assert!(
        d["source"].as_str().unwrap().contains("qemu-img map"),
        "{d}"
    );
    assert_eq!(d["audit"]["mismatch_at"], Value::Null);
    // qemu reports whole 64 KiB clusters: the 300 KiB write covers 320 KiB.
    assert_eq!(
        d["stats"]["bytes_changed"],
        (64u64 << 10) + (128 << 10) + (320 << 10) + (1 << 20)
    );
    let out = e.path("restored.raw");
    e.restore("vm@latest", "d", &out);
    assert_eq!(sha256(&out), sha256(&e.path("top.raw")));
}

#[test]
fn bad_change_sources_are_refused_and_store_nothing() {
    bad_change_sources_are_refused_and_store_nothing_on(&Env::init());
}

fn bad_change_sources_are_refused_and_store_nothing_on(e: &Env) {
    let img = e.path("d.img");
    write_image(
        &img,
        &[Region::Random(1 << 20), Region::Hole(3 << 20)],
        6,
        false,
    )
    .unwrap();
    e.backup("vm", &[("d", &img)]);
    let points = e.points();
    let disk = format!("d={}", img.display());
    let cases = [
        ("[{\"offset\": 0, \"length\": 4096}", "not valid JSON"),
        ("{\"offset\": 0}", "JSON array"),
        (
            "[{\"offset\": 0, \"length\": 1}, {\"what\": 1}]",
            "entry 1: unknown format",
        ),
        ("[{\"offset\": -4096, \"length\": 4096}]", "entry 0"),
        (
            "[{\"offset\": 18446744073709551615, \"length\": 10}]",
            "overflows",
        ),
        (
            "[{\"offset\": 4194000, \"length\": 4096}]",
            "past the disk's end",
        ),
    ];
    for (text, want) in cases {
        let f = e.path("bad.json");
        std::fs::write(&f, text).unwrap();
        let (code, err) = fails(e.x(&[
            "backup",
            "--vm",
            "vm",
            "--disk",
            &disk,
            "--changed",
            &format!("d={}", f.display()),
        ]));
        assert_eq!(code, 2, "a bad change file is a usage error: {text}: {err}");
        assert!(
            err.contains("bad.json") && err.contains(want),
            "{text}: {err}"
        );
    }
    let (code, err) = fails(e.x(&[
        "backup",
        "--vm",
        "vm",
        "--disk",
        &disk,
        "--changed",
        "d=/no/such/file.json",
    ]));
    assert_eq!(code, 2);
    assert!(err.contains("/no/such/file.json"), "{err}");
    for args in [
        vec!["--changed", "other=x.json"],
        vec!["--changed", "d=a.json", "--base", "d=b.img"],
        vec!["--audit-unchanged", "101"],
        vec!["--full-scan", "--changed", "d=a.json"],
    ] {
        let mut all = vec!["backup", "--vm", "vm", "--disk", &disk];
        all.extend(args.iter());
        let (code, err) = fails(e.x(&all));
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    assert_eq!(e.points(), points, "no point stored");
    // Unsorted, overlapping entries are fine: they are merged.
    let f = e.path("messy.json");
    std::fs::write(
        &f,
        r#"[{"offset": 8192, "length": 4096}, {"offset": 0, "length": 10000}]"#,
    )
    .unwrap();
    e.x(&[
        "backup",
        "--vm",
        "vm",
        "--disk",
        &disk,
        "--changed",
        &format!("d={}", f.display()),
    ])
    .assert()
    .success();
}

/// The same scenarios against an S3 server (SeaweedFS started here, or the
/// one `XFULL_TEST_S3_ENDPOINT` names), each in a repository of its own.
#[test]
fn incremental_scenarios_on_s3() {
    let server = S3Server::start();
    let scenarios: [(&str, Scenario); 6] = [
        (
            "incremental_points_report_the_data_they_hold",
            incremental_points_report_the_data_they_hold_on,
        ),
        (
            "a_series_of_incremental_points_all_restore_bit_exact",
            a_series_of_incremental_points_all_restore_bit_exact_on,
        ),
        (
            "per_node_files_give_the_same_point_as_their_union",
            per_node_files_give_the_same_point_as_their_union_on,
        ),
        (
            "snapshot_diff_covers_every_write_and_base_matches_changed",
            snapshot_diff_covers_every_write_and_base_matches_changed_on,
        ),
        (
            "an_overlay_map_from_qemu_img_is_a_change_source",
            an_overlay_map_from_qemu_img_is_a_change_source_on,
        ),
        (
            "bad_change_sources_are_refused_and_store_nothing",
            bad_change_sources_are_refused_and_store_nothing_on,
        ),
    ];
    for (name, run) in scenarios {
        eprintln!("S3 scenario {name}");
        run(&Env::init_s3(&server, name));
    }
}
