//! SIGINT and SIGTERM stop a running command cleanly: exit status 130, a
//! message saying what was cleaned, and nothing of the stopped run left
//! behind that a later run could trip over (a backup's lease, a restore's
//! partial image). A backup afterwards succeeds and `verify` finds no
//! damage.
//!
//! The signal is sent once the run is visibly under way (its lease, its
//! first chunk or its partial image exists), found by polling; nothing
//! here depends on how long anything takes. A run that finished before
//! the signal landed is repeated with fresh data.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use xfull_integration::env::{Env, stderr, walk};
use xfull_integration::{Region, write_image};

/// Attempts before giving up on catching a run in progress.
const ATTEMPTS: usize = 5;

/// Polls `under_way` until it holds, then sends `signal` (`INT`, `TERM`,
/// `KILL`)
/// to `child`; `None` if the child exited first.
pub(crate) fn signal_when(
    mut child: Child,
    signal: &str,
    under_way: impl Fn() -> bool,
) -> Option<Output> {
    loop {
        if under_way() {
            let pid = child.id().to_string();
            let sent = Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .status()
                .unwrap();
            assert!(sent.success(), "kill -{signal} {pid}");
            return Some(child.wait_with_output().unwrap());
        }
        if child.try_wait().unwrap().is_some() {
            let _ = child.wait_with_output();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn spawn(e: &Env, args: &[&str]) -> Child {
    e.std(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn files(dir: &Path) -> usize {
    walk(dir).len()
}

/// A backup of 256 MiB of random data (it must chunk, hash, compress and
/// store all of it), interrupted once its lease and a first chunk exist.
fn an_interrupted_backup_leaves_no_lease(signal: &str) {
    let e = Env::init();
    let img = e.path("d.img");
    let disk = format!("d={}", img.display());
    let args = ["backup", "--vm", "vm", "--disk", &disk];
    for attempt in 0..ATTEMPTS {
        // Fresh data each time: a repeated image would be deduplicated.
        write_image(&img, &[Region::Random(256 << 20)], attempt as u64, false).unwrap();
        let under_way = || files(&e.repo.join("leases")) > 0 && files(&e.repo.join("packs")) > 0;
        let Some(out) = signal_when(spawn(&e, &args), signal, under_way) else {
            continue;
        };
        if out.status.success() {
            continue;
        }
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(130), "SIG{signal}: {err}");
        assert!(
            err.contains("interrupted") && err.contains("lease was removed"),
            "SIG{signal}: stderr says what was cleaned: {err}"
        );
        assert_eq!(files(&e.repo.join("leases")), 0, "no lease left: {err}");
        assert_eq!(e.points(), attempt, "no point stored: {err}");
        // The repository is as usable as before.
        e.x(&args).assert().success();
        e.x(&["verify"]).assert().success();
        assert_eq!(e.points(), attempt + 1);
        return;
    }
    panic!("SIG{signal}: the backup finished before the signal, {ATTEMPTS} times");
}

#[test]
fn sigint_stops_a_backup_cleanly() {
    an_interrupted_backup_leaves_no_lease("INT");
}

#[test]
fn sigterm_stops_a_backup_cleanly() {
    an_interrupted_backup_leaves_no_lease("TERM");
}

/// Names in `dir` that look like a restore's partial image.
fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("xfull") && n.contains("partial"))
        .collect()
}

/// A restore of 256 MiB, interrupted once its partial image exists.
fn an_interrupted_restore_leaves_no_partial_image(signal: &str) {
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(256 << 20)], 9, false).unwrap();
    let point = e.backup("vm", &[("d", &img)])["point"]
        .as_str()
        .unwrap()
        .to_string();
    let out_dir = e.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let to = out_dir.join("d.img");
    let args = [
        "restore",
        &point,
        "--disk",
        "d",
        "--to",
        to.to_str().unwrap(),
    ];
    for _ in 0..ATTEMPTS {
        let under_way = || !partials(&out_dir).is_empty();
        let Some(out) = signal_when(spawn(&e, &args), signal, under_way) else {
            let _ = std::fs::remove_file(&to);
            continue;
        };
        if out.status.success() {
            let _ = std::fs::remove_file(&to);
            continue;
        }
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(130), "SIG{signal}: {err}");
        assert!(
            err.contains("interrupted") && err.contains("removed"),
            "SIG{signal}: stderr says what was cleaned: {err}"
        );
        assert!(
            partials(&out_dir).is_empty(),
            "partial image removed: {err}"
        );
        assert!(!to.exists(), "no target created: {err}");
        assert_eq!(files(&out_dir), 0, "nothing left: {err}");
        // Nothing in the repository was touched: a backup and verify pass.
        e.x(&[
            "backup",
            "--vm",
            "vm",
            "--disk",
            &format!("d={}", img.display()),
        ])
        .assert()
        .success();
        e.x(&["verify"]).assert().success();
        return;
    }
    panic!("SIG{signal}: the restore finished before the signal, {ATTEMPTS} times");
}

#[test]
fn sigint_stops_a_restore_cleanly() {
    an_interrupted_restore_leaves_no_partial_image("INT");
}

#[test]
fn sigterm_stops_a_restore_cleanly() {
    an_interrupted_restore_leaves_no_partial_image("TERM");
}

/// An interrupt acknowledged ("stopping cleanly") by a command that is
/// past its last point of stopping: it finishes, exit 0, and says its
/// work was done rather than leaving the acknowledgement unanswered (a
/// crash walk saw gc and prune do that). The interrupt comes from the
/// password command, so it always lands while the repository is opened.
#[test]
fn an_interrupt_after_the_last_stopping_point_says_the_work_was_done() {
    let e = Env::init();
    let pw = std::fs::read_to_string(e.password_file()).unwrap();
    let ask = format!(
        "kill -INT $PPID; sleep 0.3; printf '%s' '{}'",
        pw.trim_end()
    );
    let o = e
        .std(&["--password-command", &ask, "points"])
        .env_remove("XFULL_PASSWORD_FILE")
        .output()
        .unwrap();
    let said = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{said}");
    assert!(said.contains("interrupted; stopping cleanly"), "{said}");
    assert!(said.contains("finished its work"), "{said}");
}
