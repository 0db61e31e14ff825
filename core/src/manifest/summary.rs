//! A manifest without its segment lists: what listing points needs, and
//! the first pass of decoding a whole manifest.
//!
//! The summary is decoded from the same CBOR as the manifest, but counts
//! segments instead of keeping them, and refuses more disks, labels or
//! segments than the limits allow as soon as it meets them. So a summary
//! costs a few KB whatever the manifest declares, and once it has passed
//! the checks, decoding the whole manifest allocates only what the
//! repository's constants justify.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::limits::{self, DiskShape, MAX_DISKS, MAX_LABELS, Shape};
use super::{Audit, BackupStats};
use crate::config::RepoConfig;
use crate::error::{Error, Result};
use crate::id::{ObjectId, PointId};
use crate::names::{DiskName, VmName};

/// A point as listings show it.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct ManifestSummary {
    pub vm: VmName,
    pub id: PointId,
    pub time: DateTime<Utc>,
    pub created: DateTime<Utc>,
    pub parent: Option<PointId>,
    pub host: String,
    #[serde(deserialize_with = "bounded_labels")]
    pub labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "bounded_disks")]
    pub disks: Vec<DiskSummary>,
    pub stats: BackupStats,
    /// Type-checked, not kept: a summary accepts what a manifest accepts.
    writer: Typed<String>,
}

#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct DiskSummary {
    pub name: DiskName,
    pub size: u64,
    pub segment_size: u64,
    #[serde(rename = "segments", deserialize_with = "count_segments")]
    pub segment_count: u64,
    /// Last-data marks listed: none, or one per segment.
    #[serde(default, rename = "last_data", deserialize_with = "count_marks")]
    pub mark_count: u64,
    pub parent: Option<PointId>,
    pub stats: BackupStats,
    source: Typed<String>,
    #[serde(default)]
    audit: Typed<Option<Audit>>,
    #[serde(default)]
    checkpoint: Typed<Option<String>>,
}

impl ManifestSummary {
    pub fn point_name(&self) -> String {
        format!("{}@{}", self.vm, self.id)
    }

    /// Sum of the disk sizes: what restoring every disk gives.
    pub fn size(&self) -> u64 {
        self.disks.iter().map(|d| d.size).sum()
    }

    /// Decodes the summary of the manifest stored under `key` and checks
    /// it against the repository's constants.
    pub fn decode(key: &str, framed: &[u8], cfg: &RepoConfig) -> Result<Self> {
        let cap = limits::max_disk_segments(cfg.segment_size);
        let s: ManifestSummary = with_segment_cap(cap, || super::read_cbor(key, framed, cfg))?;
        limits::check(&s.shape(), cfg.segment_size).map_err(|why| Error::corrupt(key, why))?;
        Ok(s)
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
                    segments: d.segment_count,
                    marks: d.mark_count,
                })
                .collect(),
        }
    }
}

/// Decodes a `T` and drops it: the field's type is checked, nothing kept.
#[derive(Clone, Default, PartialEq)]
struct Typed<T>(PhantomData<T>);

impl<T> fmt::Debug for Typed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("_")
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Typed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|_| Typed(PhantomData))
    }
}

thread_local! {
    /// Most segments a disk may list in the summary being decoded on this
    /// thread: serde gives a field's deserializer no other context. Outside
    /// [`with_segment_cap`], the cap of the smallest segment size allowed.
    static SEGMENT_CAP: Cell<u64> = Cell::new(limits::max_disk_segments(1 << 20));
}

fn with_segment_cap<T>(cap: u64, f: impl FnOnce() -> T) -> T {
    let before = SEGMENT_CAP.replace(cap);
    let out = f();
    SEGMENT_CAP.set(before);
    out
}

/// Counts a segment list, checking each entry is an id or null, and stops
/// past the cap instead of reading on.
fn count_segments<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_seq(Count::<Option<ObjectId>>(
        SEGMENT_CAP.get(),
        "segments",
        PhantomData,
    ))
}

/// Counts a list of last-data marks (numbers), as [`count_segments`].
fn count_marks<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_seq(Count::<u64>(
        SEGMENT_CAP.get(),
        "last-data marks",
        PhantomData,
    ))
}

/// Counts a list of `T`, each checked and dropped, refusing more than
/// `.0` (one per segment of the largest disk).
struct Count<T>(u64, &'static str, PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Count<T> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of {}", self.1)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0u64;
        while seq.next_element::<T>()?.is_some() {
            n += 1;
            if n > self.0 {
                return Err(de::Error::custom(format!(
                    "a disk lists more than {} {}, more than a disk of 64 TiB has segments",
                    self.0, self.1
                )));
            }
        }
        Ok(n)
    }
}

/// A list of at most `max` items, refused at the first one beyond.
struct Bounded<T> {
    max: usize,
    what: &'static str,
    item: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Bounded<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {} {}", self.max, self.what)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(x) = seq.next_element()? {
            if out.len() == self.max {
                return Err(de::Error::custom(format!(
                    "more than {} {}",
                    self.max, self.what
                )));
            }
            out.push(x);
        }
        Ok(out)
    }
}

fn bounded_disks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DiskSummary>, D::Error> {
    d.deserialize_seq(Bounded {
        max: MAX_DISKS,
        what: "disks",
        item: PhantomData,
    })
}

fn bounded_labels<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Labels;
    impl<'de> Visitor<'de> for Labels {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a map of at most {MAX_LABELS} labels")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            let mut n = 0;
            while let Some((k, v)) = map.next_entry::<String, String>()? {
                n += 1;
                if n > MAX_LABELS {
                    return Err(de::Error::custom(format!("more than {MAX_LABELS} labels")));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Labels)
}
