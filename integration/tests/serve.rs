//! What the `xfull serve` tests share (and `mount.rs`): test images,
//! a one-point repository, a running server (`Served`, also used for
//! `xfull mount`) and the external tools' checks. The tests are in
//! `serve_read.rs` (copies, map, random reads, several clients and
//! exports), `serve_overlay.rs` (writable overlay), `serve_damage.rs`,
//! `serve_gc.rs` (a served point outlives prune and gc) and
//! `serve_clients.rs` (clients that go away or stall).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;

use xfull_integration::env::{Env, stderr, walk};

pub const MIB: u64 = 1 << 20;

/// A region of a test image: a byte repeated (`read -P` checks it), or
/// random bytes.
#[derive(Clone, Copy)]
pub enum Fill {
    Byte(u8),
    Random(u64),
}

/// Writes an image of `(fill, MiB)` regions; 0 as a byte is written as a
/// hole.
pub fn image(path: &Path, regions: &[(Fill, u64)]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    let mut at = 0;
    for &(fill, mib) in regions {
        let len = mib * MIB;
        match fill {
            Fill::Byte(0) => {}
            Fill::Byte(b) => f.write_all_at(&vec![b; len as usize], at).unwrap(),
            Fill::Random(seed) => {
                let data = xfull_core::testing::xorshift_bytes(len as usize, seed);
                f.write_all_at(&data, at).unwrap();
            }
        }
        at += len;
    }
    f.set_len(at).unwrap();
}

/// A running `xfull serve` (or `xfull mount`), stopped with SIGTERM
/// when asked.
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
        Served::spawn_with(e, args, lines, None)
    }

    /// [`Served::spawn`] through `wrapper` (e.g. `nohup`), if given.
    pub fn spawn_with(e: &Env, args: &[&str], lines: usize, wrapper: Option<&str>) -> Served {
        let mut cmd = e.std(args);
        if let Some(w) = wrapper {
            let mut wrapped = Command::new(w);
            wrapped.arg(cmd.get_program()).args(cmd.get_args());
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => wrapped.env(k, v),
                    None => wrapped.env_remove(k),
                };
            }
            if let Some(d) = cmd.get_current_dir() {
                wrapped.current_dir(d);
            }
            cmd = wrapped;
        }
        let mut child = cmd
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
    pub fn stop(self) -> (i32, String) {
        self.signal("TERM")
    }

    /// Sends `signal` (e.g. `HUP`); returns the exit code and what it
    /// printed on stderr.
    pub fn signal(mut self, signal: &str) -> (i32, String) {
        self.send(signal);
        let status = self.wait_a_while();
        let err = self.stderr.take().unwrap().join().unwrap();
        (status.code().unwrap_or(-1), err)
    }

    /// The process id of the running xfull.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` and goes on.
    pub fn send(&self, signal: &str) {
        let pid = self.pid().to_string();
        assert!(
            Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits for the process to end by itself; returns the exit code and
    /// what it printed on stderr.
    pub fn wait(mut self) -> (i32, String) {
        let status = self.wait_a_while();
        let err = self.stderr.take().unwrap().join().unwrap();
        (status.code().unwrap_or(-1), err)
    }

    /// Waits for the process to end, failing the test if it has not
    /// within two minutes of being asked to stop: a guard against a hang,
    /// not a measure of speed (stopping takes at most the server's 10 s
    /// drain timeout, when a client does not take its replies).
    fn wait_a_while(&mut self) -> std::process::ExitStatus {
        for _ in 0..1200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let err = self.stderr.take().unwrap().join().unwrap();
        panic!("xfull did not stop within 2 minutes of SIGTERM: {err}");
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

pub fn ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    out
}

pub fn b3(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap())
        .to_hex()
        .to_string()
}

/// A repository with one point of VM `vm`, disk `d`, made of `regions`;
/// returns the env and the restored image.
pub fn backed_up(regions: &[(Fill, u64)]) -> (Env<'static>, PathBuf) {
    let e = Env::init_with(&["--clock-margin", "0s"]);
    let img = e.path("d.img");
    image(&img, regions);
    e.backup("vm", &[("d", &img)]);
    let restored = e.path("restored.img");
    e.restore("vm@latest", "d", &restored);
    (e, restored)
}

pub fn socket(e: &Env) -> String {
    e.path("nbd.sock").display().to_string()
}

/// 8 MiB regions, each one byte repeated (a zero one among them).
pub const PATTERNS: [u8; 4] = [0x11, 0x22, 0, 0x44];

pub fn patterned() -> (Env<'static>, PathBuf) {
    let regions: Vec<(Fill, u64)> = PATTERNS.iter().map(|&b| (Fill::Byte(b), 8)).collect();
    backed_up(&regions)
}

/// The repository's lease files, sorted (backups leave ended ones).
pub fn leases_of(e: &Env) -> Vec<std::path::PathBuf> {
    let mut v = walk(&e.repo.join("leases"));
    v.sort();
    v
}
