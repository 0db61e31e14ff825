//! `--base` naming the disk itself (review 105.1): the comparison finds
//! no change, every segment reuses the parent's node, and the backup
//! "succeeds" with the parent's bytes. It must be refused as a usage
//! error before anything is stored.

use std::path::Path;

use xfull_integration::env::{Env, contents, fails};
use xfull_integration::{mixed_regions, scribble, write_image};

/// Backs up `img` with `--base d=old` after a first point and a write
/// that the first point does not hold; the backup must fail with exit 2,
/// naming the disk and both paths, and leave the repository as it was.
fn refused(e: &Env, img: &Path, old: &Path) {
    let before = contents(&e.repo);
    let (code, err) = fails(e.x(&[
        "backup",
        "--vm",
        "vm",
        "--disk",
        &format!("d={}", img.display()),
        "--base",
        &format!("d={}", old.display()),
    ]));
    assert_eq!(code, 2, "{err}");
    for part in [
        "disk d",
        &img.display().to_string(),
        &old.display().to_string(),
    ] {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
    assert!(contents(&e.repo) == before, "the repository changed: {err}");
}

#[test]
fn a_base_that_is_the_disk_itself_is_refused() {
    let e = Env::init();
    let img = e.path("vda.raw");
    write_image(&img, &mixed_regions(12, 3), 3, false).unwrap();
    e.backup("vm", &[("d", &img)]);
    // The disk moves on after its point: a comparison with itself would
    // miss these writes.
    scribble(&img, 20, 64 << 10, 9);

    refused(&e, &img, &img);

    let link = e.path("link.raw");
    std::os::unix::fs::symlink(&img, &link).unwrap();
    refused(&e, &img, &link);

    let hard = e.path("hard.raw");
    std::fs::hard_link(&img, &hard).unwrap();
    refused(&e, &img, &hard);

    // The disk given through the link and the base by its own name: the
    // same file still.
    refused(&e, &link, &img);

    assert_eq!(e.points(), 1);
}
