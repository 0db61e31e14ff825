//! `repair` and a pack whose trailer does not open: verify reported it
//! (exit 3) for ever, gc kept it, and `index rebuild` could not find its
//! chunks. Now repair stores again every chunk the index places there
//! that still opens (into a new pack, with an index object), then
//! removes the pack, so verify is clean and every chunk findable again.

use std::path::Path;

use serde_json::Value;

use crate::repair::run_json;
use xfull_integration::env::{Env, sha256};
use xfull_integration::{Region, write_image};

/// A point of 40 MiB of random data (two packs or more); its image.
fn backed_up(e: &Env) -> std::path::PathBuf {
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(40 << 20)], 91, false).unwrap();
    e.backup("v", &[("d", &img)]);
    assert!(e.files("packs").len() >= 2);
    img
}

/// Flips a byte of the pack's trailer (its last bytes).
fn spoil_trailer(pack: &Path) {
    let mut bytes = std::fs::read(pack).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0xff;
    std::fs::write(pack, bytes).unwrap();
}

fn restores_as(e: &Env, img: &Path) {
    let out = e.path("restored.img");
    let _ = std::fs::remove_file(&out);
    e.restore("v@latest", "d", &out);
    assert_eq!(sha256(&out), sha256(img));
}

#[test]
fn repair_moves_the_chunks_of_a_pack_whose_trailer_does_not_open() {
    let e = Env::init();
    let img = backed_up(&e);
    let victim = e.files("packs")[0].clone();
    spoil_trailer(&victim);
    assert_eq!(run_json(&e, &["verify"]).0, 3);

    // A dry run names it and changes nothing.
    let packs = e.files("packs");
    let (code, r) = run_json(&e, &["repair", "--dry-run"]);
    assert_eq!((code, &r["packs_unreadable"]), (3, &Value::from(1)), "{r}");
    assert_eq!(e.files("packs"), packs);

    let (code, r) = run_json(&e, &["repair"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["packs_unreadable"], 1, "{r}");
    assert_eq!(r["packs_salvaged"], 1, "{r}");
    assert!(r["chunks_salvaged"].as_u64().unwrap() > 0, "{r}");
    assert!(
        !victim.exists(),
        "the pack whose trailer does not open goes"
    );
    let (code, v) = run_json(&e, &["verify", "--read-data"]);
    assert_eq!(code, 0, "{v}");
    restores_as(&e, &img);
    // The index rebuilt from the packs alone finds every chunk.
    e.x(&["index", "rebuild"]).assert().success();
    e.x(&["gc"]).assert().success();
    assert_eq!(run_json(&e, &["verify", "--read-data"]).0, 0);
    restores_as(&e, &img);
}

/// A blob of that pack damaged too: the other chunks are moved, that one
/// is lost with the pack (it did not open: no copy of it was good), the
/// point is damaged, and an image stores it again.
#[test]
fn a_chunk_that_does_not_open_is_left_for_an_image_to_give_again() {
    let e = Env::init();
    let img = backed_up(&e);
    let victim = e.files("packs")[0].clone();
    let chunk = crate::pack_files::packed_chunks(&e)
        .into_iter()
        .find(|c| c.file == victim)
        .unwrap();
    crate::pack_files::damage(&chunk);
    spoil_trailer(&victim);

    let (code, r) = run_json(&e, &["repair"]);
    assert_eq!(code, 3, "{r}");
    assert_eq!(r["packs_salvaged"], 1, "{r}");
    assert_eq!(r["chunks_not_salvaged"], 1, "{r}");
    assert!(r["still_damaged"][0]["point"].is_string(), "{r}");
    let disk = format!("d={}", img.display());
    let (code, r) = run_json(&e, &["repair", "--vm", "v", "--disk", &disk]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["chunks_restored"], 1, "{r}");
    assert_eq!(run_json(&e, &["verify", "--read-data"]).0, 0);
    restores_as(&e, &img);
}

/// Unencrypted, the chunks sealed again in order make the same pack, byte
/// for byte, under the same name (its hash): repair writes it over the
/// damaged one instead of removing it.
#[test]
fn an_unencrypted_pack_is_made_again_in_place() {
    let e = Env::init_with(&["--encryption", "none"]);
    let img = backed_up(&e);
    let victim = e.files("packs")[0].clone();
    let intact = std::fs::read(&victim).unwrap();
    spoil_trailer(&victim);
    let (code, r) = run_json(&e, &["repair"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        (&r["packs_healed"], &r["packs_salvaged"]),
        (&Value::from(1), &Value::from(0)),
        "{r}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), intact);
    assert_eq!(run_json(&e, &["verify", "--read-data"]).0, 0);
    restores_as(&e, &img);
}
