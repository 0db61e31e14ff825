//! A qemu-storage-daemon for one test: a raw disk image as node `disk0`,
//! a QMP socket, and optionally an NBD server with a writable export of
//! the disk through which the test plays the guest (`qemu-io`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xfull_core::qmp::Qmp;

pub struct Daemon {
    child: Child,
    pub dir: tempfile::TempDir,
    pub qmp: PathBuf,
    pub disk: PathBuf,
    /// The NBD server's socket, if it runs one.
    pub nbd: Option<PathBuf>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn need(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed (scripts/test installs qemu-utils)"
    );
}

impl Daemon {
    /// A daemon over a disk of `size` bytes filled with `fill`; with
    /// `guest`, an NBD server exporting the disk writable as `disk0`.
    pub fn start(size: usize, fill: u8, guest: bool) -> Daemon {
        need("qemu-storage-daemon");
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.raw");
        std::fs::write(&disk, vec![fill; size]).unwrap();
        let qmp = dir.path().join("qmp.sock");
        let nbd = guest.then(|| dir.path().join("nbd.sock"));
        let mut c = Command::new("qemu-storage-daemon");
        c.arg("--chardev")
            .arg(format!(
                "socket,path={},server=on,wait=off,id=m",
                qmp.display()
            ))
            .args(["--monitor", "chardev=m", "--blockdev"])
            .arg(format!(
                "driver=file,filename={},node-name=file0",
                disk.display()
            ))
            .args(["--blockdev", "driver=raw,file=file0,node-name=disk0"]);
        if let Some(n) = &nbd {
            c.arg("--nbd-server")
                .arg(format!("addr.type=unix,addr.path={}", n.display()))
                .args([
                    "--export",
                    "type=nbd,id=e0,node-name=disk0,name=disk0,writable=on",
                ]);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            dir,
            qmp,
            disk,
            nbd,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let sockets: Vec<PathBuf> = std::iter::once(self.qmp.clone())
            .chain(self.nbd.clone())
            .collect();
        while !sockets
            .iter()
            .all(|s| std::os::unix::net::UnixStream::connect(s).is_ok())
        {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("qemu-storage-daemon exited ({status}) before listening");
            }
            assert!(
                Instant::now() < deadline,
                "qemu-storage-daemon never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn connect(&self) -> Qmp {
        Qmp::connect(&self.qmp).await.unwrap()
    }

    /// Writes `len` bytes of `byte` at `offset` as the guest, through the
    /// writable export.
    pub fn guest_write(&self, offset: u64, len: u64, byte: u8) {
        need("qemu-io");
        let nbd = self.nbd.as_ref().expect("a daemon with a guest export");
        let uri = format!("nbd+unix:///disk0?socket={}", nbd.display());
        let out = Command::new("qemu-io")
            .args(["-f", "raw", "-c"])
            .arg(format!("write -P {byte} {offset} {len}"))
            .arg(&uri)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "qemu-io: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The disk's bytes now.
    pub fn disk_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.disk).unwrap()
    }

    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }
}
