//! Everyday operation end to end: listings and point names, profiles,
//! shell integration, metrics, container images given as raw disks.

use std::path::Path;

use serde_json::Value;
use xfull_integration::env::{Env, fails, stderr};
use xfull_integration::{mixed_regions, write_image};

fn image(e: &Env, name: &str, mib: u64, seed: u64) -> std::path::PathBuf {
    let p = e.path(name);
    write_image(&p, &mixed_regions(mib, seed), seed, false).unwrap();
    p
}

fn backup_args(vm: &str, disk: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["backup", "--vm", vm, "--disk"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.push(format!("d={}", disk.display()));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn backup_with(e: &Env, vm: &str, disk: &Path, extra: &[&str]) -> Value {
    let a = backup_args(vm, disk, extra);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    e.json(&a)
}

fn text(e: &Env, args: &[&str]) -> String {
    let out = e.x(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn listings_filter_and_points_are_named_by_part_of_their_id() {
    let e = Env::init();
    let img = image(&e, "d.img", 4, 1);
    let long = "a-vm-with-a-rather-long-name-that-used-to-break-the-columns";
    let p1 = backup_with(
        &e,
        long,
        &img,
        &[
            "--host",
            "h1",
            "--label",
            "tier=gold",
            "--time",
            "2026-03-01T10:00:00Z",
        ],
    );
    let p2 = backup_with(
        &e,
        long,
        &img,
        &["--host", "h2", "--time", "2026-03-02T10:00:00Z"],
    );
    backup_with(
        &e,
        "small",
        &img,
        &["--host", "h1", "--time", "2026-03-03T10:00:00Z"],
    );

    let out = text(&e, &["points", "--utc"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("POINT") && lines[0].contains("HOST"),
        "{out}"
    );
    assert_eq!(*lines.last().unwrap(), "3 points", "{out}");
    // Columns line up whatever the VM name's length: every TIME column
    // starts where the header's does.
    let col = lines[0].find("TIME").unwrap();
    for l in &lines[1..4] {
        assert_eq!(l.find("2026-03-0"), Some(col), "{out}");
    }
    assert!(
        out.contains("2026-03-01 10:00:00 UTC") && out.contains("tier=gold"),
        "{out}"
    );
    // Local time says its offset.
    let local = text(&e, &["points"]);
    assert!(
        local.lines().nth(1).unwrap().contains(" +") || local.contains(" -0"),
        "{local}"
    );

    let ids = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["points"];
        a.extend_from_slice(args);
        e.json(&a)["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["point"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&["--host", "h2"]), vec![p2["point"].as_str().unwrap()]);
    assert_eq!(
        ids(&["--label", "tier=gold"]),
        vec![p1["point"].as_str().unwrap()]
    );
    assert_eq!(ids(&["--latest", "1"]).len(), 2, "one per VM");
    assert_eq!(
        ids(&["--latest", "1", "--vm", long]),
        vec![p2["point"].as_str().unwrap()]
    );
    assert_eq!(text(&e, &["snapshots"]), text(&e, &["ls"]));

    // By a unique suffix or prefix of the id.
    let id1 = p1["id"].as_str().unwrap();
    let suffix = &id1[id1.len() - 4..];
    let shown = e.json(&["show", &format!("{long}@{suffix}")]);
    assert_eq!(shown["point"], p1["point"]);
    let shown = e.json(&["show", &format!("{long}@20260301")]);
    assert_eq!(shown["point"], p1["point"]);
    // Ambiguous: both ids start with 202603.
    let (code, err) = fails(e.x(&["show", &format!("{long}@202603")]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ambiguous") && err.contains(id1), "{err}");
    let (code, err) = fails(e.x(&["show", &format!("{long}@ffffffff")]));
    assert_eq!(code, 1, "{err}");

    // --parent accepts VM@ID (and a part of the id); another VM's point is
    // refused.
    let child = backup_with(&e, long, &img, &["--parent", &format!("{long}@{suffix}")]);
    assert_eq!(child["parent"], id1);
    let a = backup_args(long, &img, &["--parent", "small@latest"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (code, err) = fails(e.x(&a));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not of"), "{err}");
}

#[test]
fn a_profile_names_the_repository_and_its_settings() {
    let e = Env::bare();
    let repo = e.path("profiled-repo");
    let cfg = e.path("config.toml");
    std::fs::write(
        &cfg,
        format!("[repositories.offsite]\nurl = \"{}\"\n", repo.display()),
    )
    .unwrap();
    let cfg_s = cfg.display().to_string();
    let x = |args: &[&str]| {
        let mut c = e.x(args);
        c.env_remove("XFULL_REPO").env("XFULL_CONFIG", &cfg_s);
        c
    };
    x(&["-r", "@offsite", "init", "--segment-size", "4M"])
        .assert()
        .success();
    let img = image(&e, "d.img", 4, 2);
    let disk = format!("d={}", img.display());
    let backup =
        |profile| ["-r", profile, "backup", "--vm", "p", "--disk", &disk].map(String::from);
    let out = x(&backup("@offsite").each_ref().map(String::as_str))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(repo.join("config").exists(), "the profile's URL was used");
    // --config on the command line, as cron jobs would.
    let out = e
        .x(&["--config", &cfg_s, "-r", "@offsite", "points", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["points"].as_array().unwrap().len(), 1);
    let (code, err) = fails(x(&["-r", "@nowhere", "points"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no profile @nowhere") && err.contains("@offsite"),
        "{err}"
    );
    // The profile's password command opens an encrypted repository when
    // neither the command line nor the environment gives a secret; a
    // wrong one is refused.
    let sealed = e.path("sealed-repo");
    let with_secret = |cmd: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[repositories.sealed]\nurl = \"{}\"\npassword_command = \"{cmd}\"\n",
                sealed.display()
            ),
        )
        .unwrap();
    };
    let bare = |args: &[&str]| {
        let mut c = x(args);
        c.env_remove("XFULL_PASSWORD_FILE");
        c
    };
    with_secret("echo profile-secret");
    bare(&["-r", "@sealed", "init"]).assert().success();
    let out = bare(&backup("@sealed").each_ref().map(String::as_str))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    with_secret("echo another-secret");
    let (code, err) = fails(bare(&["-r", "@sealed", "points"]));
    assert_eq!(code, 1, "{err}");
    // A misspelt key is refused, naming it and its line.
    let typo = e.path("typo.toml");
    std::fs::write(
        &typo,
        "[repositories.typo]\nurl = \"/x\"\ns3_regoin = \"eu\"\n",
    )
    .unwrap();
    let (code, err) = fails(e.x(&["--config", typo.to_str().unwrap(), "-r", "@typo", "points"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 3") && err.contains("s3_regoin"), "{err}");
    // The request budget's keys: a size that is not one is refused naming
    // the key; a budget for a local directory is refused as well.
    for (budget, wanted) in [
        (
            "max_upload_bytes_per_second = \"5X\"",
            "max_upload_bytes_per_second",
        ),
        ("max_requests_per_second = 10", "apply to S3 repositories"),
    ] {
        let path = e.path("budget.toml");
        let url = e.repo.display();
        std::fs::write(
            &path,
            format!("[repositories.b]\nurl = \"{url}\"\n{budget}\n"),
        )
        .unwrap();
        let (code, err) = fails(e.x(&["--config", path.to_str().unwrap(), "-r", "@b", "points"]));
        assert_eq!(code, 2, "{budget}: {err}");
        assert!(err.contains(wanted), "{budget}: {err}");
    }
}

/// A profile's `password_file` that cannot be read is an error naming the
/// profile's key, not `XFULL_PASSWORD_FILE`, a variable the user never set
/// (`secrets::sources` puts the profile's file in the slot of the
/// variable, and `SecretSources::resolve` names that slot after it), so
/// the operator looks in the wrong place.
#[test]
fn a_profile_password_file_is_named_as_the_profiles() {
    let e = Env::init();
    let cfg = e.path("config.toml");
    let missing = e.path("no-such-password");
    std::fs::write(
        &cfg,
        format!(
            "[repositories.sealed]\nurl = \"{}\"\npassword_file = \"{}\"\n",
            e.repo.display(),
            missing.display()
        ),
    )
    .unwrap();
    let mut c = e.x(&["--config", cfg.to_str().unwrap(), "-r", "@sealed", "points"]);
    c.env_remove("XFULL_REPO").env_remove("XFULL_PASSWORD_FILE");
    let (code, err) = fails(c);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no-such-password"), "{err}");
    assert!(
        !err.contains("XFULL_PASSWORD_FILE") && err.contains("@sealed"),
        "the message blames a variable that is not set, not the profile: {err}"
    );
}

/// A config file that other users may write is a command they choose,
/// run as whoever runs xfull (root, for the units in contrib/): its
/// `password_command` runs with `sh -c`, and its `url` and `s3_endpoint`
/// say where backups go. ssh refuses such a config; xfull reads it and
/// runs the command.
#[test]
fn a_world_writable_profile_is_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let e = Env::init();
    let cfg = e.path("config.toml");
    let marker = e.path("ran");
    std::fs::write(
        &cfg,
        format!(
            "[repositories.sealed]\nurl = \"{}\"\npassword_command = \"touch {}; cat {}\"\n",
            e.repo.display(),
            marker.display(),
            e.password_file().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut c = e.x(&["--config", cfg.to_str().unwrap(), "-r", "@sealed", "points"]);
    c.env_remove("XFULL_REPO").env_remove("XFULL_PASSWORD_FILE");
    let out = c.output().unwrap();
    assert!(
        !marker.exists() && !out.status.success(),
        "the password_command of a config file writable by anyone ran (exit {:?}): {}",
        out.status.code(),
        stderr(&out)
    );
}

/// The refusal names the file and its mode, as a usage error; so is a
/// config file in a directory others may write (they could replace it),
/// unless the directory is sticky (as /tmp: others cannot replace a file
/// they do not own there).
#[test]
fn a_config_file_others_may_replace_is_refused_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let e = Env::init();
    let dir = e.path("shared");
    std::fs::create_dir(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!("[repositories.here]\nurl = \"{}\"\n", e.repo.display()),
    )
    .unwrap();
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    let points = || {
        let mut c = e.x(&["--config", cfg.to_str().unwrap(), "-r", "@here", "points"]);
        c.env_remove("XFULL_REPO");
        c
    };
    mode(&cfg, 0o620).unwrap();
    let (code, err) = fails(points());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(cfg.to_str().unwrap()) && err.contains("0620") && err.contains("chmod go-w"),
        "{err}"
    );
    mode(&cfg, 0o644).unwrap();
    points().assert().success();
    mode(&dir, 0o777).unwrap();
    let (code, err) = fails(points());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(dir.to_str().unwrap()) && err.contains("0777"),
        "{err}"
    );
    mode(&dir, 0o1777).unwrap();
    points().assert().success();
}

/// A profile's url must name a location: an empty one is refused as
/// `-r ""` is (not "storage error at :"), and `@other` (a profile cannot
/// name another) is not taken as a directory `./@other`.
#[test]
fn a_profile_url_must_name_a_location() {
    let e = Env::init();
    let cfg = e.path("config.toml");
    std::fs::write(
        &cfg,
        "[repositories.empty]\nurl = \"\"\n[repositories.alias]\nurl = \"@empty\"\n",
    )
    .unwrap();
    for (name, wanted) in [("@empty", "is empty"), ("@alias", "names a profile")] {
        let mut c = e.x(&["--config", cfg.to_str().unwrap(), "-r", name, "points"]);
        c.env_remove("XFULL_REPO");
        let (code, err) = fails(c);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains(wanted) && err.contains(name), "{name}: {err}");
    }
}

/// `points --latest 0` would list nothing: a usage error, not "no points".
#[test]
fn points_latest_zero_is_a_usage_error() {
    let e = Env::init();
    let (code, err) = fails(e.x(&["points", "--latest", "0"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--latest"), "{err}");
}

#[test]
fn completions_man_page_version_and_help() {
    let e = Env::bare();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef xfull"),
        ("fish", "complete -c xfull"),
    ] {
        let out = text(&e, &["completions", shell]);
        assert!(
            out.contains(marker),
            "{shell}: {}",
            &out[..out.len().min(300)]
        );
        assert!(out.contains("forget-disks"), "{shell} knows the flags");
    }
    // A reader that leaves early ends it quietly (it panicked, status 101).
    // The reader is gone before the command starts: closed after the
    // spawn, a command that wrote its whole page into the pipe first
    // exited 0 (seen on a loaded machine, stop 51).
    for args in [&["completions", "bash"][..], &["man"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut c = e.std(args);
        c.stdout(writer);
        c.stderr(std::process::Stdio::piped());
        let out = c.spawn().unwrap().wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
    let man = text(&e, &["man"]);
    assert!(
        man.contains(".TH xfull 1") && man.contains("backup"),
        "{}",
        &man[..300]
    );
    let dir = e.path("man");
    text(&e, &["man", "--dir", dir.to_str().unwrap()]);
    assert!(dir.join("xfull-backup.1").exists());
    let v = text(&e, &["--version"]);
    assert!(
        v.contains("commit ") && v.contains("repository format 4") && v.contains("formats 2 to 5"),
        "{v}"
    );
    // S3 flags under their own heading, and not on a command without a
    // repository.
    let help = text(&e, &["backup", "--help"]);
    assert!(
        help.contains("S3 options:") && help.contains("--s3-endpoint"),
        "{help}"
    );
    let help = text(&e, &["snapshot-diff", "--help"]);
    assert!(
        !help.contains("--s3") && !help.contains("S3 options"),
        "{help}"
    );
    let (code, err) = fails(e.x(&["snapshot-diff", "a", "b", "--s3-region", "x"]));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_metrics_file_is_written_after_a_backup_and_keeps_other_vms() {
    let e = Env::init();
    let img = image(&e, "d.img", 4, 3);
    let metrics = e.path("xfull.prom");
    let m = metrics.display().to_string();
    backup_with(&e, "web", &img, &["--metrics-file", &m]);
    backup_with(&e, "db", &img, &["-q", "--metrics-file", &m]);
    let text = std::fs::read_to_string(&metrics).unwrap();
    // Prometheus text format: HELP/TYPE, then `name{labels} value`.
    let mut samples = std::collections::BTreeMap::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = l.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{l}"));
        samples.insert(key.to_string(), value);
    }
    assert_eq!(
        samples["xfull_run_success{command=\"backup\"}"], 1.0,
        "{text}"
    );
    assert_eq!(samples["xfull_run_exit_status{command=\"backup\"}"], 0.0);
    assert!(samples["xfull_run_duration_seconds{command=\"backup\"}"] >= 0.0);
    assert!(
        samples["xfull_backup_bytes{vm=\"db\",kind=\"scanned\"}"] > 0.0,
        "{text}"
    );
    // Both VMs' last success survive: the second run kept the first's.
    for vm in ["web", "db"] {
        let k = format!("xfull_backup_last_success_timestamp_seconds{{vm=\"{vm}\"}}");
        assert!(samples[&k] > 1.7e9, "{k} in {text}");
    }
    assert!(text.contains("# TYPE xfull_run_success gauge"), "{text}");
    // A failed run says so.
    let (code, _) = fails(e.x(&[
        "backup",
        "--vm",
        "web",
        "--disk",
        "d=/nonexistent",
        "--metrics-file",
        &m,
    ]));
    assert_eq!(code, 1);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("xfull_run_success{command=\"backup\"} 0"),
        "{text}"
    );
    // No temporary file is left beside it.
    let left: Vec<_> = std::fs::read_dir(e.dir.path())
        .unwrap()
        .filter_map(|d| d.ok())
        .filter(|d| {
            d.file_name()
                .to_string_lossy()
                .starts_with(".xfull-metrics")
        })
        .collect();
    assert!(left.is_empty());
}

#[test]
fn a_qcow2_file_given_as_a_raw_disk_is_warned_about() {
    let e = Env::init();
    let q = e.path("disk.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", q.to_str().unwrap(), "64M"])
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        // Without qemu-img: a qcow2 header's magic and version.
        let mut h = b"QFI\xfb\0\0\0\x03".to_vec();
        h.resize(196_608, 0);
        std::fs::write(&q, h).unwrap();
    }
    let args = backup_args("vm", &q, &["--json"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = e.x(&args).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("qcow2") && err.contains("NBD source"), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["warnings"][0]["kind"], "container_image", "{v}");
    assert_eq!(v["warnings"][0]["format"], "qcow2", "{v}");
    // A raw image is not warned about.
    let raw = image(&e, "raw.img", 4, 4);
    let v = backup_with(&e, "raw", &raw, &[]);
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
}
