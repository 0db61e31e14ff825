//! A manifest whose nodes do not cover its segments (two nodes swapped on
//! a disk of one and a half segments: a writer with the metadata key, or
//! a buggy one): restore refuses such a node, so verify must too. It read
//! each node without asking what length its segments have, and `verify`,
//! `verify --read-data` and `repair` called the point whole (review 100).

use xfull_core::frame::{self, Kind};
use xfull_integration::env::{Env, stderr};
use xfull_integration::{Region, write_image};

use crate::repair::run_json;

#[test]
fn nodes_swapped_between_a_full_and_a_short_segment_are_damage_of_the_point() {
    let e = Env::init();
    let img = e.path("d.img");
    // One and a half 4 MiB segments.
    write_image(&img, &[Region::Random(6 << 20)], 3, false).unwrap();
    let point = e.backup("v", &[("d", &img)])["point"]
        .as_str()
        .unwrap()
        .to_string();
    let id = &point["v@".len()..];
    let nodes_before = e.files("nodes");

    let repo = crate::unlocked::open(&e);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut m = rt
        .block_on(repo.load_manifest(&"v".parse().unwrap(), &id.parse().unwrap()))
        .unwrap();
    let d = &mut m.disks[0];
    assert_eq!(d.segments.len(), 2);
    d.segments.swap(0, 1);
    d.last_data.clear();
    let plain = frame::decode(Kind::Manifest, "k", &m.encode().unwrap(), 1 << 30).unwrap();
    let framed = frame::encode(Kind::Manifest, &plain, 3).unwrap();
    let key = format!("points/v/{id}");
    let stored = repo
        .codec()
        .seal_meta(xfull_core::crypto::SealKind::Manifest, &key, framed);
    std::fs::write(e.repo.join(&key), stored).unwrap();

    let out = e.path("restored.img");
    let o = e
        .std(&[
            "restore",
            &point,
            "--disk",
            "d",
            "--to",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    for args in [
        &["verify"][..],
        &["verify", "--read-data"],
        &["verify", &point],
    ] {
        let (code, v) = run_json(&e, args);
        assert_eq!(code, 3, "{args:?}: {v}");
        let damaged = &v["report"]["damaged"][0];
        assert_eq!(damaged["point"], point.as_str(), "{args:?}: {v}");
        let said = damaged["disks"][0]["problems"].to_string();
        assert!(said.contains("covers"), "{args:?}: {said}");
        // The nodes are sound: no object is damaged, only their use.
        assert_eq!(v["report"]["objects_damaged"], 0, "{v}");
    }
    let (code, r) = run_json(&e, &["repair"]);
    assert_eq!(code, 3, "{r}");
    assert_eq!(r["still_damaged"][0]["point"], point.as_str(), "{r}");
    assert_eq!(e.files("nodes"), nodes_before, "repair removed no node");
}
