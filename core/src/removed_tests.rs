use super::*;

fn id(s: &str) -> PointId {
    s.parse().unwrap()
}

fn record(point: &PointId, at: &str) -> Record {
    let at = DateTime::parse_from_rfc3339(at)
        .unwrap()
        .with_timezone(&Utc);
    Record {
        point: point.clone(),
        at,
    }
}

#[test]
fn a_record_counts_from_its_parents_second_on_but_not_the_parent_itself() {
    let parent = id("20261207T100000Z-aaaa");
    let older = id("20261207T095959Z-bbbb");
    let same_second = id("20261207T100000Z-0001");
    let later = id("20261207T100001Z-cccc");
    // The parent made before every record (by the margin).
    let made = DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let margin = Duration::seconds(60);
    let at = "2026-12-07T10:00:05Z";
    let made = Made {
        created: made,
        stored: Some(made),
    };
    let newer = |rs: &[Record]| newer_than(rs, &parent, made, margin);
    assert_eq!(newer(&[record(&older, at)]), None);
    assert_eq!(newer(&[record(&parent, at)]), None);
    let rs = [record(&older, at), record(&same_second, at)];
    assert_eq!(newer(&rs), Some(same_second.clone()));
    let rs = [
        record(&later, at),
        record(&same_second, at),
        record(&older, at),
    ];
    assert_eq!(newer(&rs), Some(later.clone()));
}

/// A record of a point dated ahead (a year here) counts for a parent
/// the store wrote before it, and for one its maker dated more than the
/// clock margin before it (a point `copy` stored since), and no more
/// for one made after it (review 88: every later backup read in full).
#[test]
fn a_record_written_before_the_parent_was_made_does_not_count() {
    let parent = id("20261207T100000Z-aaaa");
    let ahead = id("20271207T100000Z-bbbb");
    let rs = [record(&ahead, "2026-12-07T10:00:00Z")];
    let margin = Duration::seconds(60);
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    let newer = |created: &str, stored: Option<&str>| {
        let made = Made {
            created: t(created),
            stored: stored.map(t),
        };
        newer_than(&rs, &parent, made, margin)
    };
    let after = Some("2026-12-07T10:00:01Z");
    assert_eq!(
        newer("2026-12-07T09:59:00Z", Some("2026-12-07T09:59:59Z")),
        Some(ahead.clone())
    );
    assert_eq!(newer("2026-12-07T10:00:01Z", None), Some(ahead.clone()));
    // Copied in after the record, made long before.
    assert_eq!(newer("2026-12-01T10:00:00Z", after), Some(ahead.clone()));
    // Made after it; by a clock behind the store's within the margin too.
    assert_eq!(newer("2026-12-07T10:00:01Z", after), None);
    assert_eq!(newer("2026-12-07T09:59:30Z", after), None);
}
