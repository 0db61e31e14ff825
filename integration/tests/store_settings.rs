//! Store settings kept in the repository (`init --data-storage-class
//! CLASS --sse MODE`): recorded in an S3 repository's config and used by
//! every client unless it says otherwise; refused for a local directory.
//! (What each put asks for is unit-tested in s3-backend: the test server
//! does not show the headers it was sent.)

use xfull_core::backend::Backend;
use xfull_core::config::RepoConfig;
use xfull_integration::env::{Env, fails, sha256};
use xfull_integration::s3::S3Server;
use xfull_integration::{Region, write_image};
use xfull_s3::{S3Backend, S3Options};

#[test]
fn a_local_repository_refuses_store_settings() {
    let e = Env::bare();
    for args in [
        &["init", "--data-storage-class", "STANDARD_IA"][..],
        &["init", "--sse", "AES256"],
        &["init", "--min-storage-days", "STANDARD=90"],
    ] {
        let (code, err) = fails(e.x(args));
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("S3 repository") && err.contains("local"),
            "{err}"
        );
        assert!(!e.repo.exists(), "nothing made");
    }
}

#[test]
fn bad_minimum_storage_durations_are_refused_naming_them() {
    let server = S3Server::start();
    for (arg, why) in [
        ("STANDARD_IA", "must be NAME=VALUE"),
        ("COLD!=30", "\"COLD!\" is not a storage class name"),
        (
            "A_CLASS_NAME_LONGER_THAN_32_BYTES=1",
            "is not a storage class name",
        ),
        ("STANDARD_IA=-1", "DAYS must be 0 to 3650"),
        ("STANDARD_IA=3651", "DAYS must be 0 to 3650"),
    ] {
        let e = Env::s3(&server, "bad-min-days");
        let (code, err) = fails(e.x(&["init", "--min-storage-days", arg]));
        assert_eq!(code, 2, "{arg}: {err}");
        assert!(err.contains(why), "{arg}: {err}");
    }
    let e = Env::s3(&server, "twice");
    let (code, err) = fails(e.x(&[
        "init",
        "--min-storage-days",
        "STANDARD_IA=40",
        "--min-storage-days",
        "STANDARD_IA=50",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("STANDARD_IA given twice"), "{err}");
}

#[test]
fn s3_store_settings_are_recorded_at_init_and_used() {
    let server = S3Server::start();
    let e = Env::init_s3_with(
        &server,
        "settings",
        &[
            "--data-storage-class",
            "STANDARD_IA",
            "--sse",
            "AES256",
            "--min-storage-days",
            "STANDARD_IA=45",
            // A class of another provider's, as its listing reports it.
            "--min-storage-days",
            "NEARLINE=30",
        ],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (bucket, prefix) = S3Options::parse_url(&e.url).unwrap();
    let config = rt.block_on(async {
        let b = S3Backend::new(S3Options {
            bucket,
            prefix,
            endpoint: Some(server.endpoint.clone()),
            region: Some("us-east-1".into()),
            static_credentials: Some((server.key.clone(), server.secret.clone())),
            ..S3Options::default()
        })
        .await
        .unwrap();
        RepoConfig::decode(&b.get("config").await.unwrap()).unwrap()
    });
    assert_eq!(
        config.store.data_storage_class.as_deref(),
        Some("STANDARD_IA")
    );
    assert_eq!(config.store.sse.as_deref(), Some("AES256"));
    assert_eq!(
        config.store.min_storage_days,
        [
            ("NEARLINE".to_string(), 30),
            ("STANDARD_IA".to_string(), 45)
        ]
        .into()
    );
    // gc and prune judge packs by the repository's class and durations
    // (unit-tested in core: gc::archive_class_tests); here they run.
    e.x(&["gc"]).assert().success();

    // Clients use them (chunk puts in STANDARD_IA, every put with SSE),
    // and one that asks otherwise explicitly is free to.
    let img = e.path("d.img");
    write_image(&img, &[Region::Random(3 << 20)], 7, false).unwrap();
    e.backup("vm", &[("d", &img)]);
    let disk = format!("d={}", img.display());
    e.x(&[
        "backup",
        "--vm",
        "vm",
        "--disk",
        &disk,
        "--s3-storage-class-chunks",
        "STANDARD",
    ])
    .assert()
    .success();
    let to = e.path("r.img");
    e.restore("vm@latest", "d", &to);
    assert_eq!(sha256(&img), sha256(&to));
}
