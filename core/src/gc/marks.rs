//! The mark set of a sweep. Nodes are remembered exactly (a node must be
//! visited once, and never skipped by mistake: its chunks would be lost).
//! Chunks are remembered by the first 8 bytes of their id: 8 bytes of
//! state per live chunk. A collision can only make an unreferenced chunk
//! look referenced, which keeps it until a later sweep — never the reverse.

use std::collections::HashSet;

use crate::id::ObjectId;

#[derive(Debug, Default)]
pub struct Marks {
    nodes: HashSet<ObjectId>,
    chunks: Vec<u64>,
    /// Length of `chunks` after the last sort; everything after is unsorted.
    sorted: usize,
    /// Chunks marked after [`Marks::seal`] (a sweep learns of more live
    /// chunks while it deletes: leases' new dependencies, committed points).
    late: HashSet<u64>,
    sealed: bool,
}

fn prefix(id: &ObjectId) -> u64 {
    let b = id.as_bytes();
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

impl Marks {
    /// Marks a node; false if it was marked already (do not visit again).
    pub fn node(&mut self, id: ObjectId) -> bool {
        self.nodes.insert(id)
    }

    pub fn has_node(&self, id: &ObjectId) -> bool {
        self.nodes.contains(id)
    }

    pub fn chunk(&mut self, id: &ObjectId) {
        if self.sealed {
            self.late.insert(prefix(id));
            return;
        }
        self.chunks.push(prefix(id));
        // Chunks shared by many nodes are pushed many times: compact once
        // the unsorted tail is as large as the sorted part.
        if self.chunks.len() >= 2 * self.sorted.max(1 << 16) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        self.chunks.sort_unstable();
        self.chunks.dedup();
        self.chunks.shrink_to_fit();
        self.sorted = self.chunks.len();
    }

    /// Call once the bulk of the marking is over, before
    /// [`Marks::has_chunk`]; later marks go to a small side set.
    pub fn seal(&mut self) {
        self.compact();
        self.sealed = true;
    }

    pub fn has_chunk(&self, id: &ObjectId) -> bool {
        debug_assert!(self.sealed, "marks not sealed");
        let p = prefix(id);
        self.chunks[..self.sorted].binary_search(&p).is_ok() || self.late.contains(&p)
    }

    /// Whether the chunk was marked after [`Marks::seal`] (a pack that
    /// holds it may have been judged dead before the mark arrived).
    pub fn has_late(&self, id: &ObjectId) -> bool {
        self.late.contains(&prefix(id))
    }

    /// Whether any chunk was marked after [`Marks::seal`].
    pub fn any_late(&self) -> bool {
        !self.late.is_empty()
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.nodes.len(), self.chunks.len() + self.late.len())
    }

    /// Bytes of mark state (for the memory figures in reports).
    pub fn state_bytes(&self) -> usize {
        self.chunks.capacity() * 8 + self.nodes.capacity() * 40 + self.late.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_compaction_and_nodes_are_visited_once() {
        let mut m = Marks::default();
        let ids: Vec<_> = (0u32..200_000)
            .map(|i| ObjectId::of(&i.to_le_bytes()))
            .collect();
        for id in &ids {
            m.chunk(id);
            m.chunk(id);
        }
        m.seal();
        assert!(ids.iter().all(|id| m.has_chunk(id)));
        assert!(!m.has_chunk(&ObjectId::of(b"other")));
        assert_eq!(m.counts().1, ids.len());
        assert!(m.node(ids[0]));
        assert!(!m.node(ids[0]));
        assert!(m.has_node(&ids[0]));
        // Marks added after sealing count too.
        let late = ObjectId::of(b"late");
        assert!(!m.has_chunk(&late));
        m.chunk(&late);
        assert!(m.has_chunk(&late));
    }
}
