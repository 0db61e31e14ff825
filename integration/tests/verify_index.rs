//! Structural `verify` checks every index entry against its pack's
//! trailer: an index object placing a chunk at a wrong offset, a pack
//! replaced by another pack's bytes, and a truncated pack are damage
//! (exit 3) naming the index object, the pack and (for a wrong entry) the
//! chunk, in text and JSON.

use std::path::PathBuf;

use serde_json::Value;
use xfull_core::keys;
use xfull_core::placement::index::{IndexHead, encode, index_name};
use xfull_integration::env::Env;
use xfull_integration::{Region, write_image};

/// A repository with one point stored in at least two packs.
fn repo() -> Env<'static> {
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(40 << 20)], 77, false).unwrap();
    e.backup("v", &[("d", &img)]);
    assert!(e.files("packs").len() >= 2);
    assert_eq!(e.files("index").len(), 1);
    e.x(&["verify"]).assert().success();
    e
}

/// The exit code of restoring disk `d` of `v@latest`.
fn restore_code(e: &Env) -> Option<i32> {
    let out = e.path("restored.img");
    let to = out.to_str().unwrap();
    let args = ["restore", "v@latest", "--disk", "d", "--to", to];
    e.x(&args).output().unwrap().status.code()
}

/// Key of a local object file.
fn key(e: &Env, file: &std::path::Path) -> String {
    file.strip_prefix(&e.repo).unwrap().display().to_string()
}

/// Runs `verify --json`: exit 3 and the report's index problems.
fn index_problems(e: &Env) -> Vec<Value> {
    let out = e.x(&["verify", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(3), "{v}");
    assert_eq!(v["clean"], false, "{v}");
    // The text report names them too.
    let text = e.x(&["verify"]).output().unwrap();
    assert_eq!(text.status.code(), Some(3));
    let shown = String::from_utf8_lossy(&text.stdout).to_string();
    for p in v["report"]["index_problems"].as_array().unwrap() {
        assert!(shown.contains(p["index"].as_str().unwrap()), "{shown}");
        if let Some(pack) = p["pack"].as_str() {
            assert!(shown.contains(pack), "{shown}");
        }
    }
    v["report"]["index_problems"].as_array().unwrap().clone()
}

#[test]
fn an_index_entry_with_a_wrong_offset_is_damage_naming_index_pack_and_chunk() {
    let e = repo();
    let file: PathBuf = e.files("index")[0].clone();
    let old_key = key(&e, &file);
    // A valid index object (it opens and its sums hold) whose first entry
    // places its chunk 16 bytes off.
    let repo = crate::unlocked::open(&e);
    let bytes = std::fs::read(&file).unwrap();
    let (_, mut entries) = IndexHead::decode_all(repo.codec(), &old_key, &bytes).unwrap();
    entries[0].entry.offset += 16;
    let (pack, chunk) = (
        keys::pack(&entries[0].pack),
        keys::chunk(&entries[0].entry.id),
    );
    let object = encode(repo.codec(), entries);
    let new_key = keys::index(&index_name(&object));
    std::fs::create_dir_all(e.repo.join(&new_key).parent().unwrap()).unwrap();
    std::fs::write(e.repo.join(&new_key), &object).unwrap();
    std::fs::remove_file(&file).unwrap();

    let problems = index_problems(&e);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = &problems[0];
    assert_eq!(p["index"], new_key.as_str(), "{p}");
    assert_eq!(p["pack"], pack.as_str(), "{p}");
    assert_eq!(p["chunk"], chunk.as_str(), "{p}");
    assert!(p["problem"].as_str().unwrap().contains("offset"), "{p}");

    // What verify advises mends it: the rebuilt index replaces the
    // object with the wrong entry.
    let r = e.json(&["index", "rebuild"]);
    assert_eq!(r["index_objects_removed"][0], new_key.as_str(), "{r}");
    e.x(&["verify"]).assert().success();
}

#[test]
fn a_pack_replaced_by_another_or_truncated_is_damage_naming_index_and_pack() {
    let e = repo();
    let index = key(&e, &e.files("index")[0]);
    let packs = e.files("packs");
    let (victim, other) = (&packs[0], &packs[1]);
    let intact = std::fs::read(victim).unwrap();

    // Another pack's bytes under this pack's name.
    std::fs::copy(other, victim).unwrap();
    let problems = index_problems(&e);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["index"], index.as_str());
    assert_eq!(problems[0]["pack"], key(&e, victim).as_str());
    assert!(problems[0]["chunk"].is_null());

    // Cut in half.
    std::fs::write(victim, &intact[..intact.len() / 2]).unwrap();
    let problems = index_problems(&e);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["pack"], key(&e, victim).as_str());
    assert!(
        problems[0]["problem"]
            .as_str()
            .unwrap()
            .contains("trailer cannot be read"),
        "{problems:?}"
    );

    std::fs::write(victim, &intact).unwrap();
    e.x(&["verify"]).assert().success();
}

/// Flips a byte in the middle of an index object (inside its entries).
fn spoil(file: &std::path::Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(file, bytes).unwrap();
}

/// One backup's index object holds exactly the entries a rebuild finds in
/// the packs, so the rebuild makes an object of the same name: a damaged
/// one stored there must not pass for it. Verify says to run `index
/// rebuild`; after it the index must be sound.
#[test]
fn index_rebuild_mends_a_damaged_index_object_it_makes_again() {
    let e = repo();
    let img = e.path("d.img");
    spoil(&e.files("index")[0]);
    assert_eq!(index_problems(&e).len(), 1);

    e.x(&["index", "rebuild"]).assert().success();
    e.x(&["verify"]).assert().success();
    let out = e.path("restored.img");
    e.restore("v@latest", "d", &out);
    assert_eq!(
        xfull_integration::env::sha256(&out),
        xfull_integration::env::sha256(&img)
    );
}

/// A damaged index object beside others: `index rebuild` indexes every
/// pack again, and then the damaged object must neither keep verify
/// failing (it told the user to run the rebuild) nor hold every gc.
#[test]
fn after_index_rebuild_a_damaged_index_object_holds_neither_verify_nor_gc() {
    let e = repo();
    let other = e.path("o.img");
    write_image(&other, &[Region::Random(4 << 20)], 78, false).unwrap();
    e.backup("w", &[("d", &other)]);
    let before = e.files("index");
    assert_eq!(before.len(), 2);
    spoil(&before[0]);
    assert_eq!(index_problems(&e).len(), 1);

    e.x(&["index", "rebuild"]).assert().success();
    e.x(&["verify"]).assert().success();
    let r = e.json(&["gc"]);
    assert!(r["held"].is_null(), "{r}");
}

/// A damaged index object holds every pack back, on every gc, until
/// `index rebuild`: gc and prune say so and exit 3 after their report.
/// They exited 0, so a cron job never saw space stop being freed
/// (review 106.5).
#[test]
fn a_gc_held_back_by_a_damaged_index_object_exits_3() {
    let e = repo();
    spoil(&e.files("index")[0]);
    for args in [&["gc"][..], &["prune", "--keep-last", "1"]] {
        let mut all = args.to_vec();
        all.push("--json");
        let out = e.x(&all).output().unwrap();
        let err = xfull_integration::env::stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        let r = if args[0] == "gc" { &r } else { &r["gc"] };
        assert_eq!(r["held_by_damage"], true, "{r}");
        assert!(r["held"].as_str().unwrap().contains("index rebuild"), "{r}");
        assert!(err.contains("held back every pack"), "{err}");
    }
    e.x(&["index", "rebuild"]).assert().success();
    let r = e.json(&["gc"]);
    assert!(r["held"].is_null() && r["held_by_damage"] == false, "{r}");
}

/// Unencrypted, a pack's trailer is not bound to its name: another pack's
/// bytes under it read as a sound pack that lists other chunks. The
/// index's entries for it are contradicted (an index problem), and the
/// chunks they placed are in no pack: the point no longer restores, so
/// `verify --read-data` and `repair` must name it, not pass it as whole.
#[test]
fn chunks_only_a_contradicted_index_entry_places_make_their_point_damaged() {
    let e = Env::init_with(&["--encryption", "none"]);
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(40 << 20)], 77, false).unwrap();
    e.backup("v", &[("d", &img)]);
    let packs = e.files("packs");
    assert!(packs.len() >= 2);
    std::fs::copy(&packs[1], &packs[0]).unwrap();
    assert_eq!(restore_code(&e), Some(3));

    // Named points too with --read-data: it read the copies the
    // trailers list, so chunks that no trailer lists were never read
    // and the point was called whole (review 100).
    for args in [
        &["verify", "--json"][..],
        &["verify", "--read-data", "--json"],
        &["verify", "--read-data", "v@latest", "--json"],
    ] {
        let o = e.x(args).output().unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(o.status.code(), Some(3), "{args:?}: {v}");
        assert_eq!(
            v["report"]["damaged"][0]["point"]
                .as_str()
                .map(|p| p.starts_with("v@")),
            Some(true),
            "{args:?}: the point that does not restore is named: {v}"
        );
    }
    let o = e.x(&["repair", "--json"]).output().unwrap();
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "repair says the point is whole: {r}"
    );
}

/// A restore that met the chunks a damaged index object alone placed
/// recorded them as damaged; `repair`, the next step, must still run and
/// report (it stopped at the recorded chunk whose index block does not
/// read, so nothing could be repaired while that object was there).
#[test]
fn repair_runs_beside_a_damaged_index_object() {
    let e = repo();
    spoil(&e.files("index")[0]);
    assert_eq!(restore_code(&e), Some(3));
    assert!(!e.files("damage").is_empty());

    let o = e.x(&["repair", "--json"]).output().unwrap();
    let r: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    let err = xfull_integration::env::stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(r["still_damaged"][0]["point"].is_string(), "{r} {err}");
}

/// A damaged index object beside the sound one: every point restores,
/// but verify exits 3 until `index rebuild`. `repair` said "every point
/// is whole" and exited 0 beside it (review 100), and so also when the
/// contradicted entries were too many for verify to judge them all.
#[test]
fn repair_fails_while_the_index_disagrees_with_the_packs() {
    let e = repo();
    let file = e.files("index")[0].clone();
    let path = file.display().to_string();
    let last = if path.ends_with('0') { "1" } else { "0" };
    let other = PathBuf::from(format!("{}{last}", &path[..path.len() - 1]));
    std::fs::copy(&file, &other).unwrap();
    spoil(&other);
    assert_eq!(restore_code(&e), Some(0));
    assert!(!index_problems(&e).is_empty());

    let o = e.x(&["repair", "--json"]).output().unwrap();
    let r: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    let after = e.x(&["verify", "--json"]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{r} then {}",
        String::from_utf8_lossy(&after.stdout)
    );
    assert!(r["still_damaged"].as_array().unwrap().is_empty(), "{r}");
    assert!(r["index_problems_left"].as_u64().unwrap() >= 1, "{r}");
    let err = xfull_integration::env::stderr(&o);
    assert!(err.contains("index rebuild"), "{err}");

    e.json(&["index", "rebuild"]);
    e.x(&["verify"]).assert().success();
    e.x(&["repair"]).assert().success();
}
