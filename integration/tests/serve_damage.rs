//! `xfull serve` over a damaged chunk: the client gets EIO for that
//! range only, the rest reads right, the server goes on, and its warning
//! names point, disk, offset and chunk.

use xfull_integration::env::stderr;

use crate::pack_files::{damage, packed_chunks};

use crate::serve::{Fill, MIB, Served, backed_up, ok, run, socket};

#[test]
fn a_damaged_chunk_is_an_eio_for_its_range_only() {
    // Random data first (unique chunks), repeated bytes after.
    let (e, _) = backed_up(&[(Fill::Random(5), 2), (Fill::Byte(0x44), 8)]);
    // Damage one chunk of the random region: flip a byte of one chunk's
    // blob at a time until restore says the damage lies there.
    let mut damaged = None;
    for c in packed_chunks(&e) {
        let f = c.file.clone();
        let orig = std::fs::read(&f).unwrap();
        damage(&c);
        let probe = e.path("probe.img");
        let _ = std::fs::remove_file(&probe);
        let out = e
            .x(&[
                "restore",
                "vm@latest",
                "--disk",
                "d",
                "--to",
                probe.to_str().unwrap(),
                "--ignore-damage",
                "--json",
                "--no-image-hash",
            ])
            .output()
            .unwrap();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let ranges = r["damaged"].as_array().cloned().unwrap_or_default();
        if ranges.len() == 1
            && ranges[0]["offset"].as_u64().unwrap() + ranges[0]["length"].as_u64().unwrap()
                <= 2 * MIB
        {
            damaged = Some((
                ranges[0]["offset"].as_u64().unwrap(),
                ranges[0]["length"].as_u64().unwrap(),
                ranges[0]["object"].as_str().unwrap().to_string(),
            ));
            break;
        }
        std::fs::write(&f, &orig).unwrap();
    }
    let (offset, length, object) = damaged.expect("a chunk of the random region");
    let sock = socket(&e);
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 1);
    let uri = s.uris[0].clone();
    let at = offset / 512 * 512;
    let out = run(&[
        "qemu-io",
        "-r",
        "-f",
        "raw",
        "-c",
        &format!("read {at} 512"),
        &uri,
    ]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        text.contains("Input/output error"),
        "EIO for the damaged range: {text}"
    );
    // The rest reads right, and the server goes on.
    let out = ok(&[
        "qemu-io",
        "-r",
        "-f",
        "raw",
        "-c",
        &format!("read -P 0x44 {} {}", 2 * MIB, 8 * MIB),
        &uri,
    ]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("error"));
    let (code, err) = s.stop();
    assert_eq!(code, 130, "{err}");
    assert!(
        err.contains("warning")
            && err.contains(&format!("offset {offset}, {length} bytes"))
            && err.contains(&object),
        "the warning names point, disk, offset and chunk: {err}"
    );
    assert!(err.contains("vm@") && err.contains("disk d"), "{err}");
}
