//! A scratch directory with a repository, and helpers to drive the
//! `xfull` binary in it.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

use crate::xfull_bin;

#[derive(Debug)]
pub struct Env {
    pub dir: TempDir,
    pub repo: PathBuf,
}

impl Env {
    /// A temp dir with an initialised repository (small segments so that
    /// test images span many of them).
    pub fn init() -> Env {
        let e = Env::bare();
        e.x(&["init", "--segment-size", "4M"]).assert().success();
        e
    }

    pub fn bare() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        Env { dir, repo }
    }

    pub fn x(&self, args: &[&str]) -> Command {
        let mut c = Command::new(xfull_bin());
        c.env("XFULL_REPO", &self.repo).args(args);
        c
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

    /// Object files under a repository prefix.
    pub fn objects(&self, prefix: &str) -> usize {
        walk(&self.repo.join(prefix)).len()
    }
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
