//! `xfull serve` and gc: a point pruned while it is served goes to the
//! trash and gc keeps its data (the server's lease pins it) until the
//! server stops; then gc frees it.

use xfull_integration::env::walk;

use crate::serve::{Fill, Served, b3, backed_up, image, ok, socket};

#[test]
fn a_served_point_outlives_prune_and_gc_until_the_server_stops() {
    let (e, restored) = backed_up(&[(Fill::Random(11), 3), (Fill::Byte(0), 1)]);
    let first = e.json(&["points"])["points"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sock = socket(&e);
    let s = Served::start(&e, &[&format!("vm@{first}"), "--socket", &sock], 1);
    // A newer point with other data; pruning to it removes the served one.
    let img = e.path("new.img");
    image(&img, &[(Fill::Random(12), 3)]);
    e.backup("vm", &[("d", &img)]);
    let packs_before = walk(&e.repo.join("packs")).len();
    e.x(&["prune", "--keep-last", "1"]).assert().success();
    e.x(&["gc"]).assert().success();
    assert_eq!(e.points(), 1, "the served point is pruned");
    assert!(
        !walk(&e.repo.join("trash")).is_empty(),
        "it waits in the trash"
    );
    assert_eq!(
        walk(&e.repo.join("packs")).len(),
        packs_before,
        "gc kept its packs"
    );
    let copy = e.path("copy.img");
    ok(&["nbdcopy", &s.uris[0], copy.to_str().unwrap()]);
    assert_eq!(b3(&copy), b3(&restored), "still readable");
    let (code, err) = s.stop();
    assert_eq!(code, 130, "{err}");
    e.x(&["gc"]).assert().success();
    assert!(walk(&e.repo.join("trash")).is_empty(), "{err}");
    assert!(
        walk(&e.repo.join("packs")).len() < packs_before,
        "gc freed them"
    );
}
