//! `xfull serve`: a point's disks as NBD exports, checked with the real
//! tools (nbdcopy, qemu-img, nbdinfo, qemu-io): copies equal the restored
//! image, holes show in the map, random reads match, two clients at once,
//! writes go to the overlay only, damage is an EIO for its range only,
//! and a served point's data outlives prune and gc until the server
//! stops.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;

use xfull_integration::env::{Env, stderr, walk};

const MIB: u64 = 1 << 20;

/// A region of a test image: a byte repeated (`read -P` checks it), or
/// random bytes.
#[derive(Clone, Copy)]
enum Fill {
    Byte(u8),
    Random(u64),
}

/// Writes an image of `(fill, MiB)` regions; 0 as a byte is written as a
/// hole.
fn image(path: &Path, regions: &[(Fill, u64)]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    let mut at = 0;
    for &(fill, mib) in regions {
        let len = mib * MIB;
        match fill {
            Fill::Byte(0) => {}
            Fill::Byte(b) => f.write_all_at(&vec![b; len as usize], at).unwrap(),
            Fill::Random(seed) => {
                let mut x = seed | 1;
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                f.write_all_at(&data, at).unwrap();
            }
        }
        at += len;
    }
    f.set_len(at).unwrap();
}

/// A running `xfull serve`, stopped with SIGTERM when asked.
pub struct Served {
    child: Child,
    pub uris: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Served {
    /// Starts `xfull serve ARGS` and waits for its `exports` URIs.
    pub fn start(e: &Env, args: &[&str], exports: usize) -> Served {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        Served::spawn(e, &all, exports)
    }

    /// Starts a long-running `xfull ARGS` (serve, mount) and waits for
    /// the first `lines` lines it prints (kept in `uris`).
    pub fn spawn(e: &Env, args: &[&str], lines: usize) -> Served {
        let mut child = e
            .std(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut uris = Vec::new();
        for _ in 0..lines {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                panic!("xfull {} ended: {}", args[0], stderr.join().unwrap());
            }
            uris.push(line.trim().to_string());
        }
        Served {
            child,
            uris,
            stderr: Some(stderr),
        }
    }

    /// SIGTERM; returns the exit code and what it printed on stderr.
    pub fn stop(mut self) -> (i32, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        let err = self.stderr.take().unwrap().join().unwrap();
        (status.code().unwrap_or(-1), err)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn run(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

fn ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    out
}

fn b3(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap())
        .to_hex()
        .to_string()
}

/// A repository with one point of VM `vm`, disk `d`, made of `regions`;
/// returns the env and the restored image.
fn backed_up(regions: &[(Fill, u64)]) -> (Env<'static>, PathBuf) {
    let e = Env::init_with(&["--clock-margin", "0s"]);
    let img = e.path("d.img");
    image(&img, regions);
    e.backup("vm", &[("d", &img)]);
    let restored = e.path("restored.img");
    e.restore("vm@latest", "d", &restored);
    (e, restored)
}

fn socket(e: &Env) -> String {
    e.path("nbd.sock").display().to_string()
}

/// Zeros (a null segment), random data, repeated bytes, zeros again.
const MIXED: &[(Fill, u64)] = &[
    (Fill::Random(7), 3),
    (Fill::Byte(0), 6),
    (Fill::Byte(0x5a), 3),
    (Fill::Random(9), 2),
    (Fill::Byte(0), 2),
];

#[test]
fn nbdcopy_and_qemu_img_copies_equal_the_restored_image() {
    let (e, restored) = backed_up(MIXED);
    let sock = socket(&e);
    let leases = leases_of(&e);
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 1);
    assert_eq!(
        leases_of(&e).len(),
        leases.len() + 1,
        "a lease while serving"
    );
    let uri = s.uris[0].clone();
    assert!(uri.starts_with("nbd+unix:///d?socket="), "{uri}");
    let a = e.path("nbdcopy.img");
    let b = e.path("qemu-img.img");
    ok(&["nbdcopy", &uri, a.to_str().unwrap()]);
    ok(&[
        "qemu-img",
        "convert",
        "-f",
        "raw",
        "-O",
        "raw",
        &uri,
        b.to_str().unwrap(),
    ]);
    assert_eq!(b3(&a), b3(&restored), "nbdcopy's copy");
    assert_eq!(b3(&b), b3(&restored), "qemu-img's copy");
    let (code, err) = s.stop();
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("lease"), "says the lease was released: {err}");
    assert_eq!(leases_of(&e), leases, "the server's lease is gone");
}

#[test]
fn nbdinfo_map_shows_the_holes() {
    let (e, _) = backed_up(MIXED);
    let sock = socket(&e);
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 1);
    let out = ok(&["nbdinfo", "--map", "--json", &s.uris[0]]);
    let map: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let zero_at = |off: u64| {
        map.as_array().unwrap().iter().any(|x| {
            let (o, l, t) = (
                x["offset"].as_u64().unwrap(),
                x["length"].as_u64().unwrap(),
                x["type"].as_u64().unwrap(),
            );
            o <= off && off < o + l && t & 3 == 3
        })
    };
    // The 6 MiB hole from 3 MiB: a whole null segment (4-8 MiB) and zero
    // chunks; the trailing 2 MiB too.
    for off in [4 * MIB, 6 * MIB, 8 * MIB - 1, 15 * MIB] {
        assert!(zero_at(off), "hole at {off}: {map}");
    }
    for off in [0, MIB, 10 * MIB, 13 * MIB] {
        assert!(!zero_at(off), "data at {off}: {map}");
    }
    s.stop();
}

/// 8 MiB regions, each one byte repeated (a zero one among them).
const PATTERNS: [u8; 4] = [0x11, 0x22, 0, 0x44];

fn patterned() -> (Env<'static>, PathBuf) {
    let regions: Vec<(Fill, u64)> = PATTERNS.iter().map(|&b| (Fill::Byte(b), 8)).collect();
    backed_up(&regions)
}

/// `count` qemu-io reads of 4 KiB to 8 MiB, each inside one region and
/// checked against its byte with `read -P`.
fn random_reads(uri: &str, count: usize, seed: u64) -> Output {
    let region = 8 * MIB;
    let mut x = seed;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut args = vec![
        "qemu-io".to_string(),
        "-r".into(),
        "-f".into(),
        "raw".into(),
    ];
    for _ in 0..count {
        let len = (4096 + next(8 * MIB - 4096)) / 512 * 512;
        let k = next(PATTERNS.len() as u64);
        let off = k * region + next(region - len + 1) / 512 * 512;
        args.push("-c".into());
        args.push(format!("read -P {} {off} {len}", PATTERNS[k as usize]));
    }
    args.push(uri.into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&a)
}

#[test]
fn qemu_io_random_reads_match_the_source() {
    let (e, _) = patterned();
    let sock = socket(&e);
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 1);
    let out = random_reads(&s.uris[0], 40, 0x9e3779b9);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("fail") && !text.contains("error"), "{text}");
    assert_eq!(text.matches("read ").count(), 40, "{text}");
    s.stop();
}

#[test]
fn two_clients_at_once_read_the_same_image() {
    let (e, restored) = backed_up(MIXED);
    let sock = socket(&e);
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 1);
    let (a, b) = (e.path("a.img"), e.path("b.img"));
    let spawn = |to: &Path| {
        Command::new("nbdcopy")
            .args([&s.uris[0], to.to_str().unwrap()])
            .spawn()
            .unwrap()
    };
    let (mut ca, mut cb) = (spawn(&a), spawn(&b));
    assert!(ca.wait().unwrap().success() && cb.wait().unwrap().success());
    assert_eq!(b3(&a), b3(&restored));
    assert_eq!(b3(&b), b3(&restored));
    s.stop();
}

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

#[test]
fn writes_go_to_the_overlay_and_never_to_the_repository() {
    let (e, _) = patterned();
    let before = repo_files(&e);
    let sock = socket(&e);
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
    let s = Served::start(&e, &args, 1);
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
    let s = Served::start(&e, &args, 1);
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

#[test]
fn a_damaged_chunk_is_an_eio_for_its_range_only() {
    // Random data first (unique chunks), repeated bytes after.
    let (e, _) = backed_up(&[(Fill::Random(5), 2), (Fill::Byte(0x44), 8)]);
    // Damage one chunk of the random region: flip a byte of chunk files
    // until restore says the damage lies there.
    let mut damaged = None;
    for f in walk(&e.repo.join("chunks")) {
        let orig = std::fs::read(&f).unwrap();
        let mut bad = orig.clone();
        let n = bad.len() - 1;
        bad[n] ^= 0xff;
        std::fs::write(&f, &bad).unwrap();
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
    let chunks_before = walk(&e.repo.join("chunks")).len();
    e.x(&["prune", "--keep-last", "1"]).assert().success();
    e.x(&["gc"]).assert().success();
    assert_eq!(e.points(), 1, "the served point is pruned");
    assert!(
        !walk(&e.repo.join("trash")).is_empty(),
        "it waits in the trash"
    );
    assert_eq!(
        walk(&e.repo.join("chunks")).len(),
        chunks_before,
        "gc kept its chunks"
    );
    let copy = e.path("copy.img");
    ok(&["nbdcopy", &s.uris[0], copy.to_str().unwrap()]);
    assert_eq!(b3(&copy), b3(&restored), "still readable");
    let (code, err) = s.stop();
    assert_eq!(code, 130, "{err}");
    e.x(&["gc"]).assert().success();
    assert!(walk(&e.repo.join("trash")).is_empty(), "{err}");
    assert!(
        walk(&e.repo.join("chunks")).len() < chunks_before,
        "gc freed them"
    );
}

#[test]
fn several_disks_are_several_exports_named_after_them() {
    let e = Env::init_with(&["--clock-margin", "0s"]);
    let (a, b) = (e.path("a.img"), e.path("b.img"));
    image(&a, &[(Fill::Byte(1), 1)]);
    image(&b, &[(Fill::Byte(2), 2)]);
    e.backup("vm", &[("sda", &a), ("sdb", &b)]);
    let sock = socket(&e);
    let s = Served::start(&e, &["vm@latest", "--socket", &sock], 2);
    assert!(
        s.uris[0].contains("/sda?") && s.uris[1].contains("/sdb?"),
        "{:?}",
        s.uris
    );
    let out = ok(&["nbdinfo", "--size", &s.uris[1]]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (2 * MIB).to_string()
    );
    s.stop();
    // An unknown disk: refused before anything is served.
    let out = e
        .x(&["serve", "vm@latest", "--disk", "sdz", "--socket", &sock])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("sdz"));
    // TCP on loopback.
    let s = Served::start(
        &e,
        &["vm@latest", "--disk", "sdb", "--listen", "127.0.0.1:0"],
        1,
    );
    assert!(s.uris[0].starts_with("nbd://127.0.0.1:"), "{:?}", s.uris);
    ok(&["nbdinfo", "--size", &s.uris[0]]);
    s.stop();
}

/// The repository's lease files, sorted (backups leave ended ones).
pub fn leases_of(e: &Env) -> Vec<std::path::PathBuf> {
    let mut v = walk(&e.repo.join("leases"));
    v.sort();
    v
}
