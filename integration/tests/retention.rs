//! Retention and garbage collection end to end: prune plans and removes,
//! gc frees what no point uses, leftovers of a killed backup go once its
//! lease is dead, and concurrent backups survive prune+gc loops.
//!
//! Repositories here use a 1 s clock margin, so that garbage may go a
//! moment after it was made, and lease and sweep TTLs far longer than a
//! busy machine can stall a process: a sweep stops itself when its marker
//! went unrefreshed for half the sweep TTL, and a lease that dies while
//! its backup runs changes what the test observes. (With a 3 s lease TTL,
//! sweeps on a loaded 2-core machine stopped with "marker went 1 s without
//! refresh".) Only the killed-backup test needs a lease to die, and it
//! waits for that by asking gc, not by the clock.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use xfull_integration::env::{Env, Scenario, fails, sha256, walk};
use xfull_integration::s3::S3Server;
use xfull_integration::{Region, mixed_regions, scribble, write_image};

/// The default TTLs (a lease lives 10 min, a sweep 1 min without refresh).
const MARGIN: &[&str] = &["--clock-margin", "1s"];
/// A lease TTL a killed backup's lease outlives within a test. Half of it
/// is the longest a sweep may go silent: no scheduler stalls that long.
const LEASE_TTL: Duration = Duration::from_secs(30);
const DYING_LEASES: &[&str] = &["--lease-ttl", "30s", "--clock-margin", "1s"];

fn backup_at(e: &Env, vm: &str, img: &Path, time: &str) -> String {
    let disk = format!("d={}", img.display());
    let v = e.json(&["backup", "--vm", vm, "--disk", &disk, "--time", time]);
    v["point"].as_str().unwrap().to_string()
}

fn stats(e: &Env) -> Value {
    e.json(&["stats"])
}

/// Packs, index objects, nodes and points (files, on a local repository).
fn content_files(e: &Env) -> Option<Vec<String>> {
    e.s3.is_none().then(|| {
        let mut v: Vec<String> = ["packs", "index", "nodes", "points"]
            .iter()
            .flat_map(|p| walk(&e.repo.join(p)))
            .map(|p| p.display().to_string())
            .collect();
        v.sort();
        v
    })
}

fn prune_and_gc_keep_what_the_policy_says_on(e: &Env) {
    let img = e.path("d.img");
    write_image(&img, &mixed_regions(24, 7), 7, false).unwrap();
    let times = [
        "2026-03-01T10:00:00Z",
        "2026-03-01T11:00:00Z",
        "2026-03-02T10:00:00Z",
        "2026-03-03T10:00:00Z",
        "2026-03-04T10:00:00Z",
    ];
    let mut sums = BTreeMap::new();
    for (i, t) in times.iter().enumerate() {
        // Each point rewrites the same 1.5 MiB with new random bytes: what
        // a point adds is all superseded by the next one, so the packs of
        // the pruned points hold nothing a kept point needs, whatever the
        // chunk size (random scribbles left that to chance: at 64 KiB
        // chunks no pack was all dead).
        let mut bytes = vec![0u8; 3 << 19];
        rand::RngCore::fill_bytes(&mut StdRng::seed_from_u64(i as u64), &mut bytes);
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &bytes, 4 << 20).unwrap();
        drop(f);
        sums.insert(backup_at(e, "v", &img, t), sha256(&img));
    }

    // An empty policy is refused: it would remove everything.
    let (code, err) = fails(e.x(&["prune"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("refusing to remove every point"), "{err}");
    let (code, err) = fails(e.x(&["prune", "--keep-within", "3x"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown unit"), "{err}");

    // A dry run plans and changes nothing.
    let before = content_files(e);
    let plan = e.json(&[
        "prune",
        "--keep-daily",
        "2",
        "--keep-last",
        "1",
        "--dry-run",
    ]);
    assert_eq!(plan["dry_run"], true);
    let decisions = plan["plan"][0]["decisions"].as_array().unwrap();
    let keep: Vec<bool> = decisions
        .iter()
        .map(|d| d["keep"].as_bool().unwrap())
        .collect();
    assert_eq!(keep, [true, true, false, false, false]);
    assert_eq!(decisions[0]["reasons"][0], "last 1");
    assert_eq!(e.points(), 5);
    assert_eq!(content_files(e), before);

    // Objects must be older than the clock margin to be deleted.
    std::thread::sleep(Duration::from_secs(2));
    let out = e.json(&["prune", "--keep-daily", "2", "--keep-last", "1"]);
    assert_eq!(out["removed"], 3);
    assert_eq!(out["trashed"], 0);
    let gc = &out["gc"];
    assert!(gc["packs_deleted"].as_u64().unwrap() > 0, "{gc}");
    assert!(gc["bytes_freed"].as_u64().unwrap() > 0, "{gc}");
    assert_eq!(e.points(), 2);

    // What is left restores bit-exact and verifies, data included.
    let left = e.json(&["points"])["points"].clone();
    for p in left.as_array().unwrap() {
        let point = p["point"].as_str().unwrap();
        let to = e.path(&format!("r-{}", p["id"].as_str().unwrap()));
        e.restore(point, "d", &to);
        assert_eq!(sha256(&to), sums[point], "{point}");
    }
    e.x(&["verify", "--read-data"]).assert().success();

    let s = stats(e);
    assert_eq!(s["points"], 2);
    assert_eq!(s["vms"]["v"]["points"], 2);
    assert!(s["chunks"].as_u64().unwrap() > 0);
    assert!(s["dedup_ratio"].as_f64().unwrap() > 1.0, "{s}");

    // A second sweep finds nothing more; a dry run reports without acting.
    let again = e.json(&["gc"]);
    assert_eq!(again["packs_deleted"], 0);
    assert_eq!(again["nodes_deleted"], 0);
    let dry = e.json(&["gc", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["packs_deleted"], 0);
}

#[test]
fn prune_and_gc_keep_what_the_policy_says() {
    prune_and_gc_keep_what_the_policy_says_on(&Env::init_with(MARGIN));
}

fn gc_removes_what_a_killed_backup_left_and_nothing_else_on(e: &Env) {
    let small = e.path("small.img");
    write_image(&small, &mixed_regions(12, 1), 1, false).unwrap();
    let first = backup_at(e, "v", &small, "2026-03-01T10:00:00Z");
    let before = stats(e);
    let files = content_files(e);

    // A large backup, killed once it has stored some chunks.
    let big = e.path("big.img");
    write_image(&big, &[Region::Random(768 << 20)], 2, false).unwrap();
    let disk = format!("d={}", big.display());
    let mut child = e
        .std(&["backup", "--vm", "w", "--disk", &disk])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = stats(e);
        // Packs are stored as the backup goes (its index object only at
        // its end).
        if s["packs"].as_u64() > before["packs"].as_u64().map(|c| c + 1) {
            break;
        }
        assert!(Instant::now() < deadline, "the backup stored nothing");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = stats(e);
    // (`stats` counts every lease object, the ended lease of the first
    // backup too until a sweep removes it.)
    let leases = before["leases"].as_u64().unwrap();
    assert_eq!(
        killed["leases"],
        leases + 1,
        "the killed backup's lease stays"
    );
    assert_eq!(killed["points"], 1, "no point from the killed backup");

    // While its lease lives, its objects stay.
    let gc = e.json(&["gc"]);
    assert_eq!(gc["packs_deleted"], 0, "{gc}");
    assert_eq!(gc["live_leases"], 1, "{gc}");

    // Once it is dead (by the store's clock, as gc judges it), they go.
    std::thread::sleep(LEASE_TTL);
    let deadline = Instant::now() + 4 * LEASE_TTL;
    let gc = loop {
        let gc = e.json(&["gc"]);
        if gc["live_leases"] == 0 {
            break gc;
        }
        assert_eq!(gc["packs_deleted"], 0, "the lease still lives: {gc}");
        assert!(Instant::now() < deadline, "the lease never died: {gc}");
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(gc["packs_deleted"].as_u64().unwrap() > 0, "{gc}");
    assert_eq!(gc["dead_leases_removed"], 1, "{gc}");
    let after = stats(e);
    for k in [
        "chunks",
        "packs",
        "nodes",
        "points",
        "chunk_bytes",
        "node_bytes",
    ] {
        assert_eq!(after[k], before[k], "{k}");
    }
    assert_eq!(after["leases"], 0);
    assert_eq!(content_files(e), files);
    let to = e.path("first.out");
    e.restore(&first, "d", &to);
    assert_eq!(sha256(&to), sha256(&small));
    e.x(&["verify", "--read-data"]).assert().success();
    e.json(&[
        "backup",
        "--vm",
        "w",
        "--disk",
        &format!("d={}", small.display()),
    ]);
}

#[test]
fn gc_removes_what_a_killed_backup_left_and_nothing_else() {
    gc_removes_what_a_killed_backup_left_and_nothing_else_on(&Env::init_with(DYING_LEASES));
}

/// Backup threads: (VM, image) pairs; two threads share VM `a`.
fn concurrent_backups_while_prune_and_gc_run_on(e: &Env) {
    let base = e.path("base.img");
    write_image(&base, &mixed_regions(16, 3), 3, false).unwrap();
    let writers = [("a", 0u64), ("a", 1), ("b", 2), ("c", 3)];
    let sums: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|s| {
        let mut backups = Vec::new();
        for (vm, t) in writers {
            let img = e.path(&format!("w{t}.img"));
            std::fs::copy(&base, &img).unwrap();
            let sums = sums.clone();
            backups.push(s.spawn(move || {
                for k in 0..4 {
                    scribble(&img, 4, 256 << 10, t * 100 + k);
                    let disk = format!("d={}", img.display());
                    let v = e.json(&["backup", "--vm", vm, "--disk", &disk]);
                    let point = v["point"].as_str().unwrap().to_string();
                    sums.lock().unwrap().insert(point, sha256(&img));
                }
            }));
        }
        let pruner = {
            let done = done.clone();
            s.spawn(move || {
                let mut rounds = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) || rounds < 2 {
                    e.json(&["prune", "--keep-last", "2"]);
                    rounds += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                rounds
            })
        };
        let sweeper = {
            let done = done.clone();
            s.spawn(move || {
                let mut rounds = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) || rounds < 2 {
                    e.json(&["gc"]);
                    rounds += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                rounds
            })
        };
        // Join everything before judging, so a failed backup cannot leave
        // the loops running forever.
        let results: Vec<_> = backups.into_iter().map(|b| b.join()).collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let (p, g) = (pruner.join(), sweeper.join());
        for r in results {
            if let Err(panic) = r {
                std::panic::resume_unwind(panic);
            }
        }
        let (p, g) = (p.unwrap(), g.unwrap());
        eprintln!("{p} prune rounds and {g} gc rounds ran during the backups");
    });

    // Every point left restores bit-exact, and the repository verifies.
    let sums = sums.lock().unwrap();
    let left = e.json(&["points"])["points"].clone();
    let left = left.as_array().unwrap();
    assert!(left.len() >= 6, "prune keeps 2 per VM: {}", left.len());
    for p in left {
        let point = p["point"].as_str().unwrap();
        let to = e.path(&format!(
            "r-{}-{}",
            p["vm"].as_str().unwrap(),
            p["id"].as_str().unwrap()
        ));
        e.restore(point, "d", &to);
        assert_eq!(sha256(&to), sums[point], "{point}");
        std::fs::remove_file(&to).unwrap();
    }
    e.x(&["verify", "--read-data"]).assert().success();
    // A final sweep with nothing running leaves a clean repository. Leases
    // of finished backups (which `stats` counts) go once they are older
    // than the clock margin when the sweep starts.
    std::thread::sleep(Duration::from_secs(2));
    let gc = e.json(&["gc"]);
    assert!(gc["skipped"].is_null(), "nothing else runs: {gc}");
    e.x(&["verify"]).assert().success();
    assert_eq!(stats(e)["leases"], 0);
}

#[test]
fn concurrent_backups_while_prune_and_gc_run() {
    concurrent_backups_while_prune_and_gc_run_on(&Env::init_with(MARGIN));
}

#[test]
fn retention_scenarios_on_s3() {
    let server = S3Server::start();
    let scenarios: [(&str, Scenario, &[&str]); 3] = [
        (
            "prune-and-gc",
            prune_and_gc_keep_what_the_policy_says_on,
            MARGIN,
        ),
        (
            "killed-backup",
            gc_removes_what_a_killed_backup_left_and_nothing_else_on,
            DYING_LEASES,
        ),
        (
            "concurrent",
            concurrent_backups_while_prune_and_gc_run_on,
            MARGIN,
        ),
    ];
    for (name, run, options) in scenarios {
        eprintln!("S3 scenario {name}");
        run(&Env::init_s3_with(&server, name, options));
    }
}

/// A backup that leaves out a disk its parent had says so, and prune keeps
/// the newest point holding that disk unless told to forget disks. (Once,
/// `--keep-last 1` removed the only point holding `sys` without a word.)
#[test]
fn a_dropped_disk_is_warned_about_and_prune_keeps_its_last_point() {
    let e = Env::init();
    let sys = e.path("sys.img");
    let other = e.path("other.img");
    write_image(&sys, &mixed_regions(4, 1), 1, false).unwrap();
    write_image(&other, &mixed_regions(4, 2), 2, false).unwrap();
    let first = e.backup("db1", &[("sys", &sys), ("other", &other)]);
    let out = e
        .x(&[
            "backup",
            "--vm",
            "db1",
            "--disk",
            &format!("other={}", other.display()),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("disk sys") && err.contains("not in this backup"),
        "{err}"
    );
    let second: Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = &second["warnings"][0];
    assert_eq!(w["kind"], "disk_dropped", "{second}");
    assert_eq!((&w["disk"], &w["point"]), (&"sys".into(), &first["point"]));

    let plan = e.json(&["prune", "--keep-last", "1"]);
    assert_eq!(plan["removed"], 0, "{plan}");
    let reasons = &plan["plan"][0]["decisions"][1]["reasons"];
    assert_eq!(reasons[0], "newest with disk sys", "{plan}");
    assert_eq!(e.points(), 2);
    // Only when told: sys goes.
    let plan = e.json(&["prune", "--keep-last", "1", "--forget-disks"]);
    assert_eq!(plan["removed"], 1, "{plan}");
    assert_eq!(e.points(), 1);
}

/// `stats` gives the bytes of packs and of index objects apart, and
/// together as `chunk_bytes`: its text called both the packs' until stop 52.
#[test]
fn stats_gives_pack_and_index_bytes_apart() {
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, &mixed_regions(8, 3), 3, false).unwrap();
    backup_at(&e, "v", &img, "2026-03-01T10:00:00Z");
    let on_disk = |dir: &str| -> u64 {
        walk(&e.repo.join(dir))
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum()
    };
    let s = stats(&e);
    let (packs, index) = (on_disk("packs"), on_disk("index"));
    assert!(packs > 0 && index > 0, "{s}");
    assert_eq!(s["pack_bytes"], packs, "{s}");
    assert_eq!(s["index_bytes"], index, "{s}");
    assert_eq!(s["chunk_bytes"], packs + index, "{s}");
    let o = e.x(&["stats"]).output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let objects = format!("{} index objects: ", s["index_objects"]);
    assert!(text.contains(&objects), "{text}");
}
