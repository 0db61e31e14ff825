//! Starting the real NBD tools (qemu-nbd, nbdkit) and our own server for
//! a test, and running command-line clients against them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use xfull_core::nbd::{Export, Listener, NbdUri, Server, ServerEvent, ServerOptions};

/// A child process killed when the test lets go of it.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Drop for Proc {
    /// SIGTERM first, so that nbdkit removes its temporary directory;
    /// SIGKILL if it is still there after a while.
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The program must be installed (`scripts/test` installs qemu-utils,
/// libnbd-bin and nbdkit): a missing tool fails the test, it does not skip.
pub fn need(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed (scripts/test installs it)"
    );
}

/// Waits until a server is ready: its pid file written (nbdkit writes it
/// once it accepts connections), or else a probe connection to `socket`
/// succeeds. Readiness, not timing: the deadline only turns a server that
/// never starts into a failure.
pub fn wait_ready(socket: &Path, pid_file: Option<&Path>, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = match pid_file {
            Some(p) => std::fs::read_to_string(p).is_ok_and(|s| s.ends_with('\n')),
            None => std::os::unix::net::UnixStream::connect(socket).is_ok(),
        };
        if ready {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the server exited ({status}) before listening on {}",
                socket.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no server on {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a server; its messages go to a log next to its socket (the
/// error tests make nbdkit log every injected error), shown if it never
/// gets ready.
fn spawn(mut cmd: Command, socket: &Path, pid_file: Option<&Path>) -> Proc {
    let program = format!("{:?}", cmd.get_program());
    let log_path = socket.with_extension("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_ready(socket, pid_file, &mut child)
    }));
    if started.is_err() {
        let _ = child.kill();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!("{program} did not start:\n{log}");
    }
    Proc(child)
}

/// `qemu-nbd -t -k SOCKET ARGS... FILE`, read-only unless `args` says.
pub fn qemu_nbd(dir: &Path, args: &[&str], file: &Path) -> (Proc, PathBuf) {
    need("qemu-nbd");
    let socket = dir.join(format!("qemu-nbd-{}.sock", rand::random::<u32>()));
    let mut cmd = Command::new("qemu-nbd");
    cmd.arg("-t").arg("-e").arg("16").arg("-k").arg(&socket);
    cmd.args(args).arg(file);
    (spawn(cmd, &socket, None), socket)
}

/// `qemu-storage-daemon` exporting the qcow2 `file` as `export` on a unix
/// socket, with the persistent dirty bitmap `bitmap` (as libvirt's
/// pull-mode backup does; an enabled bitmap needs a writable export).
pub fn qemu_storage_daemon(dir: &Path, file: &Path, export: &str, bitmap: &str) -> (Proc, PathBuf) {
    need("qemu-storage-daemon");
    let socket = dir.join(format!("qsd-{}.sock", rand::random::<u32>()));
    let mut cmd = Command::new("qemu-storage-daemon");
    cmd.arg("--blockdev")
        .arg(format!(
            "driver=file,filename={},node-name=file0",
            file.display()
        ))
        .arg("--blockdev")
        .arg("driver=qcow2,file=file0,node-name=disk0")
        .arg("--nbd-server")
        .arg(format!("addr.type=unix,addr.path={}", socket.display()))
        .arg("--export")
        .arg(format!(
            "type=nbd,id=e0,node-name=disk0,name={export},writable=on,bitmaps.0={bitmap}"
        ));
    (spawn(cmd, &socket, None), socket)
}

/// `nbdkit -f -U SOCKET ARGS...` (plugin, filters and parameters in `args`).
pub fn nbdkit(dir: &Path, args: &[&str]) -> (Proc, PathBuf) {
    need("nbdkit");
    let socket = dir.join(format!("nbdkit-{}.sock", rand::random::<u32>()));
    let pid = socket.with_extension("pid");
    let mut cmd = Command::new("nbdkit");
    cmd.arg("-f").arg("--exit-with-parent").arg("-P").arg(&pid);
    cmd.arg("-U").arg(&socket).args(args);
    (spawn(cmd, &socket, Some(&pid)), socket)
}

/// Runs a command to completion; panics with its output if it fails.
pub fn run(args: &[&str]) -> Output {
    let out = try_run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn try_run(args: &[&str]) -> Output {
    need(args[0]);
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

/// The same from async code, off the runtime's threads.
pub fn run_async(args: &[&str]) -> impl std::future::Future<Output = Output> + use<> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    async move {
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            try_run(&a)
        })
        .await
        .unwrap()
    }
}

pub fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Our server on a unix socket in `dir`, stopped (gracefully) on drop or
/// by [`Served::stop`].
pub struct Served {
    pub socket: PathBuf,
    pub events: Arc<std::sync::Mutex<Vec<ServerEvent>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Served {
    pub fn uri(&self, export: &str) -> NbdUri {
        NbdUri::unix(&self.socket, export)
    }

    /// The URI as text, for command-line clients.
    pub fn url(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.socket.display())
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn serve(dir: &Path, exports: Vec<Arc<dyn Export>>, options: ServerOptions) -> Served {
    let socket = dir.join(format!("xfull-{}.sock", rand::random::<u32>()));
    let listener = Listener::bind_unix(&socket).unwrap();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ev = events.clone();
    let server = Server::new(exports, options)
        .unwrap()
        .on_event(move |e| ev.lock().unwrap().push(e));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Served {
        socket,
        events,
        stop: Some(tx),
        task: Some(task),
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` at `offset` of a file (creating it).
pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    f.write_all_at(data, offset).unwrap();
}
