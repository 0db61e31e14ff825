use std::collections::BTreeSet;

use super::*;

fn id(s: &str) -> PointId {
    s.parse().unwrap()
}

#[test]
fn a_record_counts_from_its_parents_second_on_but_not_the_parent_itself() {
    let parent = id("20261207T100000Z-aaaa");
    let older = id("20261207T095959Z-bbbb");
    let same_second = id("20261207T100000Z-0001");
    let later = id("20261207T100001Z-cccc");
    assert_eq!(newer_than(std::slice::from_ref(&older), &parent), None);
    assert_eq!(newer_than(std::slice::from_ref(&parent), &parent), None);
    assert_eq!(
        newer_than(&[older.clone(), same_second.clone()], &parent),
        Some(same_second.clone())
    );
    assert_eq!(
        newer_than(&[later.clone(), same_second, older], &parent),
        Some(later)
    );
}

#[test]
fn the_points_that_may_be_newest_are_those_from_the_second_of_the_newest_staying() {
    let p = |s: &str| id(&format!("20261207T1000{s}"));
    let listed = vec![p("00Z-aaaa"), p("10Z-aaaa"), p("10Z-bbbb"), p("20Z-aaaa")];
    let removing: BTreeSet<PointId> = [p("00Z-aaaa"), p("20Z-aaaa")].into();
    let newest: Vec<&PointId> = maybe_newest(&listed, &removing).collect();
    assert_eq!(newest, vec![&p("20Z-aaaa")]);
    // One of the newest second stays: the other may be newer than it.
    let removing: BTreeSet<PointId> = [p("10Z-aaaa"), p("00Z-aaaa")].into();
    let newest: Vec<&PointId> = maybe_newest(&listed[..3], &removing).collect();
    assert_eq!(newest, vec![&p("10Z-aaaa")]);
    // None stays: all.
    let removing: BTreeSet<PointId> = listed.iter().cloned().collect();
    assert_eq!(maybe_newest(&listed, &removing).count(), 4);
    // Only old ones go: none.
    let removing: BTreeSet<PointId> = [p("00Z-aaaa")].into();
    assert_eq!(maybe_newest(&listed, &removing).count(), 0);
}
