use anyhow::Result;
use std::collections::BTreeMap;
use xfull_core::chunker::ChunkParams;

use xfull_core::config::{
    MAX_MIN_STORAGE_DAYS, MAX_SETTING_NAME, OLD_FORMAT_VERSION, Protocol, RepoConfig,
    StoreSettings, is_setting_name,
};
use xfull_core::lock::{LockMode, ObjectLock};

use crate::cli::{Cli, InitArgs, split_pair};
use crate::output::{bytes, print_json};

pub async fn run(cli: &Cli, args: &InitArgs) -> Result<()> {
    let avg = to_u32("--chunk-avg", args.chunk_avg)?;
    let defaults = ChunkParams::from_avg(avg);
    let params = ChunkParams {
        min: args
            .chunk_min
            .map_or(Ok(defaults.min), |v| to_u32("--chunk-min", v))?,
        avg,
        max: args
            .chunk_max
            .map_or(Ok(defaults.max), |v| to_u32("--chunk-max", v))?,
    };
    let mut config = RepoConfig::new(args.segment_size, params, args.zstd_level)?;
    config.protocol = Protocol {
        lease_ttl_secs: args.lease_ttl,
        clock_margin_secs: args.clock_margin,
        sweep_ttl_secs: args.sweep_ttl,
    };
    config.store = StoreSettings {
        data_storage_class: args.data_storage_class.clone(),
        sse: args.sse.clone(),
        min_storage_days: min_storage_days(&args.min_storage_days)?,
    };
    config.object_lock = object_lock(args)?;
    if args.encryption == "xchacha20-poly1305" {
        // Format 2 (3 when locked): what builds of formats 2 and 3 read.
        config.format = OLD_FORMAT_VERSION;
    }
    config
        .validate()
        .map_err(xfull_core::Error::InvalidArgument)?;
    let (repo, encrypted) = match &args.like {
        // Its constants and keys come from the source (`copy` needs them
        // equal); the rest (times, store settings, repo id) is its own.
        Some(like) => {
            let source = crate::open::open_other(cli, like, &args.from_secret.sources()).await?;
            let repo = crate::open::init_like(cli, config, &source, args.kdf.params()?).await?;
            let encrypted = repo.codec().is_encrypted();
            (repo, encrypted)
        }
        None => {
            let encrypted = args.encryption != "none";
            let repo = crate::open::init(cli, config, encrypted, args.kdf.params()?).await?;
            (repo, encrypted)
        }
    };
    let c = repo.config();
    let encryption = if encrypted {
        c.data_cipher().name()
    } else {
        "none"
    };
    if cli.json {
        print_json(&serde_json::json!({
            "repository": repo.location(),
            "format": c.stored_format(),
            "repo_id": c.repo_id,
            "segment_size": c.segment_size,
            "chunk_min": c.chunking.min,
            "chunk_avg": c.chunking.avg,
            "chunk_max": c.chunking.max,
            "zstd_level": c.zstd_level,
            "lease_ttl_secs": c.protocol.lease_ttl_secs,
            "clock_margin_secs": c.protocol.clock_margin_secs,
            "sweep_ttl_secs": c.protocol.sweep_ttl_secs,
            "encryption": encryption,
            "key_slot": repo.codec().master_keys().map(|k| k.slot().to_string()),
            "object_lock": c.object_lock,
            "store": c.store,
        }))?;
    } else {
        println!(
            "created repository {} (segments {}, chunks {}/{}/{} min/avg/max, zstd {}, \
             encryption {encryption})",
            repo.location(),
            bytes(c.segment_size),
            bytes(c.chunking.min.into()),
            bytes(c.chunking.avg.into()),
            bytes(c.chunking.max.into()),
            c.zstd_level
        );
        if let Some(like) = &args.like {
            println!(
                "made like {}: `xfull copy --to` copies its points here as they are stored",
                crate::output::printable(like)
            );
        }
        if let Some(class) = &c.store.data_storage_class {
            println!("chunk data in storage class {class} (unless a client asks otherwise)");
        }
        if let Some(sse) = &c.store.sse {
            println!("server-side encryption {sse} (unless a client asks otherwise)");
        }
        for (class, days) in &c.store.min_storage_days {
            let hot = if xfull_s3::storage_classes().contains(&class.as_str()) {
                ""
            } else {
                " (not an AWS class: judged as a hot class)"
            };
            println!(
                "minimum storage duration of {class}: {days} days (gc rewrites older packs \
                 only){hot}"
            );
        }
        if let Some(l) = &c.object_lock {
            println!(
                "object lock: {} mode, every point's objects locked for {}, extended once per \
                 generation of {}",
                l.mode,
                crate::output::duration_words(l.retain_secs),
                crate::output::duration_words(l.generation_secs)
            );
        }
    }
    Ok(())
}

/// The object lock `--object-lock`, `--lock-days` and
/// `--lock-generation-days` (or the hidden `--lock-seconds`) ask for.
fn object_lock(args: &InitArgs) -> Result<Option<ObjectLock>> {
    let Some(mode) = &args.object_lock else {
        return Ok(None);
    };
    let mode = LockMode::parse(mode)
        .ok_or_else(|| xfull_core::Error::InvalidArgument(format!("--object-lock {mode:?}")))?;
    let (retain_secs, generation_secs) = match (&args.lock_seconds, args.lock_days) {
        (Some(s), _) => {
            let parsed = s
                .split_once(',')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
            parsed.ok_or_else(|| {
                xfull_core::Error::InvalidArgument(format!(
                    "--lock-seconds {s:?}: expected RETAIN,GENERATION in seconds"
                ))
            })?
        }
        (None, Some(days)) => (days * 86_400, args.lock_generation_days * 86_400),
        (None, None) => {
            return Err(xfull_core::Error::InvalidArgument(
                "--object-lock needs --lock-days".into(),
            )
            .into());
        }
    };
    Ok(Some(ObjectLock {
        mode,
        retain_secs,
        generation_secs,
    }))
}

/// `--min-storage-days CLASS=DAYS...`, each class once.
fn min_storage_days(given: &[String]) -> Result<BTreeMap<String, u32>> {
    let mut out = BTreeMap::new();
    for g in given {
        let (class, days) = split_pair("--min-storage-days", g)?;
        let bad = |why: String| {
            xfull_core::Error::InvalidArgument(format!("--min-storage-days {g:?}: {why}"))
        };
        // Any name a store's listing can report (a lifecycle rule may move
        // packs into a class of another provider's, e.g. NEARLINE); one
        // AWS does not have is judged as a hot class with this minimum.
        if !is_setting_name(class) {
            return Err(bad(format!(
                "{class:?} is not a storage class name (letters, digits and _:-. only, \
                 at most {MAX_SETTING_NAME})"
            ))
            .into());
        }
        let days: u32 = match days.parse() {
            Ok(d) if d <= MAX_MIN_STORAGE_DAYS => d,
            _ => return Err(bad(format!("DAYS must be 0 to {MAX_MIN_STORAGE_DAYS}")).into()),
        };
        if out.insert(class.to_string(), days).is_some() {
            return Err(bad(format!("{class} given twice")).into());
        }
    }
    Ok(out)
}

fn to_u32(flag: &str, v: u64) -> Result<u32> {
    u32::try_from(v)
        .map_err(|_| xfull_core::Error::InvalidArgument(format!("{flag} {v} is too large")).into())
}
