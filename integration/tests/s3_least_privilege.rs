//! The backup role on a real S3 server (docs/least-privilege.md):
//! SeaweedFS with a second identity that may read, list and write, and a
//! bucket policy that denies it `s3:DeleteObject` outside the
//! repository's `leases/`. Backups and incremental backups with it
//! succeed; gc and prune with it exit 1 naming the command and the
//! permission, and change nothing a maintenance gc cannot finish.
//!
//! What SeaweedFS (4.x) cannot enforce: its identities' `Write` action
//! includes deleting, and its bucket policies ignore the
//! `s3:if-none-match` condition key (a Deny conditioned on it refuses
//! every put), so the create-only half of the backup policy is tested
//! with `RoleBackend` (tests/least_privilege.rs).

use std::process::Command;

use xfull_integration::env::{Env, fails};
use xfull_integration::s3::S3Server;
use xfull_integration::{Region, write_image};

const USER: &str = "backup";
const KEY: &str = "backup-host-key";
const SECRET: &str = "backup-host-secret";

/// Denies the backup identity every delete but of leases under `prefix`.
async fn deny_deletes(server: &S3Server, prefix: &str) {
    let bucket = &server.bucket;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "BackupHostsDeleteOnlyTheirLeases",
            "Effect": "Deny",
            "Principal": {"AWS": format!("arn:aws:iam::000000000000:user/{USER}")},
            "Action": "s3:DeleteObject",
            "NotResource": format!("arn:aws:s3:::{bucket}/{prefix}/leases/*"),
        }]
    });
    crate::s3_object_lock::admin_client(server)
        .put_bucket_policy()
        .bucket(bucket)
        .policy(policy.to_string())
        .send()
        .await
        .expect("put the bucket policy");
}

/// The command run with the backup identity's credentials.
fn as_backup(e: &Env, args: &[&str]) -> assert_cmd::Command {
    let mut c: Command = e.std(args);
    c.env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET);
    assert_cmd::Command::from_std(c)
}

#[test]
fn a_backup_identity_without_delete_backs_up_and_cannot_gc_or_prune() {
    let Some(server) = S3Server::with_user(USER, KEY, SECRET, &["Read", "List", "Write"]) else {
        eprintln!("skipped: XFULL_TEST_S3_ENDPOINT names a server whose identities are not ours");
        return;
    };
    let e = Env::init_s3(&server, "least-privilege");
    let prefix = e
        .url
        .strip_prefix(&format!("s3://{}/", server.bucket))
        .unwrap()
        .to_string();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(deny_deletes(&server, &prefix));

    let img = e.path("d.img");
    let disk = format!("d={}", img.display());
    let backup = ["backup", "--vm", "vm", "--disk", &disk];
    write_image(
        &img,
        &[Region::Random(6 << 20), Region::Zeros(2 << 20)],
        1,
        false,
    )
    .unwrap();
    as_backup(&e, &backup).assert().success();
    write_image(
        &img,
        &[Region::Random(6 << 20), Region::Random(2 << 20)],
        1,
        false,
    )
    .unwrap();
    as_backup(&e, &backup).assert().success();

    let (code, err) = fails(as_backup(&e, &["gc"]));
    eprintln!("gc as backup: {err}");
    assert_eq!(code, 1, "{err}");
    for want in [
        "gc needs permission to delete",
        "s3:DeleteObject",
        "gc/permission-check",
    ] {
        assert!(err.contains(want), "want {want:?} in {err}");
    }
    let (code, err) = fails(as_backup(&e, &["prune", "--keep-last", "1"]));
    assert_eq!(code, 1, "{err}");
    for want in [
        "prune needs permission to delete",
        "s3:DeleteObject",
        "points/vm/",
    ] {
        assert!(err.contains(want), "want {want:?} in {err}");
    }

    // With the maintenance (admin) credentials: both points are still
    // there, prune and gc run, and the repository verifies clean.
    let points = e.json(&["points"])["points"].clone();
    assert_eq!(points.as_array().map(Vec::len), Some(2), "{points}");
    e.x(&["prune", "--keep-last", "1"]).assert().success();
    e.x(&["gc"]).assert().success();
    e.x(&["verify"]).assert().success();
}
