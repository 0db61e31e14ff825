//! Integrity end to end: verify's damage reports, damaged parents, SIGKILL
//! at random moments of backups and sweeps, and storage or source failures.
//! Local repositories only: these tests damage files or fill a disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::pack_files::{damage, packed_chunks};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use xfull_integration::env::{Env, fails, sha256, stderr};
use xfull_integration::{Region, mixed_regions, scribble, write_image};

const SHORT_LEASES: &[&str] = &["--lease-ttl", "3s", "--clock-margin", "1s"];

fn backup(e: &Env, img: &Path, extra: &[&str]) -> String {
    let disk = format!("d={}", img.display());
    let mut args = vec!["backup", "--vm", "v", "--disk", &disk];
    args.extend_from_slice(extra);
    e.json(&args)["point"].as_str().unwrap().to_string()
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
    scribble(&img, 8, 128 << 10, 1);
    let p2 = backup(&e, &img, &[]);
    let (code, clean) = verify(&e, &[]);
    assert_eq!((code, clean["clean"].as_bool()), (0, Some(true)), "{clean}");

    // A missing pack: every point using its chunks is listed, with their
    // byte ranges (adjacent chunks of a pack make one range).
    let pack = e.files("packs")[0].clone();
    let aside = e.path("aside");
    std::fs::rename(&pack, &aside).unwrap();
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
        assert!(end > s, "{d}");
        assert!(
            d["problems"][0].as_str().unwrap().contains("missing"),
            "{d}"
        );
    }
    let (code, err) = fails(e.x(&["verify"]));
    assert_eq!(code, 3, "{err}");
    std::fs::rename(&aside, &pack).unwrap();
    assert_eq!(verify(&e, &[]).0, 0);

    // A chunk whose bytes changed is listed and its pack is whole: only
    // reading the data finds it, with the chunk's byte range (at most the
    // maximum chunk size of 512 KiB); --subset 1/2 and 2/2 together do too.
    let intact = std::fs::read(&pack).unwrap();
    let victim = packed_chunks(&e)
        .into_iter()
        .find(|c| c.file == pack)
        .unwrap();
    damage(&victim);
    assert_eq!(verify(&e, &[]).0, 0);
    let (code, r) = verify(&e, &["--read-data"]);
    assert_eq!(code, 3, "{r}");
    for p in r["report"]["damaged"].as_array().unwrap() {
        let d = &p["disks"][0];
        let (s, end) = (
            d["ranges"][0][0].as_u64().unwrap(),
            d["ranges"][0][1].as_u64().unwrap(),
        );
        assert!(end > s && end - s <= 512 << 10, "{d}");
    }
    let halves: Vec<i32> = ["1/2", "2/2"]
        .iter()
        .map(|s| verify(&e, &["--read-data", "--subset", s]).0)
        .collect();
    assert!(halves.contains(&3) && halves.contains(&0), "{halves:?}");
    let (code, err) = fails(e.x(&["verify", "--read-data", "--subset", "3/2"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--subset"), "{err}");

    // A damaged node: its whole segment (4 MiB, aligned) is damaged.
    std::fs::write(&pack, &intact).unwrap();
    let node = e.files("nodes")[0].clone();
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

/// `backup --changed` with no extents: the change source says nothing
/// changed since the VM's last point.
fn backup_nothing_changed(e: &Env, img: &Path) -> std::process::Output {
    let none = e.path("none.json");
    std::fs::write(&none, "[]").unwrap();
    let disk = format!("d={}", img.display());
    let changed = format!("d={}", none.display());
    e.x(&[
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
    .unwrap()
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
    for n in e.files("nodes") {
        std::fs::write(&n, b"XFN1\x01garbage").unwrap();
    }
    let out = backup_nothing_changed(&e, &img);
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

/// A backup fetches only a sample of the parent nodes it reuses, so one
/// damaged node among many may be reused unnoticed; `verify` finds it and
/// records it, and from then on no backup relies on it: the next one reads
/// that segment and stores the node again, and every point it writes is
/// whole.
#[test]
fn damage_verify_found_is_never_reused_by_the_next_backup() {
    let e = Env::init();
    let img = e.path("d.img");
    let regions: Vec<Region> = (0..8).map(|_| Region::Random(4 << 20)).collect();
    write_image(&img, &regions, 5, false).unwrap();
    backup(&e, &img, &[]);
    let nodes = e.files("nodes");
    assert!(nodes.len() >= 8, "{nodes:?}");
    let victim = nodes[3].clone();
    let intact = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, b"XFN1\x01garbage").unwrap();
    let (code, r) = verify(&e, &[]);
    assert_eq!(code, 3, "{r}");
    assert!(!e.files("damage").is_empty(), "verify records the node");

    let out = backup_nothing_changed(&e, &img);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("missing or damaged"),
        "{}",
        stderr(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let point = v["point"].as_str().unwrap();
    // Stored again over the damaged copy: the first point is whole again.
    assert_ne!(std::fs::read(&victim).unwrap(), b"XFN1\x01garbage");
    assert!(!intact.is_empty());
    let to = e.path("out");
    e.restore(point, "d", &to);
    assert_eq!(sha256(&to), sha256(&img));
    let (code, r) = verify(&e, &[]);
    assert_eq!(code, 0, "{r}");
}

/// `repair` without images removes a damaged node and leaves its point
/// damaged; the node is then missing, and no backup may rely on it: the
/// next backup that sees the segment unchanged reads it and stores the
/// node again, which heals the old point too. (A backup that reused it
/// unfetched would carry the missing node into every later point.)
#[test]
fn a_node_repair_removed_is_stored_again_by_the_next_backup() {
    let e = Env::init();
    let img = e.path("d.img");
    let regions: Vec<Region> = (0..8).map(|_| Region::Random(4 << 20)).collect();
    write_image(&img, &regions, 6, false).unwrap();
    backup(&e, &img, &[]);
    let victim = e.files("nodes")[2].clone();
    std::fs::write(&victim, b"XFN1\x01garbage").unwrap();
    let out = e.x(&["repair", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!victim.exists(), "repair removed the damaged node");

    let out = backup_nothing_changed(&e, &img);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let point = v["point"].as_str().unwrap();
    assert!(victim.exists(), "stored again");
    let to = e.path("out");
    e.restore(point, "d", &to);
    assert_eq!(sha256(&to), sha256(&img));
    let (code, r) = verify(&e, &[]);
    assert_eq!(code, 0, "every point whole again: {r}");
}

/// Runs gc until a sweep completes; returns its report. The 3 s sweep TTL this test needs (a
/// killed sweep makes the next ones give way until its marker is stale)
/// lets a sweep on a machine too busy to refresh its marker for 1.5 s stop
/// itself, as designed ("run gc again"): that is tried again, as is giving
/// way to a killed sweep; any other failure fails the test.
pub(crate) fn gc_to_completion(e: &Env, extra: &[&str]) -> Value {
    let mut args = vec!["gc", "--json"];
    args.extend_from_slice(extra);
    for _ in 0..10 {
        let out = e.x(&args).output().unwrap();
        if !out.status.success() {
            let err = stderr(&out);
            assert!(err.contains("without a refresh"), "{err}");
            continue;
        }
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        if report["skipped"].is_null() {
            return report;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("no gc sweep completed in 10 tries");
}

/// Spawns `args`, kills it with SIGKILL after `after`; returns whether it
/// had already finished.
fn kill_after(e: &Env, args: &[&str], after: Duration) -> bool {
    let mut child = e
        .std(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    false
}

/// Every node file (not a staging file) is a whole object that decodes
/// and hashes to its name, and every pack's table and blobs open (each
/// blob to its chunk id).
fn no_partial_objects(e: &Env) {
    use xfull_core::crypto::SealKind;
    use xfull_core::frame::{self, Kind};
    let repo = crate::unlocked::open(e);
    let codec = repo.codec();
    for f in e.files("nodes") {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&f).unwrap();
        let id: xfull_core::id::ObjectId = name.parse().unwrap();
        let opened = codec
            .open_meta(SealKind::Node, &xfull_core::keys::node(&id), &bytes)
            .unwrap_or_else(|err| panic!("{}: {err}", f.display()));
        let plain = frame::decode(Kind::Node, &name, &opened, 64 << 20)
            .unwrap_or_else(|err| panic!("{}: {err}", f.display()));
        assert_eq!(codec.node_id(&plain), id, "{}", f.display());
    }
    let placement = repo.chunks();
    for c in packed_chunks(e) {
        let bytes = std::fs::read(&c.file).unwrap();
        let blob = &bytes[c.offset as usize..(c.offset + c.len) as usize];
        let id: xfull_core::id::ObjectId = c.id.parse().unwrap();
        let framed = codec.open_chunk(&id, blob).unwrap();
        let plain = frame::decode(Kind::Chunk, &c.id, &framed, 64 << 20)
            .unwrap_or_else(|err| panic!("{}: {err}", c.file.display()));
        let mut out = Vec::new();
        placement
            .open_into(&id, blob, plain.len(), &mut out)
            .unwrap();
        assert_eq!(out, plain, "{}", c.file.display());
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_committed() {
    let e = Env::init_with(SHORT_LEASES);
    let img = e.path("d.img");
    write_image(&img, &mixed_regions(48, 9), 9, false).unwrap();
    backup(&e, &img, &["--label", "run=first"]);
    let mut sums = BTreeMap::from([("first".to_string(), sha256(&img))]);
    // How long a later backup takes here, to spread the kills over it.
    scribble(&img, 6, 128 << 10, 999);
    let t = Instant::now();
    backup(&e, &img, &["--label", "run=second"]);
    let span = t.elapsed().max(Duration::from_millis(100));
    sums.insert("second".to_string(), sha256(&img));
    let mut rng = StdRng::seed_from_u64(42);
    let (mut finished, mut landed) = (0, 0);
    // Up to 120 tries: on a loaded machine the measured span can be long
    // against later backups (16 kills of 60 tries landed once).
    for run in 0..120 {
        if landed == 20 {
            break;
        }
        scribble(&img, 6, 128 << 10, 1000 + run);
        sums.insert(run.to_string(), sha256(&img));
        let disk = format!("d={}", img.display());
        let label = format!("run={run}");
        let after = span.mul_f64(rng.random_range(0.0..1.0));
        let args = ["backup", "--vm", "v", "--disk", &disk, "--label", &label];
        if kill_after(&e, &args, after) {
            finished += 1;
        } else {
            landed += 1;
        }
        let (code, r) = verify(&e, &[]);
        assert_eq!(code, 0, "after kill {run}: {r}");
        if run % 5 == 4 {
            // The next backup succeeds.
            scribble(&img, 2, 128 << 10, 5000 + run);
            sums.insert(format!("after-{run}"), sha256(&img));
            backup(&e, &img, &["--label", &format!("run=after-{run}")]);
        }
    }
    eprintln!("{landed} backups killed mid-run, {finished} finished first");
    assert_eq!(landed, 20, "kills must land while backups run");
    no_partial_objects(&e);

    // Garbage to collect, then sweeps killed at random moments.
    std::thread::sleep(Duration::from_secs(5));
    e.json(&["prune", "--keep-last", "6", "--no-gc"]);
    let t = Instant::now();
    e.json(&["gc", "--dry-run"]);
    let span = t.elapsed().max(Duration::from_millis(20));
    let (mut finished, mut landed) = (0, 0);
    // Up to 120 tries, as for backups: in a loaded full run the dry run's
    // span can be long against later sweeps (15 of 80 landed once).
    for run in 0..120 {
        if landed == 20 {
            break;
        }
        let after = span.mul_f64(rng.random_range(0.0..1.0));
        if kill_after(&e, &["gc"], after) {
            finished += 1;
        } else {
            landed += 1;
        }
        let (code, r) = verify(&e, &[]);
        assert_eq!(code, 0, "after gc kill {run}: {r}");
    }
    eprintln!("{landed} sweeps killed mid-run, {finished} finished first");
    assert_eq!(landed, 20, "kills must land while sweeps run");
    no_partial_objects(&e);
    gc_to_completion(&e, &[]);

    // Every committed point restores bit-exact.
    let points = e.json(&["points"])["points"].clone();
    for p in points.as_array().unwrap() {
        let run = p["labels"]["run"].as_str().unwrap();
        let to = e.path("restored");
        e.restore(p["point"].as_str().unwrap(), "d", &to);
        assert_eq!(sha256(&to), sums[run], "point of run {run}");
        std::fs::remove_file(&to).unwrap();
    }
    let (code, r) = verify(&e, &["--read-data"]);
    assert_eq!(code, 0, "{r}");
}

/// Tests that mount file systems or drop privileges need root; scripts/test
/// refuses to run without it unless XFULL_NO_ROOT=1 says to skip them.
fn as_root(test: &str) -> bool {
    if std::env::var_os("XFULL_NO_ROOT").is_some() {
        eprintln!("XFULL_NO_ROOT set: {test} not run");
        return false;
    }
    true
}

/// A tmpfs of `size`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&at).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs needs root (XFULL_NO_ROOT=1 skips this test)"
        );
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn no_points(e: &Env) {
    assert_eq!(e.points(), 0, "a failed backup left a point");
    let (code, r) = verify(e, &[]);
    assert_eq!(code, 0, "{r}");
}

#[test]
fn a_full_disk_fails_with_a_clear_error_and_no_point() {
    if !as_root("a_full_disk_fails_with_a_clear_error_and_no_point") {
        return;
    }
    let mut e = Env::bare();
    let fs = Tmpfs::mount(e.path("small"), "6m");
    e.repo = fs.0.join("repo");
    e.url = e.repo.display().to_string();
    e.x(&["init", "--segment-size", "4M"]).assert().success();
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(24 << 20)], 3, false).unwrap();
    let disk = format!("d={}", img.display());
    let (code, err) = fails(e.x(&["backup", "--vm", "v", "--disk", &disk]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no space at") && err.contains("stays free for gc"),
        "{err}"
    );
    assert!(
        err.contains(&e.url),
        "the error names the repository: {err}"
    );
    no_points(&e);
    // The backup stopped at the reserve kept for metadata, so gc, which
    // writes before it deletes, still runs (on a disk the backup filled,
    // it failed at its first write until 2026-12-05).
    e.x(&["gc"]).assert().success();
}

#[test]
fn a_permission_error_fails_with_a_clear_error_and_no_point() {
    if !as_root("a_permission_error_fails_with_a_clear_error_and_no_point") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(6 << 20)], 4, false).unwrap();
    // Another user can read the repository and the image, not write.
    let bin = e.path("xfull");
    std::fs::copy(xfull_integration::xfull_bin(), &bin).unwrap();
    for p in [e.dir.path(), &bin] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args([
            "backup",
            "--vm",
            "v",
            "--disk",
            &format!("d={}", img.display()),
        ])
        .env("XFULL_REPO", &e.url)
        .env("XFULL_PASSWORD_FILE", e.password_file())
        .env("XDG_STATE_HOME", e.state_dir_of(65534))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ermission denied"), "{err}");
    no_points(&e);
}

#[test]
fn a_source_that_shrinks_mid_backup_fails_with_a_clear_error_and_no_point() {
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(384 << 20)], 5, false).unwrap();
    let disk = format!("d={}", img.display());
    let child = e
        .std(&["backup", "--vm", "v", "--disk", &disk])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once it has stored some packs, the disk shrinks under it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while e.files("packs").len() < 2 {
        assert!(Instant::now() < deadline, "the backup stored nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("shrank") && err.contains("d.img"), "{err}");
    no_points(&e);
}
