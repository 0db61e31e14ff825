//! End-to-end tests of the `xfull` command line.

use std::path::{Path, PathBuf};

use crate::pack_files::{damage, packed_chunks};
use assert_cmd::Command;
use serde_json::Value;
use xfull_integration::env::{Env, Scenario, fails, sha256, stderr};
use xfull_integration::s3::S3Server;
use xfull_integration::{Region, mixed_regions, write_image, xfull_bin};

#[test]
fn backup_and_restore_a_large_sparse_image() {
    backup_and_restore_a_large_sparse_image_on(&Env::init());
}

fn backup_and_restore_a_large_sparse_image_on(e: &Env) {
    let img = e.path("disk.img");
    write_image(&img, &mixed_regions(300, 11), 11, false).unwrap();
    let b = e.backup("vm1", &[("disk0", &img)]);
    let point = b["point"].as_str().unwrap().to_string();
    assert!(point.starts_with("vm1@"));
    for k in [
        "bytes_scanned",
        "bytes_changed",
        "new_chunks",
        "bytes_uploaded",
        "bytes_stored",
        "seconds",
    ] {
        assert!(b["stats"][k].is_number(), "stats.{k} in {b}");
    }
    assert_eq!(b["stats"]["bytes_scanned"], 300u64 << 20);

    let out = e.path("restored.img");
    let r = e.json(&[
        "restore",
        &point,
        "--disk",
        "disk0",
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_eq!(sha256(&out), sha256(&img));
    let b3 = blake3::hash(&std::fs::read(&img).unwrap())
        .to_hex()
        .to_string();
    assert_eq!(r["blake3"], b3.as_str());
    // Zero runs stay holes: the restored file allocates no more than the source.
    let blocks = |p: &Path| std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(p).unwrap());
    assert!(
        blocks(&out) <= blocks(&img) + 2048,
        "{} > {}",
        blocks(&out),
        blocks(&img)
    );

    // Streaming to stdout gives the same bytes, in order.
    let streamed = e
        .x(&["restore", "vm1@latest", "--disk", "disk0", "--to", "-"])
        .output()
        .unwrap();
    assert!(streamed.status.success(), "{}", stderr(&streamed));
    assert_eq!(blake3::hash(&streamed.stdout).to_hex().to_string(), b3);
    assert!(stderr(&streamed).contains(&b3), "hash reported on stderr");

    // Without the image hash: same bytes, no hash reported.
    let out2 = e.path("restored2.img");
    let r = e.json(&[
        "restore",
        &point,
        "--disk",
        "disk0",
        "--no-image-hash",
        "--sync",
        "--to",
        out2.to_str().unwrap(),
    ]);
    assert!(r["blake3"].is_null(), "{r}");
    assert_eq!(sha256(&out2), sha256(&img));
}

#[test]
fn multi_disk_points_and_listing_shapes() {
    multi_disk_points_and_listing_shapes_on(&Env::init());
}

fn multi_disk_points_and_listing_shapes_on(e: &Env) {
    let (a, b) = (e.path("a.img"), e.path("b.img"));
    write_image(
        &a,
        &[Region::Text(3 << 20), Region::Hole(5 << 20)],
        1,
        false,
    )
    .unwrap();
    write_image(&b, &[Region::Random(1 << 20), Region::Zeros(100)], 2, false).unwrap();
    let mut c = e.x(&[
        "backup",
        "--vm",
        "web",
        "--disk",
        &format!("root={}", a.display()),
        &format!("data={}", b.display()),
        "--label",
        "tier=gold",
        "--host",
        "node-7",
        "--time",
        "2026-01-02T03:04:05Z",
        "--json",
    ]);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let point: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(point["disks"].as_array().unwrap().len(), 2);

    let points = e.json(&["points"]);
    let row = &points["points"].as_array().unwrap()[0];
    assert_eq!(row["vm"], "web");
    assert!(row["id"].as_str().unwrap().starts_with("20260102T030405Z-"));
    // RFC 3339 in UTC with `Z`, as every JSON time (was "+00:00").
    assert_eq!(row["time"], "2026-01-02T03:04:05Z");
    assert_eq!(row["disks"], serde_json::json!(["root", "data"]));

    let show = e.json(&["show", "web@latest"]);
    assert_eq!(show["host"], "node-7");
    assert_eq!(show["labels"]["tier"], "gold");
    assert_eq!(show["disks"][0]["source"], "full-scan (no parent)");

    for (disk, src) in [("root", &a), ("data", &b)] {
        let out = e.path(&format!("{disk}.out"));
        e.restore("web@latest", disk, &out);
        assert_eq!(sha256(&out), sha256(src), "disk {disk}");
    }
    assert_eq!(
        e.json(&["points", "--vm", "nobody"])["points"],
        serde_json::json!([])
    );
    // Text output lists the point too.
    let text = e.x(&["points"]).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("web@2026"));
}

#[test]
fn unchanged_and_duplicate_disks_store_no_new_chunk() {
    unchanged_and_duplicate_disks_store_no_new_chunk_on(&Env::init());
}

fn unchanged_and_duplicate_disks_store_no_new_chunk_on(e: &Env) {
    let img = e.path("d.img");
    write_image(&img, &mixed_regions(40, 5), 5, false).unwrap();
    let first = e.backup("vm1", &[("d", &img)]);
    assert!(first["stats"]["new_chunks"].as_u64().unwrap() > 0);
    let chunks = e.objects("chunks");
    let second = e.backup("vm1", &[("d", &img)]);
    assert_eq!(second["stats"]["new_chunks"], 0);
    assert_eq!(second["disks"][0]["stats"]["bytes_uploaded"], 0);
    if e.s3.is_some() {
        // No request per known chunk: the manifest and the lease protocol
        // (lease written at the start, when pinning the parent, at the
        // check and as ended; its time read back at the start and the
        // check, the manifest's after the commit).
        let r = &second["requests"];
        assert_eq!(
            (r["put"].as_u64(), r["head"].as_u64()),
            (Some(5), Some(3)),
            "{r}"
        );
    }
    let other = e.backup("vm2", &[("d", &img)]);
    assert_eq!(other["stats"]["new_chunks"], 0);
    assert_eq!(other["stats"]["new_nodes"], 0);
    assert_eq!(e.objects("chunks"), chunks);
}

#[test]
fn bad_names_are_usage_errors_and_store_nothing() {
    bad_names_are_usage_errors_and_store_nothing_on(&Env::init());
}

fn bad_names_are_usage_errors_and_store_nothing_on(e: &Env) {
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(100_000)], 1, false).unwrap();
    let disk = format!("d={}", img.display());
    let long = "x".repeat(129);
    for vm in ["../x", "", long.as_str(), "a/b", ".."] {
        let (code, err) = fails(e.x(&["backup", "--vm", vm, "--disk", &disk]));
        assert_eq!(code, 2, "vm {vm:?}: {err}");
        assert!(err.contains("invalid VM name"), "{err}");
    }
    for d in [
        format!("../x={}", img.display()),
        format!("={}", img.display()),
        "d".to_string(),
        "d=".to_string(),
    ] {
        let (code, err) = fails(e.x(&["backup", "--vm", "ok", "--disk", &d]));
        assert_eq!(code, 2, "disk {d:?}: {err}");
    }
    let (code, err) = fails(e.x(&["backup", "--vm", "ok", "--disk", &disk, "--disk", &disk]));
    assert_eq!(code, 2);
    assert!(err.contains("given twice"), "{err}");
    let (code, _) = fails(e.x(&[
        "backup",
        "--vm",
        "ok",
        "--disk",
        &disk,
        "--time",
        "yesterday",
    ]));
    assert_eq!(code, 2);
    let (code, _) = fails(e.x(&["backup", "--vm", "ok", "--disk", &disk, "--label", "nokey"]));
    assert_eq!(code, 2);
    // A key given twice: which value would the point hold? Refused, even
    // with the same value twice, naming the key.
    for second in ["tier=silver", "tier=gold"] {
        let (code, err) = fails(e.x(&[
            "backup",
            "--vm",
            "ok",
            "--disk",
            &disk,
            "--label",
            "tier=gold",
            "--label",
            "k=v",
            "--label",
            second,
        ]));
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("label tier") && err.contains("given twice"),
            "{err}"
        );
    }
    let (code, _) = fails(e.x(&["backup", "--vm", "ok"]));
    assert_eq!(code, 2, "clap usage error");
    assert_eq!(e.points(), 0);
    assert!(e.objects("chunks").is_none_or(|n| n == 0));
}

#[test]
fn bad_sources_fail_clearly_and_store_nothing() {
    bad_sources_fail_clearly_and_store_nothing_on(&Env::init());
}

fn bad_sources_fail_clearly_and_store_nothing_on(e: &Env) {
    let good = e.path("good.img");
    write_image(&good, &[Region::Random(200_000)], 1, false).unwrap();
    let missing = e.path("missing.img");
    let cases: Vec<(String, &str)> = vec![
        (missing.display().to_string(), "No such file"),
        (e.dir.path().display().to_string(), "is a directory"),
        (
            "/dev/null".to_string(),
            "not a regular file or a block device",
        ),
    ];
    for (path, want) in cases {
        // A good disk first: nothing of it may be stored either.
        let (code, err) = fails(e.x(&[
            "backup",
            "--vm",
            "vm",
            "--disk",
            &format!("ok={}", good.display()),
            &format!("bad={path}"),
        ]));
        assert_eq!(code, 1, "{path}: {err}");
        assert!(err.contains(want) && err.contains(&path), "{path}: {err}");
    }
    assert_eq!(
        e.objects("chunks").unwrap_or(0) + e.objects("nodes").unwrap_or(0) + e.points(),
        0
    );
}

#[test]
fn repository_errors() {
    // Missing directory, and an existing directory that is no repository.
    let e = Env::bare();
    let (code, err) = fails(e.x(&["points"]));
    assert_eq!(code, 1);
    assert!(err.contains("no xfull repository"), "{err}");
    std::fs::create_dir(&e.repo).unwrap();
    let (code, err) = fails(e.x(&["points"]));
    assert_eq!(code, 1);
    assert!(err.contains("no xfull repository"), "{err}");
    // No repository given at all.
    let (code, err) = fails({
        let mut c = Command::new(xfull_bin());
        c.env_remove("XFULL_REPO").arg("points");
        c
    });
    assert_eq!(code, 2);
    assert!(err.contains("XFULL_REPO"), "{err}");

    e.x(&["init"]).assert().success();
    let (code, err) = fails(e.x(&["init"]));
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    // -r wins over the environment.
    let other = e.path("other");
    Command::new(xfull_bin())
        .env("XFULL_REPO", "/nonexistent")
        .env("XFULL_PASSWORD_FILE", e.password_file())
        .env("XDG_STATE_HOME", e.state_dir())
        .args(["-r", other.to_str().unwrap(), "init"])
        .assert()
        .success();
    let (code, _) = fails(e.x(&["init", "--chunk-avg", "3"]));
    assert_eq!(code, 2);

    // A repository of a newer format is refused by every command.
    let cfg = e.repo.join("config");
    let mut bytes = std::fs::read(&cfg).unwrap();
    bytes[3] = b'7';
    std::fs::write(&cfg, &bytes).unwrap();
    let (code, err) = fails(e.x(&["points"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("version 7") && err.contains("upgrade xfull"),
        "{err}"
    );

    let (code, err) = fails(e.x(&["--repo", "ftp://bucket/x", "points"]));
    assert_eq!(code, 2);
    assert!(err.contains("ftp://bucket/x"), "{err}");
}

#[test]
fn restore_errors() {
    restore_errors_on(&Env::init());
}

fn restore_errors_on(e: &Env) {
    let img = e.path("d.img");
    write_image(
        &img,
        &[Region::Random(300_000), Region::Hole(1 << 20)],
        3,
        false,
    )
    .unwrap();
    let point = e.backup("vm", &[("d", &img)])["point"]
        .as_str()
        .unwrap()
        .to_string();
    let to = e.path("out.img");
    let to = to.to_str().unwrap();

    let (code, err) = fails(e.x(&[
        "restore",
        "vm@20200101T000000Z-0000",
        "--disk",
        "d",
        "--to",
        to,
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("no point vm@20200101T000000Z-0000"), "{err}");
    let (code, err) = fails(e.x(&["restore", "ghost@latest", "--disk", "d", "--to", to]));
    assert_eq!(code, 1);
    assert!(err.contains("ghost@latest"), "{err}");
    let (code, err) = fails(e.x(&["restore", &point, "--disk", "nope", "--to", to]));
    assert_eq!(code, 1);
    assert!(
        err.contains("no disk \"nope\"") && err.contains("it has: d"),
        "{err}"
    );
    let (code, _) = fails(e.x(&["restore", "vm", "--disk", "d", "--to", to]));
    assert_eq!(code, 2);
    let in_missing = e.path("no/such/dir/out.img");
    let (code, err) = fails(e.x(&[
        "restore",
        &point,
        "--disk",
        "d",
        "--to",
        in_missing.to_str().unwrap(),
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!to_exists(to), "no target created by failed restores");

    // An existing file is never overwritten.
    std::fs::write(to, b"precious").unwrap();
    let (code, err) = fails(e.x(&["restore", &point, "--disk", "d", "--to", to]));
    assert_eq!(code, 1);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(to).unwrap(), b"precious");
}

fn to_exists(p: &str) -> bool {
    Path::new(p).exists()
}

#[test]
fn a_corrupted_chunk_makes_restore_exit_3() {
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(2 << 20)], 4, false).unwrap();
    let point = e.backup("vm", &[("d", &img)])["point"]
        .as_str()
        .unwrap()
        .to_string();
    let chunk = packed_chunks(&e).remove(0);
    damage(&chunk);
    let id = chunk.id.clone();
    let out = e.path("out.img");
    let (code, err) = fails(e.x(&[
        "restore",
        &point,
        "--disk",
        "d",
        "--to",
        out.to_str().unwrap(),
    ]));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&point) && err.contains("disk d") && err.contains(&id),
        "{err}"
    );
    assert!(err.contains("offset"), "{err}");
    assert!(!out.exists());
    assert!(
        !e.path("out.img.xfull-partial").exists(),
        "partial image removed"
    );
    // A missing pack is damage too.
    std::fs::remove_file(&chunk.file).unwrap();
    let (code, err) = fails(e.x(&["restore", &point, "--disk", "d", "--to", "-"]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn block_devices_back_up_and_restore_in_place() {
    if std::env::var_os("XFULL_NO_ROOT").is_some() {
        eprintln!("XFULL_NO_ROOT set: block device test not run");
        return;
    }
    let e = Env::init();
    let img = e.path("dev.img");
    write_image(
        &img,
        &[
            Region::Text(3 << 20),
            Region::Zeros(1 << 20),
            Region::Random(4 << 20),
        ],
        8,
        true,
    )
    .unwrap();
    let blank = e.path("blank.img");
    write_image(&blank, &[Region::Random(8 << 20)], 99, true).unwrap();
    let src = LoopDev::attach(&img);
    let dst = LoopDev::attach(&blank);
    let b = e.backup("vm", &[("d", &src.0)]);
    assert_eq!(b["disks"][0]["size"], 8u64 << 20);
    e.x(&["restore", "vm@latest", "--disk", "d", "--force", "--to"])
        .arg(&dst.0)
        .assert()
        .success();
    drop(dst);
    // Written in place, zero runs included (the device held random bytes).
    assert_eq!(sha256(&blank), sha256(&img));
}

/// A loop device for the life of the value (needs root, as CI runs).
struct LoopDev(PathBuf);

impl LoopDev {
    fn attach(file: &Path) -> LoopDev {
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .expect("losetup (util-linux) must be installed");
        assert!(
            out.status.success(),
            "losetup failed (this test needs root; set XFULL_NO_ROOT=1 to skip it): {}",
            stderr(&out)
        );
        LoopDev(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()))
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.0)
            .status();
    }
}

/// The same scenarios against an S3 server (SeaweedFS started here, or the
/// one `XFULL_TEST_S3_ENDPOINT` names), each in a repository of its own.
#[test]
fn cli_scenarios_on_s3() {
    let server = S3Server::start();
    let scenarios: [(&str, Scenario); 6] = [
        (
            "backup_and_restore_a_large_sparse_image",
            backup_and_restore_a_large_sparse_image_on,
        ),
        (
            "multi_disk_points_and_listing_shapes",
            multi_disk_points_and_listing_shapes_on,
        ),
        (
            "unchanged_and_duplicate_disks_store_no_new_chunk",
            unchanged_and_duplicate_disks_store_no_new_chunk_on,
        ),
        (
            "bad_names_are_usage_errors_and_store_nothing",
            bad_names_are_usage_errors_and_store_nothing_on,
        ),
        (
            "bad_sources_fail_clearly_and_store_nothing",
            bad_sources_fail_clearly_and_store_nothing_on,
        ),
        ("restore_errors", restore_errors_on),
    ];
    for (name, run) in scenarios {
        eprintln!("S3 scenario {name}");
        run(&Env::init_s3(&server, name));
    }
}

/// `xfull points --json | true`: the reader is gone before xfull prints.
#[test]
fn a_closed_pipe_on_stdout_ends_quietly() {
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, &mixed_regions(8, 3), 3, false).unwrap();
    for vm in ["a", "b", "c"] {
        e.backup(vm, &[("d", &img)]);
    }
    for args in [&["points", "--json"][..], &["points"][..], &["stats"][..]] {
        let mut c = e.std(args);
        c.stdout(std::process::Stdio::piped());
        c.stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        // Either it printed before the pipe closed, or it met the closed
        // pipe: never the panic status 101.
        assert!(
            matches!(out.status.code(), Some(0 | 141)),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

/// A point dated in the future would become the newest for retention:
/// `prune --keep-within 7d` planned to remove every real point.
#[test]
fn a_time_in_the_future_is_refused_unless_allowed_and_prune_warns() {
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, &mixed_regions(8, 3), 3, false).unwrap();
    let disk = format!("d={}", img.display());
    e.backup("vm", &[("d", &img)]);
    let future = ["--time", "2099-01-01T00:00:00Z"];
    let mut args = vec!["backup", "--vm", "vm", "--disk", &disk];
    args.extend_from_slice(&future);
    let (code, err) = fails(e.x(&args));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--allow-future"), "{err}");
    assert_eq!(e.points(), 1, "nothing stored");
    args.push("--allow-future");
    e.x(&args).assert().success();
    let out = e
        .x(&["prune", "--keep-within", "7d", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("in the future") && err.contains("2099-01-01"),
        "{err}"
    );
}
