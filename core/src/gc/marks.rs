//! The mark set of a sweep. Nodes are remembered exactly (a node must be
//! visited once, and never skipped by mistake: its chunks would be lost).
//! Chunks are remembered by the first 8 bytes of their id: 8 bytes per
//! live chunk. A collision can only make an unreferenced chunk look
//! referenced, which keeps it until a later sweep — never the reverse.
//!
//! Chunk marks are held in memory up to a budget ([`DEFAULT_BUDGET`]).
//! Beyond it they go to local files ([`super::spill`]) and the census
//! takes them in passes, one range of ids at a time: [`Marks::load_for`]
//! loads the range holding an id, and [`Marks::has_chunk`] answers any
//! other id from the files. Either way the answers are the same: exact
//! up to the prefix collisions above.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use super::spill::Spill;
use crate::error::Result;
use crate::id::ObjectId;

/// Memory for chunk marks, by default: 8 M marks (64 MiB). Passes cost
/// no extra requests (the census reads the index once whatever their
/// number), so the budget is small enough to leave room for the census's
/// packs and the node marks within a gc of 300 MiB at 200 M chunks.
pub const DEFAULT_BUDGET: usize = 64 << 20;

/// Chunks marked late held at most (by 8 bytes of their ids: about 64
/// MiB with the set's overhead). Late marks come from points committed
/// and dependencies named while a sweep deletes, which a new VM's first
/// backup of terabytes can make millions of, outside `--mark-memory`
/// (review 106.2); past this the sweep deletes no more packs.
pub const LATE_CAP: usize = 1 << 22;

#[derive(Debug)]
pub struct Marks {
    nodes: HashSet<ObjectId>,
    /// While marking: the buffer (sorted up to `sorted`). After the seal:
    /// every mark (one pass), or the part `loaded` of the spill.
    chunks: Vec<u64>,
    sorted: usize,
    /// Chunks marked after [`Marks::seal`] (a sweep learns of more live
    /// chunks while it deletes: leases' new dependencies, committed points).
    late: HashSet<u64>,
    /// More late marks came than [`LATE_CAP`].
    late_over: bool,
    sealed: bool,
    /// Bytes of chunk marks held in memory at most.
    budget: usize,
    /// Where the mark files go, if the marks outgrow the budget.
    spill_dir: Option<PathBuf>,
    spill: Option<Spill>,
    loaded: Option<usize>,
    /// The first error reading the mark files in [`Marks::has_chunk`]
    /// (which then answers "marked": an error only keeps garbage).
    read_error: Mutex<Option<String>>,
    peak_bytes: usize,
}

impl Default for Marks {
    fn default() -> Self {
        Marks::with_budget(DEFAULT_BUDGET, None)
    }
}

impl Marks {
    /// Marks that hold at most `budget` bytes of chunk marks in memory,
    /// spilling the rest to a private directory under `spill_dir` (see
    /// [`super::spill::base_dir`]; `None`: the system's temporary one).
    pub fn with_budget(budget: usize, spill_dir: Option<PathBuf>) -> Self {
        Marks {
            nodes: HashSet::new(),
            chunks: Vec::new(),
            sorted: 0,
            late: HashSet::new(),
            late_over: false,
            sealed: false,
            budget: budget.max(8),
            spill_dir,
            spill: None,
            loaded: None,
            read_error: Mutex::new(None),
            peak_bytes: 0,
        }
    }

    /// Whether nothing was marked yet (nor sealed).
    pub fn is_empty(&self) -> bool {
        !self.sealed && self.nodes.is_empty() && self.chunks.is_empty() && self.spill.is_none()
    }

    /// Marks a node; false if it was marked already (do not visit again).
    pub fn node(&mut self, id: ObjectId) -> bool {
        self.nodes.insert(id)
    }

    /// Takes back a node's mark whose chunks could not be marked: a
    /// point that references it then loads it again (see
    /// `Protection::mark_nodes`).
    pub fn unmark_node(&mut self, id: &ObjectId) {
        self.nodes.remove(id);
    }

    pub fn has_node(&self, id: &ObjectId) -> bool {
        self.nodes.contains(id)
    }

    /// Marks a chunk; fails only if the marks had to go to disk and
    /// could not.
    pub fn chunk(&mut self, id: &ObjectId) -> Result<()> {
        if self.sealed {
            if self.late.len() < LATE_CAP {
                self.late.insert(id.prefix());
            } else {
                self.late_over = true;
            }
            return Ok(());
        }
        if self.chunks.len() == self.chunks.capacity() {
            // Grow as a Vec does, but never past the budget.
            let most = (self.budget / 8).max(self.chunks.len() + 1);
            let want = (self.chunks.len() * 2).max(1024).min(most);
            self.chunks
                .reserve_exact(want.saturating_sub(self.chunks.len()).max(1));
        }
        self.chunks.push(id.prefix());
        // Chunks shared by many nodes are pushed many times: compact once
        // the unsorted tail is as large as the sorted part, or the buffer
        // is full.
        let full = self.chunks.len() * 8 >= self.budget;
        if full || self.chunks.len() >= 2 * self.sorted.max(1 << 16) {
            self.compact();
        }
        // Still more than half full once compacted: to disk, so that the
        // buffer never needs more than the budget.
        if full && self.chunks.len() * 8 > self.budget / 2 {
            self.spill_buffer()?;
        }
        Ok(())
    }

    fn compact(&mut self) {
        self.note_peak();
        self.chunks.sort_unstable();
        self.chunks.dedup();
        self.sorted = self.chunks.len();
    }

    fn note_peak(&mut self) {
        self.peak_bytes = self.peak_bytes.max(self.chunks.capacity() * 8);
    }

    fn spill_buffer(&mut self) -> Result<()> {
        if self.spill.is_none() {
            let base = self.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
            self.spill = Some(Spill::create(&base)?);
        }
        let spill = self.spill.as_mut().expect("made above");
        spill.write_run(&self.chunks)?;
        self.chunks.clear();
        self.sorted = 0;
        Ok(())
    }

    /// Call once the bulk of the marking is over, before
    /// [`Marks::has_chunk`]; later marks go to a small side set. Marks
    /// that went to disk are merged into parts of at most the budget.
    pub fn seal(&mut self) -> Result<()> {
        self.compact();
        self.sealed = true;
        if self.spill.is_some() {
            if !self.chunks.is_empty() {
                self.spill_buffer()?;
            }
            self.chunks = Vec::new();
            let spill = self.spill.as_mut().expect("checked");
            spill.seal(self.budget / 8)?;
        } else {
            self.chunks.shrink_to_fit();
        }
        Ok(())
    }

    /// How many passes a census over these marks takes (1 in memory).
    pub fn passes(&self) -> usize {
        self.spill.as_ref().map_or(1, |s| s.parts().max(1))
    }

    /// Makes sure the marks of the range holding `id` are in memory (a
    /// census going through ids in order loads each range once).
    pub fn load_for(&mut self, id: &ObjectId) -> Result<()> {
        let Some(spill) = &self.spill else {
            return Ok(());
        };
        let Some(i) = spill.part_of(id.prefix()) else {
            return Ok(());
        };
        if self.loaded == Some(i) {
            return Ok(());
        }
        self.loaded = None;
        spill.load(i, &mut self.chunks)?;
        self.sorted = self.chunks.len();
        self.loaded = Some(i);
        self.note_peak();
        Ok(())
    }

    pub fn has_chunk(&self, id: &ObjectId) -> bool {
        debug_assert!(self.sealed, "marks not sealed");
        let p = id.prefix();
        if self.late.contains(&p) {
            return true;
        }
        let Some(spill) = &self.spill else {
            return self.chunks[..self.sorted].binary_search(&p).is_ok();
        };
        match spill.part_of(p) {
            None => false,
            Some(i) if self.loaded == Some(i) => self.chunks.binary_search(&p).is_ok(),
            Some(_) => spill.contains(p).unwrap_or_else(|e| {
                let mut first = self.read_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert(e.to_string());
                true
            }),
        }
    }

    /// The first error met reading the mark files (every chunk asked
    /// about since counted as marked).
    pub fn read_error(&self) -> Option<String> {
        self.read_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the chunk was marked after [`Marks::seal`] (a pack that
    /// holds it may have been judged dead before the mark arrived).
    pub fn has_late(&self, id: &ObjectId) -> bool {
        self.late.contains(&id.prefix())
    }

    /// Whether any chunk was marked after [`Marks::seal`].
    pub fn any_late(&self) -> bool {
        !self.late.is_empty()
    }

    /// Whether more chunks were marked late than are held: those past
    /// [`LATE_CAP`] are not known, so the sweep must delete no more
    /// packs (`Protection::look` holds it).
    pub fn late_overflowed(&self) -> bool {
        self.late_over
    }

    pub fn counts(&self) -> (usize, usize) {
        let chunks = match &self.spill {
            Some(s) if self.sealed => s.count() as usize,
            _ => self.chunks.len(),
        };
        (self.nodes.len(), chunks + self.late.len())
    }

    /// Bytes of mark state in memory at most so far (for the memory
    /// figures in reports).
    pub fn state_bytes(&self) -> usize {
        self.peak_bytes.max(self.chunks.capacity() * 8)
            + self.nodes.capacity() * 40
            + self.late.capacity() * 16
    }
}

#[cfg(test)]
#[path = "marks_tests.rs"]
mod tests;
