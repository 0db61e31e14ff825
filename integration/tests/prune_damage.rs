//! Prune and known damage: a point `verify` found damaged is no point
//! the retention rules may count. Before, `prune --keep-last 1` kept the
//! newest point, damaged, and removed the only whole one: the last
//! restorable copy went by a retention job, after verify had said so.

use std::collections::BTreeSet;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::pack_files::{damage, packed_chunks};
use crate::repair::run_json;
use serde_json::Value;
use xfull_integration::env::{Env, sha256};
use xfull_integration::{Region, write_image};

const A: &str = "2026-03-01T10:00:00Z";
const B: &str = "2026-03-02T10:00:00Z";

fn backup_at(e: &Env, img: &Path, time: &str) -> String {
    let disk = format!("d={}", img.display());
    let v = e.json(&["backup", "--vm", "v", "--disk", &disk, "--time", time]);
    v["point"].as_str().unwrap().to_string()
}

/// Two points of one disk (two 4 MiB segments): A, then B with its
/// second segment partly written over.
struct Points {
    a: String,
    b: String,
    /// A copy of the image A was made from.
    a_img: PathBuf,
    /// Chunks and node files stored by A's backup.
    a_chunks: BTreeSet<String>,
    a_nodes: BTreeSet<PathBuf>,
}

fn two_points(e: &Env) -> Points {
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(8 << 20)], 5, false).unwrap();
    let a = backup_at(e, &img, A);
    let a_img = e.path("a.img");
    std::fs::copy(&img, &a_img).unwrap();
    let a_chunks = packed_chunks(e).into_iter().map(|c| c.id).collect();
    let a_nodes = e.files("nodes").into_iter().collect();
    let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.seek(SeekFrom::Start(5 << 20)).unwrap();
    f.write_all(&xfull_core::testing::seeded_bytes(1 << 20, 99))
        .unwrap();
    drop(f);
    let b = backup_at(e, &img, B);
    Points {
        a,
        b,
        a_img,
        a_chunks,
        a_nodes,
    }
}

/// The decision on `point` in a prune's JSON plan.
fn decision<'a>(plan: &'a Value, point: &str) -> &'a Value {
    plan["plan"][0]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["point"] == point)
        .unwrap_or_else(|| panic!("{point} not in {plan}"))
}

/// After verify recorded the damage: `--keep-last 1` keeps the damaged
/// newest point (the policy would) and, not counting it, the whole one
/// before it, which still restores.
fn keep_last_keeps_the_whole_point(e: &Env, p: &Points) {
    let (code, plan) = run_json(e, &["prune", "--keep-last", "1", "--no-gc"]);
    assert_eq!(code, 0, "{plan}");
    let (da, db) = (decision(&plan, &p.a), decision(&plan, &p.b));
    assert_eq!(da["keep"], true, "the only whole point stays: {plan}");
    assert_eq!(da["reasons"][0], "last 1", "{plan}");
    assert!(da["damaged"].is_null(), "{plan}");
    assert_eq!(db["keep"], true, "{plan}");
    let why = db["damaged"].as_str().unwrap_or_default();
    assert!(why.contains("damage record"), "{plan}");
    assert_eq!(plan["removed"], 0, "{plan}");
    let warned = plan["plan"][0]["warnings"].to_string();
    assert!(warned.contains("are damaged"), "{warned}");
    let out = e.path("restored.img");
    e.restore(&p.a, "d", &out);
    assert_eq!(sha256(&out), sha256(&p.a_img));
}

#[test]
fn a_point_with_a_damaged_chunk_does_not_count_toward_the_rules() {
    let e = Env::init();
    let p = two_points(&e);
    let b_only = packed_chunks(&e)
        .into_iter()
        .find(|c| !p.a_chunks.contains(&c.id))
        .expect("B stored a chunk of its own");
    damage(&b_only);
    let (code, v) = run_json(&e, &["verify", "--read-data"]);
    assert_eq!(code, 3, "{v}");
    keep_last_keeps_the_whole_point(&e, &p);
}

#[test]
fn a_point_with_a_missing_node_does_not_count_toward_the_rules() {
    let e = Env::init();
    let p = two_points(&e);
    let b_only = e
        .files("nodes")
        .into_iter()
        .find(|n| !p.a_nodes.contains(n))
        .expect("B stored a node of its own");
    std::fs::remove_file(&b_only).unwrap();
    let (code, v) = run_json(&e, &["verify"]);
    assert_eq!(code, 3, "{v}");
    keep_last_keeps_the_whole_point(&e, &p);
}

/// With no damage recorded, the rules count every point (and prune
/// fetches no node to find out).
#[test]
fn without_damage_records_every_point_counts() {
    let e = Env::init();
    let p = two_points(&e);
    let (code, plan) = run_json(&e, &["prune", "--keep-last", "1", "--no-gc"]);
    assert_eq!(code, 0, "{plan}");
    assert_eq!(decision(&plan, &p.a)["keep"], false, "{plan}");
    assert_eq!(decision(&plan, &p.b)["reasons"][0], "last 1", "{plan}");
    assert_eq!(plan["removed"], 1, "{plan}");
}
