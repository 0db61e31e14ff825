//! Which partial images a restore removes as abandoned, and which it
//! leaves: held by a live restore, modified lately, not exactly a
//! partial image's name, not a regular file.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::super::partial::Partial;
use super::super::partial::tests::names;
use super::*;

const NAME: &str = ".xfull-0123456789abcdef.partial";

/// A file of `len` bytes, mode 0600 as partial images are, last modified
/// a minute before it would count as abandoned.
fn old_file(path: &Path, len: u64) {
    let f = File::create(path).unwrap();
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .unwrap();
    f.set_len(len).unwrap();
    f.set_modified(SystemTime::now() - QUIET - Duration::from_secs(60))
        .unwrap();
}

/// A test directory, and whether restores remove leftovers there (a
/// local file system): where they do not, every test expects nothing
/// removed.
fn test_dir() -> (tempfile::TempDir, bool) {
    let dir = tempfile::tempdir().unwrap();
    let local = removes_leftovers_in(dir.path());
    if !local {
        eprintln!(
            "{}: not a local file system, so nothing is removed",
            dir.path().display()
        );
    }
    (dir, local)
}

#[test]
fn an_abandoned_partial_image_is_removed_and_reported() {
    let (dir, local) = test_dir();
    old_file(&dir.path().join(NAME), 5 << 20);
    let removed = remove_abandoned_next_to(&dir.path().join("vm.img"));
    if !local {
        assert!(removed.is_empty());
        return;
    }
    assert_eq!(
        removed,
        [Leftover {
            path: dir.path().join(NAME),
            bytes: 5 << 20
        }]
    );
    assert!(names(dir.path()).is_empty());
}

#[test]
fn a_partial_image_a_live_restore_holds_is_kept_however_old() {
    let (dir, local) = test_dir();
    let live = Partial::create(&dir.path().join("a.img"), 4).unwrap();
    live.file()
        .set_modified(SystemTime::now() - QUIET - Duration::from_secs(60))
        .unwrap();
    let before = names(dir.path());
    assert_eq!(before.len(), 1);
    assert!(remove_abandoned(dir.path()).is_empty());
    assert_eq!(names(dir.path()), before);
    // Once that restore is gone (its file closed: its lock dropped), the
    // same file is abandoned.
    let path = live.path();
    live.die();
    let removed = remove_abandoned(dir.path());
    if !local {
        assert!(removed.is_empty());
        return;
    }
    assert_eq!(removed.len(), 1, "{path:?}");
    assert_eq!(removed[0].path, path);
    assert!(names(dir.path()).is_empty());
}

#[test]
fn what_is_not_plainly_an_abandoned_partial_image_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Modified lately: a restore that created it may not have locked it
    // yet, or is a build that never locks.
    File::create(d.join(NAME)).unwrap().set_len(10).unwrap();
    // The name, but not a partial image's mode, or with a second link.
    let shared = d.join(".xfull-00000000000000cc.partial");
    old_file(&shared, 10);
    std::fs::hard_link(&shared, d.join("shared-link")).unwrap();
    let open = d.join(".xfull-00000000000000dd.partial");
    old_file(&open, 10);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Names near the pattern.
    for n in [
        ".xfull-0123456789ABCDEF.partial",
        ".xfull-0123456789abcde.partial",
        ".xfull-0123456789abcdef.partial.bak",
        "xfull-0123456789abcdef.partial",
        "vm.img",
    ] {
        old_file(&d.join(n), 10);
    }
    // A link with the name, to an old file; a directory with the name.
    old_file(&d.join("target"), 10);
    std::os::unix::fs::symlink(d.join("target"), d.join(".xfull-00000000000000aa.partial"))
        .unwrap();
    std::fs::create_dir(d.join(".xfull-00000000000000bb.partial")).unwrap();
    let before = names(d);
    assert!(remove_abandoned(d).is_empty());
    assert_eq!(names(d), before);
}

#[test]
fn the_name_pattern_is_the_one_partial_images_get() {
    let dir = tempfile::tempdir().unwrap();
    let p = Partial::create(&dir.path().join("x.img"), 1).unwrap();
    let path = p.path();
    let name = path.file_name().unwrap().as_encoded_bytes();
    assert!(is_partial_name(name), "{path:?}");
    assert!(!is_partial_name(b".xfull-.partial"));
}
