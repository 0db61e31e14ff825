//! What a user sees when S3 is misconfigured, unreachable, throttling or
//! holds archived objects: each failure its own message naming endpoint
//! and bucket, the right exit status, in bounded time, no secret printed.
//! Fake endpoints on 127.0.0.1 stand in for the broken servers; only the
//! archived-restore test needs a real one.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::time::Instant;

use assert_cmd::Command;
use xfull_core::backend::{Backend, BackendError};
use xfull_integration::env::{Env, fails, stderr};
use xfull_integration::fault_proxy::{Blackhole, FaultProxy, Silent, s3_error};
use xfull_integration::s3::S3Server;
use xfull_integration::{Region, write_image, xfull_bin};
use xfull_s3::{S3Backend, S3Options};

const REPO: &str = "s3://xfull-errors/repo";

/// `xfull` with nothing of the test's environment: an empty HOME (no
/// ~/.aws), instance metadata off, so no AWS setting leaks in.
fn bare(home: &Path) -> Command {
    let mut c = Command::new(xfull_bin());
    c.env_clear()
        .env("HOME", home)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

/// `xfull -r REPO` with credentials and a region, against `endpoint`.
fn against(home: &Path, endpoint: &str) -> Command {
    let mut c = bare(home);
    c.env("AWS_ACCESS_KEY_ID", "xfull-test-key")
        .env("AWS_SECRET_ACCESS_KEY", "xfull-test-secret")
        .env("AWS_REGION", "us-east-1")
        .args(["-r", REPO, "--s3-endpoint", endpoint]);
    c
}

/// A loopback port nobody listens on.
fn refused_endpoint() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

/// Runs a command that must fail; returns (exit status, stderr) and
/// prints how long it took (no assertion on time: the machine is shared).
fn timed_failure(what: &str, c: Command) -> (i32, String) {
    let t = Instant::now();
    let (code, err) = fails(c);
    eprintln!("{what}: exit {code} after {:.1?}: {err}", t.elapsed());
    (code, err)
}

fn assert_has(err: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(err.contains(w), "want {w:?} in: {err}");
    }
}

fn options(endpoint: &str) -> S3Options {
    S3Options {
        bucket: "xfull-errors".into(),
        prefix: "repo".into(),
        endpoint: Some(endpoint.into()),
        region: Some("us-east-1".into()),
        static_credentials: Some(("xfull-test-key".into(), "xfull-test-secret".into())),
        ..S3Options::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn chunk_get(method: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or("");
    method == "GET" && (path.contains("/packs/") || path.contains("/chunks/"))
}

#[test]
fn invalid_s3_settings_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let mut c = bare(h);
    c.args(["-r", REPO, "--s3-storage-class-chunks", "COLD", "points"]);
    let (code, err) = fails(c);
    assert_eq!(code, 2, "{err}");
    assert_has(&err, &["COLD", "GLACIER_IR", "DEEP_ARCHIVE", "STANDARD_IA"]);

    let mut c = bare(h);
    c.args(["-r", REPO, "--s3-sse", "rot13", "points"]);
    let (code, err) = fails(c);
    assert_eq!(code, 2, "{err}");
    assert_has(&err, &["rot13", "AES256", "aws:kms"]);

    let mut c = bare(h);
    c.args(["-r", "", "points"]);
    let (code, err) = fails(c);
    assert_eq!(code, 2, "{err}");
    assert_has(&err, &["repository", "s3://bucket/prefix"]);

    let mut c = bare(h);
    c.env("XFULL_REPO", "").arg("points");
    let (code, err) = fails(c);
    assert_eq!(code, 2, "{err}");

    for bad in [
        "ftp://127.0.0.1:9000",
        "127.0.0.1:9000",
        "http://",
        "http://h:99999",
    ] {
        let mut c = against(h, bad);
        c.arg("points");
        let (code, err) = fails(c);
        assert_eq!(code, 2, "{bad}: {err}");
        assert_has(&err, &["endpoint", "http://host:port"]);
    }
}

#[test]
fn a_missing_region_names_the_setting() {
    let home = tempfile::tempdir().unwrap();
    let mut c = bare(home.path());
    // An empty AWS_ENDPOINT_URL counts as unset: AWS's own endpoint.
    c.env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .env("AWS_ENDPOINT_URL", "")
        .args(["-r", REPO, "points"]);
    let (code, err) = timed_failure("no region", c);
    assert_eq!(code, 1, "{err}");
    assert_has(
        &err,
        &["region", "--s3-region", "AWS_REGION", "xfull-errors"],
    );
    assert!(!err.contains("is the server up"), "{err}");
}

#[test]
fn missing_credentials_name_the_chain_that_was_tried() {
    let home = tempfile::tempdir().unwrap();
    let endpoint = refused_endpoint();
    let mut c = bare(home.path());
    c.env("AWS_REGION", "us-east-1")
        .args(["-r", REPO, "--s3-endpoint", &endpoint, "points"]);
    let (code, err) = timed_failure("no credentials", c);
    assert_eq!(code, 1, "{err}");
    assert_has(
        &err,
        &[
            "no AWS credentials",
            "AWS_ACCESS_KEY_ID",
            "~/.aws/credentials",
            "profile",
            "web identity",
            "container",
            "instance metadata",
            "xfull-errors",
            &endpoint,
        ],
    );
    assert!(!err.contains("is the server up"), "{err}");
}

#[test]
fn connection_failures_each_say_what_failed() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();

    let down = refused_endpoint();
    let mut c = against(h, &down);
    c.arg("points");
    let (code, err) = timed_failure("refused", c);
    assert_eq!(code, 1, "{err}");
    assert_has(&err, &["connection refused", &down, "xfull-errors"]);

    let nowhere = "http://xfull-no-such-host.invalid:9000";
    let mut c = against(h, nowhere);
    c.arg("points");
    let (code, err) = timed_failure("dns", c);
    assert_eq!(code, 1, "{err}");
    assert_has(
        &err,
        &[
            "cannot resolve",
            "xfull-no-such-host.invalid",
            "xfull-errors",
        ],
    );

    // TLS to a server that speaks plain HTTP (and, as real ones do,
    // answers a TLS hello with 400 at once).
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let tls = format!("https://{}", plain.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut c in plain.incoming().flatten() {
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let mut c = against(h, &tls);
    c.arg("points");
    let (code, err) = timed_failure("tls", c);
    assert_eq!(code, 1, "{err}");
    assert_has(&err, &["TLS", &tls, "xfull-errors"]);
}

#[test]
fn a_blackholed_endpoint_fails_in_bounded_time() {
    let home = tempfile::tempdir().unwrap();
    let hole = Blackhole::start();
    let mut c = against(home.path(), &hole.endpoint);
    c.arg("points");
    let (code, err) = timed_failure("blackhole", c);
    assert_eq!(code, 1, "{err}");
    assert_has(
        &err,
        &["no connection", "attempts", &hole.endpoint, "xfull-errors"],
    );
}

#[test]
fn a_silent_endpoint_fails_in_bounded_time() {
    let home = tempfile::tempdir().unwrap();
    let silent = Silent::start();
    let mut c = against(home.path(), &silent.endpoint);
    c.arg("points");
    let (code, err) = timed_failure("silent", c);
    assert_eq!(code, 1, "{err}");
    assert_has(
        &err,
        &[
            "went silent",
            "no response within 30 s",
            "attempts",
            &silent.endpoint,
            "xfull-errors",
        ],
    );
}

#[test]
fn a_server_that_always_throttles_is_an_outage_not_damage() {
    let home = tempfile::tempdir().unwrap();
    let slow = FaultProxy::with_rule(None, |_, _| Some(s3_error("503 Slow Down", "SlowDown")));
    let mut c = against(home.path(), &slow.endpoint);
    c.arg("points");
    let (code, err) = timed_failure("503", c);
    assert_eq!(code, 1, "{err}");
    assert_has(
        &err,
        &[
            "throttling or failing",
            "SlowDown",
            "after 6 attempts",
            &slow.endpoint,
        ],
    );

    let failing = FaultProxy::with_rule(None, |_, _| {
        Some(s3_error("500 Internal Server Error", "InternalError"))
    });
    runtime().block_on(async {
        let b = S3Backend::new(options(&failing.endpoint)).await.unwrap();
        let e = b.get("config").await.unwrap_err();
        assert!(matches!(e, BackendError::Transient { .. }), "{e:?}");
        assert_has(
            &e.to_string(),
            &["throttling or failing", "after 6 attempts"],
        );
    });
}

/// S3 never takes a password in the URL (the SDK would even break every
/// signature with it): refused as a usage error, never echoed.
#[test]
fn credentials_in_the_endpoint_are_refused_and_never_printed() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let secret = "S3CR3T-in-the-url";
    let down = refused_endpoint();
    let hostport = down.trim_start_matches("http://");
    let with_creds = format!("http://AKIDLEAK:{secret}@{hostport}");
    for (what, endpoint) in [
        ("well-formed", with_creds.clone()),
        ("malformed", format!("http://AKIDLEAK:{secret}@[::1")),
    ] {
        let mut c = against(h, &endpoint);
        c.arg("points");
        let (code, err) = timed_failure(what, c);
        assert_eq!(code, 2, "{what}: {err}");
        assert!(
            !err.contains(secret),
            "{what}: the secret is printed: {err}"
        );
        assert!(
            !err.contains("AKIDLEAK"),
            "{what}: the key is printed: {err}"
        );
        assert_has(&err, &["endpoint", "http://***@"]);
    }
    let mut c = bare(h);
    c.env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &with_creds)
        .args(["-r", REPO, "points"]);
    let (code, err) = timed_failure("in the environment", c);
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains(secret), "{err}");
    assert_has(&err, &["AWS_ACCESS_KEY_ID", "http://***@"]);
    // Nor in the help, which shows the environment's values.
    let mut c = bare(h);
    c.env("AWS_ENDPOINT_URL", &with_creds).arg("--help");
    let out = c.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!text.contains(secret), "{text}");
}

#[test]
fn an_archived_chunk_reads_as_archived() {
    let archive = FaultProxy::with_rule(None, |method, path| {
        chunk_get(method, path).then(|| s3_error("403 Forbidden", "InvalidObjectState"))
    });
    runtime().block_on(async {
        let b = S3Backend::new(options(&archive.endpoint)).await.unwrap();
        let e = b.get("chunks/ab/abcdef").await.unwrap_err();
        assert!(matches!(e, BackendError::Archived { .. }), "{e:?}");
        assert_has(
            &e.to_string(),
            &["chunks/ab/abcdef", "restored from the archive"],
        );
    });
}

/// An archived chunk is not damage: restore says to restore it from the
/// archive first and exits 1, not 3.
#[test]
fn restoring_archived_chunks_says_restore_them_first() {
    let server = S3Server::start();
    let e = Env::init_s3(&server, "archived");
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(1 << 20)], 5, false).unwrap();
    e.x(&[
        "backup",
        "--vm",
        "vm",
        "--disk",
        &format!("d={}", img.display()),
    ])
    .assert()
    .success();
    let upstream = server.endpoint.trim_start_matches("http://");
    let archive = FaultProxy::with_rule(Some(upstream), |method, path| {
        chunk_get(method, path).then(|| s3_error("403 Forbidden", "InvalidObjectState"))
    });
    let out = e.path("restored.img");
    let mut c = e.x(&[
        "restore",
        "vm@latest",
        "--disk",
        "d",
        "--to",
        out.to_str().unwrap(),
    ]);
    c.env("AWS_ENDPOINT_URL", &archive.endpoint);
    let (code, err) = timed_failure("archived restore", c);
    assert!(archive.faults() > 0, "no chunk GET went through the proxy");
    assert_eq!(code, 1, "an archived chunk is not damage: {err}");
    assert_has(&err, &["archive storage class", "packs/", "xfull thaw"]);
}

/// A server that answers more than was asked for is stopped there: an
/// object declared (or sent) larger than the most its kind can be is
/// damage naming it, refused before it is read whole, and a range answered
/// with more bytes than asked (a server that ignores `Range` sends the
/// whole object) is an error, not bytes handed on.
#[test]
fn answers_larger_than_asked_are_refused_before_they_are_read() {
    let declared = FaultProxy::with_rule(None, |_, _| {
        Some(
            b"HTTP/1.1 200 OK\r\nContent-Length: 68719476736\r\nConnection: close\r\n\r\n".to_vec(),
        )
    });
    let chunked = FaultProxy::with_rule(None, |_, _| {
        let mut v =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        for _ in 0..128 {
            v.extend_from_slice(b"10000\r\n");
            v.extend(std::iter::repeat_n(b'x', 0x10000));
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"0\r\n\r\n");
        Some(v)
    });
    let whole = FaultProxy::with_rule(None, |_, _| {
        let mut v =
            b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\nConnection: close\r\n\r\n".to_vec();
        v.extend(std::iter::repeat_n(b'y', 1 << 20));
        Some(v)
    });
    runtime().block_on(async {
        let b = S3Backend::new(options(&declared.endpoint)).await.unwrap();
        let e = b.get_at_most("nodes/ab/abcd", 1 << 20).await.unwrap_err();
        assert!(e.is_corrupt(), "{e:?}");
        assert_has(
            &e.to_string(),
            &["nodes/ab/abcd", "more than such an object can be"],
        );

        let b = S3Backend::new(options(&chunked.endpoint)).await.unwrap();
        let e = b.get_at_most("nodes/ab/abcd", 1 << 20).await.unwrap_err();
        assert!(e.is_corrupt(), "{e:?}");
        assert_has(
            &e.to_string(),
            &["nodes/ab/abcd", "more than such an object"],
        );
        // Within its bound the same answer is read whole.
        let all = b.get_at_most("nodes/ab/abcd", 8 << 20).await.unwrap();
        assert_eq!(all.len(), 8 << 20);

        let b = S3Backend::new(options(&whole.endpoint)).await.unwrap();
        let e = b.get_range("packs/ab/abcd", 0..10).await.unwrap_err();
        assert!(!e.is_corrupt(), "{e:?}");
        assert_has(
            &e.to_string(),
            &["packs/ab/abcd", "to a request for the 10 bytes"],
        );
    });
}

/// A profile's `s3_endpoint` must not lose to AWS_ENDPOINT_URL: the README
/// says flags on the command line win over the profile, and the variable
/// is no flag (a shell or unit may export it for other tools). clap fills
/// `--s3-endpoint` from the variable, so `S3Args::or` takes it as a flag
/// and the profile's endpoint is silently ignored: the command talks to
/// another store (for `copy -r @a --to @b`, both profiles lose theirs).
#[test]
fn a_profile_endpoint_is_not_replaced_by_aws_endpoint_url() {
    let home = tempfile::tempdir().unwrap();
    let profile_endpoint = refused_endpoint();
    let env_endpoint = refused_endpoint();
    let cfg = home.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!("[repositories.offsite]\nurl = \"{REPO}\"\ns3_endpoint = \"{profile_endpoint}\"\n"),
    )
    .unwrap();
    let mut c = bare(home.path());
    c.env("AWS_ACCESS_KEY_ID", "xfull-test-key")
        .env("AWS_SECRET_ACCESS_KEY", "xfull-test-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &env_endpoint)
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "-r",
            "@offsite",
            "points",
        ]);
    let (code, err) = timed_failure("profile endpoint", c);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&profile_endpoint) && !err.contains(&env_endpoint),
        "the profile's endpoint {profile_endpoint} lost to AWS_ENDPOINT_URL {env_endpoint}: {err}"
    );
}

/// `open.rs` and `a_missing_region_names_the_setting` say an exported but
/// empty AWS_ENDPOINT_URL means "not set". It does not: the SDK's config
/// loader reads the variable too, and every S3 command then fails with
/// "Custom endpoint `` was not a valid URI" -- even with `--s3-endpoint`
/// on the command line, and with a profile's `s3_endpoint`.
#[test]
fn an_empty_aws_endpoint_url_is_unset_even_beside_an_explicit_endpoint() {
    let home = tempfile::tempdir().unwrap();
    let endpoint = refused_endpoint();
    let mut c = against(home.path(), &endpoint);
    c.env("AWS_ENDPOINT_URL", "").arg("points");
    let (code, err) = timed_failure("empty AWS_ENDPOINT_URL", c);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&endpoint) && !err.contains("was not a valid URI"),
        "--s3-endpoint {endpoint} was not used: {err}"
    );
}

/// Both repositories of a `copy` keep their profile's `s3_endpoint` when
/// AWS_ENDPOINT_URL is exported: the source (`-r @a`) and the target
/// (`--to @b`, after a local source that opens).
#[test]
fn each_profile_of_a_copy_keeps_its_endpoint() {
    let home = tempfile::tempdir().unwrap();
    let (a, b, env_endpoint) = (refused_endpoint(), refused_endpoint(), refused_endpoint());
    let cfg = home.path().join("config.toml");
    let local = home.path().join("local");
    std::fs::write(
        &cfg,
        format!(
            "[repositories.a]\nurl = \"{REPO}\"\ns3_endpoint = \"{a}\"\n\
             [repositories.b]\nurl = \"s3://xfull-errors/other\"\ns3_endpoint = \"{b}\"\n\
             [repositories.here]\nurl = \"{}\"\n",
            local.display()
        ),
    )
    .unwrap();
    let x = |args: &[&str]| {
        let mut c = bare(home.path());
        c.env("AWS_ACCESS_KEY_ID", "xfull-test-key")
            .env("AWS_SECRET_ACCESS_KEY", "xfull-test-secret")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &env_endpoint)
            .args(["--config", cfg.to_str().unwrap()])
            .args(args);
        c
    };
    x(&["-r", "@here", "init", "--encryption", "none"])
        .assert()
        .success();
    for (args, wanted) in [
        (["-r", "@a", "copy", "--to", "@b"], &a),
        (["-r", "@here", "copy", "--to", "@b"], &b),
    ] {
        let (code, err) = timed_failure("copy between profiles", x(&args));
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(wanted.as_str()) && !err.contains(&env_endpoint),
            "{args:?}: the profile's endpoint {wanted} lost to AWS_ENDPOINT_URL {env_endpoint}: {err}"
        );
    }
}
