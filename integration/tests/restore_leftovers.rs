//! A restore killed with SIGKILL (the OOM killer, a unit's stop timeout)
//! cannot remove its partial image: a hidden file as large as the disk.
//! The next restore into that directory removes it once it has been left
//! ten minutes (its lock gone with the killed process), and says so; one
//! a live restore holds is never touched (`core/src/restore/stale.rs`).
//! Only on a local file system: elsewhere nothing is removed, and this
//! test checks that instead.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use xfull_integration::env::{Env, stderr};
use xfull_integration::{Region, write_image};

use crate::restore_safety::restore_args;
use crate::signals::signal_when;

fn partials(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".xfull-") && n.ends_with(".partial"))
        .collect();
    v.sort();
    v
}

/// Sets `f`'s modification time twenty minutes back: past the quiet
/// time after which a restore judges an unlocked partial image abandoned.
fn age(f: &std::fs::File) {
    f.set_modified(SystemTime::now() - Duration::from_secs(20 * 60))
        .unwrap();
}

#[test]
fn a_killed_restores_partial_image_is_removed_by_the_next_restore() {
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(48 << 20)], 5, false).unwrap();
    let point = e.backup("vm", &[("d", &img)])["point"]
        .as_str()
        .unwrap()
        .to_string();
    let out = e.path("out");
    std::fs::create_dir(&out).unwrap();
    let first = out.join("first.img");

    // Killed as soon as its partial image is there.
    let child = e
        .std(&restore_args(&point, &first))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let killed = signal_when(child, "KILL", || !partials(&out).is_empty());
    assert!(
        killed.is_some() && !first.exists(),
        "the restore finished before it was killed; make the image larger"
    );
    let left = partials(&out);
    assert_eq!(left.len(), 1, "SIGKILL leaves the partial image: {left:?}");

    // Right after: it may be a restore that has not locked it yet, so it
    // stays.
    let second = out.join("second.img");
    e.restore(&point, "d", &second);
    assert_eq!(
        partials(&out),
        left,
        "a partial image modified lately is kept"
    );

    // Ten minutes on, the next restore removes it and says so.
    let stale = out.join(&left[0]);
    age(&std::fs::File::options().write(true).open(&stale).unwrap());
    let local = xfull_core::restore::removes_leftovers_in(&out);
    let third = out.join("third.img");
    let o = e
        .x(&[restore_args(&point, &third), vec!["--json"]].concat())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    if !local {
        eprintln!(
            "{}: not a local file system: nothing is removed",
            out.display()
        );
        assert_eq!(doc["abandoned_removed"], serde_json::json!([]), "{doc}");
        assert_eq!(partials(&out), left);
        return;
    }
    assert_eq!(
        doc["abandoned_removed"],
        serde_json::json!([{"path": stale.display().to_string(), "bytes": 48u64 << 20}]),
        "{doc}"
    );
    let said = stderr(&o);
    assert!(
        said.contains("removed") && said.contains(&left[0]) && said.contains("killed"),
        "{said}"
    );
    assert!(partials(&out).is_empty());
    assert_eq!(std::fs::read(&third).unwrap(), std::fs::read(&img).unwrap());

    // A restore that fails after removing one still says so (found by a
    // crash walk: only a successful restore reported it).
    let leftover = out.join(".xfull-00000000000000a1.partial");
    let f = std::fs::File::create(&leftover).unwrap();
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .unwrap();
    age(&f);
    for pack in e.files("packs") {
        std::fs::remove_file(pack).unwrap();
    }
    let fourth = out.join("fourth.img");
    let o = e.x(&restore_args(&point, &fourth)).output().unwrap();
    let said = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{said}");
    assert!(
        said.contains(".xfull-00000000000000a1.partial") && said.contains("killed"),
        "{said}"
    );
    assert!(!leftover.exists());
}
