//! Damage end to end: backups store again what is missing or known
//! damaged, `repair` removes damaged objects and manifests and stores data
//! again from disk images, `forget` removes points whatever state their
//! manifest is in. Local repositories: these tests damage files.

use std::path::{Path, PathBuf};

use crate::pack_files::{PackedChunk, damage, packed_chunks};
use serde_json::Value;
use xfull_integration::env::{Env, fails, sha256};
use xfull_integration::{mixed_regions, write_image};

fn image(e: &Env, name: &str, seed: u64) -> PathBuf {
    let img = e.path(name);
    write_image(&img, &mixed_regions(24, seed), seed, false).unwrap();
    img
}

/// The `n`th stored chunk (the images hold dozens).
fn chunk(e: &Env, n: usize) -> PackedChunk {
    let all = packed_chunks(e);
    assert!(all.len() > n, "only {} chunks", all.len());
    all[n].clone()
}

fn backup(e: &Env, vm: &str, img: &Path, extra: &[&str]) -> Value {
    let disk = format!("d={}", img.display());
    let mut args = vec!["backup", "--vm", vm, "--disk", &disk];
    args.extend_from_slice(extra);
    e.json(&args)
}

/// (exit code, JSON on stdout) of a command that takes `--json`.
pub(crate) fn run_json(e: &Env, args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let out = e.x(&all).output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap(), v)
}

fn verify_data(e: &Env) -> i32 {
    run_json(e, &["verify", "--read-data"]).0
}

fn restores_as(e: &Env, point: &str, img: &Path) {
    let out = e.path("restored.img");
    let _ = std::fs::remove_file(&out);
    e.restore(point, "d", &out);
    assert_eq!(sha256(&out), sha256(img), "{point} restores to its image");
}

#[test]
fn a_full_scan_stores_again_a_chunk_that_went_missing() {
    let e = Env::init();
    let img = image(&e, "d.img", 3);
    backup(&e, "v", &img, &[]);
    // A pack goes: its chunks are missing.
    let pack = chunk(&e, 3).file;
    std::fs::remove_file(&pack).unwrap();
    assert_eq!(verify_data(&e), 3);
    let r = backup(&e, "v", &img, &["--full-scan"]);
    assert!(r["stats"]["objects_restored"].as_u64().unwrap() >= 1, "{r}");
    assert!(
        !e.files("packs").is_empty(),
        "the missing chunks were stored again"
    );
    assert_eq!(verify_data(&e), 0, "every point is whole again");
    restores_as(&e, "v@latest", &img);
}

/// A full scan of another VM (no parent) holding the same data: the index
/// still names the chunks of packs that went missing (as an index object
/// younger than a sweep's cutoff names the packs it deleted). The backup
/// HEADs a pack before it relies on it, so it stores those chunks as it
/// goes: no segment is read twice (before, it found them missing only
/// when it checked its dependencies, and read those segments again).
#[test]
fn a_full_scan_of_another_vm_does_not_rely_on_a_lost_pack_the_index_names() {
    let e = Env::init();
    let img = image(&e, "d.img", 4);
    backup(&e, "v", &img, &[]);
    for p in e.files("packs") {
        std::fs::remove_file(&p).unwrap();
    }
    let r = backup(&e, "w", &img, &["--full-scan"]);
    assert_eq!(r["warnings"], serde_json::json!([]), "{r}");
    assert!(r["stats"]["new_chunks"].as_u64().unwrap() > 0, "{r}");
    restores_as(&e, "w@latest", &img);
}

/// As above, with a segment that holds both chunks of the lost packs and
/// chunks still stored (in another VM's pack): only the lost chunks are
/// stored again, none twice. (A segment read again when its packs go
/// during the backup: `backup::repair::tests`.)
#[test]
fn a_segment_of_lost_and_kept_chunks_stores_only_the_lost_ones() {
    let e = Env::init();
    let random = |name: &str, seed| {
        let img = e.path(name);
        write_image(
            &img,
            &[xfull_integration::Region::Random(8 << 20)],
            seed,
            false,
        )
        .unwrap();
        img
    };
    let lost = random("lost.img", 4);
    backup(&e, "v", &lost, &[]);
    let lost_packs = e.files("packs");
    let kept = random("kept.img", 5);
    backup(&e, "u", &kept, &[]);
    for p in &lost_packs {
        std::fs::remove_file(p).unwrap();
    }
    // 6 MiB of the lost image, then the kept one: the second 4 MiB
    // segment holds chunks of both.
    let both = e.path("both.img");
    let mut bytes = std::fs::read(&lost).unwrap();
    bytes.truncate(6 << 20);
    bytes.extend(std::fs::read(&kept).unwrap());
    std::fs::write(&both, bytes).unwrap();
    let r = backup(&e, "w", &both, &["--full-scan"]);
    assert_eq!(r["warnings"], serde_json::json!([]), "{r}");
    let mut ids: Vec<String> = packed_chunks(&e).into_iter().map(|c| c.id).collect();
    let stored = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(stored, ids.len(), "a chunk stored twice: {r}");
    restores_as(&e, "w@latest", &both);
    restores_as(&e, "u@latest", &kept);
}

/// Segments larger than the backup's read window (32 MiB here): the
/// parent's node is fetched before the windows are read. When it is gone
/// too, a full scan of the unchanged image still stores the lost chunks
/// again instead of taking the index's word for them.
#[test]
fn a_full_scan_of_large_segments_with_a_lost_parent_node_stores_lost_chunks_again() {
    let e = Env::init_segments("32M", &[]);
    let img = e.path("d.img");
    let regions = [
        xfull_integration::Region::Random(20 << 20),
        xfull_integration::Region::Text(20 << 20),
    ];
    write_image(&img, &regions, 8, false).unwrap();
    backup(&e, "v", &img, &[]);
    for p in e.files("packs").into_iter().chain(e.files("nodes")) {
        std::fs::remove_file(&p).unwrap();
    }
    let r = backup(&e, "v", &img, &["--full-scan"]);
    // Stored again by the scan itself, not found missing at commit and
    // read again.
    let kinds: Vec<&str> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["objects_stored_again"], "{r}");
    assert!(r["stats"]["new_chunks"].as_u64().unwrap() >= 1, "{r}");
    restores_as(&e, "v@latest", &img);
}

#[test]
fn a_chunk_verify_found_damaged_is_replaced_by_the_next_backup() {
    let e = Env::init();
    let img = image(&e, "d.img", 4);
    let first = backup(&e, "a", &img, &[])["point"]
        .as_str()
        .unwrap()
        .to_string();
    damage(&chunk(&e, 5));
    // Before damage records, a backup of the same data (even of another
    // VM) was told "already exists" and referenced the damaged copy.
    assert_eq!(verify_data(&e), 3);
    assert_eq!(e.files("damage").len(), 1, "verify recorded the damage");
    backup(&e, "b", &img, &[]);
    assert_eq!(verify_data(&e), 0, "the damaged chunk was stored again");
    assert!(e.files("damage").is_empty(), "the record was cleared");
    restores_as(&e, &first, &img);
    restores_as(&e, "b@latest", &img);
}

#[test]
fn an_incremental_backup_reads_again_segments_with_recorded_damage() {
    let e = Env::init();
    let img = image(&e, "d.img", 13);
    let first = backup(&e, "v", &img, &[])["point"]
        .as_str()
        .unwrap()
        .to_string();
    damage(&chunk(&e, 4));
    assert_eq!(verify_data(&e), 3);
    // A change file naming nothing: every segment would be reused unread,
    // the damaged chunk with it.
    let changes = e.path("none.json");
    std::fs::write(&changes, "[]").unwrap();
    let changed = format!("d={}", changes.display());
    let r = backup(&e, "v", &img, &["--changed", &changed]);
    let source = r["disks"][0]["source"].as_str().unwrap_or_default();
    assert!(source.contains("read in full"), "{r}");
    assert_eq!(verify_data(&e), 0, "the damaged chunk was stored over");
    restores_as(&e, &first, &img);
}

#[test]
fn repair_removes_damage_then_stores_it_again_from_an_image() {
    let e = Env::init();
    let img = image(&e, "d.img", 5);
    let point = backup(&e, "v", &img, &[])["point"]
        .as_str()
        .unwrap()
        .to_string();
    damage(&chunk(&e, 2));
    let packs = e.files("packs");

    // A dry run finds it and changes nothing.
    let (code, r) = run_json(&e, &["repair", "--read-data", "--dry-run"]);
    assert_eq!(code, 3, "{r}");
    assert_eq!(r["objects_damaged"], 1, "{r}");
    assert!(e.files("damage").is_empty());

    // Without an image, the damaged chunk stays recorded in its pack (the
    // pack holds other chunks) and the point stays damaged, named.
    let (code, r) = run_json(&e, &["repair", "--read-data"]);
    assert_eq!(code, 3, "{r}");
    assert_eq!(r["objects_removed"], 0, "{r}");
    assert_eq!(r["still_damaged"][0]["point"], point.as_str(), "{r}");
    assert_eq!(e.files("packs"), packs);
    assert_eq!(e.files("damage").len(), 1);

    // From the image, the chunk is stored again (a new pack) and the
    // point is whole.
    let disk = format!("d={}", img.display());
    let (code, r) = run_json(&e, &["repair", "--vm", "v", "--disk", &disk]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["chunks_restored"], 1, "{r}");
    assert_eq!(e.files("packs").len(), packs.len() + 1);
    assert!(e.files("damage").is_empty());
    assert_eq!(verify_data(&e), 0);
    restores_as(&e, &point, &img);
    // Nothing left to do.
    let (code, r) = run_json(&e, &["repair", "--read-data"]);
    assert_eq!((code, &r["objects_damaged"]), (0, &Value::from(0)), "{r}");
}

#[test]
fn repair_acts_on_damage_a_restore_recorded() {
    let e = Env::init();
    let img = image(&e, "d.img", 11);
    backup(&e, "v", &img, &[]);
    damage(&chunk(&e, 1));
    let out = e.path("out.img");
    let (code, err) = fails(e.x(&[
        "restore",
        "v@latest",
        "--disk",
        "d",
        "--to",
        out.to_str().unwrap(),
    ]));
    assert_eq!(code, 3, "{err}");
    assert_eq!(e.files("damage").len(), 1, "restore recorded the damage");
    // A dry run checks the recorded object and names the point it damages.
    let (code, r) = run_json(&e, &["repair", "--dry-run"]);
    assert_eq!(code, 3, "{r}");
    assert_eq!(r["objects_damaged"], 1, "{r}");
    assert_eq!(r["still_damaged"].as_array().map(Vec::len), Some(1), "{r}");
    // A structural repair (no chunk read) checks the record and keeps it
    // (the chunk is in a pack with others): the next backup stores it again.
    let (code, r) = run_json(&e, &["repair"]);
    assert_eq!(code, 3, "{r}");
    assert_eq!(r["objects_damaged"], 1, "{r}");
    assert_eq!(e.files("damage").len(), 1);
    backup(&e, "v", &img, &[]);
    assert!(e.files("damage").is_empty(), "the backup stored it again");
    assert_eq!(verify_data(&e), 0);
}

#[test]
fn unreadable_manifests_are_removed_by_forget_and_by_repair() {
    let e = Env::init();
    let img = image(&e, "d.img", 7);
    let p1 = backup(&e, "v", &img, &[])["point"]
        .as_str()
        .unwrap()
        .to_string();
    let p2 = backup(&e, "v", &img, &["--full-scan"])["point"]
        .as_str()
        .unwrap()
        .to_string();
    let manifests = e.files("points");
    assert_eq!(manifests.len(), 2);
    for m in &manifests {
        std::fs::write(m, b"not a manifest").unwrap();
    }

    // gc cannot know what the points reference: it stops (exit 3) and
    // says what to do, every time; a failed sweep does not make the next
    // one skip as if it were still running.
    for _ in 0..2 {
        let (code, err) = fails(e.x(&["gc"]));
        assert_eq!(code, 3, "{err}");
        assert!(
            err.contains("xfull repair") && err.contains("xfull forget"),
            "{err}"
        );
    }

    // forget names points exactly, and they must exist.
    let (code, err) = fails(e.x(&["forget", "v@latest"]));
    assert_eq!(code, 2, "{err}");
    let missing = format!("{}0", &p1[..p1.len() - 1]);
    let missing = if missing == p1 {
        format!("{}1", &p1[..p1.len() - 1])
    } else {
        missing
    };
    let (code, err) = fails(e.x(&["forget", &missing]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not found") || err.contains("no point"),
        "{err}"
    );

    // A part of an id is refused (removal is for good), naming the id.
    let (vm, id) = p1.split_once('@').unwrap();
    let part = format!("{vm}@{}", &id[id.len() - 4..]);
    let (code, err) = fails(e.x(&["forget", &part]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("whole id") && err.contains(&p1), "{err}");
    assert_eq!(
        e.files("points").len(),
        2,
        "a part of an id removed a point"
    );

    let (code, r) = run_json(&e, &["forget", "--dry-run", &p1]);
    assert_eq!(
        (code, &r["points"][0]),
        (0, &Value::from(p1.as_str())),
        "{r}"
    );
    assert_eq!(e.files("points").len(), 2, "a dry run removes nothing");
    e.x(&["forget", &p1]).assert().success();
    assert_eq!(e.files("points").len(), 1);

    // repair removes the other one; the repository is then whole.
    let (code, r) = run_json(&e, &["repair"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["manifests_removed"][0], p2.as_str(), "{r}");
    assert!(e.files("points").is_empty());
    assert_eq!(run_json(&e, &["verify"]).0, 0);
    // Their data is garbage now.
    let gc = e.json(&["gc"]);
    assert_eq!(gc["chunks_marked"], 0, "{gc}");
}

#[test]
fn repair_refuses_sources_it_cannot_use() {
    let e = Env::init();
    let img = image(&e, "d.img", 8);
    backup(&e, "v", &img, &[]);
    let disk = format!("d={}", img.display());
    let other = format!("nosuch={}", img.display());
    for args in [
        vec!["repair", "--disk", disk.as_str()],
        vec!["repair", "--vm", "v"],
        vec!["repair", "--vm", "w", "--disk", disk.as_str()],
        vec!["repair", "--vm", "v", "--disk", other.as_str()],
        vec!["repair", "--vm", "v", "--disk", "d="],
        vec![
            "repair",
            "--vm",
            "v",
            "--disk",
            disk.as_str(),
            "--disk",
            disk.as_str(),
        ],
    ] {
        let (code, err) = fails(e.x(&args));
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    let (code, err) = fails(e.x(&["repair", "--vm", "v", "--disk", "d=/nonexistent/img"]));
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("/nonexistent/img"), "{err}");
}

#[test]
fn a_link_planted_in_place_of_a_pack_is_reported_and_never_followed() {
    let e = Env::init();
    let img = image(&e, "d.img", 14);
    let point = backup(&e, "v", &img, &[])["point"]
        .as_str()
        .unwrap()
        .to_string();
    let planted = chunk(&e, 3).file;
    let victim = e.path("victim");
    std::fs::write(&victim, b"not the repository's").unwrap();
    std::fs::remove_file(&planted).unwrap();
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    // A restore meets it and records the chunks it held.
    let out = e.path("out.img");
    let (code, err) = fails(e.x(&[
        "restore",
        &point,
        "--disk",
        "d",
        "--ignore-damage",
        "--to",
        out.to_str().unwrap(),
    ]));
    assert_eq!(code, 3, "{err}");
    assert!(!e.files("damage").is_empty());
    // Repair lists the packs, and a link among them is damage naming it
    // (a listing with a silent gap could make gc delete what is used).
    let (code, err) = fails(e.x(&["repair", "--read-data"]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(planted.symlink_metadata().unwrap().is_symlink());
    assert_eq!(std::fs::read(&victim).unwrap(), b"not the repository's");
    // The operator removes it; repair then finds the point damaged.
    std::fs::remove_file(&planted).unwrap();
    for _ in 0..2 {
        let out = e.x(&["repair", "--read-data", "--json"]).output().unwrap();
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(3), "{r}");
        assert_eq!(r["still_damaged"][0]["point"], point.as_str(), "{r}");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"not the repository's");
}
