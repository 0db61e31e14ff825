//! Helpers shared by the end-to-end tests: deterministic test images and
//! a scratch repository driven through the binary.

pub mod env;
pub mod fault_proxy;
pub mod s3;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One region of a generated disk image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// Incompressible bytes.
    Random(u64),
    /// Compressible text-like bytes.
    Text(u64),
    /// Zeros written out.
    Zeros(u64),
    /// A hole: never written, reads as zeros.
    Hole(u64),
}

impl Region {
    pub fn len(&self) -> u64 {
        match *self {
            Region::Random(n) | Region::Text(n) | Region::Zeros(n) | Region::Hole(n) => n,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const WORDS: &[&str] = &[
    "backup",
    "segment",
    "chunk",
    "node",
    "manifest",
    "disk",
    "cluster",
    "restore",
    "the",
    "of",
    "and",
    "zstd",
    "blake3",
    "qemu",
    "\n",
    "2026-11-25",
    "INFO",
    "ERROR",
];

/// Writes `regions` to a new file at `path`; holes stay holes. With
/// `dense`, holes are written as zeros instead (same content, no holes).
pub fn write_image(path: &Path, regions: &[Region], seed: u64, dense: bool) -> std::io::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let file = File::create(path)?;
    let mut off = 0u64;
    let mut buf = Vec::new();
    for r in regions {
        buf.clear();
        match *r {
            Region::Random(n) => {
                buf.resize(n as usize, 0);
                rng.fill(&mut buf[..]);
            }
            Region::Text(n) => {
                while (buf.len() as u64) < n {
                    let w = WORDS[rng.random_range(0..WORDS.len())];
                    buf.extend_from_slice(w.as_bytes());
                    buf.push(b' ');
                }
                buf.truncate(n as usize);
            }
            Region::Zeros(n) => buf.resize(n as usize, 0),
            Region::Hole(n) if dense => buf.resize(n as usize, 0),
            Region::Hole(_) => {}
        }
        file.write_all_at(&buf, off)?;
        off += r.len();
    }
    file.set_len(off)?;
    file.sync_all()
}

/// A mixed image of about `mib` MiB: random, text, zero and hole regions.
pub fn mixed_regions(mib: u64, seed: u64) -> Vec<Region> {
    let mut rng = StdRng::seed_from_u64(seed);
    let total = mib << 20;
    let mut out = Vec::new();
    let mut len = 0;
    while len < total {
        let n = rng.random_range(1..(8u64 << 20)).min(total - len);
        out.push(match rng.random_range(0..4) {
            0 => Region::Random(n),
            1 => Region::Text(n),
            2 => Region::Zeros(n),
            _ => Region::Hole(n),
        });
        len += n;
    }
    out
}

/// Overwrites `n` seeded ranges (4 KiB up to `max_len`) of `img` with
/// random bytes, in place: a day of a VM's writes.
pub fn scribble(img: &Path, n: usize, max_len: u64, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    let size = f.metadata().unwrap().len();
    for _ in 0..n {
        let len = rng.random_range(4096..max_len);
        let off = rng.random_range(0..size - len);
        let mut data = vec![0u8; len as usize];
        rng.fill(&mut data[..]);
        f.write_all_at(&data, off).unwrap();
    }
}

/// Writes `data` to a new file.
pub fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    File::create(path)?.write_all(data)
}

/// The `xfull` binary under test: `$XFULL_BIN`, or the workspace's
/// `target/debug/xfull`. Cargo builds another package's binary only on
/// request, so the test command runs `cargo build --bins` first; a binary
/// older than the sources is refused rather than silently tested.
pub fn xfull_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("XFULL_BIN") {
        return p.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug").join("xfull");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build --bins` (scripts/test does) or set XFULL_BIN",
                bin.display()
            )
        });
    for dir in ["cli/src", "core/src", "local-backend/src", "s3-backend/src"] {
        if newest(&root.join(dir)).is_some_and(|t| t > built) {
            panic!(
                "{} is older than the sources in {dir}: run `cargo build --bins` first",
                bin.display()
            );
        }
    }
    bin
}

fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut best = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        best = best.max(t);
    }
    best
}
