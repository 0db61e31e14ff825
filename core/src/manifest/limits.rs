//! What one manifest may hold, and the check of a decoded one against
//! the repository's constants.
//!
//! A manifest is tiny once compressed whatever it declares (a run of a
//! million `null` segments compresses to a few bytes), so its stored size
//! justifies nothing: what bounds the memory of reading it is these
//! limits, checked before anything proportional to a declared count is
//! allocated. The repository also refuses to write a manifest that breaks
//! them, so every point written reads back.

use std::collections::BTreeMap;

use crate::names::{MAX_HOST_LEN, MAX_LABEL_VALUE_LEN, MAX_NAME_LEN};

/// Largest disk: 64 TiB (4 M segments of 16 MiB). `backup` refuses a
/// larger source before reading it.
pub const MAX_DISK_SIZE: u64 = 1 << 46;
/// Largest point, all its disks together: 256 TiB.
pub const MAX_POINT_SIZE: u64 = 1 << 48;
/// Most disks in one point.
pub const MAX_DISKS: usize = 256;
/// Most labels on one point.
pub const MAX_LABELS: usize = 64;
/// Longest text or byte string anywhere in a manifest (a disk's `source`
/// names its change files, so it gets room for a few long paths).
pub const MAX_TEXT: u64 = 64 << 10;

/// CBOR bytes of one segment entry at most: a 32-byte byte string, and
/// its last-data mark (a number, at most 9 bytes).
const SEGMENT_CBOR: u64 = 34 + 9;
/// CBOR bytes of a disk besides its segments and source, with room to
/// spare: its name, numbers, parent, audit and statistics with their keys.
const DISK_CBOR: u64 = 4 << 10;
/// The same for the point's own fields besides disks, labels and texts.
const POINT_CBOR: u64 = 4 << 10;

/// Most segments one disk of a repository with `segment_size` may have.
pub fn max_disk_segments(segment_size: u64) -> u64 {
    MAX_DISK_SIZE.div_ceil(segment_size.max(1))
}

/// Most segments a point may have in all: each disk's last segment may be
/// partial.
pub fn max_point_segments(segment_size: u64) -> u64 {
    MAX_POINT_SIZE / segment_size.max(1) + MAX_DISKS as u64
}

/// The largest plaintext a manifest within the limits encodes to (about
/// 730 MB with 16 MiB segments); decompression stops beyond it.
pub fn max_plaintext(segment_size: u64) -> usize {
    let segments = max_point_segments(segment_size) * SEGMENT_CBOR;
    let disks = MAX_DISKS as u64 * (MAX_TEXT + DISK_CBOR);
    let labels = MAX_LABELS as u64 * (MAX_NAME_LEN + MAX_LABEL_VALUE_LEN + 16) as u64;
    let point = 2 * MAX_TEXT + POINT_CBOR;
    usize::try_from(segments + disks + labels + point).unwrap_or(usize::MAX)
}

/// The parts of a manifest the limits are about.
pub(crate) struct Shape<'a> {
    pub host: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub disks: Vec<DiskShape<'a>>,
}

pub(crate) struct DiskShape<'a> {
    pub name: &'a str,
    pub size: u64,
    pub segment_size: u64,
    pub segments: u64,
    /// Last-data marks: none, or one per segment.
    pub marks: u64,
}

/// Checks a manifest against the limits and the repository's segment
/// size; the message names what is wrong.
pub(crate) fn check(shape: &Shape<'_>, segment_size: u64) -> Result<(), String> {
    if shape.host.len() > MAX_HOST_LEN {
        return Err(format!("its host name is longer than {MAX_HOST_LEN} bytes"));
    }
    if shape.labels.len() > MAX_LABELS {
        return Err(format!("it has more than {MAX_LABELS} labels"));
    }
    for (k, v) in shape.labels {
        if k.len() > MAX_NAME_LEN || v.len() > MAX_LABEL_VALUE_LEN {
            return Err(format!(
                "a label is longer than {MAX_NAME_LEN} bytes (key) or {MAX_LABEL_VALUE_LEN} (value)"
            ));
        }
    }
    if shape.disks.len() > MAX_DISKS {
        return Err(format!("it has more than {MAX_DISKS} disks"));
    }
    let mut total = 0u64;
    for (i, d) in shape.disks.iter().enumerate() {
        let name = d.name;
        if shape.disks[..i].iter().any(|o| o.name == name) {
            return Err(format!("disk {name} is listed twice"));
        }
        if d.segment_size != segment_size {
            return Err(format!(
                "disk {name} is cut into segments of {} bytes, the repository's are {segment_size}",
                d.segment_size
            ));
        }
        if d.size > MAX_DISK_SIZE {
            return Err(format!(
                "disk {name} has {} bytes, more than the {MAX_DISK_SIZE} (64 TiB) a disk may have",
                d.size
            ));
        }
        let want = d.size.div_ceil(segment_size);
        if d.segments != want {
            return Err(format!(
                "disk {name} has {} segments, its size needs {want}",
                d.segments
            ));
        }
        if d.marks != 0 && d.marks != d.segments {
            return Err(format!(
                "disk {name} has {} last-data marks for {} segments",
                d.marks, d.segments
            ));
        }
        total += d.size;
    }
    if total > MAX_POINT_SIZE {
        return Err(format!(
            "its disks hold {total} bytes in all, more than the {MAX_POINT_SIZE} (256 TiB) a \
             point may hold"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plaintext_bound_follows_the_segment_size() {
        // 16 M segments of 43 bytes, plus about 18 MB for the rest.
        let p = max_plaintext(16 << 20) as u64;
        assert!((720_000_000..740_000_000).contains(&p), "{p}");
        assert!(max_plaintext(64 << 20) < max_plaintext(16 << 20));
        assert_eq!(max_disk_segments(16 << 20), 4 << 20);
    }

    #[test]
    fn check_names_what_is_wrong() {
        let labels = BTreeMap::new();
        let disk = |size, segment_size, segments| DiskShape {
            name: "d",
            size,
            segment_size,
            segments,
            marks: 0,
        };
        let seg = 4 << 20;
        let shape = |disks| Shape {
            host: "h",
            labels: &labels,
            disks,
        };
        assert!(check(&shape(vec![disk(seg + 1, seg, 2)]), seg).is_ok());
        assert!(check(&shape(vec![disk(0, seg, 0)]), seg).is_ok());
        let cases = [
            (vec![disk(seg, seg, 2)], "needs 1"),
            (vec![disk(10_000, 1000, 10)], "segments of 1000 bytes"),
            (vec![disk(1 << 63, seg, (1 << 63) / seg)], "64 TiB"),
            (vec![disk(0, seg, 0), disk(0, seg, 0)], "twice"),
            (
                vec![DiskShape {
                    marks: 1,
                    ..disk(seg + 1, seg, 2)
                }],
                "1 last-data marks for 2 segments",
            ),
        ];
        for (disks, want) in cases {
            let e = check(&shape(disks), seg).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        let many: Vec<_> = (0..5)
            .map(|_| disk(MAX_DISK_SIZE, seg, MAX_DISK_SIZE / seg))
            .collect();
        let names = ["a", "b", "c", "d", "e"];
        let many = many
            .into_iter()
            .zip(names)
            .map(|(d, name)| DiskShape { name, ..d })
            .collect();
        assert!(check(&shape(many), seg).unwrap_err().contains("256 TiB"));
    }
}
