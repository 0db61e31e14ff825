//! The lengths of the segments each node is used for. Restore refuses a
//! node that covers another length than its segment (`Repository::
//! load_segment_node`); verify read each node without asking, so a
//! manifest naming a full segment's node for its short last segment (or
//! the other way round) verified clean and did not restore (review 100).
//!
//! Nearly every use is of a whole segment, so only nodes used for a
//! shorter one are held (at most one per disk of each point): a node
//! without an entry here is used at the segment size only.

use std::collections::{BTreeSet, HashMap};

use crate::id::ObjectId;

#[derive(Debug)]
pub(super) struct Uses {
    segment_size: u64,
    /// Nodes used for a segment shorter than the segment size: whether
    /// also for a whole one, and the shorter lengths.
    short: HashMap<ObjectId, (bool, BTreeSet<u64>)>,
}

impl Uses {
    pub(super) fn new(segment_size: u64) -> Uses {
        Uses {
            segment_size,
            short: HashMap::new(),
        }
    }

    /// `id` is used for a segment of `len` bytes; `seen` tells whether
    /// it was used before (the caller's set of every node used).
    pub(super) fn saw(&mut self, id: ObjectId, len: u64, seen: bool) {
        let whole = len == self.segment_size;
        match self.short.get_mut(&id) {
            Some((full, _)) if whole => *full = true,
            Some((_, lens)) => {
                lens.insert(len);
            }
            None if whole => {}
            // Seen before without an entry: only at the segment size.
            None => {
                self.short.insert(id, (seen, BTreeSet::from([len])));
            }
        }
    }

    /// Whether some use of `id` is of another length than the node
    /// covers (`covers`).
    pub(super) fn wrong(&self, id: &ObjectId, covers: u64) -> bool {
        match self.short.get(id) {
            None => covers != self.segment_size,
            Some((full, lens)) => {
                (*full && covers != self.segment_size) || lens.iter().any(|&l| l != covers)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_use_is_held_against_what_the_node_covers() {
        let (a, b) = (ObjectId::of(b"a"), ObjectId::of(b"b"));
        let mut u = Uses::new(100);
        u.saw(a, 100, false);
        u.saw(b, 40, false);
        assert!(!u.wrong(&a, 100) && u.wrong(&a, 40));
        assert!(!u.wrong(&b, 40) && u.wrong(&b, 100));
        // Used whole before, then short: both uses count.
        u.saw(a, 40, true);
        assert!(u.wrong(&a, 100) && u.wrong(&a, 40));
        // Short first, then whole.
        u.saw(b, 100, true);
        assert!(u.wrong(&b, 40) && u.wrong(&b, 100));
        // An unknown node is used whole.
        let c = ObjectId::of(b"c");
        assert!(!u.wrong(&c, 100) && u.wrong(&c, 99));
    }
}
