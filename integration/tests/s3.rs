//! The S3 backend against a real server: the conformance suite, and the
//! errors a user meets (each quick, exit 1, naming endpoint and bucket).

use std::time::Instant;

use assert_cmd::Command;
use xfull_core::backend::Backend;
use xfull_integration::env::{Env, fails, sha256, stderr};
use xfull_integration::fault_proxy::FaultProxy;
use xfull_integration::s3::S3Server;
use xfull_integration::{Region, write_image, xfull_bin};
use xfull_s3::{S3Backend, S3Options};

fn options(server: &S3Server, prefix: &str) -> S3Options {
    S3Options {
        bucket: server.bucket.clone(),
        prefix: format!("{prefix}-{}", std::process::id()),
        endpoint: Some(server.endpoint.clone()),
        static_credentials: Some((server.key.clone(), server.secret.clone())),
        ..S3Options::default()
    }
}

#[test]
fn s3_backend_conformance_and_user_errors() {
    let server = S3Server::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let b = S3Backend::new(options(&server, "conformance"))
            .await
            .unwrap();
        assert!(
            b.probe_conditional_put().await.unwrap(),
            "SeaweedFS honours If-None-Match"
        );
        xfull_core::conformance::run_all(&b).await;
        let mut emulated = options(&server, "conformance-emulated");
        emulated.no_conditional_put = true;
        xfull_core::conformance::put_get_round_trip(
            &S3Backend::new(emulated.clone()).await.unwrap(),
        )
        .await;
        xfull_core::conformance::create_never_overwrites(&S3Backend::new(emulated).await.unwrap())
            .await;
        let counts = b.request_counts();
        assert!(
            counts["put"] > 0 && counts["list"] > 0 && counts["delete"] > 0,
            "{counts:?}"
        );
    });

    let e = Env::init_s3(&server, "errors");
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(2 << 20)], 1, false).unwrap();
    let disk = format!("d={}", img.display());
    // Each fails at once with exit 1 and names what is wrong (the
    // transport failures are in s3_errors.rs).
    let quick = |mut c: Command, want: &[&str]| {
        let t = Instant::now();
        let (code, err) = fails({
            c.args(["backup", "--vm", "vm", "--disk", &disk]);
            c
        });
        eprintln!("exit {code} after {:.1?}: {err}", t.elapsed());
        assert_eq!(code, 1, "{err}");
        for w in want {
            assert!(err.contains(w), "want {w:?} in {err}");
        }
    };
    let with = |url: &str, endpoint: &str, key: &str, secret: &str| {
        let mut c = Command::new(xfull_bin());
        c.env("XFULL_REPO", url)
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", "us-east-1");
        c
    };
    let (key, secret) = (server.key.as_str(), server.secret.as_str());
    if std::env::var_os("XFULL_TEST_S3_ENDPOINT").is_none() {
        // SeaweedFS checks signatures: a wrong secret is denied.
        quick(
            with(&e.url, &server.endpoint, key, "wrong"),
            &["denied", "credentials", &server.bucket],
        );
    }
    let missing = "s3://xfull-no-such-bucket/x";
    quick(
        with(missing, &server.endpoint, key, secret),
        &["bucket does not exist", "xfull-no-such-bucket"],
    );
    // None of this stored a point.
    assert_eq!(e.points(), 0);
    // Init refuses an existing repository on S3 too.
    let (code, err) = fails(e.x(&["init"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already exists"), "{err}");
    // And a backup that works reports its requests by kind.
    let out = e
        .x(&["--json", "backup", "--vm", "vm", "--disk", &disk])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["requests"]["put"].as_u64().unwrap() >= 3, "{v}");
}

#[test]
fn backups_through_a_faulty_network_succeed_and_restore_bit_exact() {
    let server = S3Server::start();
    let upstream = server.endpoint.trim_start_matches("http://").to_string();
    let proxy = FaultProxy::start(&upstream, 25, 7);
    let e = Env::init_s3(&server, "faults");
    let img = e.path("d.img");
    write_image(
        &img,
        &[
            Region::Random(12 << 20),
            Region::Text(12 << 20),
            Region::Hole(8 << 20),
        ],
        3,
        false,
    )
    .unwrap();
    let through = |args: &[&str]| {
        let mut c = e.x(args);
        c.env("AWS_ENDPOINT_URL", &proxy.endpoint);
        c
    };
    through(&[
        "backup",
        "--vm",
        "vm",
        "--disk",
        &format!("d={}", img.display()),
    ])
    .assert()
    .success();
    let out = e.path("restored.img");
    through(&[
        "restore",
        "vm@latest",
        "--disk",
        "d",
        "--to",
        out.to_str().unwrap(),
    ])
    .assert()
    .success();
    assert_eq!(sha256(&out), sha256(&img));
    assert!(proxy.faults() > 0, "the proxy broke no connection");
    eprintln!("{} connections broken", proxy.faults());
}

/// Lease writes seen by the proxy (PUTs under `leases/`).
static LEASE_PUTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts lease writes and forwards everything.
fn count_lease_puts(method: &str, path: &str) -> Option<Vec<u8>> {
    if method == "PUT" && path.contains("/leases/") {
        LEASE_PUTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    None
}

/// Every request is paid for on S3: a backup that meets no sweep writes
/// its lease when it begins and when it ends, and in between only when it
/// has something new to say (a parent to pin, dependencies found stored).
#[test]
fn a_backup_writes_its_lease_only_when_it_has_something_to_say() {
    let server = S3Server::start();
    let upstream = server.endpoint.trim_start_matches("http://").to_string();
    let proxy = FaultProxy::with_rule(Some(&upstream), count_lease_puts);
    let e = Env::init_s3(&server, "lease-writes");
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(12 << 20)], 3, false).unwrap();
    let disk = format!("d={}", img.display());
    let mut counts = Vec::new();
    // The first backup, an incremental one (its parent pinned), and
    // another VM's first backup of the same image (it finds every chunk
    // stored: the packs are deps, looked at once).
    for vm in ["vm", "vm", "vm2"] {
        LEASE_PUTS.store(0, std::sync::atomic::Ordering::SeqCst);
        let mut c = e.x(&["backup", "--vm", vm, "--disk", &disk]);
        c.env("AWS_ENDPOINT_URL", &proxy.endpoint);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        counts.push(LEASE_PUTS.load(std::sync::atomic::Ordering::SeqCst));
    }
    // begin, check, end; begin, pin, check, end; begin, check, end.
    assert_eq!(counts, [3, 4, 3], "lease PUTs per backup");
}

/// GETs of the repository's config seen by the proxy.
static CONFIG_GETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts GETs of `config` and forwards everything.
fn count_config_gets(method: &str, path: &str) -> Option<Vec<u8>> {
    let key = path.split('?').next().unwrap_or(path);
    if method == "GET" && key.ends_with("/config") {
        CONFIG_GETS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    None
}

/// The CLI reads an S3 repository's config before opening it (for the
/// store settings its backend needs before writing); opening uses those
/// bytes instead of asking again, one round trip fewer per command.
#[test]
fn a_command_reads_the_config_once() {
    let server = S3Server::start();
    let upstream = server.endpoint.trim_start_matches("http://").to_string();
    let proxy = FaultProxy::with_rule(Some(&upstream), count_config_gets);
    let e = Env::init_s3(&server, "config-once");
    let mut c = e.x(&["points"]);
    c.env("AWS_ENDPOINT_URL", &proxy.endpoint);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        CONFIG_GETS.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "GETs of config by `xfull points`"
    );
}

/// The config the CLI reads first (for the store settings) is the one
/// opening decodes: a prefix without one is no repository (exit 1), one
/// that does not decode is damage naming it (exit 3), and a backup then
/// writes nothing.
#[test]
fn a_missing_or_undecodable_config_on_s3_is_named() {
    let server = S3Server::start();
    let e = Env::s3(&server, "no-config");
    let (code, err) = fails(e.x(&["points"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no xfull repository at s3://"), "{err}");

    let e = Env::init_s3(&server, "bad-config");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let b = rt.block_on(async {
        S3Backend::new(options(&server, "bad-config"))
            .await
            .unwrap()
    });
    let garbage = bytes::Bytes::from_static(b"XFR1 this is not a config");
    rt.block_on(b.put("config", garbage, xfull_core::backend::PutMode::Overwrite))
        .unwrap();
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(1 << 20)], 1, false).unwrap();
    let disk = format!("d={}", img.display());
    let (code, err) = fails(e.x(&["backup", "--vm", "vm", "--disk", &disk]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("config"), "{err}");
    let written: Vec<_> = rt.block_on(futures::StreamExt::collect::<Vec<_>>(b.list("")));
    let written: Vec<_> = written.into_iter().map(|m| m.unwrap().key).collect();
    assert!(
        written
            .iter()
            .all(|k| k == "config" || k.starts_with("keys/")),
        "{written:?}"
    );
}

/// Listings of `points/` seen by the proxy.
static POINT_LISTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts listings of `points/` and forwards everything.
fn count_point_lists(method: &str, path: &str) -> Option<Vec<u8>> {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    if method == "GET" && query.contains("prefix=") && query.contains("points") {
        POINT_LISTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    None
}

/// `backup --parent` with a whole id needs no listing of the VM's points
/// to find it (integrations pass the id the last backup printed): one
/// round trip fewer before the lease. A fragment is still looked up, and
/// a whole id that names no point fails, naming it, and stores nothing.
#[test]
fn a_backup_given_its_parents_whole_id_does_not_list_points() {
    let server = S3Server::start();
    let upstream = server.endpoint.trim_start_matches("http://").to_string();
    let proxy = FaultProxy::with_rule(Some(&upstream), count_point_lists);
    let e = Env::init_s3(&server, "parent-id");
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(1 << 20)], 1, false).unwrap();
    let disk = format!("d={}", img.display());
    let out = e
        .x(&["--json", "backup", "--vm", "vm", "--disk", &disk])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = doc["id"].as_str().unwrap().to_string();
    let lists = |parent: &str| {
        let before = POINT_LISTS.load(std::sync::atomic::Ordering::SeqCst);
        let mut c = e.x(&["backup", "--vm", "vm", "--disk", &disk, "--parent", parent]);
        c.env("AWS_ENDPOINT_URL", &proxy.endpoint);
        let out = c.output().unwrap();
        let after = POINT_LISTS.load(std::sync::atomic::Ordering::SeqCst);
        (out, after - before)
    };
    let (out, n) = lists(&format!("vm@{id}"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(n, 0, "listings of points/ with a whole id");
    let (out, n) = lists(&id[id.len() - 4..]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(n, 1, "listings of points/ with a fragment");
    // All but the first character: a suffix, which the id parser may
    // take for a whole id (it accepts short time fields).
    let (out, n) = lists(&id[1..]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(n, 1, "listings of points/ with a long suffix");

    let points = || e.x(&["--json", "points"]).output().unwrap().stdout;
    let before = points();
    let (out, _) = lists("vm@20200101T000000Z-abcd");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("vm@20200101T000000Z-abcd"),
        "{}",
        stderr(&out)
    );
    assert_eq!(points(), before, "a failed backup stores no point");
}
