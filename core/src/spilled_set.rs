//! A set of 8-byte values in bounded memory, for work that scales with
//! the repository: verify's prints of every pack trailer entry
//! (`verify/index_check.rs`) and id prefixes of every referenced chunk
//! (`verify/chunks.rs`), and a full scan's prefixes of every stored chunk
//! (`backup/trust.rs`). Values are put in, the set is sealed, then asked
//! in ascending order (each part of the files loaded once), walked in
//! order with a [`Cursor`], or asked in any order from many threads
//! ([`SpilledSet::contains_at_random`]: one short read of the files per
//! question).
//!
//! Beyond a memory budget the values go to sorted runs in local files
//! (gc's [`Spill`], same private directories and clean-up), merged into
//! parts when sealed. Unlike gc's marks, a file that cannot be read is an
//! error, never an answer.

use std::path::PathBuf;

use crate::error::Result;
use crate::gc::spill::Spill;

/// Memory for values, by default: 8 M of them (64 MiB).
pub const DEFAULT_BUDGET: usize = 64 << 20;

#[derive(Debug)]
pub struct SpilledSet {
    /// Before the seal: the buffer. After: every print (no spill) or the
    /// part `loaded`.
    values: Vec<u64>,
    budget: usize,
    base: PathBuf,
    spill: Option<Spill>,
    loaded: Option<usize>,
    sealed: bool,
}

impl SpilledSet {
    /// Values held in at most `budget` bytes of memory, beyond that in a
    /// private directory under `base`.
    pub fn new(budget: usize, base: PathBuf) -> SpilledSet {
        SpilledSet {
            values: Vec::new(),
            budget: budget.max(64),
            base,
            spill: None,
            loaded: None,
            sealed: false,
        }
    }

    pub fn insert(&mut self, v: u64) -> Result<()> {
        debug_assert!(!self.sealed, "prints sealed");
        let most = self.budget / 8;
        if self.values.len() >= most {
            self.values.sort_unstable();
            self.values.dedup();
            if self.values.len() > most / 2 {
                self.spill_values()?;
            }
        }
        if self.values.len() == self.values.capacity() {
            // Grow as a Vec does, but never past the budget.
            let want = (self.values.len() * 2).max(1024).min(most);
            self.values
                .reserve_exact(want.saturating_sub(self.values.len()).max(1));
        }
        self.values.push(v);
        Ok(())
    }

    fn spill_values(&mut self) -> Result<()> {
        if self.spill.is_none() {
            self.spill = Some(Spill::create(&self.base)?);
        }
        let spill = self.spill.as_mut().expect("made above");
        spill.write_run(&self.values)?;
        self.values.clear();
        Ok(())
    }

    /// Ends the inserts; files are merged into parts of at most the
    /// budget.
    pub fn seal(&mut self) -> Result<()> {
        self.values.sort_unstable();
        self.values.dedup();
        self.sealed = true;
        if self.spill.is_some() {
            if !self.values.is_empty() {
                self.spill_values()?;
            }
            self.values = Vec::new();
            let per_part = self.budget / 8;
            self.spill.as_mut().expect("checked").seal(per_part)?;
        } else {
            self.values.shrink_to_fit();
        }
        Ok(())
    }

    /// Parts the prints went to (1 in memory).
    #[cfg(test)]
    pub fn parts(&self) -> usize {
        self.spill.as_ref().map_or(1, |s| s.parts().max(1))
    }

    /// Distinct values (after the seal).
    pub fn count(&self) -> u64 {
        self.spill
            .as_ref()
            .map_or(self.values.len() as u64, |s| s.count())
    }

    /// The values in ascending order, each part of the files read once
    /// (after the seal).
    pub fn cursor(&self) -> Cursor<'_> {
        debug_assert!(self.sealed, "set not sealed");
        Cursor {
            set: self,
            part: 0,
            buf: Vec::new(),
            at: 0,
            head: None,
        }
    }

    /// Whether `v` was inserted, asked in any order and from any thread:
    /// in memory a binary search, spilled one read of about 32 KiB of
    /// the files (the page cache keeps them warm), no part loaded.
    pub fn contains_at_random(&self, v: u64) -> Result<bool> {
        debug_assert!(self.sealed, "set not sealed");
        match &self.spill {
            Some(spill) => spill.contains(v),
            None => Ok(self.values.binary_search(&v).is_ok()),
        }
    }

    /// Whether `v` was inserted. Asked in ascending order, each part is
    /// loaded once; a question behind the loaded part (prints of one id
    /// prefix come in any order and may straddle two parts) is answered
    /// by one short read of the files, never by loading a part again.
    pub fn contains(&mut self, v: u64) -> Result<bool> {
        debug_assert!(self.sealed, "prints not sealed");
        if let Some(spill) = &self.spill {
            let Some(i) = spill.part_of(v) else {
                return Ok(false);
            };
            if self.loaded.is_some_and(|l| i < l) {
                return spill.contains(v);
            }
            if self.loaded != Some(i) {
                self.loaded = None;
                spill.load(i, &mut self.values)?;
                self.loaded = Some(i);
            }
        }
        Ok(self.values.binary_search(&v).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_the_same_in_memory_and_spilled_asked_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<u64> = (0..10_000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        // 64 bytes: 8 prints per buffer, many runs and parts.
        for budget in [DEFAULT_BUDGET, 64, 4096] {
            let mut p = SpilledSet::new(budget, dir.path().to_path_buf());
            for v in values.iter().step_by(2) {
                p.insert(*v).unwrap();
                // Repeats count once.
                p.insert(*v).unwrap();
            }
            p.seal().unwrap();
            if budget < DEFAULT_BUDGET {
                assert!(p.parts() > 1);
            }
            let inserted: std::collections::HashSet<u64> =
                values.iter().step_by(2).copied().collect();
            let mut asked = values.clone();
            asked.sort_unstable();
            for v in asked {
                let inserted = inserted.contains(&v);
                assert_eq!(p.contains(v).unwrap(), inserted, "{v} at budget {budget}");
            }
        }
    }

    #[test]
    fn questions_behind_the_loaded_part_and_below_the_first_are_answered() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = SpilledSet::new(64, dir.path().to_path_buf());
        for v in (100..300u64).step_by(2) {
            p.insert(v).unwrap();
        }
        p.seal().unwrap();
        assert!(p.parts() > 4);
        assert!(!p.contains(0).unwrap());
        assert!(!p.contains(99).unwrap());
        assert!(p.contains(298).unwrap());
        // Backwards from the last part, in and out of the set: answered
        // without loading the parts again.
        for v in (100..300u64).rev() {
            assert_eq!(p.contains(v).unwrap(), v % 2 == 0, "{v}");
        }
        assert_eq!(p.loaded, Some(p.parts() - 1));
        assert!(!p.contains(301).unwrap());
    }
}

/// A walk over a sealed [`SpilledSet`] in ascending order.
#[derive(Debug)]
pub struct Cursor<'a> {
    set: &'a SpilledSet,
    /// The next part of the files to load.
    part: usize,
    buf: Vec<u64>,
    at: usize,
    head: Option<u64>,
}

impl Cursor<'_> {
    /// The smallest value not yet passed, if any.
    pub fn peek(&mut self) -> Result<Option<u64>> {
        if self.head.is_none() {
            self.head = self.pull()?;
        }
        Ok(self.head)
    }

    /// Passes the value [`Cursor::peek`] gave.
    pub fn advance(&mut self) {
        self.head = None;
    }

    fn pull(&mut self) -> Result<Option<u64>> {
        let Some(spill) = &self.set.spill else {
            let v = self.set.values.get(self.at).copied();
            self.at += usize::from(v.is_some());
            return Ok(v);
        };
        loop {
            if let Some(&v) = self.buf.get(self.at) {
                self.at += 1;
                return Ok(Some(v));
            }
            if self.part >= spill.parts() {
                return Ok(None);
            }
            spill.load(self.part, &mut self.buf)?;
            self.part += 1;
            self.at = 0;
        }
    }
}
