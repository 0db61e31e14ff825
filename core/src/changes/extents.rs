//! Sets of byte ranges: sorted, merged, non-empty ranges.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// A set of byte ranges, kept sorted and merged (touching ranges join).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtentSet {
    ranges: Vec<Range<u64>>,
}

/// One extent in the native JSON format: `{"offset": 0, "length": 65536}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
}

impl ExtentSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from ranges in any order, overlapping or not, merging
    /// them in place (no second list: change files may hold millions).
    pub fn from_ranges(mut ranges: Vec<Range<u64>>) -> Self {
        ranges.retain(|r| r.start < r.end);
        ranges.sort_unstable_by_key(|r| r.start);
        let mut kept: usize = 0;
        for i in 0..ranges.len() {
            let r = ranges[i].clone();
            match kept.checked_sub(1).map(|k| &mut ranges[k]) {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => {
                    ranges[kept] = r;
                    kept += 1;
                }
            }
        }
        ranges.truncate(kept);
        ExtentSet { ranges }
    }

    /// Adds `more` (in any order), leaving it empty to be filled again.
    pub fn absorb(&mut self, more: &mut Vec<Range<u64>>) {
        if more.is_empty() {
            return;
        }
        let mut all = std::mem::take(&mut self.ranges);
        all.append(more);
        *self = ExtentSet::from_ranges(all);
    }

    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Total bytes covered.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    pub fn union(&self, other: &ExtentSet) -> ExtentSet {
        let mut all = self.ranges.clone();
        all.extend(other.ranges.iter().cloned());
        ExtentSet::from_ranges(all)
    }

    /// Adds one range.
    pub fn insert(&mut self, r: Range<u64>) {
        let mut all = std::mem::take(&mut self.ranges);
        all.push(r);
        *self = ExtentSet::from_ranges(all);
    }

    /// The parts inside `window`, shifted so that `window.start` is 0.
    pub fn within(&self, window: Range<u64>) -> Vec<Range<u64>> {
        let first = self.ranges.partition_point(|r| r.end <= window.start);
        self.ranges[first..]
            .iter()
            .take_while(|r| r.start < window.end)
            .map(|r| r.start.max(window.start) - window.start..r.end.min(window.end) - window.start)
            .collect()
    }

    /// True when some range overlaps `window`.
    pub fn touches(&self, window: Range<u64>) -> bool {
        let first = self.ranges.partition_point(|r| r.end <= window.start);
        self.ranges.get(first).is_some_and(|r| r.start < window.end)
    }

    /// The native JSON form.
    pub fn to_extents(&self) -> Vec<Extent> {
        self.ranges
            .iter()
            .map(|r| Extent {
                offset: r.start,
                length: r.end - r.start,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn covered(ranges: &[Range<u64>], x: u64) -> bool {
        ranges.iter().any(|r| r.contains(&x))
    }

    proptest! {
        #[test]
        fn set_algebra(a in prop::collection::vec((0u64..500, 0u64..50), 0..20),
                       b in prop::collection::vec((0u64..500, 0u64..50), 0..20)) {
            let ra: Vec<_> = a.iter().map(|&(s, l)| s..s + l).collect();
            let rb: Vec<_> = b.iter().map(|&(s, l)| s..s + l).collect();
            let (sa, sb) = (ExtentSet::from_ranges(ra.clone()), ExtentSet::from_ranges(rb.clone()));
            let u = sa.union(&sb);
            // Sorted, merged, non-empty.
            for w in u.ranges().windows(2) {
                prop_assert!(w[0].end < w[1].start);
            }
            prop_assert!(u.ranges().iter().all(|r| r.start < r.end));
            for x in 0..560 {
                prop_assert_eq!(covered(u.ranges(), x), covered(&ra, x) || covered(&rb, x));
                prop_assert_eq!(covered(sa.ranges(), x), covered(&ra, x));
            }
            let inside = u.within(100..300);
            for x in 0..200 {
                prop_assert_eq!(covered(&inside, x), covered(u.ranges(), x + 100));
            }
            prop_assert_eq!(u.touches(100..300), !inside.is_empty());
        }
    }
}
