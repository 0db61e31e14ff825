//! A restore cannot be turned against its user: symlinks planted in the
//! target's directory, two restores racing for one path, devices in use,
//! special files, a closed stdout, signals, long names; storage faults are
//! errors (exit 1) while damaged data is damage (exit 3), and
//! `--ignore-damage` restores around it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use crate::pack_files::{PackedChunk, damage, packed_chunks};
use xfull_core::backend::{Backend, BackendError};
use xfull_core::progress::Progress;
use xfull_core::repo::Repository;
use xfull_core::restore::{RestoreOptions, Target, restore};
use xfull_integration::env::{Env, fails, sha256, stderr, walk};
use xfull_integration::{Region, write_image, xfull_bin};

/// A repository holding one point of one disk `d`: (env, point, image).
fn backed_up(regions: &[Region], seed: u64) -> (Env<'static>, String, PathBuf) {
    let e = Env::init();
    let img = e.path("d.img");
    write_image(&img, regions, seed, false).unwrap();
    let point = e.backup("vm", &[("d", &img)])["point"]
        .as_str()
        .unwrap()
        .to_string();
    (e, point, img)
}

pub(crate) fn restore_args<'a>(point: &'a str, to: &'a Path) -> Vec<&'a str> {
    vec![
        "restore",
        point,
        "--disk",
        "d",
        "--to",
        to.to_str().unwrap(),
    ]
}

/// Names in `dir` that look like a restore's partial image (today's
/// `.xfull-*.partial` and the older `NAME.xfull-partial`).
fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("xfull") && n.contains("partial"))
        .collect()
}

/// Runs the binary through `sh -c SCRIPT` (e.g. to close stdout or set a
/// umask first).
fn via_sh(e: &Env, script: &str, args: &[&str]) -> Output {
    Command::new("sh")
        .args(["-c", &format!("{script}; exec \"$0\" \"$@\"")])
        .arg(xfull_bin())
        .args(args)
        .env("XFULL_REPO", &e.url)
        .env("XFULL_PASSWORD_FILE", e.password_file())
        .env("XDG_STATE_HOME", e.state_dir())
        .output()
        .unwrap()
}

fn as_root(test: &str) -> bool {
    if std::env::var_os("XFULL_NO_ROOT").is_some() {
        eprintln!("XFULL_NO_ROOT set: {test} not run");
        return false;
    }
    true
}

#[test]
fn symlinks_at_the_partial_name_or_the_target_are_never_followed() {
    let (e, point, img) = backed_up(&[Region::Random(1 << 20)], 1);
    let victim = e.path("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // Planted where restores used to put their partial image.
    let planted = e.path("out.img.xfull-partial");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let to = e.path("out.img");
    e.x(&restore_args(&point, &to)).assert().success();
    assert!(
        std::fs::read(&victim).unwrap() == b"precious",
        "victim written"
    );
    assert!(std::fs::symlink_metadata(&to).unwrap().is_file());
    assert_eq!(sha256(&to), sha256(&img));

    // A symlink at the target is refused and left as it is, with or
    // without --overwrite, whether it points somewhere or nowhere.
    let link = e.path("link.img");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let dangling = e.path("dangling.img");
    std::os::unix::fs::symlink(e.path("nowhere"), &dangling).unwrap();
    for l in [&link, &dangling] {
        for extra in [&[][..], &["--overwrite"][..]] {
            let mut args = restore_args(&point, l);
            args.extend_from_slice(extra);
            let (code, err) = fails(e.x(&args));
            assert_eq!(code, 1, "{err}");
            assert!(err.contains("symbolic link"), "{err}");
            assert!(std::fs::symlink_metadata(l).unwrap().is_symlink());
        }
    }
    assert!(
        std::fs::read(&victim).unwrap() == b"precious",
        "victim written"
    );
    assert!(!e.path("nowhere").exists());
    let left: Vec<_> = partials(e.dir.path());
    assert_eq!(left, ["out.img.xfull-partial"], "only the planted link");
}

#[test]
fn two_restores_to_one_path_leave_one_whole_image() {
    let e = Env::init();
    let (a, b) = (e.path("a.img"), e.path("b.img"));
    write_image(&a, &[Region::Random(40 << 20)], 21, false).unwrap();
    write_image(&b, &[Region::Random(40 << 20)], 22, false).unwrap();
    let point = e.backup("vm", &[("a", &a), ("b", &b)])["point"]
        .as_str()
        .unwrap()
        .to_string();
    // Several rounds: whichever interleaving each one gets, one wins.
    for round in 0..3 {
        let to = e.path(&format!("out{round}.img"));
        let to_s = to.to_str().unwrap();
        let spawn = |disk| {
            e.std(&["restore", &point, "--disk", disk, "--to", to_s])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (ca, cb) = (spawn("a"), spawn("b"));
        let (oa, ob) = (
            ca.wait_with_output().unwrap(),
            cb.wait_with_output().unwrap(),
        );
        let (won, lost, want) = match (oa.status.success(), ob.status.success()) {
            (true, false) => (&oa, &ob, &a),
            (false, true) => (&ob, &oa, &b),
            _ => panic!(
                "exactly one restore must win: {:?} {} / {:?} {}",
                oa.status,
                stderr(&oa),
                ob.status,
                stderr(&ob)
            ),
        };
        assert!(won.status.success());
        let err = stderr(lost);
        assert_eq!(lost.status.code(), Some(1), "{err}");
        assert!(err.contains(to_s) && err.contains("exists"), "{err}");
        assert_eq!(sha256(&to), sha256(want), "one disk, entirely");
        assert!(partials(e.dir.path()).is_empty(), "no partial file left");
    }
}

#[test]
fn overwrite_replaces_a_regular_file_only_when_asked() {
    let (e, point, img) = backed_up(&[Region::Random(1 << 20), Region::Hole(1 << 20)], 3);
    let to = e.path("out.img");
    std::fs::write(&to, b"precious").unwrap();
    let (code, err) = fails(e.x(&restore_args(&point, &to)));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refusing to overwrite") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read(&to).unwrap(), b"precious");

    // Replaced whole, with the usual mode for the caller's umask.
    let mut args = restore_args(&point, &to);
    args.push("--overwrite");
    let out = via_sh(&e, "umask 027", &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256(&to), sha256(&img));
    assert_eq!(std::fs::metadata(&to).unwrap().mode() & 0o777, 0o640);

    // Only a regular file is replaced.
    let dir = e.path("dir.img");
    std::fs::create_dir(&dir).unwrap();
    let mut args = restore_args(&point, &dir);
    args.push("--overwrite");
    let (code, err) = fails(e.x(&args));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("directory"), "{err}");
    assert!(dir.is_dir());
    assert!(partials(e.dir.path()).is_empty());
}

#[test]
fn a_device_in_use_is_refused_and_an_idle_one_needs_force() {
    if !as_root("a_device_in_use_is_refused_and_an_idle_one_needs_force") {
        return;
    }
    let (e, point, img) = backed_up(&[Region::Random(6 << 20)], 4);
    let backing = e.path("dev.img");
    write_image(&backing, &[Region::Zeros(32 << 20)], 0, true).unwrap();
    let dev = LoopDev::attach(&backing);
    let files = e.path("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("keep"), b"still here").unwrap();
    run(Command::new("mkfs.ext4").arg("-qd").arg(&files).arg(&dev.0));
    // Mounted read-only: the device is just as busy, and should a
    // regression write over it, no dirty data can wedge the unmount.
    let mnt = Mount::new(&dev.0, &e.path("mnt"));

    let mut args = restore_args(&point, &dev.0);
    let (code, err) = fails(e.x(&args));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force"), "{err}");
    args.push("--force");
    let (code, err) = fails(e.x(&args));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use"), "{err}");
    assert_eq!(std::fs::read(mnt.0.join("keep")).unwrap(), b"still here");
    drop(mnt);
    // The file system is whole.
    run(Command::new("e2fsck").arg("-fn").arg(&dev.0));

    // Idle: refused without --force (untouched), written with it.
    let before = sha256(&backing);
    let (code, err) = fails(e.x(&restore_args(&point, &dev.0)));
    assert_eq!(code, 2, "{err}");
    assert_eq!(sha256(&backing), before);
    e.x(&args).assert().success();
    drop(dev);
    let got = std::fs::read(&backing).unwrap();
    assert_eq!(&got[..6 << 20], &std::fs::read(&img).unwrap()[..]);
}

fn run(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {}", stderr(&out));
}

/// A loop device for the life of the value (needs root, as CI runs).
struct LoopDev(PathBuf);

impl LoopDev {
    fn attach(file: &Path) -> LoopDev {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {}", stderr(&out));
        LoopDev(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()))
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A mounted file system, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(dev: &Path, at: &Path) -> Mount {
        std::fs::create_dir(at).unwrap();
        run(Command::new("mount").args(["-o", "ro"]).arg(dev).arg(at));
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn special_files_and_a_closed_stdout_are_refused() {
    let (e, point, _) = backed_up(&[Region::Random(1 << 20)], 5);
    let (code, err) = fails(e.x(&restore_args(&point, Path::new("/dev/null"))));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/dev/null") && err.contains("verify --read-data"),
        "{err}"
    );
    let fifo = e.path("fifo");
    run(Command::new("mkfifo").arg(&fifo));
    let (code, err) = fails(e.x(&restore_args(&point, &fifo)));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("fifo"), "{err}");

    let out = via_sh(&e, "exec >&-", &restore_args(&point, Path::new("-")));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("stdout"), "{}", stderr(&out));
}

#[test]
fn an_interrupted_restore_removes_its_partial_image() {
    let (e, point, _) = backed_up(&[Region::Random(256 << 20)], 6);
    let to = e.path("out.img");
    // Signal once the partial image exists; try again if the restore
    // finished first (this machine may be fast or busy).
    for _ in 0..5 {
        let mut child = e
            .std(&restore_args(&point, &to))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let signalled = loop {
            if !partials(e.dir.path()).is_empty() {
                run(Command::new("kill").args(["-INT", &child.id().to_string()]));
                break true;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        let out = child.wait_with_output().unwrap();
        if !signalled || out.status.success() {
            let _ = std::fs::remove_file(&to);
            continue;
        }
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(130), "{err}");
        assert!(err.contains("removed"), "{err}");
        assert!(partials(e.dir.path()).is_empty(), "partial image removed");
        assert!(!to.exists(), "no target created");
        return;
    }
    panic!("the restore finished before it could be interrupted, 5 times");
}

#[test]
fn a_250_character_target_name_works() {
    let (e, point, img) = backed_up(&[Region::Random(1 << 20)], 7);
    let to = e.path(&"n".repeat(250));
    e.x(&restore_args(&point, &to)).assert().success();
    assert_eq!(sha256(&to), sha256(&img));
}

#[test]
fn an_unreadable_chunk_is_an_error_and_a_damaged_one_is_damage() {
    if !as_root("an_unreadable_chunk_is_an_error_and_a_damaged_one_is_damage") {
        return;
    }
    let (e, point, _) = backed_up(&[Region::Random(2 << 20)], 8);
    // Another user who may read the repository restores to stdout.
    let bin = e.path("xfull");
    std::fs::copy(xfull_bin(), &bin).unwrap();
    for p in [e.dir.path(), &bin] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The repository is its owner's only: the operator lets others read.
    let opened = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(&e.repo)
        .status()
        .unwrap();
    assert!(opened.success());
    let as_nobody = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(["restore", &point, "--disk", "d", "--to", "-"])
            .env("XFULL_PASSWORD_FILE", e.password_file())
            .env("XFULL_REPO", &e.url)
            .env("XDG_STATE_HOME", e.state_dir_of(65534))
            .stdout(Stdio::piped())
            .output()
            .unwrap()
    };
    let out = as_nobody();
    assert!(out.status.success(), "{}", stderr(&out));
    let first = packed_chunks(&e).remove(0);
    let (chunk, id) = (first.file.clone(), first.id.clone());
    std::fs::set_permissions(&chunk, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = as_nobody();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "a permission error: {err}");
    assert!(err.contains("ermission denied"), "{err}");
    assert!(
        err.contains(&point) && err.contains("offset") && err.contains(&id),
        "{err}"
    );

    std::fs::set_permissions(&chunk, std::fs::Permissions::from_mode(0o644)).unwrap();
    damage(&first);
    let (code, err) = fails(e.x(&restore_args(&point, Path::new("-"))));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&id), "{err}");
}

/// Restores with `--ignore-damage --json` to `to`, which must exit 3;
/// checks the image is `img` with the listed ranges zeroed and returns
/// them as (offset, length, object, reason).
fn restore_ignoring(
    e: &Env,
    point: &str,
    img: &Path,
    to: &Path,
) -> Vec<(u64, u64, String, String)> {
    let mut args = restore_args(point, to);
    args.extend(["--ignore-damage", "--json"]);
    let out = e.x(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut want = std::fs::read(img).unwrap();
    let mut ranges = Vec::new();
    for r in v["damaged"].as_array().unwrap() {
        let (off, len) = (r["offset"].as_u64().unwrap(), r["length"].as_u64().unwrap());
        want[off as usize..(off + len) as usize].fill(0);
        let text = |k: &str| r[k].as_str().unwrap().to_string();
        ranges.push((off, len, text("object"), text("reason")));
    }
    assert!(std::fs::read(to).unwrap() == want, "zeros exactly there");
    ranges
}

#[test]
fn ignore_damage_restores_zeros_for_the_damaged_ranges_and_lists_them() {
    let (e, point, img) = backed_up(
        &[
            Region::Random(3 << 20),
            Region::Text(3 << 20),
            Region::Random(3 << 20),
        ],
        9,
    );
    // The last chunk of the last pack cut short (as if lost), one in the
    // middle flipped.
    let chunks = packed_chunks(&e);
    let (gone, bad) = (
        chunks[chunks.len() - 1].clone(),
        chunks[chunks.len() / 2].clone(),
    );
    let pack = std::fs::read(&gone.file).unwrap();
    std::fs::write(&gone.file, &pack[..gone.offset as usize]).unwrap();
    damage(&bad);

    let to = e.path("out.img");
    let ranges = restore_ignoring(&e, &point, &img, &to);
    let of = |c: &PackedChunk| ranges.iter().find(|r| r.2.contains(&c.id)).cloned();
    assert!(of(&gone).is_some(), "{ranges:?}");
    assert!(of(&bad).is_some(), "{ranges:?}");

    // Text output lists the ranges too.
    std::fs::remove_file(&to).unwrap();
    let out = e
        .x(&[&restore_args(&point, &to)[..], &["--ignore-damage"]].concat())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    for r in &ranges {
        assert!(
            text.contains(&format!("offset {} length {}", r.0, r.1)),
            "{text}"
        );
    }

    // A missing node costs its whole segment (4 MiB here; the last one
    // is shorter).
    let node = walk(&e.repo.join("nodes")).into_iter().next().unwrap();
    std::fs::remove_file(&node).unwrap();
    let to = e.path("out2.img");
    let ranges = restore_ignoring(&e, &point, &img, &to);
    let seg = ranges.iter().find(|r| r.2.contains("node")).unwrap();
    let size = std::fs::metadata(&img).unwrap().len();
    assert!(seg.0 % (4 << 20) == 0, "{ranges:?}");
    assert_eq!(seg.1, (4 << 20).min(size - seg.0), "{ranges:?}");
}

/// A store that answers `error()` for one key and passes everything else.
#[derive(Debug)]
struct FailOne {
    inner: Arc<dyn Backend>,
    key: String,
    error: fn(&str) -> BackendError,
}

#[xfull_core::async_trait]
impl Backend for FailOne {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put_opts(
        &self,
        key: &str,
        data: bytes::Bytes,
        opts: xfull_core::backend::PutOptions,
    ) -> Result<(), BackendError> {
        self.inner.put_opts(key, data, opts).await
    }
    async fn get(&self, key: &str) -> Result<bytes::Bytes, BackendError> {
        if key == self.key {
            return Err((self.error)(key));
        }
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, BackendError> {
        if key == self.key {
            return Err((self.error)(key));
        }
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &str) -> Result<xfull_core::backend::ObjectMeta, BackendError> {
        self.inner.head(key).await
    }
    fn list(
        &self,
        prefix: &str,
    ) -> futures::stream::BoxStream<'_, Result<xfull_core::backend::ObjectMeta, BackendError>> {
        self.inner.list(prefix)
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.delete_many(keys).await
    }
}

/// Throttling after retries, an archived chunk, a denied read: errors
/// that name point, disk, offset and chunk, and are not damage.
#[test]
fn storage_faults_during_a_restore_are_not_damage() {
    let (e, point, _) = backed_up(&[Region::Random(2 << 20)], 10);
    // The pack holding the image's first chunk fails.
    let first = packed_chunks(&e).remove(0);
    let id = first.id;
    let key = first
        .file
        .strip_prefix(&e.repo)
        .unwrap()
        .display()
        .to_string();
    let faults: [fn(&str) -> BackendError; 3] = [
        |k| BackendError::Transient {
            location: "s3://b".into(),
            message: format!("503 SlowDown on {k}"),
        },
        |k| BackendError::Archived {
            location: "s3://b".into(),
            key: k.into(),
        },
        |k| BackendError::Unauthenticated {
            location: "s3://b".into(),
            message: format!("403 AccessDenied on {k}"),
        },
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    for error in faults {
        let backend = FailOne {
            inner: Arc::new(xfull_local::LocalBackend::open(&e.repo).unwrap()),
            key: key.clone(),
            error,
        };
        let to = e.path("out.img");
        let err = rt.block_on(async {
            let pw = std::fs::read_to_string(e.password_file()).unwrap();
            let secret = xfull_core::crypto::Secret::password(
                pw.trim_end().as_bytes().to_vec(),
                "the test's password",
            );
            let repo = Repository::open_with(Arc::new(backend), || Ok(secret))
                .await
                .unwrap();
            let spec: xfull_core::point_spec::PointSpec = point.parse().unwrap();
            let m = repo.resolve(&spec).await.unwrap();
            let target = Target::parse(to.to_str().unwrap()).unwrap();
            let progress = Arc::new(Progress::default());
            restore(&repo, &m, "d", &target, RestoreOptions::default(), progress)
                .await
                .unwrap_err()
        });
        let msg = err.to_string();
        assert!(!err.is_damage(), "{msg}");
        assert!(
            msg.contains(&point) && msg.contains("disk d") && msg.contains(&id),
            "{msg}"
        );
        assert!(msg.contains("offset") && msg.contains("s3://b"), "{msg}");
        assert!(!to.exists() && partials(e.dir.path()).is_empty());
    }
}
