//! Manifests: the root object of a point. A point exists exactly when its
//! manifest exists.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::frame::{self, Kind};
use crate::id::{ObjectId, PointId};
use crate::names::{DiskName, VmName};

/// Manifests above this size are refused as damaged (a 64 TiB disk in
/// 16 MiB segments needs ~150 MB; nothing real comes near).
const MAX_MANIFEST: usize = 1 << 30;

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
    /// Where the change information came from, e.g. `full-scan`.
    pub source: String,
    /// The point whose nodes this disk was deduplicated or re-chunked
    /// against, if any.
    pub parent: Option<PointId>,
    /// What the audit of segments the change source called unchanged found.
    pub audit: Option<Audit>,
    pub stats: BackupStats,
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

    pub fn expected_segments(size: u64, segment_size: u64) -> usize {
        size.div_ceil(segment_size) as usize
    }
}

/// What a backup did, per disk and summed per point.
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
    /// Non-zero logical bytes of the point.
    pub bytes_data: u64,
    /// Chunks and nodes the point shares with its parent that were missing
    /// or damaged in the repository and were stored again.
    #[serde(default)]
    pub objects_restored: u64,
    pub seconds: f64,
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
    }

    /// Data bytes of the point per byte it added to the store; `None`
    /// when it added nothing.
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

    /// Decodes the manifest stored under `key` and checks it is internally
    /// consistent (so later code can index without fear).
    pub fn decode(key: &str, framed: &[u8]) -> Result<Self> {
        let plain = frame::decode(Kind::Manifest, key, framed, MAX_MANIFEST)?;
        let m: Manifest = ciborium::from_reader(&plain[..])
            .map_err(|e| Error::corrupt(key, format!("undecodable: {e}")))?;
        for d in &m.disks {
            let want = DiskManifest::expected_segments(d.size, d.segment_size);
            if d.segment_size == 0 || d.segments.len() != want {
                return Err(Error::corrupt(
                    key,
                    format!(
                        "disk {} has {} segments, its size needs {want}",
                        d.name,
                        d.segments.len()
                    ),
                ));
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
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
                source: "full-scan".into(),
                parent: None,
                audit: None,
                stats: BackupStats::default(),
            }],
            stats: BackupStats::default(),
            writer: "test".into(),
        }
    }

    #[test]
    fn round_trip_and_consistency_check() {
        let m = sample();
        assert_eq!(Manifest::decode("k", &m.encode().unwrap()).unwrap(), m);
        let mut bad = sample();
        bad.disks[0].segments.pop();
        assert!(matches!(
            Manifest::decode("k", &bad.encode().unwrap()),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(m.disks[0].segment_range(1), (16 << 20)..((16 << 20) + 5));
        assert!(m.disk("nope").is_err());
    }
}
