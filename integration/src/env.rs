//! A scratch directory with a repository, and helpers to drive the
//! `xfull` binary in it.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

use crate::s3::S3Server;
use crate::xfull_bin;

/// A test scenario that runs against any repository.
pub type Scenario = fn(&Env);

/// A scratch directory and a repository, local (in the directory) or on
/// an S3 server.
#[derive(Debug)]
pub struct Env<'s> {
    pub dir: TempDir,
    /// The local repository's directory (unused on S3).
    pub repo: PathBuf,
    /// What `XFULL_REPO` says.
    pub url: String,
    pub s3: Option<&'s S3Server>,
}

impl Env<'static> {
    /// A temp dir with an initialised local repository (small segments so
    /// that test images span many of them).
    pub fn init() -> Env<'static> {
        Env::init_with(&[])
    }

    /// The same, with more `init` options (e.g. a short lease TTL).
    pub fn init_with(extra: &[&str]) -> Env<'static> {
        Env::init_segments("4M", extra)
    }

    /// A repository of `segment_size` segments (e.g. `32M`, larger than
    /// restore's 16 MiB parts and backup's windows), with more options.
    pub fn init_segments(segment_size: &str, extra: &[&str]) -> Env<'static> {
        let e = Env::bare();
        let mut args = vec![
            "init",
            "--segment-size",
            segment_size,
            "--kdf-memory-kib",
            "64",
            "--kdf-time",
            "1",
        ];
        args.extend_from_slice(extra);
        e.x(&args).assert().success();
        e
    }

    pub fn bare() -> Env<'static> {
        let dir = tempfile::tempdir().unwrap();
        write_password(dir.path());
        let repo = dir.path().join("repo");
        let url = repo.display().to_string();
        Env {
            dir,
            repo,
            url,
            s3: None,
        }
    }
}

impl<'s> Env<'s> {
    /// The same on an S3 server, under a prefix of its own.
    pub fn init_s3(server: &'s S3Server, name: &str) -> Env<'s> {
        Env::init_s3_with(server, name, &[])
    }

    /// A place on an S3 server, under a prefix of its own, with no
    /// repository yet.
    pub fn s3(server: &'s S3Server, name: &str) -> Env<'s> {
        let dir = tempfile::tempdir().unwrap();
        write_password(dir.path());
        let repo = dir.path().join("unused");
        Env {
            dir,
            repo,
            url: server.url(name),
            s3: Some(server),
        }
    }

    pub fn init_s3_with(server: &'s S3Server, name: &str, extra: &[&str]) -> Env<'s> {
        let e = Env::s3(server, name);
        let mut args = vec![
            "init",
            "--segment-size",
            "4M",
            "--kdf-memory-kib",
            "64",
            "--kdf-time",
            "1",
        ];
        args.extend_from_slice(extra);
        e.x(&args).assert().success();
        e
    }

    pub fn x(&self, args: &[&str]) -> Command {
        Command::from_std(self.std(args))
    }

    /// The same as a plain command, e.g. to spawn and kill it.
    pub fn std(&self, args: &[&str]) -> std::process::Command {
        let mut std = std::process::Command::new(xfull_bin());
        std.env("XFULL_REPO", &self.url)
            .env("XFULL_PASSWORD_FILE", self.password_file())
            .env_remove("XFULL_PASSWORD")
            .env("XDG_STATE_HOME", self.state_dir())
            .args(args);
        if let Some(s) = self.s3 {
            s.set_env(&mut std);
        }
        std
    }

    /// The repository's password, given to every command as
    /// `XFULL_PASSWORD_FILE` (repositories are encrypted by default).
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join(PASSWORD_FILE)
    }

    /// The client state of this test's commands (`XDG_STATE_HOME`: the
    /// record of repositories seen encrypted), private to the test so that
    /// tests neither share it nor touch the user's.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A client state directory of its own for commands run as another
    /// user (`uid`): one it cannot read would be an error, not a pass.
    pub fn state_dir_of(&self, uid: u32) -> PathBuf {
        let dir = self.dir.path().join(format!("state-{uid}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
        dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.x(&all).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn backup(&self, vm: &str, disks: &[(&str, &Path)]) -> Value {
        let mut args = vec!["backup".to_string(), "--vm".into(), vm.into()];
        for (name, p) in disks {
            args.push("--disk".into());
            args.push(format!("{name}={}", p.display()));
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.json(&a)
    }

    /// Restores `disk` of `point` to `to`, which must succeed.
    pub fn restore(&self, point: &str, disk: &str, to: &Path) {
        self.x(&[
            "restore",
            point,
            "--disk",
            disk,
            "--to",
            to.to_str().unwrap(),
        ])
        .assert()
        .success();
    }

    /// Object files under a local repository's prefix; `None` on S3
    /// (tests then rely on the statistics and listings instead).
    pub fn objects(&self, prefix: &str) -> Option<usize> {
        self.s3
            .is_none()
            .then(|| walk(&self.repo.join(prefix)).len())
    }

    /// The stored object files under a local repository's prefix, sorted
    /// (staging files, `KEY#N`, left out).
    pub fn files(&self, prefix: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = walk(&self.repo.join(prefix))
            .into_iter()
            .filter(|p| !p.to_string_lossy().contains('#'))
            .collect();
        v.sort();
        v
    }

    /// How many points the repository lists.
    pub fn points(&self) -> usize {
        self.json(&["points"])["points"]
            .as_array()
            .map_or(0, Vec::len)
    }
}

const PASSWORD_FILE: &str = "password";

/// Writes the scratch directory's repository password.
fn write_password(dir: &Path) {
    std::fs::write(dir.join(PASSWORD_FILE), "correct horse battery staple\n").unwrap();
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() { walk(&p) } else { vec![p] }
        })
        .collect()
}

/// Every file's bytes under `dir`, by path (a repository before and
/// after a command that must not change it).
pub fn contents(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    walk(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn sha256(p: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Runs a failing command and returns (exit code, stderr).
pub fn fails(mut c: Command) -> (i32, String) {
    let out = c.output().unwrap();
    assert!(!out.status.success(), "expected failure, got success");
    (out.status.code().unwrap(), stderr(&out))
}
