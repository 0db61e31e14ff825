//! gc must not starve backups (docs/design.md, "Concurrency"), end to end
//! against the binary:
//!
//! - gc in a tight loop while backups run: every backup finishes within a
//!   bounded number of completed sweeps (counted, never timed);
//! - a gc killed while it deletes a batch delays the next backup by about
//!   the sweep TTL, and the backup says why and for how long at most;
//! - a gc stopped (SIGSTOP) mid-sweep and resumed once its marker went
//!   stale deletes nothing that a backup which ran meanwhile relies on.
//!
//! The last two stop the gc at a chosen point of its sweep by watching its
//! marker (`gc/sweeps/<seq>`) in a local repository: the gc is stopped
//! when the marker shows that point, and kept only if the marker still
//! shows it once the process is stopped (else it runs on and the test
//! tries again with fresh garbage).

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use xfull_core::gc::markers::{Phase, SweepState};
use xfull_core::keys;
use xfull_integration::env::{Env, stderr};
use xfull_integration::s3::S3Server;
use xfull_integration::{Region, mixed_regions, scribble, write_image};

/// Successive backups in the tight-loop test.
const BACKUPS: u64 = 5;
/// Sweeps that may complete while one backup runs. Sweep and backup are
/// processes competing for the same machine, so a busy machine slows both:
/// a backup of a few MiB takes the time of a few sweeps. One that waits
/// for sweeps that began after it (the starvation this guards against)
/// never finishes while the loop runs, and the loop stops at this bound.
const SWEEPS_PER_BACKUP: u64 = 60;
/// No backup is running (see `running_since`).
const IDLE: u64 = u64::MAX;

/// The sweep TTL of the repositories that stop or kill a gc: long enough
/// that a busy machine cannot make a live sweep look dead (it stops itself
/// after half of it), short enough for a test to wait it out.
const SWEEP_TTL: u64 = 10;
/// Tries at stopping a gc at a chosen point (each with fresh garbage).
const ATTEMPTS: usize = 40;

fn blake3_of(p: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(p).unwrap())
}

/// Runs a backup of `img` as VM `vm`; returns its output (success asserted).
fn backup(e: &Env, vm: &str, img: &Path) -> (Value, String) {
    let disk = format!("d={}", img.display());
    let out = e
        .std(&["backup", "--vm", vm, "--disk", &disk, "--json"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "backup of {vm}: {err}");
    (serde_json::from_slice(&out.stdout).unwrap(), err)
}

/// `verify --read-data` finds no damage, and each `(point, hash)` restores
/// to an image with that hash.
fn all_whole(e: &Env, points: &[(String, blake3::Hash)]) {
    // Restores first: a failing verify is then known to be about the
    // repository's structure or verify itself, not only the data.
    for (i, (point, hash)) in points.iter().enumerate() {
        let to = e.path(&format!("restored-{i}"));
        e.restore(point, "d", &to);
        assert_eq!(blake3_of(&to), *hash, "{point} restores to its image");
        std::fs::remove_file(&to).unwrap();
    }
    let out = e.x(&["verify", "--read-data"]).output().unwrap();
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

fn gc_in_a_tight_loop_never_starves_backups_on(e: &Env) {
    let img = e.path("d.img");
    write_image(&img, &mixed_regions(8, 11), 11, false).unwrap();
    // Garbage from the start, so that the first sweeps delete while the
    // first backup runs; a junk VM keeps making more.
    let junk = e.path("junk.img");
    for seed in [1, 2] {
        write_image(&junk, &[Region::Random(2 << 20)], seed, false).unwrap();
        backup(e, "junk", &junk);
    }
    e.json(&["prune", "--vm", "junk", "--keep-last", "1", "--no-gc"]);

    let completed = AtomicU64::new(0);
    let deleted = AtomicU64::new(0);
    // `completed` when the running backup began, or IDLE.
    let running_since = AtomicU64::new(IDLE);
    let starved = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let backups = std::thread::scope(|s| {
        let sweeper = s.spawn(|| {
            while !done.load(SeqCst) {
                let r = e.json(&["gc"]);
                assert!(r["held"].is_null(), "{r}");
                if r["skipped"].is_null() {
                    completed.fetch_add(1, SeqCst);
                }
                let gone =
                    r["packs_deleted"].as_u64().unwrap() + r["nodes_deleted"].as_u64().unwrap();
                deleted.fetch_add(gone, SeqCst);
                let since = running_since.load(SeqCst);
                if since != IDLE && completed.load(SeqCst) - since > SWEEPS_PER_BACKUP {
                    starved.store(true, SeqCst);
                    return;
                }
            }
        });
        let junk_maker = s.spawn(|| {
            let mut seed = 3;
            while !done.load(SeqCst) {
                write_image(&junk, &[Region::Random(2 << 20)], seed, false).unwrap();
                backup(e, "junk", &junk);
                e.json(&["prune", "--vm", "junk", "--keep-last", "1", "--no-gc"]);
                seed += 1;
            }
        });
        let backups = s.spawn(|| {
            let mut out = Vec::new();
            // At least BACKUPS; more (up to 3x) until the sweeps have
            // deleted something, so that deletes overlap backups even on a
            // loaded machine where the first sweeps are slow.
            for i in 0..3 * BACKUPS {
                if i >= BACKUPS && deleted.load(SeqCst) > 0 {
                    break;
                }
                scribble(&img, 8, 256 << 10, i);
                let hash = blake3_of(&img);
                let before = completed.load(SeqCst);
                running_since.store(before, SeqCst);
                let (v, err) = backup(e, "a", &img);
                running_since.store(IDLE, SeqCst);
                let during = completed.load(SeqCst) - before;
                let point = v["point"].as_str().unwrap().to_string();
                out.push((point, hash, during, err.matches("waiting for gc").count()));
            }
            out
        });
        // Join everything before judging, so that a failure cannot leave
        // the loops running.
        let backups = backups.join();
        done.store(true, SeqCst);
        let loops = [sweeper.join(), junk_maker.join()];
        for r in loops {
            if let Err(panic) = r {
                std::panic::resume_unwind(panic);
            }
        }
        backups.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });

    assert!(
        !starved.load(SeqCst),
        "a backup was still running after {SWEEPS_PER_BACKUP} sweeps completed: gc starves it"
    );
    let during: Vec<u64> = backups.iter().map(|b| b.2).collect();
    let waits: usize = backups.iter().map(|b| b.3).sum();
    eprintln!(
        "sweeps completed during each backup: {during:?}; {} in all, {} objects deleted, {waits} \
         waits announced",
        completed.load(SeqCst),
        deleted.load(SeqCst)
    );
    assert!(during.iter().all(|&n| n <= SWEEPS_PER_BACKUP), "{during:?}");
    assert!(
        deleted.load(SeqCst) > 0,
        "the loop deleted garbage meanwhile"
    );
    let points: Vec<_> = backups.into_iter().map(|b| (b.0, b.1)).collect();
    all_whole(e, &points);
}

#[test]
fn gc_in_a_tight_loop_never_starves_backups() {
    gc_in_a_tight_loop_never_starves_backups_on(&Env::init_with(&["--clock-margin", "0s"]));
}

#[test]
fn gc_in_a_tight_loop_never_starves_backups_on_s3() {
    let server = S3Server::start();
    let e = Env::init_s3_with(&server, "liveness", &["--clock-margin", "0s"]);
    gc_in_a_tight_loop_never_starves_backups_on(&e);
}

/// A local repository for stopping a gc: small chunks, so that a little
/// garbage makes delete batches of 1,000 objects; no clock margin, so that
/// garbage can go at once.
fn stoppable() -> Env<'static> {
    let ttl = format!("{SWEEP_TTL}s");
    Env::init_with(&[
        "--chunk-avg",
        "4K",
        "--clock-margin",
        "0s",
        "--lease-ttl",
        "60s",
        "--sweep-ttl",
        &ttl,
    ])
}

/// A VM `junk` whose newest point alone is kept: each round of garbage is
/// the previous point's objects (about 1,000 chunks and a node).
struct Junk {
    /// The newest point is of image `n`.
    n: u64,
}

impl Junk {
    fn start(e: &Env) -> Junk {
        let j = Junk { n: 0 };
        j.write(e);
        j
    }

    fn image(&self, e: &Env, n: u64) -> PathBuf {
        e.path(&format!("junk-{n}.img"))
    }

    fn write(&self, e: &Env) {
        let img = self.image(e, self.n);
        write_image(&img, &[Region::Random(4 << 20)], 100 + self.n, false).unwrap();
        backup(e, "junk", &img);
    }

    /// Backs up a new junk image and prunes the previous point (without
    /// gc); returns that point's image, whose objects are now garbage.
    fn next(&mut self, e: &Env) -> PathBuf {
        self.n += 1;
        self.write(e);
        e.json(&["prune", "--vm", "junk", "--keep-last", "1", "--no-gc"]);
        self.image(e, self.n - 1)
    }
}

/// The highest sweep number the repository has used.
fn last_seq(e: &Env) -> u64 {
    [keys::SWEEPS, keys::DONE]
        .iter()
        .flat_map(|p| std::fs::read_dir(e.repo.join(p)).into_iter().flatten())
        .filter_map(|d| d.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// The sweep's marker, if it is there and whole.
fn marker(e: &Env, seq: u64) -> Option<SweepState> {
    let key = keys::sweep(seq);
    let bytes = std::fs::read(e.repo.join(&key)).ok()?;
    SweepState::decode(&key, &bytes, crate::unlocked::open(e).codec()).ok()
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {}", child.id());
}

/// Waits until the process is stopped (state T in /proc), or has exited
/// (Z: it ended between the look at its marker and the signal).
fn wait_stopped(child: &Child) {
    let stat = format!("/proc/{}/stat", child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = std::fs::read_to_string(&stat).unwrap();
        let state = s.rsplit_once(") ").unwrap().1.chars().next().unwrap();
        if state == 'T' || state == 'Z' {
            return;
        }
        assert!(Instant::now() < deadline, "gc {} did not stop", child.id());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `xfull gc` and stops it once its marker shows a state `want`
/// accepts, as confirmed with the process stopped. `None` if the sweep
/// went past every such state before it could be stopped there (it ran to
/// the end; its success is checked).
fn stop_gc_at(e: &Env, want: &dyn Fn(&SweepState) -> bool) -> Option<(Child, SweepState)> {
    let seq = last_seq(e) + 1;
    let mut child = e
        .std(&["gc", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if marker(e, seq).is_some_and(|m| want(&m)) {
            signal(&child, "-STOP");
            wait_stopped(&child);
            // Ended before the signal: what follows checks its success.
            let ended = child.try_wait().unwrap().is_some();
            if !ended {
                if let Some(m) = marker(e, seq).filter(|m| want(m)) {
                    return Some((child, m));
                }
                signal(&child, "-CONT");
            }
        }
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "gc: {}", stderr(&out));
            return None;
        }
        assert!(Instant::now() < deadline, "gc {seq} did not end");
        // The states sought last milliseconds: poll without sleeping.
        std::thread::yield_now();
    }
}

/// Makes garbage and tries to stop a gc at `want`, until it works; returns
/// the stopped gc, its state and the image whose objects it is deleting.
fn stop_gc_with_garbage(
    e: &Env,
    junk: &mut Junk,
    what: &str,
    want: &dyn Fn(&SweepState) -> bool,
) -> (Child, SweepState, PathBuf) {
    for attempt in 1..=ATTEMPTS {
        let garbage = junk.next(e);
        if let Some((child, m)) = stop_gc_at(e, want) {
            eprintln!("gc {} stopped {what} at attempt {attempt}: {m:?}", m.seq);
            return (child, m, garbage);
        }
    }
    panic!("could not stop a gc {what} in {ATTEMPTS} attempts");
}

/// Waits until the marker of `seq` was last written more than the sweep
/// TTL ago (both times from this machine's clock: the repository is local).
fn wait_until_stale(e: &Env, seq: u64) {
    let path = e.repo.join(keys::sweep(seq));
    let written = std::fs::metadata(&path).unwrap().modified().unwrap();
    let stale = written + Duration::from_secs(SWEEP_TTL + 1);
    while let Ok(left) = stale.duration_since(SystemTime::now()) {
        std::thread::sleep(left + Duration::from_millis(10));
    }
}

fn point_of(v: &Value) -> String {
    v["point"].as_str().unwrap().to_string()
}

#[test]
fn a_killed_gc_delays_a_backup_by_about_the_sweep_ttl_with_a_notice() {
    let e = stoppable();
    let mut junk = Junk::start(&e);
    let deleting = |m: &SweepState| m.phase == Phase::Deleting;
    let (mut gc, m, garbage) = stop_gc_with_garbage(&e, &mut junk, "while deleting", &deleting);
    gc.kill().unwrap();
    gc.wait().unwrap();

    // The backup relies on the objects the killed batch was deleting: it
    // waits for the sweep to be judged dead, then checks and stores again
    // what the batch removed.
    let (v, err) = backup(&e, "v", &garbage);
    let notice = format!("waiting for gc sweep {}", m.seq);
    assert!(err.contains(&notice), "{err}");
    let at_most: u64 = err
        .split("at most ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the notice says how long at most: {err}"));
    assert!((1..=SWEEP_TTL).contains(&at_most), "{err}");
    eprintln!("{err}");

    let mut points = vec![(point_of(&v), blake3_of(&garbage))];
    all_whole(&e, &points);
    // The next gc does not wait for the dead one, and leaves every point
    // whole.
    let r = e.json(&["gc"]);
    assert!(r["skipped"].is_null() && r["held"].is_null(), "{r}");
    let newest = junk.image(&e, junk.n);
    let junk_point = e.json(&["points", "--vm", "junk"])["points"][0]["point"].clone();
    points.push((junk_point.as_str().unwrap().to_string(), blake3_of(&newest)));
    all_whole(&e, &points);
}

#[test]
fn a_stopped_gc_resumed_after_its_marker_went_stale_deletes_nothing_a_backup_relies_on() {
    let e = stoppable();
    let mut junk = Junk::start(&e);
    // Between its delete batches: it deleted the garbage nodes and is
    // collecting garbage chunks for its next batch.
    let between =
        |m: &SweepState| m.phase == Phase::Idle && m.nodes_deleted > 0 && m.packs_deleted == 0;
    let (gc, m, garbage) = stop_gc_with_garbage(&e, &mut junk, "between batches", &between);

    // Meanwhile a backup stores the garbage's image again: it relies on
    // the very chunks the stopped sweep is about to delete (it stores none
    // of its own), and does not wait (no batch is in flight).
    let (v, err) = backup(&e, "v", &garbage);
    assert_eq!(v["stats"]["new_chunks"], 0, "{v}");
    assert!(!err.contains("waiting for gc"), "{err}");

    // Resumed after its marker went stale, the sweep stops before deleting
    // anything more.
    wait_until_stale(&e, m.seq);
    signal(&gc, "-CONT");
    let out: Output = gc.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("without a refresh"), "{err}");
    let after = marker(&e, m.seq).unwrap();
    assert_eq!(after.phase, Phase::Stopped, "{after:?}");
    assert_eq!(after.packs_deleted, 0, "{after:?}");

    let mut points = vec![(point_of(&v), blake3_of(&garbage))];
    all_whole(&e, &points);
    // A sweep after it keeps the point whole too.
    let r = e.json(&["gc"]);
    assert!(r["skipped"].is_null() && r["held"].is_null(), "{r}");
    let newest = junk.image(&e, junk.n);
    let junk_point = e.json(&["points", "--vm", "junk"])["points"][0]["point"].clone();
    points.push((junk_point.as_str().unwrap().to_string(), blake3_of(&newest)));
    all_whole(&e, &points);
}
