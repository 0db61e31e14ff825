//! `--max-requests-per-second` and `--max-upload-bytes-per-second`: the
//! request budget holds retries too, works over the real HTTP client, and
//! budgets that cannot work are usage errors.

use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use xfull_integration::env::{Env, fails, sha256, stderr};
use xfull_integration::fault_proxy::{FaultProxy, s3_error};
use xfull_integration::s3::S3Server;
use xfull_integration::{Region, write_image, xfull_bin};

/// `xfull -r s3://...` against `endpoint`, with nothing of the test's
/// environment but credentials and a region.
fn against(home: &Path, endpoint: &str) -> Command {
    let mut c = Command::new(xfull_bin());
    c.env_clear()
        .env("HOME", home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "xfull-test-key")
        .env("AWS_SECRET_ACCESS_KEY", "xfull-test-secret")
        .env("AWS_REGION", "us-east-1")
        .args(["-r", "s3://xfull-budget/repo", "--s3-endpoint", endpoint]);
    c
}

/// A server that always answers 503 SlowDown gets the usual six attempts,
/// but at most one a second: the SDK's own backoff between them adds up
/// to at most 3.1 s, the budget's spacing to at least 5 s (a lower bound
/// the budget guarantees; a slow machine only adds to it). Opening sends
/// two requests at once (the config's GET and the `keys/` listing), which
/// share the budget; the config's six attempts end the command.
#[test]
fn retries_of_a_throttled_request_keep_to_the_request_budget() {
    let home = tempfile::tempdir().unwrap();
    let slow = FaultProxy::with_rule(None, |_, _| Some(s3_error("503 Slow Down", "SlowDown")));
    let mut c = against(home.path(), &slow.endpoint);
    c.args(["--max-requests-per-second", "1", "points"]);
    let t = Instant::now();
    let (code, err) = fails(c);
    let took = t.elapsed();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("after 6 attempts") && err.contains("config"),
        "{err}"
    );
    let sent = slow.faults();
    assert!((6..=12).contains(&sent), "{sent} requests: {err}");
    assert!(took >= Duration::from_secs(5), "6 attempts in {took:?}");
    assert!(
        err.contains(&format!("request budget: {sent} requests")),
        "{sent} requests: {err}"
    );
}

/// The budget wraps the SDK's real HTTP client (TLS-capable hyper): a
/// backup and a restore through it on a real server.
#[test]
fn a_backup_and_restore_within_a_budget_are_bit_exact() {
    let server = S3Server::start();
    let e = Env::init_s3(&server, "budget");
    let img = e.path("d.img");
    write_image(
        &img,
        &[Region::Random(6 << 20), Region::Text(6 << 20)],
        5,
        false,
    )
    .unwrap();
    let budget = [
        "--max-requests-per-second",
        "200",
        "--max-upload-bytes-per-second",
        "4M",
    ];
    let disk = format!("d={}", img.display());
    let mut args = budget.to_vec();
    args.extend(["backup", "--vm", "vm", "--disk", &disk]);
    let out = e.x(&args).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let to = e.path("restored.img");
    let mut args = budget.to_vec();
    args.extend([
        "restore",
        "vm@latest",
        "--disk",
        "d",
        "--to",
        to.to_str().unwrap(),
    ]);
    let out = e.x(&args).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256(&to), sha256(&img));
}

#[test]
fn budgets_that_cannot_work_are_usage_errors_naming_the_flag() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // Nothing is sent: the endpoint is never contacted.
    let nowhere = "http://127.0.0.1:9";
    for (flag, value, wanted) in [
        (
            "--max-requests-per-second",
            "0",
            "--max-requests-per-second",
        ),
        (
            "--max-requests-per-second",
            "lots",
            "--max-requests-per-second",
        ),
        ("--max-upload-bytes-per-second", "100K", "at least 256 KiB"),
        (
            "--max-upload-bytes-per-second",
            "5X",
            "--max-upload-bytes-per-second",
        ),
    ] {
        let mut c = against(h, nowhere);
        c.args([flag, value, "points"]);
        let (code, err) = fails(c);
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(err.contains(wanted), "{flag} {value}: {err}");
    }
    let mut c = Command::new(xfull_bin());
    c.env("HOME", h).args([
        "-r",
        h.join("repo").to_str().unwrap(),
        "--max-requests-per-second",
        "10",
        "points",
    ]);
    let (code, err) = fails(c);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("apply to S3 repositories"), "{err}");
}
