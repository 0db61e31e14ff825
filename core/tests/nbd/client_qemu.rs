//! The client against qemu-nbd: raw and qcow2 images, base:allocation,
//! a persistent dirty bitmap exported with `-B`.

use xfull_core::nbd::{
    BASE_ALLOCATION, Client, Extent, NbdError, NbdUri, QEMU_DIRTY_BITMAP, STATE_DIRTY, STATE_HOLE,
    STATE_ZERO, dirty_bitmap_context,
};

use crate::tools::{qemu_nbd, qemu_storage_daemon, random_bytes, run, write_at};

const HOLE: u32 = STATE_HOLE | STATE_ZERO;

/// Extents of `size` bytes: `data` ranges flagged `on`, the rest `off`.
fn layout(size: u64, data: &[(u64, u64)], on: u32, off: u32) -> Vec<Extent> {
    let mut out = Vec::new();
    let mut at = 0;
    for &(o, l) in data {
        if o > at {
            out.push(Extent {
                len: o - at,
                flags: off,
            });
        }
        out.push(Extent { len: l, flags: on });
        at = o + l;
    }
    if at < size {
        out.push(Extent {
            len: size - at,
            flags: off,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_image_reads_and_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    let size = 64u64 << 20;
    std::fs::File::create(&img).unwrap().set_len(size).unwrap();
    let runs = [
        (40960u64, 12288u64),
        (3 << 20, 1 << 20),
        ((40 << 20) + 4096, 256 << 10),
        (size - 8192, 8192),
    ];
    let mut image = vec![0u8; size as usize];
    for (i, (o, l)) in runs.iter().enumerate() {
        let b = random_bytes(*l as usize, 100 + i as u64);
        write_at(&img, *o, &b);
        image[*o as usize..(*o + *l) as usize].copy_from_slice(&b);
    }
    let (_srv, sock) = qemu_nbd(dir.path(), &["-r", "-f", "raw"], &img);
    let uri = NbdUri::unix(&sock, "");
    let c = Client::connect(&uri, &[BASE_ALLOCATION]).await.unwrap();
    assert_eq!(c.size(), size);
    assert!(c.is_read_only());
    assert!(c.structured_replies());
    let all = c.read(0, size as usize).await.unwrap();
    assert!(all[..] == image[..], "a whole read equals the image");
    for (off, len) in [
        (0u64, 1usize),
        (40959, 3),
        (3 << 20, 1 << 20),
        (12345, 5 << 20),
        (size - 1, 1),
    ] {
        let got = c.read(off, len).await.unwrap();
        assert!(
            got[..] == image[off as usize..off as usize + len],
            "read {off}+{len}"
        );
    }
    let map = c.block_status(BASE_ALLOCATION, 0..size).await.unwrap();
    assert_eq!(map, layout(size, &runs, 0, HOLE));
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_reads_equal_the_converted_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let q = d.join("disk.qcow2");
    let raw = d.join("disk.raw");
    let qs = q.to_str().unwrap();
    run(&["qemu-img", "create", "-q", "-f", "qcow2", qs, "48M"]);
    run(&[
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        "write -P 0x11 0 1M",
        "-c",
        "write -P 0x22 5M 3M",
        "-c",
        "write -P 0x33 8388000 70000",
        "-c",
        "write -z 6M 1M",
        "-c",
        "write -P 0x44 47M 1M",
        qs,
    ]);
    run(&[
        "qemu-img",
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        qs,
        raw.to_str().unwrap(),
    ]);
    let image = std::fs::read(&raw).unwrap();
    let (_srv, sock) = qemu_nbd(d, &["-r", "-f", "qcow2"], &q);
    let c = Client::connect(&NbdUri::unix(&sock, ""), &[BASE_ALLOCATION])
        .await
        .unwrap();
    assert_eq!(c.size(), image.len() as u64);
    let all = c.read(0, image.len()).await.unwrap();
    assert!(
        all[..] == image[..],
        "reads equal qemu-img convert's output"
    );
    // The zeroed range reads as zeros and is flagged so; unwritten
    // ranges are holes.
    let map = c
        .block_status(BASE_ALLOCATION, 6 << 20..7 << 20)
        .await
        .unwrap();
    assert!(map.iter().all(|e| e.flags & STATE_ZERO != 0), "{map:?}");
    let map = c
        .block_status(BASE_ALLOCATION, 20 << 20..30 << 20)
        .await
        .unwrap();
    assert_eq!(
        map,
        vec![Extent {
            len: 10 << 20,
            flags: HOLE
        }]
    );
    let map = c
        .block_status(BASE_ALLOCATION, 5 << 20..6 << 20)
        .await
        .unwrap();
    assert_eq!(
        map,
        vec![Extent {
            len: 1 << 20,
            flags: 0
        }]
    );
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dirty_bitmap_shows_exactly_the_written_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let q = d.join("vm.qcow2");
    let qs = q.to_str().unwrap();
    run(&["qemu-img", "create", "-q", "-f", "qcow2", qs, "64M"]);
    // Data from before the bitmap: allocated, but clean.
    run(&["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 4M", qs]);
    run(&["qemu-img", "bitmap", "--add", qs, "since-monday"]);
    run(&["qemu-img", "bitmap", "--add", qs, "other"]);
    // Writes after it, on the bitmap's 64 KiB granularity.
    let written = [
        (1u64 << 20, 64u64 << 10),
        (8 << 20, 1 << 20),
        (33 << 20, 192 << 10),
        ((64 << 20) - (64 << 10), 64 << 10),
    ];
    let mut args = vec!["qemu-io".to_string(), "-f".into(), "qcow2".into()];
    for (o, l) in written {
        args.push("-c".into());
        args.push(format!("write -P 9 {o} {l}"));
    }
    args.push(qs.into());
    run(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let (_srv, sock) = qemu_nbd(d, &["-r", "-f", "qcow2", "-B", "since-monday"], &q);
    let uri = NbdUri::unix(&sock, "");

    let listed = Client::list_meta_contexts(&uri, &[QEMU_DIRTY_BITMAP])
        .await
        .unwrap();
    assert!(
        listed.contains(&"qemu:dirty-bitmap:since-monday".to_string()),
        "{listed:?}"
    );

    let ctx = dirty_bitmap_context("since-monday");
    let c = Client::connect(&uri, &[BASE_ALLOCATION, &ctx])
        .await
        .unwrap();
    let dirty = c.block_status(&ctx, 0..c.size()).await.unwrap();
    assert_eq!(dirty, layout(64 << 20, &written, STATE_DIRTY, 0));
    // Both contexts come back in one reply; each is asked separately.
    let alloc = c.block_status(BASE_ALLOCATION, 0..4 << 20).await.unwrap();
    assert_eq!(
        alloc,
        vec![Extent {
            len: 4 << 20,
            flags: 0
        }]
    );
    let e = c
        .block_status("qemu:dirty-bitmap:other", 0..4096)
        .await
        .unwrap_err();
    assert!(matches!(e, NbdError::ContextNotNegotiated { .. }), "{e}");
    c.close().await.unwrap();

    // An unknown bitmap: the error lists the bitmaps there are.
    let e = Client::connect(&uri, &["qemu:dirty-bitmap:nope"])
        .await
        .unwrap_err();
    match &e {
        NbdError::UnknownContext {
            context, available, ..
        } => {
            assert_eq!(context, "qemu:dirty-bitmap:nope");
            assert_eq!(
                available,
                &vec!["qemu:dirty-bitmap:since-monday".to_string()]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string()
            .contains("available: qemu:dirty-bitmap:since-monday"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_storage_daemon_export_with_a_bitmap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let q = d.join("vm.qcow2");
    let qs = q.to_str().unwrap();
    run(&["qemu-img", "create", "-q", "-f", "qcow2", qs, "32M"]);
    run(&["qemu-img", "bitmap", "--add", qs, "b0"]);
    run(&[
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        "write -P 7 2M 128k",
        "-c",
        "write -P 8 20M 64k",
        qs,
    ]);
    let (_srv, sock) = qemu_storage_daemon(d, &q, "vda", "b0");
    let uri = NbdUri::unix(&sock, "vda");
    let ctx = dirty_bitmap_context("b0");
    let c = Client::connect(&uri, &[&ctx]).await.unwrap();
    let dirty = c.block_status(&ctx, 0..c.size()).await.unwrap();
    let written = [(2u64 << 20, 128u64 << 10), (20 << 20, 64 << 10)];
    assert_eq!(dirty, layout(32 << 20, &written, STATE_DIRTY, 0));
    let data = c.read(2 << 20, 128 << 10).await.unwrap();
    assert!(data.iter().all(|b| *b == 7));
    c.close().await.unwrap();
}
