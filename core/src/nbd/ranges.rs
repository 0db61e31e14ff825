//! The parts of a read request that reply chunks have covered so far.
//! The spec forbids overlapping chunks and requires full coverage before
//! success; a server breaking either would leave zeros where data should
//! be, so both are checked.

use std::collections::BTreeMap;

/// A server may send chunks in any order, but one that leaves more than
/// this many gaps open at once is treated as broken: it bounds the
/// bookkeeping a hostile server can make the client allocate.
const MAX_FRAGMENTS: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct Coverage {
    /// Disjoint, non-adjacent ranges: start -> end.
    ranges: BTreeMap<u64, u64>,
    covered: u64,
}

impl Coverage {
    /// Records `start..end` (non-empty), refusing an overlap.
    pub fn insert(&mut self, start: u64, end: u64) -> Result<(), &'static str> {
        debug_assert!(start < end);
        let mut new_start = start;
        let mut new_end = end;
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e > start {
                return Err("a chunk overlaps an earlier one");
            }
            if e == start {
                new_start = s;
            }
        }
        if let Some((&s, &e)) = self.ranges.range(start..).next() {
            if s < end {
                return Err("a chunk overlaps an earlier one");
            }
            if s == end {
                new_end = e;
                self.ranges.remove(&s);
            }
        }
        if new_start == start && self.ranges.len() >= MAX_FRAGMENTS {
            return Err("the reply is fragmented into too many pieces");
        }
        self.ranges.insert(new_start, new_end);
        self.covered += end - start;
        Ok(())
    }

    pub fn covered(&self) -> u64 {
        self.covered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_refuses_overlaps() {
        let mut c = Coverage::default();
        c.insert(10, 20).unwrap();
        c.insert(30, 40).unwrap();
        c.insert(20, 30).unwrap();
        assert_eq!(c.ranges.len(), 1);
        assert_eq!(c.covered(), 30);
        assert!(c.insert(15, 16).is_err());
        assert!(c.insert(5, 11).is_err());
        assert!(c.insert(39, 45).is_err());
        c.insert(0, 10).unwrap();
        c.insert(40, 41).unwrap();
        assert_eq!(c.ranges.len(), 1);
        assert_eq!(c.covered(), 41);
    }
}
