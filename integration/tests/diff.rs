//! `diff` between points whose disks changed size or set: what it lists
//! must be usable, and what it does not list must be said.

use std::os::unix::fs::FileExt;

use serde_json::json;
use xfull_integration::env::{Env, stderr};
use xfull_integration::{mixed_regions, write_image};

use crate::json_schema::assert_documented;

/// Runs `args` (which must succeed); returns its stdout.
fn stdout(e: &Env, args: &[&str]) -> String {
    let out = e.x(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// After a disk shrank, `diff A B --disk D --extents` listed the removed
/// tail, past the new image's end, and `backup --changed` refused the
/// file (exit 2): the extents are B's now, and the size change is said
/// beside them, in text and in JSON.
#[test]
fn a_shrunk_disks_extents_are_a_change_file_for_the_new_image() {
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, &mixed_regions(12, 7), 7, false).unwrap();
    let a = e.backup("vm", &[("d", &img)])["point"]
        .as_str()
        .unwrap()
        .to_string();
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let big = f.metadata().unwrap().len();
    let small = big - (3 << 20) - 777;
    f.set_len(small).unwrap();
    f.write_all_at(b"changed", 4096).unwrap();
    drop(f);
    e.backup("vm", &[("d", &img)]);
    let list = stdout(&e, &["diff", &a, "vm@latest", "--disk", "d", "--extents"]);
    let extents: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    let end = |x: &serde_json::Value| x["offset"].as_u64().unwrap() + x["length"].as_u64().unwrap();
    assert!(extents.iter().all(|x| end(x) <= small), "{list}");
    let file = e.path("changes.json");
    std::fs::write(&file, &list).unwrap();
    let disk = format!("d={}", img.display());
    let changed = format!("d={}", file.display());
    let b = e.json(&[
        "backup",
        "--vm",
        "vm",
        "--disk",
        &disk,
        "--changed",
        &changed,
    ]);
    let source = b["disks"][0]["source"].as_str().unwrap();
    assert!(source.starts_with("extents"), "{b}");

    let text = stdout(&e, &["diff", &a, "vm@latest"]);
    let said = format!("shrank from {big} to {small} bytes");
    assert!(text.contains(&said), "{text}");
    let doc = e.json(&["diff", &a, "vm@latest"]);
    assert_documented("diff", &doc);
    assert_eq!(
        doc["resized"],
        json!({"d": {"a": big, "b": small}}),
        "{doc}"
    );
}

/// Without `--disk`, a disk of one point only was left out without a
/// word: it is named, with its size, in text and in JSON.
#[test]
fn disks_of_one_point_only_are_named() {
    let e = Env::init();
    let (d, old, new) = (e.path("d.img"), e.path("old.img"), e.path("new.img"));
    write_image(&d, &mixed_regions(4, 1), 1, false).unwrap();
    write_image(&old, &mixed_regions(3, 2), 2, false).unwrap();
    write_image(&new, &mixed_regions(5, 3), 3, false).unwrap();
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    let a = e.backup("vm", &[("d", &d), ("old", &old)])["point"]
        .as_str()
        .unwrap()
        .to_string();
    e.backup("vm", &[("d", &d), ("new", &new)]);
    let text = stdout(&e, &["diff", &a, "vm@latest"]);
    assert!(text.contains("disk d: 0 B in 0 extents differ"), "{text}");
    let said = format!("disk old: only in A ({} bytes)", size(&old));
    assert!(text.contains(&said), "{text}");
    let said = format!("disk new: only in B ({} bytes)", size(&new));
    assert!(text.contains(&said), "{text}");
    let doc = e.json(&["diff", &a, "vm@latest"]);
    assert_documented("diff", &doc);
    assert_eq!(doc["disks"], json!({"d": []}), "{doc}");
    let only = |name: &str, p| json!([{"name": name, "size": size(p)}]);
    assert_eq!(doc["only_in_a"], only("old", &old), "{doc}");
    assert_eq!(doc["only_in_b"], only("new", &new), "{doc}");
}
