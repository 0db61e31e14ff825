//! `xfull mount`: points' disks as read-only image files over FUSE. An
//! ext4 image backed up, mounted through xfull, loop-mounted read-only:
//! a file inside reads as the original. SIGTERM unmounts and releases
//! the lease; a mountpoint that is not an empty directory is refused.

use std::process::Command;

use xfull_integration::env::{Env, sha256, stderr};

use crate::serve::{Served, leases_of};

pub fn mounted(path: &std::path::Path) -> bool {
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

/// Unmounts lazily whatever is left at a mountpoint when a test ends,
/// so that a failing test leaves no dead mount behind.
pub struct Unmount(pub std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A one-disk point mounted at `mnt`, and the leases before it.
pub fn mounted_point(e: &Env) -> (Served, std::path::PathBuf, Unmount, Vec<std::path::PathBuf>) {
    let img = e.path("d.img");
    std::fs::write(&img, xfull_core::testing::xorshift_bytes(1 << 20, 5)).unwrap();
    e.backup("vm", &[("d", &img)]);
    let leases = leases_of(e);
    let mnt = e.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = Served::spawn(e, &["mount", "vm@latest", mnt.to_str().unwrap()], 1);
    assert!(mounted(&mnt));
    (mount, mnt.clone(), Unmount(mnt), leases)
}

/// Until 2026-12-05 a busy mount (a file inside open, a shell in it, a
/// loop device on an image) was unmounted with a plain umount(2) as
/// root: EBUSY, so SIGTERM ended xfull with "unmounting ...: Device or
/// resource busy" and left a dead mount ("Transport endpoint is not
/// connected") that only a manual umount removed. The design says it
/// unmounts lazily if busy.
#[test]
fn sigterm_unmounts_a_busy_mount_lazily() {
    let e = Env::init();
    let (mount, mnt, _guard, leases) = mounted_point(&e);
    let held = std::fs::File::open(mnt.join("vm/latest/d.img")).unwrap();
    let (code, err) = mount.stop();
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("unmounted"), "{err}");
    assert!(!mounted(&mnt), "unmounted though busy: {err}");
    assert_eq!(leases_of(&e), leases, "lease released: {err}");
    drop(held);
}

/// `xfull mount ... &` and the terminal closed: the shell sends SIGHUP.
/// Until 2026-12-05 it killed xfull outright, leaving a dead mount and
/// the lease (gc's cutoff held back until it expired).
#[test]
fn sighup_unmounts_and_releases_the_lease() {
    let e = Env::init();
    let (mount, mnt, _guard, leases) = mounted_point(&e);
    let (code, err) = mount.signal("HUP");
    assert_eq!(code, 130, "{err}");
    assert!(!mounted(&mnt), "unmounted: {err}");
    assert_eq!(leases_of(&e), leases, "lease released: {err}");
}

/// `umount MOUNTPOINT` from outside ends the mount: the lease is
/// released and nothing is left mounted. Until 2026-12-05 xfull then
/// unmounted the path again (fuser 0.18 takes an unmounted /dev/fuse for
/// mounted) and exited 1 with "unmounting ...: Invalid argument".
#[test]
fn an_unmount_from_outside_ends_the_mount() {
    let e = Env::init();
    let (mount, mnt, _guard, leases) = mounted_point(&e);
    let out = Command::new("umount").arg(&mnt).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, err) = mount.wait();
    assert!(!mounted(&mnt), "{err}");
    assert_eq!(leases_of(&e), leases, "lease released: {err}");
    assert!(err.contains("unmounted"), "{err}");
    assert_eq!(code, 130, "{err}");
}

/// Under `nohup` SIGHUP is ignored, and a mount run so is meant to
/// outlive its terminal: catching SIGHUP must not undo that (a handler
/// replaces the ignored disposition). The mount stays until SIGTERM.
#[test]
fn under_nohup_a_hangup_leaves_the_mount() {
    let e = Env::init();
    let img = e.path("d.img");
    let data = xfull_core::testing::xorshift_bytes(1 << 20, 5);
    std::fs::write(&img, &data).unwrap();
    e.backup("vm", &[("d", &img)]);
    let mnt = e.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    let mount = Served::spawn_with(
        &e,
        &["mount", "vm@latest", mnt.to_str().unwrap()],
        1,
        Some("nohup"),
    );
    mount.send("HUP");
    // Time for a wrong reaction (an unmount takes milliseconds) to show.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(mounted(&mnt), "a hang-up under nohup unmounted it");
    assert_eq!(std::fs::read(mnt.join("vm/latest/d.img")).unwrap(), data);
    let (code, err) = mount.stop();
    assert_eq!(code, 130, "{err}");
    assert!(!mounted(&mnt), "{err}");
}
