//! Which points and bytes the damage found touches: each damaged node's
//! ranges, and nodes used at another length than they cover, mapped
//! through a manifest's segments.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use super::{DamagedDisk, DamagedPoint, MAX_PROBLEMS, NodeDamage};
use crate::id::ObjectId;
use crate::manifest::Manifest;

/// The damage of the point `m`, if any: `nodes` the damaged nodes'
/// segment-relative ranges, `covers` what the nodes some segment uses at
/// another length cover.
pub(super) fn point_damage(
    m: &Manifest,
    nodes: &HashMap<ObjectId, NodeDamage>,
    covers: &HashMap<ObjectId, u64>,
) -> Option<DamagedPoint> {
    let mut disks = Vec::new();
    for d in &m.disks {
        let mut ranges: Vec<Range<u64>> = Vec::new();
        let mut problems = BTreeMap::new();
        for (i, seg) in d.segments.iter().enumerate() {
            let Some(id) = seg else { continue };
            let base = d.segment_range(i);
            let len = base.end - base.start;
            // As restore says it: the whole segment is lost.
            let wrong = covers.get(id).filter(|&&c| c != len).map(|c| {
                let why = format!(
                    "node {} covers {c} bytes, the segment has {len}",
                    id.short()
                );
                (0..len, why)
            });
            for (r, why) in nodes.get(id).into_iter().flatten().chain(&wrong) {
                let r = base.start + r.start.min(base.end - base.start)
                    ..base.start + r.end.min(base.end - base.start);
                problems.entry(why.clone()).or_insert(r.start);
                match ranges.last_mut() {
                    Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
                    _ => ranges.push(r),
                }
            }
        }
        if !ranges.is_empty() {
            let mut problems: Vec<(u64, String)> =
                problems.into_iter().map(|(why, at)| (at, why)).collect();
            problems.sort();
            disks.push(DamagedDisk {
                disk: d.name.to_string(),
                damaged_bytes: ranges.iter().map(|r| r.end - r.start).sum(),
                ranges: ranges.iter().map(|r| (r.start, r.end)).collect(),
                problems: problems
                    .into_iter()
                    .take(MAX_PROBLEMS)
                    .map(|(at, why)| format!("at offset {at}: {why}"))
                    .collect(),
            });
        }
    }
    (!disks.is_empty()).then(|| DamagedPoint {
        point: m.point_name(),
        manifest: None,
        disks,
    })
}
