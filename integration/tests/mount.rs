//! `xfull mount`: points' disks as read-only image files over FUSE. An
//! ext4 image backed up, mounted through xfull, loop-mounted read-only:
//! a file inside reads as the original. SIGTERM unmounts and releases
//! the lease; a mountpoint that is not an empty directory is refused.

use std::process::Command;

use xfull_integration::env::{Env, sha256, stderr};

use crate::serve::{Served, leases_of};

fn mounted(path: &std::path::Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let p = path.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(p))
}

/// Unmounts the loop mount even when an assertion fails.
struct LoopMount(std::path::PathBuf);

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn an_ext4_image_mounted_through_xfull_shows_its_files() {
    let e = Env::init_with(&["--clock-margin", "0s"]);
    // A small file system with a few files.
    let tree = e.path("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    let data = xfull_core::testing::xorshift_bytes(300_000, 99);
    std::fs::write(tree.join("etc/data.bin"), &data).unwrap();
    std::fs::write(tree.join("hello.txt"), "hello from the guest\n").unwrap();
    let img = e.path("fs.img");
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-d",
            tree.to_str().unwrap(),
            img.to_str().unwrap(),
            "8M",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    e.backup("vm", &[("root", &img)]);
    let id = e.json(&["points"])["points"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let leases = leases_of(&e);
    let mnt = e.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = Served::spawn(&e, &["mount", "vm@latest", mnt.to_str().unwrap()], 1);
    assert_eq!(mount.uris[0], mnt.to_str().unwrap());
    assert!(mounted(&mnt));
    let latest = mnt.join("vm/latest/root.img");
    let by_id = mnt.join(format!("vm/{id}/root.img"));
    assert_eq!(
        sha256(&latest),
        sha256(&img),
        "the image reads as backed up"
    );
    assert_eq!(sha256(&by_id), sha256(&img));
    assert!(
        std::fs::OpenOptions::new()
            .write(true)
            .open(&latest)
            .is_err(),
        "read-only"
    );

    let inside = e.path("inside");
    std::fs::create_dir(&inside).unwrap();
    let out = Command::new("mount")
        .args([
            "-o",
            "loop,ro",
            latest.to_str().unwrap(),
            inside.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "mount -o loop,ro: {}", stderr(&out));
    let guard = LoopMount(inside.clone());
    assert_eq!(
        sha256(&inside.join("etc/data.bin")),
        sha256(&tree.join("etc/data.bin"))
    );
    assert_eq!(
        std::fs::read_to_string(inside.join("hello.txt")).unwrap(),
        "hello from the guest\n"
    );
    drop(guard);

    let (code, err) = mount.stop();
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("unmounted"), "{err}");
    assert!(!mounted(&mnt), "unmounted on SIGTERM");
    assert_eq!(leases_of(&e), leases, "lease released: {err}");
}

#[test]
fn a_mountpoint_that_is_not_an_empty_directory_is_refused() {
    let e = Env::init();
    let img = e.path("d.img");
    std::fs::write(&img, vec![7u8; 1 << 20]).unwrap();
    e.backup("vm", &[("d", &img)]);
    let leases = leases_of(&e);
    let full = e.path("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep"), "x").unwrap();
    for target in [full.clone(), img.clone(), e.path("absent")] {
        let out = e
            .x(&["mount", "vm@latest", target.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("empty directory"), "{}", stderr(&out));
        assert!(!mounted(&target));
    }
    assert_eq!(leases_of(&e), leases, "no lease left");
}
