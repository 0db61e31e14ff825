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

use xfull_integration::Region;
use xfull_integration::env::{Env, stderr};
use xfull_integration::write_image;

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
    let args = [
        "restore",
        &point,
        "--disk",
        "d",
        "--to",
        first.to_str().unwrap(),
    ];

    // Killed as soon as its partial image is there.
    let mut child = e
        .std(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut left = Vec::new();
    for _ in 0..30_000 {
        left = partials(&out);
        if !left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(left.len(), 1, "no partial image appeared in 30 s");
    if first.exists() {
        // It finished before the kill landed: nothing was left to test.
        panic!("the restore finished before it was killed; make the image larger");
    }
    assert_eq!(partials(&out), left, "SIGKILL leaves the partial image");

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
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(20 * 60))
        .unwrap();
    let local = xfull_core::restore::removes_leftovers_in(&out);
    let third = out.join("third.img");
    let o = e
        .x(&[
            "restore",
            &point,
            "--disk",
            "d",
            "--to",
            third.to_str().unwrap(),
            "--json",
        ])
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
    f.set_modified(SystemTime::now() - Duration::from_secs(20 * 60))
        .unwrap();
    for pack in e.files("packs") {
        std::fs::remove_file(pack).unwrap();
    }
    let fourth = out.join("fourth.img");
    let o = e
        .x(&[
            "restore",
            &point,
            "--disk",
            "d",
            "--to",
            fourth.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let said = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{said}");
    assert!(
        said.contains(".xfull-00000000000000a1.partial") && said.contains("killed"),
        "{said}"
    );
    assert!(!leftover.exists());
}
