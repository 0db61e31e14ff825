//! Table tests of retention planning with synthetic timestamps.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};

use super::policy::{Candidate, Policy, plan};
use super::span::Span;
use crate::id::PointId;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn points(times: &[&str]) -> Vec<Candidate> {
    times
        .iter()
        .map(|t| Candidate {
            id: PointId::new(at(t)),
            time: at(t),
            created: at(t),
            labels: BTreeMap::new(),
            disks: vec!["sys".into()],
        })
        .collect()
}

/// The times kept, oldest first, for readable tables.
fn kept(points: &[Candidate], policy: &Policy) -> Vec<String> {
    let mut out: Vec<String> = plan(points, policy)
        .unwrap()
        .into_iter()
        .filter(|d| d.keep)
        .map(|d| d.time.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .collect();
    out.reverse();
    out
}

#[test]
fn an_empty_policy_is_refused() {
    let err = plan(&points(&["2026-01-01T00:00:00Z"]), &Policy::default()).unwrap_err();
    assert!(err.contains("refusing to remove every point"), "{err}");
}

/// `--keep-within 0d` as the only rule removed every point but the
/// newest (review, stop 56): the parser refuses it, and a zero span that
/// reaches the policy is no rule.
#[test]
fn a_zero_span_is_no_rule() {
    let p = Policy {
        within: Some(Span::default()),
        ..Policy::default()
    };
    let three = points(&[
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
        "2026-01-03T00:00:00Z",
    ]);
    let err = plan(&three, &p).unwrap_err();
    assert!(err.contains("refusing to remove every point"), "{err}");
    assert!(Span::parse("0d").is_err());
}

#[test]
fn no_points_plan_nothing() {
    let p = Policy {
        last: 3,
        ..Policy::default()
    };
    assert!(plan(&[], &p).unwrap().is_empty());
}

#[test]
fn bucket_rules_keep_the_newest_point_of_each_bucket() {
    // Several points per bucket, and UTC bucket edges (23:59:59 and 00:00:00
    // are different days; Dec 31 2026 is in ISO week 53 of 2026, Jan 1 2027
    // too, Jan 4 2027 in week 1 of 2027).
    let pts = points(&[
        "2026-12-30T10:00:00Z",
        "2026-12-31T23:59:59Z",
        "2027-01-01T00:00:00Z",
        "2027-01-01T00:30:00Z",
        "2027-01-01T01:00:00Z",
        "2027-01-04T08:00:00Z",
        "2027-01-04T09:00:00Z",
    ]);
    let table: Vec<(Policy, Vec<&str>)> = vec![
        (
            Policy {
                last: 2,
                ..Policy::default()
            },
            vec!["2027-01-04T08:00:00Z", "2027-01-04T09:00:00Z"],
        ),
        (
            Policy {
                hourly: 3,
                ..Policy::default()
            },
            vec![
                "2027-01-01T01:00:00Z",
                "2027-01-04T08:00:00Z",
                "2027-01-04T09:00:00Z",
            ],
        ),
        (
            Policy {
                hourly: 4,
                ..Policy::default()
            },
            vec![
                "2027-01-01T00:30:00Z",
                "2027-01-01T01:00:00Z",
                "2027-01-04T08:00:00Z",
                "2027-01-04T09:00:00Z",
            ],
        ),
        (
            Policy {
                daily: 3,
                ..Policy::default()
            },
            vec![
                "2026-12-31T23:59:59Z",
                "2027-01-01T01:00:00Z",
                "2027-01-04T09:00:00Z",
            ],
        ),
        (
            Policy {
                weekly: 5,
                ..Policy::default()
            },
            vec!["2027-01-01T01:00:00Z", "2027-01-04T09:00:00Z"],
        ),
        (
            Policy {
                monthly: 2,
                ..Policy::default()
            },
            vec!["2026-12-31T23:59:59Z", "2027-01-04T09:00:00Z"],
        ),
        (
            Policy {
                yearly: 1,
                ..Policy::default()
            },
            vec!["2027-01-04T09:00:00Z"],
        ),
        (
            // Fewer buckets than asked for: every bucket's newest, no error.
            Policy {
                yearly: 10,
                ..Policy::default()
            },
            vec!["2026-12-31T23:59:59Z", "2027-01-04T09:00:00Z"],
        ),
        (
            // Rules add up.
            Policy {
                last: 1,
                daily: 2,
                ..Policy::default()
            },
            vec!["2027-01-01T01:00:00Z", "2027-01-04T09:00:00Z"],
        ),
        (
            // Within is measured from the newest point, edge included.
            Policy {
                within: Some(Span::parse("3d9h").unwrap()),
                ..Policy::default()
            },
            vec![
                "2027-01-01T00:00:00Z",
                "2027-01-01T00:30:00Z",
                "2027-01-01T01:00:00Z",
                "2027-01-04T08:00:00Z",
                "2027-01-04T09:00:00Z",
            ],
        ),
    ];
    for (policy, want) in table {
        assert_eq!(kept(&pts, &policy), want, "{policy:?}");
    }
}

#[test]
fn labels_keep_points_and_reasons_are_given() {
    let mut pts = points(&[
        "2026-05-01T00:00:00Z",
        "2026-05-02T00:00:00Z",
        "2026-05-03T00:00:00Z",
    ]);
    pts[0].labels.insert("keep".into(), "forever".into());
    pts[1].labels.insert("keep".into(), "no".into());
    let policy = Policy {
        last: 1,
        labels: vec![("keep".into(), "forever".into())],
        ..Policy::default()
    };
    let d = plan(&pts, &policy).unwrap();
    let summary: Vec<(bool, Vec<String>)> = d.iter().map(|d| (d.keep, d.reasons.clone())).collect();
    assert_eq!(
        summary,
        vec![
            (true, vec!["last 1".to_string()]),
            (false, vec![]),
            (true, vec!["label keep=forever".to_string()]),
        ]
    );
}

#[test]
fn points_of_the_same_second_are_told_apart() {
    let t = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
    let pts: Vec<Candidate> = (0..3)
        .map(|i| Candidate {
            id: PointId::new(t),
            time: t + chrono::Duration::microseconds(i),
            created: t,
            labels: BTreeMap::new(),
            disks: vec!["sys".into()],
        })
        .collect();
    let d = plan(
        &pts,
        &Policy {
            last: 1,
            ..Policy::default()
        },
    )
    .unwrap();
    assert_eq!(d.iter().filter(|d| d.keep).count(), 1);
    assert_eq!(d[0].time, t + chrono::Duration::microseconds(2));
    assert!(d[0].keep);
}

/// Points of one time (an explicit `--time` given twice) are ordered as
/// backup orders them: the last made is the newest, whatever the random
/// end of its id (review, stop 50: by id, `--keep-last 1` removed the
/// next backup's parent half the time).
#[test]
fn points_of_one_time_are_ordered_by_when_they_were_made() {
    let t = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
    let mut pts: Vec<Candidate> = (0..4)
        .map(|i| Candidate {
            id: PointId::new(t),
            time: t,
            created: t + chrono::Duration::seconds(i),
            labels: BTreeMap::new(),
            disks: vec!["sys".into()],
        })
        .collect();
    // The one made last has the smallest id.
    pts.sort_by(|a, b| b.id.cmp(&a.id));
    for (i, p) in pts.iter_mut().enumerate() {
        p.created = t + chrono::Duration::seconds(i as i64);
    }
    let last = pts[3].id.clone();
    let policy = Policy {
        last: 1,
        ..Policy::default()
    };
    let d = plan(&pts, &policy).unwrap();
    let kept: Vec<_> = d.iter().filter(|d| d.keep).map(|d| &d.id).collect();
    assert_eq!(kept, [&last]);
}

#[test]
fn the_newest_point_holding_a_disk_is_kept_unless_disks_may_be_forgotten() {
    // Points newest first: "other" only, then "sys" (the only copy of sys),
    // then "sys" again (an older copy).
    let mut pts = points(&[
        "2026-06-03T00:00:00Z",
        "2026-06-02T00:00:00Z",
        "2026-06-01T00:00:00Z",
    ]);
    pts[0].disks = vec!["other".into()];
    let policy = Policy {
        last: 1,
        ..Policy::default()
    };
    let d = plan(&pts, &policy).unwrap();
    let kept: Vec<(bool, Vec<String>)> = d.iter().map(|d| (d.keep, d.reasons.clone())).collect();
    assert_eq!(
        kept,
        vec![
            (true, vec!["last 1".to_string()]),
            (true, vec!["newest with disk sys".to_string()]),
            (false, vec![]),
        ]
    );
    let d = plan(
        &pts,
        &Policy {
            forget_disks: true,
            ..policy
        },
    )
    .unwrap();
    assert_eq!(d.iter().filter(|d| d.keep).count(), 1);
}
