//! Retention planning: a pure function from a VM's points and a policy to
//! "keep, because ..." or "remove", as restic's `forget` decides: per
//! rule, walking from the newest point back, the newest point of each
//! calendar bucket (UTC) is kept until the rule's count is reached.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use super::span::Span;
use crate::id::PointId;

/// What to keep. Counts of 0 keep nothing by that rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    /// Keep every point this close to the VM's newest point.
    pub within: Option<Span>,
    /// Keep every point with one of these labels.
    pub labels: Vec<(String, String)>,
    /// Let the rules remove the newest point that holds a disk name (else
    /// it is kept: a disk left out of later backups would otherwise lose
    /// its last copy to `--keep-last 1`).
    pub forget_disks: bool,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            // A zero span (not from `Span::parse`) is no rule either.
            && self.within.is_none_or(|w| w == super::span::Span::default())
            && self.labels.is_empty()
    }
}

/// A point as planning sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: PointId,
    pub time: DateTime<Utc>,
    /// When it was made: orders points of one time as backup does (the
    /// last made is the newest, the next backup's parent).
    pub created: DateTime<Utc>,
    pub labels: BTreeMap<String, String>,
    /// The names of the point's disks.
    pub disks: Vec<String>,
}

/// The plan for one point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: PointId,
    pub time: DateTime<Utc>,
    pub keep: bool,
    /// Why it is kept (empty when removed).
    pub reasons: Vec<String>,
    /// Why it counts as damaged, when a damage record names one of its
    /// objects: the rules count only the others (`super::damaged`).
    pub damaged: Option<String>,
}

type Bucket = fn(&DateTime<Utc>) -> (i32, u32, u32, u32);

fn hour(t: &DateTime<Utc>) -> (i32, u32, u32, u32) {
    (t.year(), t.month(), t.day(), t.hour())
}
fn day(t: &DateTime<Utc>) -> (i32, u32, u32, u32) {
    (t.year(), t.month(), t.day(), 0)
}
fn week(t: &DateTime<Utc>) -> (i32, u32, u32, u32) {
    // ISO weeks: the week of Dec 31 may belong to the next year.
    let w = t.iso_week();
    (w.year(), w.week(), 0, 0)
}
fn month(t: &DateTime<Utc>) -> (i32, u32, u32, u32) {
    (t.year(), t.month(), 0, 0)
}
fn year(t: &DateTime<Utc>) -> (i32, u32, u32, u32) {
    (t.year(), 0, 0, 0)
}

/// Decides for each point (returned newest first). Refuses an empty
/// policy: it would remove every point.
pub fn plan(points: &[Candidate], policy: &Policy) -> Result<Vec<Decision>, String> {
    if policy.is_empty() {
        return Err("no --keep-... option given: refusing to remove every point".into());
    }
    let mut sorted: Vec<&Candidate> = points.iter().collect();
    // Newest first, in backup's order (`Repository::points_in_order`):
    // of points of one time the last made is the newest. By id, random
    // in its last digits, `--keep-last 1` kept a random one of an
    // explicit `--time` given twice and removed the next backup's parent
    // (review, stop 50).
    sorted.sort_by(|a, b| (b.time, b.created, &b.id).cmp(&(a.time, a.created, &a.id)));
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); sorted.len()];

    for (i, r) in reasons.iter_mut().enumerate().take(policy.last as usize) {
        r.push(format!("last {}", i + 1));
    }
    let rules: [(&str, u32, Bucket); 5] = [
        ("hourly", policy.hourly, hour),
        ("daily", policy.daily, day),
        ("weekly", policy.weekly, week),
        ("monthly", policy.monthly, month),
        ("yearly", policy.yearly, year),
    ];
    for (name, count, bucket) in rules {
        let mut kept = 0;
        let mut last = None;
        for (i, p) in sorted.iter().enumerate() {
            if kept == count {
                break;
            }
            let b = bucket(&p.time);
            if last != Some(b) {
                last = Some(b);
                kept += 1;
                reasons[i].push(format!("{name} {kept}"));
            }
        }
    }
    if let (Some(span), Some(newest)) = (policy.within, sorted.first()) {
        let since = span.before(newest.time);
        for (i, p) in sorted.iter().enumerate() {
            if p.time >= since {
                reasons[i].push(format!("within {span}"));
            }
        }
    }
    for (i, p) in sorted.iter().enumerate() {
        for (k, v) in &policy.labels {
            if p.labels.get(k) == Some(v) {
                reasons[i].push(format!("label {k}={v}"));
            }
        }
    }
    if !policy.forget_disks {
        keep_last_copy_of_each_disk(&sorted, &mut reasons);
    }
    Ok(sorted
        .into_iter()
        .zip(reasons)
        .map(|(p, reasons)| Decision {
            id: p.id.clone(),
            time: p.time,
            keep: !reasons.is_empty(),
            reasons,
            damaged: None,
        })
        .collect())
}

/// Keeps the newest point holding each disk name when the rules would
/// remove it: the disk has no newer copy (it was left out of later
/// backups). `sorted` is newest first.
fn keep_last_copy_of_each_disk(sorted: &[&Candidate], reasons: &mut [Vec<String>]) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, p) in sorted.iter().enumerate() {
        for d in &p.disks {
            if seen.contains(&d.as_str()) {
                continue;
            }
            seen.push(d);
            if reasons[i].is_empty() || reasons[i][0].starts_with("newest with disk") {
                reasons[i].push(format!("newest with disk {d}"));
            }
        }
    }
}
