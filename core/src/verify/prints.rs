//! What every pack's trailer says, as one 8-byte print per entry, in
//! bounded memory: the check of the index against the packs
//! (`index_check.rs`) puts every trailer entry in, then asks about every
//! index entry in chunk id order.
//!
//! A print is the first 4 bytes of the chunk id (so that prints sort as
//! ids do, and an index read in id order asks about them in order) and 4
//! bytes of a hash of the whole entry: chunk id, pack, offset and both
//! lengths. An index entry whose print is not in the set is contradicted
//! by its pack (or missing from it). A wrong entry passes unseen only if
//! its print equals that of another entry of the same 4-byte id prefix:
//! at 200 M chunks about 0.05 such entries share a prefix, so about one
//! in 10^11 wrong entries.
//!
//! Beyond a memory budget the prints go to sorted runs in local files
//! (gc's [`Spill`], same private directories), merged into parts when
//! sealed; asked in order, each part is loaded once. Unlike gc's marks, a
//! file that cannot be read is an error, never an answer.

use std::path::PathBuf;

use crate::error::Result;
use crate::gc::spill::Spill;
use crate::id::ObjectId;
use crate::placement::pack::PackEntry;

/// Memory for prints, by default: 8 M of them (64 MiB).
pub const DEFAULT_BUDGET: usize = 64 << 20;

/// The print of `entry` as stored in `pack`.
pub fn print(pack: &ObjectId, entry: &PackEntry) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(entry.id.as_bytes());
    h.update(pack.as_bytes());
    h.update(&entry.offset.to_le_bytes());
    h.update(&entry.stored_len.to_le_bytes());
    h.update(&entry.plain_len.to_le_bytes());
    let sum = h.finalize();
    let id = entry.id.as_bytes();
    let s = sum.as_bytes();
    u64::from_be_bytes([id[0], id[1], id[2], id[3], s[0], s[1], s[2], s[3]])
}

#[derive(Debug)]
pub struct Prints {
    /// Before the seal: the buffer. After: every print (no spill) or the
    /// part `loaded`.
    values: Vec<u64>,
    budget: usize,
    base: PathBuf,
    spill: Option<Spill>,
    loaded: Option<usize>,
    sealed: bool,
}

impl Prints {
    /// Prints held in at most `budget` bytes of memory, beyond that in a
    /// private directory under `base`.
    pub fn new(budget: usize, base: PathBuf) -> Prints {
        Prints {
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

    /// Whether `v` was inserted; loads the part that would hold it.
    pub fn contains(&mut self, v: u64) -> Result<bool> {
        debug_assert!(self.sealed, "prints not sealed");
        if let Some(spill) = &self.spill {
            let Some(i) = spill.part_of(v) else {
                return Ok(false);
            };
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

    fn entry(seed: u8, offset: u64) -> PackEntry {
        PackEntry {
            id: ObjectId::from_bytes([seed; 32]),
            offset,
            stored_len: 100,
            plain_len: 200,
        }
    }

    #[test]
    fn a_print_changes_with_every_field_and_sorts_by_the_id() {
        let pack = ObjectId::from_bytes([9; 32]);
        let e = entry(1, 0);
        let p = print(&pack, &e);
        assert_ne!(p, print(&ObjectId::from_bytes([8; 32]), &e));
        assert_ne!(p, print(&pack, &entry(1, 1)));
        assert_ne!(
            p,
            print(
                &pack,
                &PackEntry {
                    stored_len: 99,
                    ..e
                }
            )
        );
        assert_ne!(
            p,
            print(
                &pack,
                &PackEntry {
                    plain_len: 199,
                    ..e
                }
            )
        );
        assert!(print(&pack, &entry(2, 0)) > print(&pack, &entry(1, 5)));
    }

    #[test]
    fn answers_are_the_same_in_memory_and_spilled_asked_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<u64> = (0..10_000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        // 64 bytes: 8 prints per buffer, many runs and parts.
        for budget in [DEFAULT_BUDGET, 64, 4096] {
            let mut p = Prints::new(budget, dir.path().to_path_buf());
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
}
