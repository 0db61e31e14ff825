//! gc with its census in passes (the hidden `gc --mark-memory`: chunk
//! marks beyond it go to private files under `$TMPDIR` and the census
//! takes one range of ids at a time). On a copy of the same repository
//! it deletes and rewrites exactly what a gc in memory does, and leaves
//! no file behind; the files of a gc killed with SIGKILL are removed by
//! the next gc, never read, and the point restores bit-exact.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::gc_stop::{REWRITE, garbage};
use serde_json::Value;
use xfull_integration::env::{Env, sha256, stderr, walk};

/// `gc --json` with these arguments on the repository at `url`, its mark
/// files under `tmp`.
fn gc(e: &Env, url: &str, tmp: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["gc", "--json"];
    args.extend_from_slice(&REWRITE);
    args.extend_from_slice(extra);
    let out = e
        .x(&args)
        .env("XFULL_REPO", url)
        .env("TMPDIR", tmp)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The names of a repository's packs and nodes.
fn names(repo: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walk(repo)
        .into_iter()
        .map(|p| p.strip_prefix(repo).unwrap().to_path_buf())
        .filter(|p| p.starts_with("packs") || p.starts_with("nodes"))
        .collect();
    out.sort();
    out
}

fn restores(e: &Env, point: &str, sum: &str) {
    let to = e.path("restored.img");
    e.restore(point, "d", &to);
    assert_eq!(sha256(&to), sum);
    std::fs::remove_file(&to).unwrap();
    e.x(&["verify", "--read-data"]).assert().success();
}

fn mark_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("xfull-gc-marks-")
        })
        .collect()
}

#[test]
fn a_gc_in_passes_deletes_and_rewrites_what_one_in_memory_does() {
    let e = Env::init_with(&["--clock-margin", "1s"]);
    let img = e.path("d.img");
    let (point, sum) = garbage(&e, &img, 1, 32, 100);
    let copy = e.dir.path().join("copy");
    let copied = std::process::Command::new("cp")
        .args(["-a"])
        .arg(&e.repo)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(copied.success());
    let tmp = e.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();

    let one = gc(&e, &copy.display().to_string(), &tmp, &[]);
    // 8 chunk marks in memory at most: a pass per 8 marks.
    let many = gc(&e, &e.url, &tmp, &["--mark-memory", "64"]);
    assert_eq!(one["mark_passes"], 1, "{one}");
    assert!(many["mark_passes"].as_u64().unwrap() > 10, "{many}");
    assert!(
        many["mark_state_bytes"].as_u64().unwrap() < 1 << 20,
        "{many}"
    );
    for field in [
        "chunks_marked",
        "nodes_deleted",
        "packs_deleted",
        "packs_rewritten",
        "packs_written",
        "live_bytes_moved",
        "waste_bytes_left",
        "packs_orphaned",
        "index_objects_read",
        "index_objects_written",
        "index_objects_deleted",
        "bytes_freed",
    ] {
        assert_eq!(one[field], many[field], "{field}: {one} {many}");
    }
    // Not vacuous.
    assert!(many["packs_deleted"].as_u64().unwrap() > 0, "{many}");
    assert!(many["packs_rewritten"].as_u64().unwrap() > 0, "{many}");
    // The same packs (moved blobs are copied verbatim: a rewritten pack
    // has the same name both ways) and nodes.
    assert_eq!(names(&e.repo), names(&copy));
    assert!(mark_dirs(&tmp).is_empty(), "mark files left");
    restores(&e, &point, &sum);
}

#[test]
fn mark_files_of_a_killed_gc_are_removed_by_the_next_and_never_read() {
    let e = Env::init_with(&["--clock-margin", "1s", "--sweep-ttl", "6s"]);
    let img = e.path("d.img");
    let tmp = e.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    for attempt in 0..6 {
        let (point, sum) = garbage(&e, &img, 10 + attempt, 32, 100);
        let mut child = e
            .std(&["gc", "--mark-memory", "64"])
            .env("TMPDIR", &tmp)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed once its mark files exist (from marking until it ends).
        let killed = loop {
            if !mark_dirs(&tmp).is_empty() {
                child.kill().unwrap();
                child.wait().unwrap();
                break true;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if !killed || mark_dirs(&tmp).is_empty() {
            // It finished first (or removed them first): again.
            continue;
        }
        let left = mark_dirs(&tmp);
        // The next gc (after the killed one's marker went stale), in
        // passes too: the files left do not change what it finds.
        let mut done = None;
        for _ in 0..20 {
            let r = gc(&e, &e.url, &tmp, &["--mark-memory", "64"]);
            if r["skipped"].is_null() {
                done = Some(r);
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let r = done.expect("a gc completed");
        assert!(r["mark_passes"].as_u64().unwrap() > 1, "{r}");
        assert!(left.iter().all(|d| !d.exists()), "{left:?} left");
        assert!(mark_dirs(&tmp).is_empty());
        restores(&e, &point, &sum);
        // Nothing more to do: the killed gc's work was finished.
        let again = gc(&e, &e.url, &tmp, &["--mark-memory", "64"]);
        assert_eq!(again["packs_deleted"], 0, "{again}");
        assert_eq!(again["packs_rewritten"], 0, "{again}");
        return;
    }
    panic!("gc finished before its mark files were seen, 6 times");
}
