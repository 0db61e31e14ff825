//! The server against real clients: nbdinfo, nbdcopy, qemu-img and
//! qemu-io, several at once, one killed mid-transfer, a failing export,
//! a writable one.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use xfull_core::nbd::{Client, Errno, Export, NbdError, ServerEvent, ServerOptions};

use crate::exports::{Faulty, FileExport, MemExport};
use crate::tools::{Served, check, random_bytes, run_async, serve, write_at};

/// A sparse file of `size` with random data in `runs`; returns its bytes.
fn sparse_file(path: &std::path::Path, size: u64, runs: &[(u64, u64)]) -> Vec<u8> {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
    let mut image = vec![0u8; size as usize];
    for (i, (o, l)) in runs.iter().enumerate() {
        let b = random_bytes(*l as usize, 50 + i as u64);
        write_at(path, *o, &b);
        image[*o as usize..(*o + *l) as usize].copy_from_slice(&b);
    }
    image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdinfo_sees_the_size_and_the_holes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let size = 32u64 << 20;
    let runs = [
        (1u64 << 20, 1 << 20),
        (10 << 20, 64 << 10),
        (size - 4096, 4096),
    ];
    sparse_file(&path, size, &runs);
    let served = serve(
        dir.path(),
        vec![FileExport::open("disk", &path)],
        ServerOptions::default(),
    );
    let url = served.url("disk");
    let out = run_async(&["nbdinfo", "--size", &url]).await;
    check(&out, "nbdinfo --size");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        size.to_string()
    );
    let out = run_async(&["nbdinfo", "--map", &url]).await;
    check(&out, "nbdinfo --map");
    // Lines: offset length type description.
    let map: Vec<(u64, u64, u32)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    let mut want = Vec::new();
    let mut at = 0;
    for (o, l) in runs {
        if o > at {
            want.push((at, o - at, 3));
        }
        want.push((o, l, 0));
        at = o + l;
    }
    assert_eq!(map, want, "{}", String::from_utf8_lossy(&out.stdout));
    let out = run_async(&["nbdinfo", "--list", &url]).await;
    check(&out, "nbdinfo --list");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdcopy_and_qemu_img_copy_the_export_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = d.join("disk.img");
    let size = 48u64 << 20;
    let runs = [
        (0u64, 3 << 20),
        ((7 << 20) + 4096, 5 << 20),
        (30 << 20, 1 << 20),
        (size - 65536, 65536),
    ];
    let image = sparse_file(&path, size, &runs);
    let served = serve(
        d,
        vec![
            FileExport::open("disk", &path),
            FileExport::open("again", &path),
        ],
        ServerOptions::default(),
    );
    let (a, b, q) = (d.join("a.img"), d.join("b.img"), d.join("q.img"));
    // Two clients at once (nbdcopy opens several connections each).
    let (ra, rb) = tokio::join!(
        run_async(&["nbdcopy", &served.url("disk"), a.to_str().unwrap()]),
        run_async(&["nbdcopy", &served.url("again"), b.to_str().unwrap()]),
    );
    check(&ra, "nbdcopy");
    check(&rb, "nbdcopy");
    assert!(
        std::fs::read(&a).unwrap() == image,
        "nbdcopy's copy equals the source"
    );
    assert!(
        std::fs::read(&b).unwrap() == image,
        "the concurrent copy too"
    );
    let out = run_async(&[
        "qemu-img",
        "convert",
        "-f",
        "raw",
        "-O",
        "raw",
        &served.url("disk"),
        q.to_str().unwrap(),
    ])
    .await;
    check(&out, "qemu-img convert");
    assert!(
        std::fs::read(&q).unwrap() == image,
        "qemu-img's copy equals the source"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_io_random_reads_match() {
    let dir = tempfile::tempdir().unwrap();
    // 8 MiB regions, each filled with its own byte: `read -P` checks it.
    let region = 8usize << 20;
    let pat = |k: usize| (k * 37 + 1) as u8;
    let mut data = Vec::with_capacity(8 * region);
    for k in 0..8 {
        data.extend(std::iter::repeat_n(pat(k), region));
    }
    let served = serve(
        dir.path(),
        vec![MemExport::new("p", data, false)],
        ServerOptions::default(),
    );
    let mut args = vec![
        "qemu-io".to_string(),
        "-r".into(),
        "-f".into(),
        "raw".into(),
    ];
    let mut x = 12345u64;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let count = 60;
    for _ in 0..count {
        let len = (4096 + next(8 << 20) as usize) / 512 * 512;
        let k = next(8) as usize;
        let off = k * region + next((region - len + 1) as u64) as usize / 512 * 512;
        args.push("-c".into());
        args.push(format!("read -P {} {off} {len}", pat(k)));
    }
    args.push(served.url("p"));
    let out = run_async(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>()).await;
    check(&out, "qemu-io");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("fail") && !text.contains("error"), "{text}");
    assert_eq!(text.matches("read ").count(), count, "{text}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_transfer_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(64 << 20, 21);
    let slow = Faulty::new(
        MemExport::new("slow", data.clone(), false),
        0..0,
        Duration::from_millis(50),
    );
    let served = serve(
        dir.path(),
        vec![slow.clone() as Arc<dyn Export>],
        ServerOptions::default(),
    );
    let reader = {
        let uri = served.uri("slow");
        let want = data.clone();
        tokio::spawn(async move {
            let c = Client::connect(&uri, &[]).await.unwrap();
            let got = c.read(0, want.len()).await.unwrap();
            c.close().await.unwrap();
            got[..] == want[..]
        })
    };
    let mut copy = Command::new("nbdcopy")
        .args([&served.url("slow"), "null:"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the server is busy serving it and the reader: both
    // connected (the reader alone can make the reads, while a slow-starting
    // nbdcopy has not connected yet).
    let connected = |served: &Served| {
        served
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, ServerEvent::Connected { .. }))
            .count()
    };
    while slow.reads.load(Ordering::SeqCst) < 40 || connected(&served) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    copy.kill().unwrap();
    let status = copy.wait().unwrap();
    assert!(!status.success(), "nbdcopy was killed before it finished");
    assert!(
        reader.await.unwrap(),
        "the other client read everything right"
    );
    // The server still takes new clients.
    let c = Client::connect(&served.uri("slow"), &[]).await.unwrap();
    assert!(c.read(1 << 20, 4096).await.unwrap()[..] == data[1 << 20..(1 << 20) + 4096]);
    c.close().await.unwrap();
    let events = served.events.lock().unwrap().clone();
    let connected = events
        .iter()
        .filter(|e| matches!(e, ServerEvent::Connected { .. }))
        .count();
    assert!(connected >= 3, "{events:?}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_read_is_eio_for_that_range_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = vec![0x5au8; 16 << 20];
    let bad = (4u64 << 20)..(4 << 20) + 4096;
    let faulty = Faulty::new(
        MemExport::new("f", data, false),
        bad.clone(),
        Duration::ZERO,
    );
    let served = serve(
        dir.path(),
        vec![faulty as Arc<dyn Export>],
        ServerOptions::default(),
    );
    let out = run_async(&[
        "qemu-io",
        "-r",
        "-f",
        "raw",
        "-c",
        "read -P 0x5a 0 64k",
        "-c",
        "read -P 0x5a 4M 4k",
        "-c",
        "read -P 0x5a 8M 64k",
        &served.url("f"),
    ])
    .await;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("read 65536/65536 bytes at offset 0"),
        "{text}"
    );
    assert!(text.contains("Input/output error"), "{text}");
    assert!(
        text.contains("read 65536/65536 bytes at offset 8388608"),
        "{text}"
    );
    // Our client: the error names the range, the connection goes on.
    let c = Client::connect(&served.uri("f"), &[]).await.unwrap();
    match c.read(bad.start - 100, 200).await.unwrap_err() {
        NbdError::Command {
            offset,
            errno,
            message,
            ..
        } => {
            assert_eq!((offset, errno), (bad.start - 100, Errno::EIO));
            assert!(message.contains("injected failure"), "{message}");
        }
        other => panic!("{other}"),
    }
    assert!(
        c.read(bad.end, 4096)
            .await
            .unwrap()
            .iter()
            .all(|b| *b == 0x5a)
    );
    c.close().await.unwrap();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writable_export_takes_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mem = MemExport::new("rw", vec![0x11; 16 << 20], true);
    let served = serve(
        dir.path(),
        vec![mem.clone() as Arc<dyn Export>],
        ServerOptions::default(),
    );
    let out = run_async(&[
        "qemu-io",
        "-f",
        "raw",
        "-c",
        "write -P 0x5a 1M 64k",
        "-c",
        "read -P 0x5a 1M 64k",
        "-c",
        "write -z 2M 4k",
        "-c",
        "read -P 0 2M 4k",
        "-c",
        "discard 3M 4k",
        "-c",
        "flush",
        "-c",
        "read -P 0x11 4M 4k",
        &served.url("rw"),
    ])
    .await;
    check(&out, "qemu-io");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("fail") && !text.contains("error"), "{text}");
    let d = mem.data.lock().unwrap().clone();
    assert!(d[1 << 20..(1 << 20) + 65536].iter().all(|b| *b == 0x5a));
    assert!(d[2 << 20..(2 << 20) + 4096].iter().all(|b| *b == 0));
    assert!(d[(1 << 20) - 1] == 0x11 && d[(1 << 20) + 65536] == 0x11);
    assert!(mem.flushes.load(Ordering::Relaxed) >= 1);
    served.stop().await;
}
