//! Manifests: the root object of a point. A point exists exactly when its
//! manifest exists.
//!
//! Decoding streams the plaintext twice and never holds it whole: first a
//! [`ManifestSummary`] that counts segments and checks every count and
//! size against the repository's constants and [`limits`], then the whole
//! manifest, whose allocations those checks have bounded. Every text in it
//! is at most [`limits::MAX_TEXT`] bytes, refused from its CBOR head
//! before the parser allocates it.

pub mod limits;
mod summary;
mod text_guard;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::RepoConfig;
use crate::error::{Error, Result};
use crate::frame::{self, Kind};
use crate::id::{ObjectId, PointId};
use crate::names::{DiskName, VmName};
use limits::{DiskShape, Shape};
pub use summary::{DiskSummary, ManifestSummary};
use text_guard::TextGuard;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub vm: VmName,
    pub id: PointId,
    /// The point's time (now, or `--time`), to the microsecond; the id
    /// holds it to the second.
    pub time: DateTime<Utc>,
    /// When the manifest was written: orders points of equal time.
    pub created: DateTime<Utc>,
    pub parent: Option<PointId>,
    pub host: String,
    pub labels: BTreeMap<String, String>,
    pub disks: Vec<DiskManifest>,
    pub stats: BackupStats,
    /// The xfull version that wrote the point, for support questions.
    pub writer: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskManifest {
    pub name: DiskName,
    /// Size in bytes.
    pub size: u64,
    /// Segment size the disk was cut into (a repository constant, stored
    /// here so that a manifest reads on its own).
    pub segment_size: u64,
    /// One entry per segment: the node id, or `None` for an all-zero segment.
    pub segments: Vec<Option<ObjectId>>,
    /// Per segment, its last-data mark: 1 + the offset in the segment
    /// where its last chunk that holds data starts, so the segment held
    /// a byte that is not zero at or past `mark - 1`; 0 when no chunk
    /// holds data or it is not known (segments reused from points
    /// written before marks were). Empty in such points. The zero check
    /// holds marks against the disk's map of zeros without fetching the
    /// nodes (see `backup/zero_check.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_data: Vec<u64>,
    /// Where the change information came from, e.g. `full-scan`.
    pub source: String,
    /// The point whose nodes this disk was deduplicated or re-chunked
    /// against, if any.
    pub parent: Option<PointId>,
    /// What the audit of segments the change source called unchanged found.
    pub audit: Option<Audit>,
    pub stats: BackupStats,
    /// The QEMU dirty bitmap created at this point's moment (backups
    /// through `--qmp`): the next backup reads the changes since this
    /// point from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// In a repository with object lock: the generation whose retention
    /// every object this disk relies on was given (see `crate::lock`).
    /// A child backup in the same generation need not look at them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_generation: Option<u64>,
}

/// The result of re-reading a sample of the segments a change source
/// called unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    /// Segments re-read and compared with the parent's.
    pub segments: u64,
    /// Offset of the first segment that differed: the change source missed
    /// a change there, and the disk was scanned in full instead.
    pub mismatch_at: Option<u64>,
}

impl DiskManifest {
    /// Byte range of segment `i` (the last one may be short).
    pub fn segment_range(&self, i: usize) -> std::ops::Range<u64> {
        let start = i as u64 * self.segment_size;
        start..(start + self.segment_size).min(self.size)
    }

    /// Each segment's node with its segment's length, which the node
    /// must cover (restore refuses one that does not), in disk order;
    /// zero segments left out.
    pub fn segment_nodes(&self) -> impl Iterator<Item = (ObjectId, u64)> + '_ {
        self.segments.iter().enumerate().filter_map(|(i, node)| {
            let r = self.segment_range(i);
            node.map(|n| (n, r.end - r.start))
        })
    }

    /// Each last-data mark within its segment, and 0 for a segment with
    /// no node (the count is the limits' to check).
    fn check_marks(&self) -> std::result::Result<(), String> {
        for (i, &mark) in self.last_data.iter().enumerate() {
            let r = self.segment_range(i);
            let none = self.segments.get(i).is_some_and(Option::is_none);
            if mark > r.end - r.start || (none && mark != 0) {
                return Err(format!(
                    "disk {} marks data at {} of its segment {i}, which {}",
                    self.name,
                    mark - 1,
                    if none { "holds none" } else { "ends before" }
                ));
            }
        }
        Ok(())
    }

    /// Segment `i`'s last-data mark (see [`Self::last_data`]); 0 when
    /// not known.
    pub fn last_data_mark(&self, i: usize) -> u64 {
        self.last_data.get(i).copied().unwrap_or(0)
    }

    pub fn expected_segments(size: u64, segment_size: u64) -> usize {
        size.div_ceil(segment_size) as usize
    }
}

/// What a backup did, per disk and summed per point; `bytes_data` alone
/// describes what the point holds rather than what the run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupStats {
    /// Logical bytes the backup covered (holes included).
    pub bytes_scanned: u64,
    /// Bytes actually read from the source (holes and reused segments are
    /// not read).
    pub bytes_read: u64,
    /// Bytes in chunks that the parent point did not have at the same
    /// place (everything, without a parent).
    pub bytes_changed: u64,
    /// Chunk objects this backup stored that were not in the repository.
    pub new_chunks: u64,
    /// Node objects this backup stored that were not in the repository.
    pub new_nodes: u64,
    /// Bytes sent to the store (framed, compressed).
    pub bytes_uploaded: u64,
    /// Bytes that are new in the store because of this backup.
    pub bytes_stored: u64,
    /// Data bytes the point holds: the length of its chunks (zero runs
    /// left out), segments reused from the parent unread included (counted
    /// from the parent's nodes, not read).
    pub bytes_data: u64,
    /// Chunks and nodes the point shares with its parent that were missing
    /// or damaged in the repository and were stored again.
    #[serde(default)]
    pub objects_restored: u64,
    pub seconds: f64,
    /// Object lock: retentions read and extended (repositories with
    /// object lock only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<crate::lock::extend::Extended>,
}

impl BackupStats {
    pub fn add(&mut self, o: &BackupStats) {
        self.bytes_scanned += o.bytes_scanned;
        self.bytes_read += o.bytes_read;
        self.bytes_changed += o.bytes_changed;
        self.new_chunks += o.new_chunks;
        self.new_nodes += o.new_nodes;
        self.bytes_uploaded += o.bytes_uploaded;
        self.bytes_stored += o.bytes_stored;
        self.bytes_data += o.bytes_data;
        self.objects_restored += o.objects_restored;
        if let Some(l) = &o.lock {
            self.lock.get_or_insert_default().add(l);
        }
    }

    /// Data bytes of the point per byte its backup added to the store;
    /// `None` when it added nothing.
    pub fn dedup_ratio(&self) -> Option<f64> {
        (self.bytes_stored > 0).then(|| self.bytes_data as f64 / self.bytes_stored as f64)
    }
}

impl Manifest {
    pub fn point_name(&self) -> String {
        format!("{}@{}", self.vm, self.id)
    }

    pub fn disk(&self, name: &str) -> Result<&DiskManifest> {
        self.disks
            .iter()
            .find(|d| d.name.as_str() == name)
            .ok_or_else(|| Error::DiskNotFound {
                point: self.point_name(),
                disk: name.to_string(),
                available: self
                    .disks
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut plain = Vec::new();
        ciborium::into_writer(self, &mut plain)
            .map_err(|e| Error::Internal(format!("encoding manifest: {e}")))?;
        frame::encode(Kind::Manifest, &plain, 3)
    }

    /// Decodes the manifest stored under `key` and checks it against the
    /// repository's constants and the limits: segment size, sizes,
    /// segment counts (so later code can index without fear).
    pub fn decode(key: &str, framed: &[u8], cfg: &RepoConfig) -> Result<Self> {
        let summary = ManifestSummary::decode(key, framed, cfg)?;
        let m: Manifest = read_cbor(key, framed, cfg)?;
        // The same bytes gave the summary; a difference would be a bug in
        // one of the two decoders, not damage, but it is caught all the same.
        let same = m.disks.len() == summary.disks.len()
            && m.disks.iter().zip(&summary.disks).all(|(d, s)| {
                d.segments.len() as u64 == s.segment_count
                    && d.last_data.len() as u64 == s.mark_count
            });
        if !same {
            return Err(Error::corrupt(key, "decodes to two different shapes"));
        }
        for d in &m.disks {
            d.check_marks().map_err(|why| Error::corrupt(key, why))?;
        }
        Ok(m)
    }

    /// Checks the manifest is within what every reader accepts: the
    /// repository writes none that it could not read back.
    pub fn check_limits(&self, cfg: &RepoConfig) -> Result<()> {
        let cannot = |why| {
            Error::InvalidArgument(format!(
                "point {} cannot be stored: {why}",
                self.point_name()
            ))
        };
        limits::check(&self.shape(), cfg.segment_size).map_err(cannot)?;
        for d in &self.disks {
            d.check_marks().map_err(cannot)?;
        }
        Ok(())
    }

    fn shape(&self) -> Shape<'_> {
        Shape {
            host: &self.host,
            labels: &self.labels,
            disks: self
                .disks
                .iter()
                .map(|d| DiskShape {
                    name: d.name.as_str(),
                    size: d.size,
                    segment_size: d.segment_size,
                    segments: d.segments.len() as u64,
                    marks: d.last_data.len() as u64,
                })
                .collect(),
        }
    }
}

/// Streams a manifest's CBOR into `T`: plaintext bounded by the limits,
/// every string checked from its head before it is read.
fn read_cbor<T: serde::de::DeserializeOwned>(
    key: &str,
    framed: &[u8],
    cfg: &RepoConfig,
) -> Result<T> {
    let limit = limits::max_plaintext(cfg.segment_size);
    frame::decode_stream(Kind::Manifest, key, framed, limit, |plain| {
        let mut guarded = TextGuard::new(plain, limits::MAX_TEXT);
        let decoded = ciborium::from_reader(&mut guarded);
        decoded.map_err(|e| {
            let why = match guarded.fault() {
                Some(fault) => fault.to_string(),
                None => cbor_reason(e),
            };
            Error::corrupt(key, why)
        })
    })
}

/// A CBOR decoding error in words.
fn cbor_reason(e: ciborium::de::Error<std::io::Error>) -> String {
    use ciborium::de::Error as E;
    match e {
        E::Io(e) => format!("unreadable: {e}"),
        E::Syntax(at) => format!("undecodable: invalid CBOR at byte {at}"),
        E::Semantic(Some(at), why) => format!("undecodable at byte {at}: {why}"),
        E::Semantic(None, why) => format!("undecodable: {why}"),
        E::RecursionLimitExceeded => "undecodable: nested too deeply".into(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            vm: "vm1".parse().unwrap(),
            id: "20261125T194155Z-3fa2".parse().unwrap(),
            time: "2026-11-25T19:41:55Z".parse().unwrap(),
            created: "2026-11-25T19:41:56Z".parse().unwrap(),
            parent: None,
            host: "node-a".into(),
            labels: [("k".to_string(), "v".to_string())].into(),
            disks: vec![DiskManifest {
                name: "disk0".parse().unwrap(),
                size: (16 << 20) + 5,
                segment_size: 16 << 20,
                segments: vec![Some(ObjectId::of(b"n")), None],
                last_data: Vec::new(),
                source: "full-scan".into(),
                parent: None,
                audit: None,
                stats: BackupStats::default(),
                checkpoint: None,
                lock_generation: None,
            }],
            stats: BackupStats::default(),
            writer: "test".into(),
        }
    }

    fn cfg() -> RepoConfig {
        RepoConfig::new(16 << 20, crate::chunker::ChunkParams::default(), 3).unwrap()
    }

    #[test]
    fn round_trip_and_consistency_check() {
        let m = sample();
        assert_eq!(
            Manifest::decode("k", &m.encode().unwrap(), &cfg()).unwrap(),
            m
        );
        let s = ManifestSummary::decode("k", &m.encode().unwrap(), &cfg()).unwrap();
        assert_eq!(
            (s.point_name(), s.size()),
            (m.point_name(), m.disks[0].size)
        );
        assert_eq!(s.disks[0].segment_count, 2);
        let mut bad = sample();
        bad.disks[0].segments.pop();
        let e = Manifest::decode("k", &bad.encode().unwrap(), &cfg()).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("needs 2"), "{e}");
        assert!(bad.check_limits(&cfg()).is_err());
        assert!(m.check_limits(&cfg()).is_ok());
        assert_eq!(m.disks[0].segment_range(1), (16 << 20)..((16 << 20) + 5));
        assert!(m.disk("nope").is_err());
    }

    /// Last-data marks are one per segment or none, and each within its
    /// segment: a damaged or hostile list is refused naming what is
    /// wrong, from the summary's count before the list is kept.
    #[test]
    fn last_data_marks_are_checked_against_the_segments() {
        let decode = |m: &Manifest| Manifest::decode("k", &m.encode().unwrap(), &cfg());
        let mut m = sample();
        m.disks[0].last_data = vec![16 << 20, 0];
        assert_eq!(decode(&m).unwrap(), m);
        assert_eq!(m.disks[0].last_data_mark(0), 16 << 20);
        assert_eq!(sample().disks[0].last_data_mark(1), 0);
        let cases = [
            (vec![1], "1 last-data marks for 2 segments"),
            (vec![1, 2, 3], "3 last-data marks for 2 segments"),
            (
                vec![(16 << 20) + 1, 0],
                "at 16777216 of its segment 0, which ends before",
            ),
            (vec![1, 2], "at 1 of its segment 1, which holds none"),
        ];
        for (marks, want) in cases {
            let mut bad = sample();
            bad.disks[0].last_data = marks;
            let e = decode(&bad).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            assert!(e.to_string().contains(want), "{want}: {e}");
            // Nor is such a point written.
            let e = bad.check_limits(&cfg()).unwrap_err();
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
    }
}
