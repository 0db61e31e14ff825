//! `xfull serve --writable --overlay FILE`: writes, zeros and trims go
//! to the overlay and read back (also from a new server on the same
//! overlay), the repository's files stay byte-identical, and an overlay
//! of another point or disk, a foreign file or a link is refused.

use std::path::PathBuf;

use xfull_integration::env::{Env, stderr, walk};

use crate::serve::{Fill, Served, b3, image, leases_of, ok, patterned, socket};

/// Every file of the repository but its leases, with its BLAKE3.
fn repo_files(e: &Env) -> Vec<(PathBuf, String)> {
    let mut v: Vec<(PathBuf, String)> = walk(&e.repo)
        .into_iter()
        .filter(|p| !p.starts_with(e.repo.join("leases")))
        .map(|p| (p.clone(), b3(&p)))
        .collect();
    v.sort();
    v
}

/// `xfull serve vm@latest --writable` on a socket, with its overlay in
/// the test's directory: the server and its socket.
fn writable(e: &Env) -> (Served, String) {
    let sock = socket(e);
    let overlay = e.path("d.overlay");
    let ov = overlay.to_str().unwrap();
    let args = [
        "vm@latest",
        "--socket",
        &sock,
        "--writable",
        "--overlay",
        ov,
    ];
    let s = Served::start(e, &args, 1);
    (s, sock)
}

#[test]
fn writes_go_to_the_overlay_and_never_to_the_repository() {
    let (e, _) = patterned();
    let before = repo_files(&e);
    let (s, sock) = writable(&e);
    let uri = s.uris[0].clone();
    // Inside a block, across blocks, zeros and a trim, in two regions.
    ok(&[
        "qemu-io",
        "-f",
        "raw",
        "-c",
        "write -P 0xab 1000448 4096",
        "-c",
        "write -P 0xcd 8323072 262144",
        "-c",
        "write -z 10485760 1048576",
        "-c",
        "discard 25165824 131072",
        "-c",
        "flush",
        &uri,
    ]);
    let check = |uri: &str| {
        let out = ok(&[
            "qemu-io",
            "-r",
            "-f",
            "raw",
            "-c",
            "read -P 0xab 1000448 4096",
            "-c",
            "read -P 0x11 995328 5120",
            "-c",
            "read -P 0x11 1004544 60416",
            "-c",
            "read -P 0xcd 8323072 262144",
            "-c",
            "read -P 0x22 8585216 65536",
            "-c",
            "read -P 0 10485760 1048576",
            "-c",
            "read -P 0x22 11534336 65536",
            "-c",
            "read -P 0 25165824 131072",
            "-c",
            "read -P 0x44 25296896 4096",
            uri,
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!text.contains("fail") && !text.contains("error"), "{text}");
        assert_eq!(text.matches("read ").count(), 9, "{text}");
    };
    check(&uri);
    let (code, err) = s.stop();
    assert_eq!(code, 130, "{err}");
    // The overlay holds the writes: a new server on it reads them back.
    let (s, _) = writable(&e);
    check(&s.uris[0]);
    s.stop();
    assert_eq!(repo_files(&e), before, "the repository is unchanged");
    // A copy of the point without the overlay still has the old data.
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 1);
    ok(&[
        "qemu-io",
        "-r",
        "-f",
        "raw",
        "-c",
        "read -P 0x11 1000448 4096",
        &s.uris[0],
    ]);
    s.stop();
}

#[test]
fn an_overlay_of_another_point_or_disk_is_refused() {
    let (e, _) = patterned();
    let img = e.path("other.img");
    image(&img, &[(Fill::Byte(3), 1)]);
    e.backup("vm", &[("d", &img), ("e", &img)]);
    let sock = socket(&e);
    let overlay = e.path("d.overlay");
    let ov = overlay.to_str().unwrap();
    let leases = leases_of(&e);
    let points = e.json(&["points"]);
    let id = |n: usize| format!("vm@{}", points["points"][n]["id"].as_str().unwrap());
    let (first, latest) = (id(0), id(1));
    let mine = ["--socket", &sock, "--writable", "--overlay", ov];
    let s = Served::start(
        &e,
        &[&[latest.as_str(), "--disk", "d"][..], &mine].concat(),
        1,
    );
    s.stop();
    // Another point's disk of the same name, the same point's other disk.
    for (point, disk) in [(first.as_str(), "d"), (latest.as_str(), "e")] {
        let mut args = vec!["serve", point, "--disk", disk];
        args.extend(mine);
        let out = e.x(&args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("is the overlay of point")
                && err.contains(&latest)
                && err.contains("disk d"),
            "{err}"
        );
    }
    assert_eq!(leases_of(&e), leases, "a refused server leaves no lease");
    // Not an overlay at all, and a link: refused, left alone.
    let text = e.path("notes.txt");
    std::fs::write(&text, "keep me").unwrap();
    let link = e.path("link.overlay");
    std::os::unix::fs::symlink(&text, &link).unwrap();
    for f in [&text, &link] {
        let out = e
            .x(&[
                "serve",
                "vm@latest",
                "--disk",
                "d",
                "--socket",
                &sock,
                "--writable",
                "--overlay",
                f.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    }
    assert_eq!(std::fs::read_to_string(&text).unwrap(), "keep me");
}

/// Writes, zeros and trims of length 0 (which the spec asks a server to
/// answer without disconnecting) at the start of the disk and inside a
/// block: each gets its reply, on a connection that goes on, and nothing
/// changes. Before the fix, `end - 1` of an empty range at offset 0 made
/// the overlay walk "every block" and panic on the second, ending the
/// connection.
#[test]
fn requests_of_length_zero_change_nothing_and_keep_the_connection() {
    use std::io::Read;
    use xfull_core::nbd::proto::*;

    use crate::serve_clients::RawClient;
    let (e, _) = patterned();
    let (s, sock) = writable(&e);
    let mut c = RawClient::connect(&sock);
    // A guard against a hang (no reply and no close), not a measure.
    c.0.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    c.handshake();
    let mut cookie = 0;
    for command in [CMD_WRITE, CMD_WRITE_ZEROES, CMD_TRIM] {
        for offset in [0, 1000] {
            cookie += 1;
            c.request(command, cookie, offset, 0);
            let mut reply = [0u8; 16];
            c.0.read_exact(&mut reply).unwrap_or_else(|err| {
                panic!(
                    "{} of 0 bytes at {offset}: no reply: {err}",
                    command_name(command)
                )
            });
            assert_eq!(reply[..4], SIMPLE_REPLY_MAGIC.to_be_bytes());
            assert_eq!(reply[8..], cookie.to_be_bytes());
            assert_eq!(reply[4..8], [0; 4], "{}", command_name(command));
        }
    }
    drop(c);
    ok(&[
        "qemu-io",
        "-r",
        "-f",
        "raw",
        "-c",
        "read -P 0x11 0 131072",
        &s.uris[0],
    ]);
    let (code, err) = s.stop();
    assert_eq!(code, 130, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `--overlay` on a point of two disks without `--disk`: the usage error
/// says to name one (exit 2), and the overlay file is not created, so a
/// retry with `--disk e` takes it. Before, disk d's overlay was opened
/// (and the file created with d's header) before the disks were counted:
/// the user read "in use by another process", and the retry was refused
/// as "the overlay of disk d" (review 104.4).
#[test]
fn an_overlay_with_two_disks_and_no_disk_named_is_a_usage_error_and_creates_nothing() {
    let (e, _) = patterned();
    let img = e.path("other.img");
    image(&img, &[(Fill::Byte(3), 1)]);
    e.backup("vm", &[("d", &img), ("e", &img)]);
    let sock = socket(&e);
    let overlay = e.path("two.overlay");
    let ov = overlay.to_str().unwrap();
    let leases = leases_of(&e);
    let out = e
        .x(&[
            "serve",
            "vm@latest",
            "--socket",
            &sock,
            "--writable",
            "--overlay",
            ov,
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("use --disk"), "{err}");
    assert!(!overlay.exists(), "a refused server creates no overlay");
    assert_eq!(leases_of(&e), leases, "a refused server leaves no lease");
    let s = Served::start(
        &e,
        &[
            "vm@latest",
            "--disk",
            "e",
            "--socket",
            &sock,
            "--writable",
            "--overlay",
            ov,
        ],
        1,
    );
    s.stop();
}
