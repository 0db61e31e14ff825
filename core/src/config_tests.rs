//! Tests of the repository config: formats, bounds, old configs.

use super::*;

fn stored(cfg: &RepoConfig) -> Vec<u8> {
    let mut plain = Vec::new();
    ciborium::into_writer(cfg, &mut plain).unwrap();
    frame::encode(Kind::Config, &plain, 0).unwrap()
}

fn stored_format(framed: &[u8]) -> u32 {
    let plain = frame::decode(Kind::Config, keys::CONFIG, framed, 1 << 16).unwrap();
    #[derive(Deserialize)]
    struct Version {
        format: u32,
    }
    ciborium::from_reader::<Version, _>(&plain[..])
        .unwrap()
        .format
}

fn lock() -> Option<crate::lock::ObjectLock> {
    Some(crate::lock::ObjectLock {
        mode: crate::lock::LockMode::Compliance,
        retain_secs: 86_400,
        generation_secs: 86_400,
    })
}

#[test]
fn round_trip_and_refuse_future_format() {
    let cfg = RepoConfig::new(DEFAULT_SEGMENT_SIZE, ChunkParams::default(), 3).unwrap();
    assert_eq!(cfg.format, 4);
    assert_eq!(RepoConfig::decode(&cfg.encode().unwrap()).unwrap(), cfg);
    let future = RepoConfig {
        format: 6,
        ..cfg.clone()
    };
    let e = RepoConfig::decode(&stored(&future)).unwrap_err();
    assert!(matches!(e, Error::UnsupportedFormat { .. }), "{e}");
    assert!(e.to_string().contains("2 to 5"), "{e}");
    let old = RepoConfig { format: 1, ..cfg };
    let e = RepoConfig::decode(&stored(&old)).unwrap_err();
    assert!(matches!(e, Error::OldFormat { found: 1, .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("format 1") && msg.contains("formats 2 to 5"),
        "{msg}"
    );
}

#[test]
fn the_format_decides_the_data_cipher_and_is_kept() {
    let new = RepoConfig::new(DEFAULT_SEGMENT_SIZE, ChunkParams::default(), 3).unwrap();
    assert_eq!(new.data_cipher(), DataCipher::Aes256Gcm);
    // Format 4 is stored as 4, or 5 when locked; 5 with its lock taken
    // out is damage, as 3 is.
    for (object_lock, format) in [(None, 4), (lock(), 5)] {
        let cfg = RepoConfig {
            object_lock,
            ..new.clone()
        };
        let framed = cfg.encode().unwrap();
        assert_eq!(stored_format(&framed), format);
        let read = RepoConfig::decode(&framed).unwrap();
        assert_eq!(read, cfg);
        assert_eq!(read.data_cipher(), DataCipher::Aes256Gcm);
    }
    let unlocked = RepoConfig {
        format: 5,
        object_lock: None,
        ..new.clone()
    };
    let e = RepoConfig::decode(&stored(&unlocked)).unwrap_err();
    assert!(e.is_damage() && e.to_string().contains("format 5"), "{e}");
    // A format 2 repository stays format 2 (its chunk data XChaCha20-
    // Poly1305), so builds of format 2 keep reading it.
    let old = RepoConfig {
        format: 2,
        ..new.clone()
    };
    let read = RepoConfig::decode(&stored(&old)).unwrap();
    assert_eq!(read.format, 2);
    assert_eq!(read.data_cipher(), DataCipher::XChaCha20Poly1305);
    assert_eq!(stored_format(&read.encode().unwrap()), 2);
}

#[test]
fn a_locked_format_2_config_is_format_3_which_older_builds_refuse() {
    let cfg = RepoConfig {
        format: 2,
        object_lock: lock(),
        ..RepoConfig::new(DEFAULT_SEGMENT_SIZE, ChunkParams::default(), 3).unwrap()
    };
    let framed = cfg.encode().unwrap();
    assert_eq!(RepoConfig::decode(&framed).unwrap(), cfg);
    assert_eq!(cfg.data_cipher(), DataCipher::XChaCha20Poly1305);
    // What a build of format 2 only does with it: refuse.
    assert_eq!(stored_format(&framed), 3);
    // Format 3 with its lock taken out: damage naming the config.
    let unlocked = RepoConfig {
        format: 3,
        object_lock: None,
        ..cfg.clone()
    };
    let e = RepoConfig::decode(&stored(&unlocked)).unwrap_err();
    assert!(e.is_damage() && e.to_string().contains("format 3"), "{e}");
    // Format 2 with a lock (development builds wrote it): locked.
    let dev = RepoConfig { format: 2, ..cfg };
    assert!(
        RepoConfig::decode(&stored(&dev))
            .unwrap()
            .object_lock
            .is_some()
    );
}

#[test]
fn the_check_value_round_trips() {
    let mut cfg = RepoConfig::new(DEFAULT_SEGMENT_SIZE, ChunkParams::default(), 3).unwrap();
    cfg.encryption = Some(Encryption { check: [7; 32] });
    assert_eq!(RepoConfig::decode(&cfg.encode().unwrap()).unwrap(), cfg);
}

#[test]
fn store_settings_round_trip_and_are_left_out_when_empty() {
    let cfg = RepoConfig::new(DEFAULT_SEGMENT_SIZE, ChunkParams::default(), 3).unwrap();
    let plain = cfg.encode().unwrap();
    let mut with = cfg.clone();
    with.store = StoreSettings {
        data_storage_class: Some("STANDARD_IA".into()),
        sse: Some("aws:kms".into()),
        min_storage_days: BTreeMap::from([("STANDARD".into(), 90)]),
    };
    let encoded = with.encode().unwrap();
    assert!(encoded.len() > plain.len());
    assert_eq!(RepoConfig::decode(&encoded).unwrap(), with);
    assert!(RepoConfig::decode(&plain).unwrap().store.is_empty());
    // Minimum storage durations: class names and days are bounded.
    for (class, days, why) in [
        ("STANDARD\n", 1, "not a setting name"),
        ("STANDARD_IA", 3651, "at most 3650"),
    ] {
        let mut bad = with.clone();
        bad.store.min_storage_days = BTreeMap::from([(class.to_string(), days)]);
        let e = RepoConfig::decode(&bad.encode().unwrap()).unwrap_err();
        assert!(e.is_damage() && e.to_string().contains(why), "{e}");
    }
    let mut many = with.clone();
    many.store.min_storage_days = (0..33).map(|i| (format!("C{i}"), 1)).collect();
    let e = RepoConfig::decode(&many.encode().unwrap()).unwrap_err();
    assert!(e.to_string().contains("at most 32"), "{e}");
    // A hostile config cannot put header text into requests.
    with.store.sse = Some("AES256\r\nX-Evil: 1".into());
    let e = RepoConfig::decode(&with.encode().unwrap()).unwrap_err();
    assert!(
        e.is_damage() && e.to_string().contains("server-side"),
        "{e}"
    );
}

#[test]
fn refuses_bad_constants() {
    let p = ChunkParams::default();
    assert!(RepoConfig::new(3 << 20, p, 3).is_err());
    assert!(RepoConfig::new(128 << 20, p, 3).is_err());
    assert!(RepoConfig::new(16 << 20, p, 0).is_err());
    let mut cfg = RepoConfig::new(16 << 20, p, 3).unwrap();
    cfg.protocol.lease_ttl_secs = 0;
    assert!(cfg.validate().unwrap_err().contains("lease TTL"));
}

/// A segment holds at most 16 Ki chunks of the minimum size: a node's
/// entries are bounded by it (40 bytes each), and restore and serve keep
/// 80 nodes per disk. FastCDC's own bounds allow 64-byte chunks, 1 M per
/// 64 MiB segment (a 40 MiB node), and the config is not authenticated:
/// one rewritten by someone who may write the bucket made every reader
/// keep gigabytes (stop 50). Refused at init; a config read may hold 64
/// Ki (repositories made before).
#[test]
fn a_segment_holds_a_bounded_number_of_chunks() {
    let tiny = ChunkParams::from_avg(256);
    tiny.validate().unwrap();
    let e = RepoConfig::new(DEFAULT_SEGMENT_SIZE, tiny, 3).unwrap_err();
    assert!(
        e.to_string().contains("chunks of the minimum size 64"),
        "{e}"
    );
    // The largest segment of 16 KiB chunks is allowed, one more is not.
    RepoConfig::new(64 << 20, ChunkParams::from_avg(16 << 10), 3).unwrap();
    let p = ChunkParams {
        min: (4 << 10) - 2,
        ..ChunkParams::from_avg(16 << 10)
    };
    assert!(RepoConfig::new(64 << 20, p, 3).is_err());
    let mut hostile = RepoConfig::new(8 << 20, ChunkParams::from_avg(64 << 10), 3).unwrap();
    hostile.chunking = tiny;
    let e = RepoConfig::decode(&hostile.encode().unwrap()).unwrap_err();
    assert!(e.is_damage() && e.to_string().contains("chunks"), "{e}");
    // A repository made before the bound (4 KiB chunks, 64 MiB segments:
    // 64 Ki of 1 KiB) still opens; it could not be made now.
    let mut older = RepoConfig::new(64 << 20, ChunkParams::default(), 3).unwrap();
    older.chunking = ChunkParams::from_avg(4 << 10);
    RepoConfig::decode(&older.encode().unwrap()).unwrap();
    assert!(RepoConfig::new(64 << 20, ChunkParams::from_avg(4 << 10), 3).is_err());
}

#[test]
fn configs_without_protocol_get_the_defaults() {
    #[derive(Serialize)]
    struct Old {
        format: u32,
        repo_id: String,
        created: DateTime<Utc>,
        segment_size: u64,
        chunking: ChunkParams,
        zstd_level: i32,
        encryption: Option<Encryption>,
    }
    let old = Old {
        format: FORMAT_VERSION,
        encryption: None,
        repo_id: "ab".into(),
        created: Utc::now(),
        segment_size: DEFAULT_SEGMENT_SIZE,
        chunking: ChunkParams::default(),
        zstd_level: 3,
    };
    let mut plain = Vec::new();
    ciborium::into_writer(&old, &mut plain).unwrap();
    let framed = frame::encode(Kind::Config, &plain, 0).unwrap();
    let cfg = RepoConfig::decode(&framed).unwrap();
    assert_eq!(cfg.protocol, Protocol::default());
}

/// Review (crypto, stop 50): the config is plain and anyone who can write
/// the store can rewrite it; its `repo_id` is not checked, yet it names a
/// directory of every client: `placement::lookup::default_cache_dir`
/// joins it to `$XDG_CACHE_HOME/xfull/` unchanged, so an absolute id
/// replaces the base and `..` climbs out of it. The index cache
/// (`<dir>/index/<64 hex>/<n>`, bytes from the store) and gc's, verify's
/// and trust's spill files (`gc::spill::base_dir`, when TMPDIR is unset)
/// are then written where the config says, as the user xfull runs as
/// (root on a hypervisor). `client_record` hashes ids for this reason
/// ("neither a hostile repository id nor a location can name a path").
#[test]
fn a_hostile_repo_id_is_refused_before_it_names_a_local_path() {
    let mut c = RepoConfig::new(DEFAULT_SEGMENT_SIZE, ChunkParams::default(), 3).unwrap();
    for id in ["/etc/cron.d", "../../../../tmp/xfull-evil", "a/b", ""] {
        c.repo_id = id.into();
        let decoded = RepoConfig::decode(&c.encode().unwrap());
        let dir = decoded
            .as_ref()
            .ok()
            .and_then(|d| crate::placement::lookup::default_cache_dir(&d.repo_id));
        assert!(
            decoded.is_err(),
            "repo id {id:?} accepted: this client's index cache and spill files go to {dir:?}"
        );
    }
}
