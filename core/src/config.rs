//! Repository constants, written once by `init` (create-only) and read by
//! every command before anything else.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chunker::ChunkParams;
use crate::crypto::DataCipher;
use crate::error::{Error, Result};
use crate::frame::{self, Kind};
use crate::keys;

/// The repository format this build creates for an encrypted repository.
/// Format 4 is format 2 with chunk data sealed with AES-256-GCM (envelope
/// mode 3) instead of XChaCha20-Poly1305 (mode 2): builds that read
/// formats 2 and 3 only would report every mode 3 chunk as damage, so they
/// must refuse the repository instead.
pub const FORMAT_VERSION: u32 = 4;
/// Format 5 is format 4 with object lock, as 3 is 2 with it: a config
/// whose lock was taken out by hand then reads as damage, not as an
/// unlocked repository.
pub const LOCKED_FORMAT_4: u32 = 5;
/// Format 2: objects may be sealed and ids keyed (client-side encryption,
/// see [`Encryption`]), chunks in packs. Still read and written in its own
/// form (chunk data sealed with XChaCha20-Poly1305), so builds of formats
/// 2 and 3 keep reading what this one adds. Format 1 is refused, not
/// misread.
pub const OLD_FORMAT_VERSION: u32 = 2;
/// Format 3 is format 2 with object lock (`object_lock` set). A locked
/// repository of format 2 is stored as format 3 so that builds from
/// before object lock, which read format 2 only and would drop the unknown
/// field, refuse it instead of writing unlocked objects and deleting
/// locked ones.
pub const LOCKED_FORMAT_VERSION: u32 = 3;
/// What the formats this build reads are called in messages.
pub const SUPPORTED_FORMATS: &str = "2 to 5";

/// Default segment size; see `docs/chunk-size.md` for the measurements
/// (since 2026-12-04; repositories made before keep their 16 MiB).
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Largest segment size accepted: backups read and restores write in
/// 16 MiB windows and parts whatever the segment size, but a repair reads
/// a segment again whole (`backup/repair.rs`, `repair/restock.rs`), so
/// this bounds its memory.
pub const MAX_SEGMENT_SIZE: u64 = 64 << 20;

/// Most chunks of the minimum size a segment of a new repository may hold
/// (a node's entries, less one: the last chunk may be shorter). 4 Ki
/// with the defaults.
pub const MAX_SEGMENT_CHUNKS: u64 = 16 << 10;
/// The same, for a config read: repositories made before stop 50 with
/// `--chunk-avg 4K` (1 KiB minimum) and 64 MiB segments still open, and a
/// rewritten config still cannot claim 1 M chunks per segment.
pub const MAX_STORED_SEGMENT_CHUNKS: u64 = 64 << 10;
/// Default zstd level for chunks.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Timing constants of the lease/sweep protocol (docs/design.md). They are
/// repository constants because every writer and every sweep must agree
/// on them. Repositories made before they existed get the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protocol {
    /// A lease (or a sweep marker) not refreshed for this long is dead.
    pub lease_ttl_secs: u64,
    /// Subtracted from every age cutoff: the largest difference expected
    /// between the clocks of the store's servers (its timestamps are the
    /// only clock compared).
    pub clock_margin_secs: u64,
    /// A sweep's marker not refreshed for this long means the sweep is
    /// dead (it stops itself after half of it). Short, so that a killed gc
    /// delays a backup by about this much at most; capped by the lease TTL.
    #[serde(default = "default_sweep_ttl")]
    pub sweep_ttl_secs: u64,
}

fn default_sweep_ttl() -> u64 {
    60
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol {
            lease_ttl_secs: 600,
            clock_margin_secs: 60,
            sweep_ttl_secs: default_sweep_ttl(),
        }
    }
}

impl Protocol {
    pub fn ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.lease_ttl_secs as i64)
    }
    pub fn margin(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.clock_margin_secs as i64)
    }
    /// How often leases are refreshed: four chances before the TTL runs
    /// out.
    pub fn heartbeat(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_ttl_secs * 1000 / 4)
    }
    /// How long a sweep's marker may go unrefreshed before backups judge
    /// the sweep dead (at most the lease TTL).
    pub fn sweep_ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.sweep_ttl_secs.min(self.lease_ttl_secs) as i64)
    }
    /// How often a running sweep refreshes its marker.
    pub fn sweep_heartbeat(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.sweep_ttl_secs.min(self.lease_ttl_secs) * 1000 / 4)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: u32,
    /// Random, tells repositories apart in messages and caches.
    pub repo_id: String,
    pub created: DateTime<Utc>,
    pub segment_size: u64,
    pub chunking: ChunkParams,
    pub zstd_level: i32,
    #[serde(default)]
    pub protocol: Protocol,
    /// `None`: made with `--encryption none`, objects plain, ids plain
    /// BLAKE3. The config itself is never sealed: it says which.
    pub encryption: Option<Encryption>,
    /// Settings of the store that belong to the repository (S3 only),
    /// used by every client unless its command line or profile says
    /// otherwise. Left out of the encoding when empty.
    #[serde(default, skip_serializing_if = "StoreSettings::is_empty")]
    pub store: StoreSettings,
    /// Object lock (`init --object-lock`): unlike `store`, not a default
    /// a client may override: every writer locks what points rely on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<crate::lock::ObjectLock>,
}

/// Store settings kept in the config by `init --data-storage-class
/// CLASS --sse MODE`. Checked here only for shape (the S3 backend knows
/// the values): the config is plain, so a hostile one must not smuggle
/// arbitrary text into request headers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSettings {
    /// Storage class of chunk data (S3 `x-amz-storage-class`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_storage_class: Option<String>,
    /// Server-side encryption of every object (S3
    /// `x-amz-server-side-encryption`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<String>,
    /// Minimum storage duration in days per storage class, where the
    /// store's differ from AWS's (`gc::pack_plan::class_rules`): gc
    /// rewrites a partly dead pack only once it is older. Builds before
    /// this setting ignore it and use AWS's values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub min_storage_days: BTreeMap<String, u32>,
}

/// Longest storage class or server-side encryption name kept in `store`.
pub const MAX_SETTING_NAME: usize = 32;

/// Whether `v` can be a storage class or server-side encryption name in
/// `store`: 1 to [`MAX_SETTING_NAME`] letters, digits and `_:-.`.
pub fn is_setting_name(v: &str) -> bool {
    (1..=MAX_SETTING_NAME).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_:-.".contains(&b))
}

/// Most plaintext bytes of a config.
pub const MAX_CONFIG: usize = 1 << 16;

/// Most bytes a config is stored as: what opening a repository fetches.
pub fn max_stored() -> u64 {
    frame::max_stored(MAX_CONFIG)
}

/// At most this many classes in `min_storage_days`, at most this many days.
pub const MAX_STORAGE_CLASSES: usize = 32;
pub const MAX_MIN_STORAGE_DAYS: u32 = 3650;

impl StoreSettings {
    pub fn is_empty(&self) -> bool {
        self.data_storage_class.is_none() && self.sse.is_none() && self.min_storage_days.is_empty()
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let named = |what: &str, v: &str| {
            if !is_setting_name(v) {
                return Err(format!("{what} {v:?} is not a setting name"));
            }
            Ok(())
        };
        for (what, v) in [
            ("data storage class", &self.data_storage_class),
            ("server-side encryption", &self.sse),
        ] {
            if let Some(v) = v {
                named(what, v)?;
            }
        }
        if self.min_storage_days.len() > MAX_STORAGE_CLASSES {
            return Err(format!(
                "minimum storage durations for {} storage classes (at most {MAX_STORAGE_CLASSES})",
                self.min_storage_days.len()
            ));
        }
        for (class, days) in &self.min_storage_days {
            named("storage class", class)?;
            if *days > MAX_MIN_STORAGE_DAYS {
                return Err(format!(
                    "minimum storage duration of {class}: {days} days (at most {MAX_MIN_STORAGE_DAYS})"
                ));
            }
        }
        Ok(())
    }
}

/// How an encrypted repository's objects are made (docs/design.md,
/// "Encryption").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// `MasterKeys::check_value()` of the keys `init` made: keys unlocked
    /// from a slot planted in `keys/` (or copied from another repository)
    /// do not match it and are refused.
    #[serde(with = "serde_bytes_32")]
    pub check: [u8; 32],
}

/// 32 bytes as one CBOR byte string.
mod serde_bytes_32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let v = ciborium::Value::deserialize(d)?;
        let b = v
            .as_bytes()
            .ok_or_else(|| D::Error::custom("check value: not bytes"))?;
        b.as_slice()
            .try_into()
            .map_err(|_| D::Error::custom("check value: not 32 bytes"))
    }
}

impl RepoConfig {
    pub fn new(segment_size: u64, chunking: ChunkParams, zstd_level: i32) -> Result<Self> {
        let cfg = RepoConfig {
            format: FORMAT_VERSION,
            repo_id: hex::encode(rand::random::<[u8; 8]>()),
            created: Utc::now(),
            segment_size,
            chunking,
            zstd_level,
            protocol: Protocol::default(),
            encryption: None,
            store: StoreSettings::default(),
            object_lock: None,
        };
        cfg.validate().map_err(Error::InvalidArgument)?;
        cfg.check_segment_chunks(MAX_SEGMENT_CHUNKS)
            .map_err(Error::InvalidArgument)?;
        Ok(cfg)
    }

    /// At most `most` chunks of the minimum size per segment.
    fn check_segment_chunks(&self, most: u64) -> std::result::Result<(), String> {
        let n = self.segment_size / u64::from(self.chunking.min.max(1));
        if n > most {
            return Err(format!(
                "a segment of {} bytes holds {n} chunks of the minimum size {} (at most \
                 {most}): use a larger minimum chunk or a smaller segment",
                self.segment_size, self.chunking.min
            ));
        }
        Ok(())
    }

    /// Checks the constants are usable; the message names the bad one.
    pub fn validate(&self) -> std::result::Result<(), String> {
        // It names a directory of every client (the index cache, spill
        // files) and QEMU bitmaps: a rewritten config must not be able to
        // name a path (review, stop 50). This build makes 16 hex digits.
        let id = &self.repo_id;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("repository id {id:?} is not 1 to 64 hex digits"));
        }
        self.chunking.validate()?;
        if !(1 << 20..=MAX_SEGMENT_SIZE).contains(&self.segment_size)
            || !self.segment_size.is_power_of_two()
        {
            return Err(format!(
                "segment size {} must be a power of two from 1 MiB to {} MiB",
                self.segment_size,
                MAX_SEGMENT_SIZE >> 20
            ));
        }
        // Bounds a node (40 bytes an entry): restore and serve keep 80 per
        // disk. The config is not authenticated, so this is also what a
        // rewritten one can make readers hold.
        self.check_segment_chunks(MAX_STORED_SEGMENT_CHUNKS)?;
        if self.segment_size < u64::from(self.chunking.max) {
            return Err(format!(
                "segment size {} is smaller than the maximum chunk size {}",
                self.segment_size, self.chunking.max
            ));
        }
        if !(1..=86_400).contains(&self.protocol.lease_ttl_secs) {
            return Err(format!(
                "lease TTL {} s must be from 1 s to one day",
                self.protocol.lease_ttl_secs
            ));
        }
        if !(1..=86_400).contains(&self.protocol.sweep_ttl_secs) {
            return Err(format!(
                "sweep TTL {} s must be from 1 s to one day",
                self.protocol.sweep_ttl_secs
            ));
        }
        if self.protocol.clock_margin_secs > 86_400 {
            return Err(format!(
                "clock margin {} s must be at most one day",
                self.protocol.clock_margin_secs
            ));
        }
        if !(1..=19).contains(&self.zstd_level) {
            return Err(format!("zstd level {} must be 1 to 19", self.zstd_level));
        }
        if let Some(lock) = &self.object_lock {
            lock.validate()?;
        }
        self.store.validate()
    }

    /// The format the config is stored as: its own, and for format 2,
    /// whether it locks.
    pub fn stored_format(&self) -> u32 {
        match (self.format, &self.object_lock) {
            (OLD_FORMAT_VERSION, Some(_)) => LOCKED_FORMAT_VERSION,
            (FORMAT_VERSION, Some(_)) => LOCKED_FORMAT_4,
            (format, _) => format,
        }
    }

    /// The AEAD this repository's chunk data is sealed with (when it is
    /// encrypted): decided by its format.
    pub fn data_cipher(&self) -> DataCipher {
        if self.format >= FORMAT_VERSION {
            DataCipher::Aes256Gcm
        } else {
            DataCipher::XChaCha20Poly1305
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let stored = RepoConfig {
            format: self.stored_format(),
            ..self.clone()
        };
        let mut plain = Vec::new();
        ciborium::into_writer(&stored, &mut plain)
            .map_err(|e| Error::Internal(format!("encoding config: {e}")))?;
        // Stored uncompressed: tiny, and readable by anyone with a CBOR tool.
        frame::encode(Kind::Config, &plain, 0)
    }

    pub fn decode(framed: &[u8]) -> Result<Self> {
        let plain = frame::decode(Kind::Config, keys::CONFIG, framed, MAX_CONFIG)?;
        // Read the format version first, so that a newer repository is
        // refused as "too new" even if its fields changed shape.
        #[derive(Deserialize)]
        struct Version {
            format: u32,
        }
        let v: Version = ciborium::from_reader(&plain[..])
            .map_err(|e| Error::corrupt(keys::CONFIG, format!("undecodable: {e}")))?;
        if v.format < OLD_FORMAT_VERSION {
            return Err(Error::OldFormat {
                what: "the repository".into(),
                found: v.format,
                supported: SUPPORTED_FORMATS.into(),
            });
        }
        if v.format > LOCKED_FORMAT_4 {
            return Err(Error::UnsupportedFormat {
                what: "the repository".into(),
                found: v.format.to_string(),
                supported: SUPPORTED_FORMATS.into(),
            });
        }
        let mut cfg: RepoConfig = ciborium::from_reader(&plain[..])
            .map_err(|e| Error::corrupt(keys::CONFIG, format!("undecodable: {e}")))?;
        // Formats 3 and 5 without a lock are configs whose lock was taken
        // out by hand. (Format 2 with a lock was written by development
        // builds of this one: read as locked.)
        let locked = [LOCKED_FORMAT_VERSION, LOCKED_FORMAT_4].contains(&v.format);
        if locked && cfg.object_lock.is_none() {
            return Err(Error::corrupt(
                keys::CONFIG,
                format!(
                    "it says format {} (a repository with object lock) but has no object \
                     lock setting: the config may have been altered",
                    v.format
                ),
            ));
        }
        // In memory a locked format is its base; `encode` derives the
        // stored one from the lock.
        cfg.format = match v.format {
            LOCKED_FORMAT_VERSION => OLD_FORMAT_VERSION,
            LOCKED_FORMAT_4 => FORMAT_VERSION,
            f => f,
        };
        cfg.validate()
            .map_err(|e| Error::corrupt(keys::CONFIG, e))?;
        Ok(cfg)
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
