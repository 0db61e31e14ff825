//! Object lock on a real S3 server. SeaweedFS (4.48) enforces it as S3
//! does (checked: a locked version refuses deletion, retention cannot be
//! shortened, a plain DELETE of a locked object only adds a delete
//! marker), so this runs against the server, with the hidden
//! `init --lock-seconds` for a lock period of seconds.

use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use xfull_integration::env::{Env, fails};
use xfull_integration::s3::S3Server;
use xfull_integration::{Region, write_image};

const LOCKED: &str = "xfull-locked";

/// A client of the test server with its admin credentials (for what
/// xfull does not do: buckets, policies, looking at versions).
pub(crate) fn admin_client(server: &S3Server) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&server.endpoint)
        .credentials_provider(Credentials::new(
            &server.key,
            &server.secret,
            None,
            None,
            "test",
        ))
        .force_path_style(true)
        .build();
    Client::from_conf(conf)
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The admin client and an `Env` whose repository is `s3://BUCKET/repo`
/// in a new bucket made with object lock, then `init` with a compliance
/// lock of `lock_seconds` ("RETAIN,GEN"). `None` against an outside
/// server (`XFULL_TEST_S3_ENDPOINT`): the bucket must be made by the test.
pub(crate) fn locked_repo<'s>(
    server: &'s S3Server,
    rt: &tokio::runtime::Runtime,
    bucket: &str,
    lock_seconds: &str,
) -> Option<(Client, Env<'s>)> {
    if std::env::var_os("XFULL_TEST_S3_ENDPOINT").is_some() {
        eprintln!("skipped: needs a bucket with object lock made by this test on its own server");
        return None;
    }
    let c = admin_client(server);
    rt.block_on(
        c.create_bucket()
            .bucket(bucket)
            .object_lock_enabled_for_bucket(true)
            .send(),
    )
    .unwrap();
    let mut e = Env::init_s3(server, &format!("{bucket}-scratch"));
    e.url = format!("s3://{bucket}/repo");
    e.x(&[
        "init",
        "--object-lock",
        "compliance",
        "--lock-seconds",
        lock_seconds,
        "--kdf-memory-kib",
        "64",
        "--kdf-time",
        "1",
    ])
    .assert()
    .success();
    Some((c, e))
}

/// The keys under `prefix` with their retention (mode, until).
async fn retentions(
    c: &Client,
    prefix: &str,
) -> Vec<(
    String,
    Option<String>,
    Option<chrono::DateTime<chrono::Utc>>,
)> {
    let listed = c
        .list_objects_v2()
        .bucket(LOCKED)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    let mut out = Vec::new();
    for o in listed.contents() {
        let key = o.key().unwrap().to_string();
        let h = c
            .head_object()
            .bucket(LOCKED)
            .key(&key)
            .send()
            .await
            .unwrap();
        let until = h
            .object_lock_retain_until_date()
            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0));
        out.push((
            key,
            h.object_lock_mode().map(|m| m.as_str().to_string()),
            until,
        ));
    }
    out
}

#[test]
fn points_are_locked_on_the_server_and_prune_waits_for_their_retention() {
    let server = S3Server::start();
    if std::env::var_os("XFULL_TEST_S3_ENDPOINT").is_some() {
        eprintln!("skipped: needs a bucket with object lock made by this test on its own server");
        return;
    }
    let rt = runtime();
    let c = admin_client(&server);
    let mut e = Env::init_s3(&server, "lock-scratch");
    let kdf = ["--kdf-memory-kib", "64", "--kdf-time", "1"];

    // The test server's bucket has no object lock: refused, nothing written.
    e.url = server.url("lock-refused");
    let mut init = vec!["init", "--object-lock", "compliance", "--lock-days", "1"];
    init.extend(kdf);
    let (code, err) = fails(e.x(&init));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not have object lock enabled"), "{err}");
    let listed = rt
        .block_on(
            c.list_objects_v2()
                .bucket(&server.bucket)
                .prefix("lock-refused")
                .send(),
        )
        .unwrap();
    assert_eq!(listed.key_count(), Some(0), "init wrote something");

    rt.block_on(
        c.create_bucket()
            .bucket(LOCKED)
            .object_lock_enabled_for_bucket(true)
            .send(),
    )
    .unwrap();
    let prefix = format!("repo-{}", std::process::id());
    e.url = format!("s3://{LOCKED}/{prefix}");
    // No clock margin: retention ends on this machine's clock (the
    // server's, here).
    let mut init = vec![
        "init",
        "--object-lock",
        "governance",
        "--lock-seconds",
        "4,5",
        "--clock-margin",
        "0s",
    ];
    init.extend(kdf);
    e.x(&init).assert().success();

    let img = e.path("d.img");
    let disk = format!("d={}", img.display());
    let backup = ["backup", "--vm", "vm", "--disk", &disk];
    write_image(
        &img,
        &[Region::Random(6 << 20), Region::Text(2 << 20)],
        3,
        false,
    )
    .unwrap();
    e.x(&backup).assert().success();
    write_image(
        &img,
        &[Region::Random(6 << 20), Region::Random(2 << 20)],
        4,
        false,
    )
    .unwrap();
    let out = e.x(&backup).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(text.contains("object lock:"), "{text}");

    // On the server: packs, nodes, manifests and the config locked in
    // governance mode; index objects and leases not.
    let mut latest = chrono::DateTime::<chrono::Utc>::MIN_UTC;
    for sub in ["packs/", "nodes/", "points/", "config", "keys/"] {
        let found = rt.block_on(retentions(&c, &format!("{prefix}/{sub}")));
        assert!(!found.is_empty(), "{sub}");
        for (key, mode, until) in found {
            assert_eq!(mode.as_deref(), Some("GOVERNANCE"), "{key}");
            let until = until.unwrap();
            assert!(until > chrono::Utc::now(), "{key}");
            latest = latest.max(until);
        }
    }
    for sub in ["index/", "leases/"] {
        for (key, mode, _) in rt.block_on(retentions(&c, &format!("{prefix}/{sub}"))) {
            assert_eq!(mode, None, "{key}");
        }
    }
    // The server enforces it: the manifest's version cannot be deleted.
    let manifest = rt.block_on(retentions(&c, &format!("{prefix}/points/")))[0]
        .0
        .clone();
    let version = rt
        .block_on(c.head_object().bucket(LOCKED).key(&manifest).send())
        .unwrap()
        .version_id()
        .map(str::to_string);
    let refused = rt.block_on(
        c.delete_object()
            .bucket(LOCKED)
            .key(&manifest)
            .set_version_id(version)
            .send(),
    );
    assert!(refused.is_err(), "the server let a locked version go");

    // prune keeps both points while locked and says until when; gc
    // deletes nothing locked.
    let out = e.x(&["prune", "--keep-last", "1"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(text.contains("object lock retains it until"), "{text}");
    assert_eq!(e.points(), 2);
    e.x(&["gc"]).assert().success();
    e.x(&["verify", "--read-data"]).assert().success();
    // On S3 a DELETE of a locked object "succeeds" by hiding it: not one
    // delete marker may exist among the locked objects.
    let versions = rt
        .block_on(
            c.list_object_versions()
                .bucket(LOCKED)
                .prefix(&prefix)
                .send(),
        )
        .unwrap();
    let markers: Vec<_> = versions
        .delete_markers()
        .iter()
        .filter_map(|m| m.key())
        .filter(|k| {
            ["/packs/", "/nodes/", "/points/", "/keys/"]
                .iter()
                .any(|p| k.contains(p))
        })
        .collect();
    assert!(markers.is_empty(), "locked objects hidden: {markers:?}");

    // Once every retention has ended, prune removes the older point and
    // gc its garbage; the newer point still verifies.
    let wait = (latest - chrono::Utc::now()).to_std().unwrap_or_default();
    std::thread::sleep(wait + std::time::Duration::from_millis(1500));
    let out = e.x(&["prune", "--keep-last", "1"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(!text.contains("object lock retains"), "{text}");
    assert_eq!(e.points(), 1);
    let gc = e.json(&["gc"]);
    assert_eq!(gc["locked_kept"], 0, "{gc}");
    e.x(&["verify", "--read-data"]).assert().success();
}

/// On a versioned bucket a PUT of `config` adds a version above the locked
/// one: a config rewritten without object lock would make clients stop
/// locking. A client that has seen the repository locked refuses it
/// (exit 3, naming the config and its record) and stores nothing.
#[test]
fn a_config_rewritten_without_lock_is_refused_by_a_client_that_saw_the_lock() {
    let server = S3Server::start();
    let rt = runtime();
    let bucket = "xfull-locked-rewrite";
    let Some((c, e)) = locked_repo(&server, &rt, bucket, "60,60") else {
        return;
    };
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(2 << 20)], 5, false).unwrap();
    let disk = format!("d={}", img.display());
    let backup = ["backup", "--vm", "vm", "--disk", &disk];
    e.x(&backup).assert().success();

    // The config rewritten without its lock, as a new version.
    let got = rt
        .block_on(c.get_object().bucket(bucket).key("repo/config").send())
        .unwrap();
    let bytes = rt.block_on(got.body.collect()).unwrap().into_bytes();
    let mut cfg = xfull_core::config::RepoConfig::decode(&bytes).unwrap();
    assert!(cfg.object_lock.is_some());
    cfg.object_lock = None;
    // A new repository id as well: only the record of the location, as
    // `init` and this backup both named it, still knows the lock.
    cfg.repo_id = cfg.repo_id.chars().rev().collect();
    rt.block_on(
        c.put_object()
            .bucket(bucket)
            .key("repo/config")
            .body(cfg.encode().unwrap().into())
            .send(),
    )
    .unwrap();

    for args in [&backup[..], &["points"][..]] {
        let (code, err) = fails(e.x(args));
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(
            err.contains("config")
                && err.contains("seen it with a compliance lock of 60 s (generation 60 s)"),
            "{err}"
        );
        assert!(
            err.contains(&e.state_dir().display().to_string()),
            "names the record: {err}"
        );
    }
    assert_eq!(
        rt.block_on(
            c.list_objects_v2()
                .bucket(bucket)
                .prefix("repo/points/")
                .send()
        )
        .unwrap()
        .key_count(),
        Some(1),
        "the refused backup stored a point"
    );
}

/// Someone with delete and put rights hides a locked repository: every
/// object deleted (delete markers), a node and the config overwritten
/// first. `undelete` takes away what hides the locked versions; after
/// `index rebuild` (index objects are not locked) both points restore
/// bit-exact and verify clean. A dry run changes nothing; a second run
/// finds nothing to do.
#[test]
fn undelete_brings_back_a_locked_repository_that_was_deleted_and_overwritten() {
    let server = S3Server::start();
    let rt = runtime();
    let bucket = "xfull-locked-undelete";
    // Retention must outlast undelete's margin (an hour) to be relied on.
    let Some((c, e)) = locked_repo(&server, &rt, bucket, "7200,60") else {
        return;
    };
    let img = e.path("d.img");
    let disk = format!("d={}", img.display());
    let backup = ["backup", "--vm", "vm", "--disk", &disk];
    write_image(&img, &[Region::Random(3 << 20)], 6, false).unwrap();
    e.x(&backup).assert().success();
    let first = std::fs::read(&img).unwrap();
    write_image(
        &img,
        &[Region::Random(2 << 20), Region::Text(1 << 20)],
        7,
        false,
    )
    .unwrap();
    e.x(&backup).assert().success();
    let second = std::fs::read(&img).unwrap();

    // The attack: a node and the config overwritten, then everything
    // deleted by key.
    let keys: Vec<String> = rt
        .block_on(c.list_objects_v2().bucket(bucket).prefix("repo/").send())
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    let node = keys.iter().find(|k| k.starts_with("repo/nodes/")).unwrap();
    for k in [node.as_str(), "repo/config"] {
        rt.block_on(
            c.put_object()
                .bucket(bucket)
                .key(k)
                .body(b"forged".to_vec().into())
                .send(),
        )
        .unwrap();
    }
    for k in &keys {
        rt.block_on(c.delete_object().bucket(bucket).key(k).send())
            .unwrap();
    }
    let (code, _) = fails(e.x(&["points"]));
    assert_ne!(code, 0);

    // The config's forged version is deleted for good: refused until
    // the locked one is named (it could be a later repository's).
    let (code, err) = fails(e.x(&["undelete", "--dry-run"]));
    assert_eq!(code, 2, "{err}");
    let own = err
        .split("--config-version ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no version named: {err}"))
        .to_string();
    let (code, _) = fails(e.x(&["points"]));
    assert_ne!(code, 0, "a refused run brought something back");
    let dry = e.json(&["undelete", "--dry-run", "--config-version", &own]);
    crate::json_schema::assert_documented("undelete", &dry);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert!(dry["restored"].as_u64().unwrap() >= 5, "{dry}");
    let (code, _) = fails(e.x(&["points"]));
    assert_ne!(code, 0, "a dry run brought something back");

    let done = e.json(&["undelete", "--config-version", &own]);
    crate::json_schema::assert_documented("undelete", &done);
    assert_eq!(done["restored"], dry["restored"], "{done}");
    assert_eq!(
        done["versions_removed"], 2,
        "the node and the config: {done}"
    );
    assert_eq!(done["markers_removed"], dry["markers_removed"], "{done}");
    assert_eq!(done["hidden_unlocked"], 0, "{done}");
    // The key slot stays hidden until named (`key remove` hides slots on
    // purpose); without it the repository does not open.
    let slots = done["hidden_key_slots"].as_array().unwrap().clone();
    assert_eq!(slots.len(), 1, "{done}");
    let (code, _) = fails(e.x(&["points"]));
    assert_ne!(code, 0);
    let (code, err) = fails(e.x(&["undelete", "--key-slot", "nothex"]));
    assert_eq!(code, 2, "{err}");
    let slot = slots[0].as_str().unwrap();
    let out = e.x(&["undelete", "--key-slot", slot]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(text.contains("brought back 1 objects"), "{text}");

    e.x(&["index", "rebuild"]).assert().success();
    e.x(&["verify", "--read-data"]).assert().success();
    assert_eq!(e.points(), 2);
    let points = e.json(&["points"]);
    for (i, want) in [first, second].iter().enumerate() {
        let id = points["points"][i]["point"].as_str().unwrap().to_string();
        let to = e.path(&format!("r{i}.img"));
        let to_s = to.display().to_string();
        e.x(&["restore", &id, "--disk", "d", "--to", &to_s])
            .assert()
            .success();
        assert!(std::fs::read(&to).unwrap() == *want, "{id} differs");
    }
    let again = e.json(&["undelete"]);
    assert_eq!(again["restored"], 0, "{again}");

    // A directory keeps no versions: refused as a usage error.
    let dir = e.path("plain-dir").display().to_string();
    let (code, err) = fails(e.x(&["-r", &dir, "undelete"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("versioning"), "{err}");
}
