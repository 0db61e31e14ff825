//! A local repository directory that someone planted things in: files of
//! their own, symbolic links out of the repository, FIFOs in place of
//! objects. xfull never reads, writes or deletes through them, never
//! blocks on them, and reports the ones it meets where an object should be
//! as damage (exit 3) naming the key.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use xfull_integration::env::{Env, fails, sha256, stderr, walk};
use xfull_integration::{Region, write_image};

/// A small image with several chunks, backed up as `v`: returns its path.
fn backed_up(e: &Env) -> PathBuf {
    backed_up_as(e, "v")
}

fn backed_up_as(e: &Env, vm: &str) -> PathBuf {
    let img = e.path("d.img");
    write_image(
        &img,
        &[Region::Random(3 << 20), Region::Text(2 << 20)],
        7,
        false,
    )
    .unwrap();
    let disk = format!("d={}", img.display());
    e.x(&["backup", "--vm", vm, "--disk", &disk])
        .assert()
        .success();
    img
}

/// The pack files of the repository (no staging file), sorted: where
/// chunks live.
fn chunk_files(e: &Env) -> Vec<PathBuf> {
    let mut v: Vec<_> = walk(&e.repo.join("packs"))
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains('#'))
        .collect();
    v.sort();
    v
}

/// `packs/ab/abcd...` for a pack file.
fn key_of(e: &Env, p: &Path) -> String {
    p.strip_prefix(&e.repo).unwrap().display().to_string()
}

fn mkfifo(p: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Sets the modification time of `p` (not following a link) to two days ago.
fn make_old(p: &Path) {
    let st = std::process::Command::new("touch")
        .args(["-h", "-d", "2 days ago"])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Runs xfull with `args` and returns (exit code, stdout + stderr). A
/// command still running after a generous time blocked (on a FIFO): it is
/// killed and the test fails.
fn run_bounded(e: &Env, args: &[&str]) -> (i32, String) {
    let out = e.path(&format!("out-{}", rand::random::<u32>()));
    let mut child = e
        .std(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("xfull {args:?} blocked (killed after 120 s)");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out).unwrap();
    (status.code().unwrap(), text)
}

/// Every file and link under `dir` with its content (links: their target).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            let meta = p.symlink_metadata().unwrap();
            if meta.is_dir() {
                todo.push(p);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                out.push((p, target.into_os_string().into_encoded_bytes()));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn init_refuses_a_directory_that_is_not_empty() {
    let e = Env::bare();
    std::fs::create_dir_all(e.repo.join("mydocs")).unwrap();
    std::fs::write(e.repo.join("mydocs/meeting#1"), b"minutes").unwrap();
    std::fs::write(e.repo.join("notes.txt"), b"notes").unwrap();
    let before = snapshot(&e.repo);
    let (code, err) = fails(e.x(&["init"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not empty"), "{err}");
    assert!(err.contains(&e.url), "names the directory: {err}");
    assert!(err.contains("mydocs"), "says what is there: {err}");
    assert_eq!(snapshot(&e.repo), before, "init wrote into the directory");

    // An empty directory that exists is fine, once.
    let empty = e.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let url = empty.display().to_string();
    e.x(&["-r", &url, "init"]).assert().success();
    let (code, err) = fails(e.x(&["-r", &url, "init"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already exists"), "{err}");

    // A symbolic link given as the repository is followed (the operator
    // named it); the repository lives where it points.
    let target = e.path("target");
    std::fs::create_dir(&target).unwrap();
    let link = e.path("link");
    symlink(&target, &link).unwrap();
    let url = link.display().to_string();
    e.x(&["-r", &url, "init"]).assert().success();
    assert!(target.join("config").is_file());
    e.x(&["-r", &url, "points"]).assert().success();
}

#[test]
fn gc_leaves_files_it_did_not_write_and_never_leaves_the_repository() {
    let e = Env::init_with(&["--clock-margin", "0s"]);
    backed_up(&e);
    let chunks = chunk_files(&e);
    let outside = e.path("outside");
    std::fs::create_dir(&outside).unwrap();

    // A user's files in the repository, named like staging files.
    std::fs::create_dir(e.repo.join("mydocs")).unwrap();
    let planted = [e.repo.join("mydocs/meeting#1"), e.repo.join("notes#2")];
    for p in &planted {
        std::fs::write(p, b"mine").unwrap();
        make_old(p);
    }
    // A fan directory that is a link out of the repository, holding a
    // look-alike staging file and a file named like an unused pack.
    let fan = (0..=255u8)
        .map(|b| format!("{b:02x}"))
        .find(|f| !e.repo.join("packs").join(f).exists())
        .unwrap();
    let chunk_named = format!("{fan}{}", "7".repeat(62));
    for name in [
        "x#1".to_string(),
        chunk_named.clone(),
        format!("{chunk_named}#1"),
    ] {
        std::fs::write(outside.join(&name), b"outside").unwrap();
        make_old(&outside.join(&name));
    }
    symlink(&outside, e.repo.join("packs").join(&fan)).unwrap();
    // A real staging file of a killed writer: gc removes it.
    let stale = PathBuf::from(format!("{}#42", chunks[0].display()));
    std::fs::write(&stale, b"partial").unwrap();
    make_old(&stale);

    let outside_before = snapshot(&outside);
    // The link where packs could be stops gc, named (a listing with a
    // silent gap could make gc delete what points use).
    let (code, out) = run_bounded(&e, &["gc"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!("packs/{fan}")) && out.contains("symbolic link"),
        "{out}"
    );
    assert_eq!(
        snapshot(&outside),
        outside_before,
        "gc changed files outside"
    );
    assert!(e.repo.join("packs").join(&fan).symlink_metadata().is_ok());
    std::fs::remove_file(e.repo.join("packs").join(&fan)).unwrap();
    e.x(&["gc"]).assert().success();
    assert!(!stale.exists(), "gc left a stale staging file");
    for p in &planted {
        assert_eq!(std::fs::read(p).unwrap(), b"mine", "{}", p.display());
    }
    assert_eq!(snapshot(&outside), outside_before);
    for c in &chunks {
        assert!(c.is_file(), "gc deleted a chunk in use: {}", c.display());
    }
    e.x(&["verify"]).assert().success();
}

#[test]
fn a_fifo_in_place_of_a_chunk_is_damage_and_nothing_blocks() {
    let e = Env::init();
    backed_up(&e);
    let chunk = chunk_files(&e)[0].clone();
    let key = key_of(&e, &chunk);
    std::fs::remove_file(&chunk).unwrap();
    mkfifo(&chunk);
    let to = e.path("restored.img");
    let to = to.to_str().unwrap();
    let (code, out) = run_bounded(&e, &["restore", "v@latest", "--disk", "d", "--to", to]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains(&key) && out.contains("FIFO"), "{out}");
    let (code, out) = run_bounded(&e, &["verify", "--read-data"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains(&key) && out.contains("FIFO"), "{out}");
}

#[test]
fn a_fifo_as_config_ends_every_command_with_damage() {
    let e = Env::init();
    let img = backed_up(&e);
    let cfg = e.repo.join("config");
    std::fs::remove_file(&cfg).unwrap();
    mkfifo(&cfg);
    let disk = format!("d={}", img.display());
    let to = e.path("r.img").display().to_string();
    let commands: &[&[&str]] = &[
        &["init"],
        &["points"],
        &["show", "v@latest"],
        &["backup", "--vm", "v", "--disk", &disk],
        &["restore", "v@latest", "--disk", "d", "--to", &to],
        &["verify", "--read-data"],
        &["stats"],
        &["prune", "--keep-last", "1"],
        &["gc"],
    ];
    for args in commands {
        let (code, out) = run_bounded(&e, args);
        assert_eq!(code, 3, "{args:?}: {out}");
        assert!(
            out.contains("config") && out.contains("FIFO"),
            "{args:?}: {out}"
        );
    }
}

#[test]
fn a_symlink_in_place_of_a_chunk_is_damage_and_not_read() {
    let e = Env::init();
    backed_up(&e);
    let chunk = chunk_files(&e)[0].clone();
    let key = key_of(&e, &chunk);
    // The valid chunk now lives outside; a link to it takes its place.
    let moved = e.path("moved-chunk");
    std::fs::rename(&chunk, &moved).unwrap();
    symlink(&moved, &chunk).unwrap();
    let to = e.path("restored.img");
    let (code, out) = run_bounded(
        &e,
        &[
            "restore",
            "v@latest",
            "--disk",
            "d",
            "--to",
            to.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains(&key) && out.contains("symbolic link"), "{out}");
    assert!(!to.exists());
    let (code, out) = run_bounded(&e, &["verify", "--read-data"]);
    assert_eq!(code, 3, "{out}");
    assert!(moved.exists());
}

#[test]
fn a_backup_never_writes_through_a_symlinked_directory() {
    let e = Env::init();
    let outside = e.path("outside");
    std::fs::create_dir(&outside).unwrap();
    // Every fan directory of nodes/ leads out of the repository.
    std::fs::create_dir(e.repo.join("nodes")).unwrap();
    for b in 0..=255u8 {
        symlink(&outside, e.repo.join(format!("nodes/{b:02x}"))).unwrap();
    }
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(1 << 20)], 3, false).unwrap();
    let disk = format!("d={}", img.display());
    let (code, out) = run_bounded(&e, &["backup", "--vm", "v", "--disk", &disk]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("nodes/") && out.contains("symbolic link"),
        "{out}"
    );
    assert!(
        snapshot(&outside).is_empty(),
        "wrote outside the repository"
    );
    assert_eq!(e.points(), 0);
}

#[test]
fn points_are_never_listed_through_a_symlinked_vm_directory() {
    let e = Env::init();
    backed_up(&e);
    // Another repository's VM directory, linked into this one.
    let other = Env::init();
    backed_up_as(&other, "w");
    symlink(other.repo.join("points/w"), e.repo.join("points/w")).unwrap();
    // Damage naming the link, listing all VMs or that one (not a gap:
    // gc lists points/ for what is live).
    for args in [&["points"][..], &["points", "--vm", "w"]] {
        let (code, out) = run_bounded(&e, args);
        assert_eq!(code, 3, "{args:?}: {out}");
        assert!(
            out.contains("points/w") && out.contains("symbolic link"),
            "{out}"
        );
    }
    let listed = e.json(&["points", "--vm", "v"])["points"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

fn backup_to(e: &Env, vm: &str, img: &Path) {
    let disk = format!("d={}", img.display());
    e.x(&["backup", "--vm", vm, "--disk", &disk])
        .assert()
        .success();
}

/// A listing skipped a symbolic link below the listed prefix in silence
/// (review, stop 50). gc lists `points/`
/// to find what is live, so the points behind a symlinked
/// `points/<vm>` (say an operator moved that directory and linked it
/// back) are not seen, and gc deletes all their data without a word.
/// When the directory is put back, the points restore nothing. (Right
/// after w's backup its ended lease names the point, and gc stops on it as
/// damage; once one gc has removed that lease, nothing does.) The
/// listing's own comment gives the rule it breaks here: a FIFO under a
/// key is listed "reading it reports the damage by name, which a silent
/// gap would not"; and the design (S3 backend) "a short listing could
/// make gc delete what points use". A link there stops gc (damage,
/// naming it), as a link as the listed prefix's own directory does.
#[test]
fn gc_never_deletes_the_data_of_points_behind_a_symlinked_vm_directory() {
    let e = Env::init_with(&["--clock-margin", "0s"]);
    let a = e.path("a.img");
    write_image(&a, &[Region::Random(3 << 20)], 1, false).unwrap();
    backup_to(&e, "v", &a);
    let b = e.path("b.img");
    write_image(&b, &[Region::Random(3 << 20)], 2, false).unwrap();
    backup_to(&e, "w", &b);

    // A gc with everything in place: it removes the backups' ended
    // leases, whose record of w's point (seen below) would otherwise stop
    // the next gc.
    e.x(&["gc"]).assert().success();

    let moved = e.path("w-points");
    std::fs::rename(e.repo.join("points/w"), &moved).unwrap();
    symlink(&moved, e.repo.join("points/w")).unwrap();
    let gc = e.std(&["gc"]).output().unwrap();
    let gc_said = format!(
        "gc exit {:?}: {}{}",
        gc.status.code(),
        String::from_utf8_lossy(&gc.stdout),
        stderr(&gc)
    );
    // The directory is put back.
    std::fs::remove_file(e.repo.join("points/w")).unwrap();
    std::fs::rename(&moved, e.repo.join("points/w")).unwrap();

    let to = e.path("w.img");
    let restore = e
        .std(&[
            "restore",
            "w@latest",
            "--disk",
            "d",
            "--to",
            to.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        restore.status.success() && sha256(&to) == sha256(&b),
        "w's data is gone after a gc that did not see points/w (a symlink): restore: {}\n{gc_said}",
        stderr(&restore)
    );
}

/// A huge sparse file in place of a node, a manifest or the config: damage
/// naming it, refused by its size before it is read. Read whole, a 64 GiB
/// file failed as "does not fit in memory" (exit 1, not damage), and one a
/// little smaller than the memory was read into it.
#[test]
fn a_huge_sparse_file_in_place_of_an_object_is_damage_and_not_read() {
    let e = Env::init();
    backed_up(&e);
    let huge = |p: &Path| {
        std::fs::remove_file(p).unwrap();
        std::fs::File::create(p).unwrap().set_len(64 << 30).unwrap();
    };
    let to = e.path("r.img").display().to_string();

    let mut nodes = walk(&e.repo.join("nodes"));
    nodes.retain(|p| !p.to_string_lossy().contains('#'));
    let node = nodes.first().expect("a node file").clone();
    let saved = std::fs::read(&node).unwrap();
    huge(&node);
    let (code, out) = run_bounded(&e, &["restore", "v@latest", "--disk", "d", "--to", &to]);
    assert_eq!(code, 3, "{out}");
    let key = key_of(&e, &node);
    assert!(
        out.contains(&key) && out.contains("more than such an object can be"),
        "{out}"
    );
    std::fs::write(&node, saved).unwrap();

    let manifest = walk(&e.repo.join("points"))[0].clone();
    huge(&manifest);
    let (code, out) = run_bounded(&e, &["verify"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("more than such an object can be"), "{out}");

    huge(&e.repo.join("config"));
    let (code, out) = run_bounded(&e, &["points"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("config") && out.contains("more than such an object can be"),
        "{out}"
    );
}
