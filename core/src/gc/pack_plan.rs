//! What gc does with each pack once marking is done: a pure function of
//! the packs' use, their storage class and age, table-tested. The sweep
//! (`gc/census.rs`, `gc/sweep/packs.rs`) applies it to every old indexed
//! pack no lease names and carries it out through its announced batches.
//!
//! - A pack with no live chunk is deleted (an early delete in a class with
//!   a minimum storage duration is billed the rest of it, but keeping the
//!   pack would be billed as much and more).
//! - A partly dead pack is rewritten (its live chunks into a new pack,
//!   then deleted) only in a hot class, when its waste exceeds
//!   `max_waste` percent, and once it is older than the class's minimum
//!   storage duration (rewriting earlier pays the remainder twice).
//! - Never in an archive class: restore is the only thing that reads chunk
//!   data there, and a rewrite would read it (retrieval fees, thaws).
//! - Whatever is kept dead is reported as waste.

use std::collections::BTreeMap;

use chrono::Duration;

use crate::id::ObjectId;
use crate::placement::pack::PackEntry;

/// Default `gc --max-waste`, measured (`bench/max-waste`, results in
/// `bench/results/max-waste.md`): daily backups of 2 VMs replayed with
/// prune and a gc at thresholds from 0 to 100, two series and two
/// policies. At S3 Standard list prices with the rewrite inside the
/// region (its requests the only charge), 25 and 35 were the cheapest
/// per month in every run and within 1% of each other (15 was 1-4%
/// dearer, 50 3-6%). Between the two, 35 moved a third to a half fewer
/// bytes (gc time, local disk writes, and any charge per byte read:
/// Standard-IA's retrieval fee, transfer out of the region) for 3-5%
/// more stored, about 9-12% of it dead. Packs cross the threshold in
/// daily steps, so a rewrite at 35 moved 1.3-1.5 bytes per byte freed
/// (at 25, 2.0-2.3).
pub const DEFAULT_MAX_WASTE_PCT: u8 = 35;

/// How a storage class is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassRules {
    /// Chunk data there is read only by restores: never rewritten.
    pub archive: bool,
    /// Billed at least this long after a put.
    pub min_storage: Duration,
}

/// The rules of an S3 storage class name with the AWS list values
/// (minimum storage durations), unless `overrides` (a repository setting,
/// days per class) says otherwise. An unknown class is taken as hot
/// without a minimum (a local directory, MinIO, SeaweedFS).
pub fn class_rules(class: &str, overrides: &BTreeMap<String, u32>) -> ClassRules {
    let (archive, days) = match class {
        "STANDARD_IA" | "ONEZONE_IA" => (false, 30),
        "GLACIER_IR" => (true, 90),
        "GLACIER" => (true, 90),
        "DEEP_ARCHIVE" => (true, 180),
        _ => (false, 0),
    };
    let days = overrides.get(class).copied().unwrap_or(days);
    ClassRules {
        archive,
        min_storage: Duration::days(i64::from(days)),
    }
}

/// One pack's use, after marking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackUse {
    pub name: ObjectId,
    /// Age on the store's clock (now minus its `last_modified`).
    pub age: Duration,
    pub live_bytes: u64,
    pub dead_bytes: u64,
    pub live_chunks: u64,
}

impl PackUse {
    /// Counts live and dead blobs of a pack from its trailer's entries.
    pub fn of(
        name: ObjectId,
        age: Duration,
        entries: &[PackEntry],
        live: impl Fn(&ObjectId) -> bool,
    ) -> PackUse {
        let mut u = PackUse {
            name,
            age,
            live_bytes: 0,
            dead_bytes: 0,
            live_chunks: 0,
        };
        for e in entries {
            if live(&e.id) {
                u.live_bytes += u64::from(e.stored_len);
                u.live_chunks += 1;
            } else {
                u.dead_bytes += u64::from(e.stored_len);
            }
        }
        u
    }

    /// Dead bytes per hundred bytes of blobs.
    pub fn waste_pct(&self) -> f64 {
        let all = self.live_bytes + self.dead_bytes;
        if all == 0 {
            return 0.0;
        }
        self.dead_bytes as f64 * 100.0 / all as f64
    }
}

/// What gc does with one pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackFate {
    /// Every chunk is live.
    Keep,
    /// No chunk is live.
    Delete,
    /// Live chunks into a new pack, then delete this one.
    Repack,
    /// Some dead bytes stay, and why.
    KeepWaste(WasteReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WasteReason {
    /// At most `max_waste` percent.
    BelowThreshold,
    /// An archive class: never rewritten.
    ArchiveClass,
    /// Younger than the class's minimum storage duration.
    TooYoung,
    /// Its rewrite did not fit the room the store has for chunk data
    /// (`Backend::free_for_data`): new packs are written before old ones
    /// go.
    NoSpace,
    /// It holds copies of chunks whose kept copy's pack was not rewritten
    /// as planned (gone, damaged, archived): kept whole with them
    /// (`gc/sweep/keepers.rs`).
    KeeperNotMoved,
}

/// The plan for every pack, with what it leaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackPlan {
    pub fates: Vec<(ObjectId, PackFate)>,
    pub deleted_bytes: u64,
    /// Live bytes a repack moves.
    pub moved_bytes: u64,
    /// Dead bytes left in kept packs (gc reports them).
    pub waste_left_bytes: u64,
}

/// Decides each pack's fate.
pub fn plan(packs: &[PackUse], rules: ClassRules, max_waste_pct: u8) -> PackPlan {
    let mut out = PackPlan::default();
    for p in packs {
        let fate = if p.live_chunks == 0 {
            PackFate::Delete
        } else if p.dead_bytes == 0 {
            PackFate::Keep
        } else if p.waste_pct() <= f64::from(max_waste_pct) {
            PackFate::KeepWaste(WasteReason::BelowThreshold)
        } else if rules.archive {
            PackFate::KeepWaste(WasteReason::ArchiveClass)
        } else if p.age < rules.min_storage {
            PackFate::KeepWaste(WasteReason::TooYoung)
        } else {
            PackFate::Repack
        };
        match fate {
            PackFate::Delete => out.deleted_bytes += p.dead_bytes,
            PackFate::Repack => {
                out.deleted_bytes += p.dead_bytes;
                out.moved_bytes += p.live_bytes;
            }
            PackFate::KeepWaste(_) => out.waste_left_bytes += p.dead_bytes,
            PackFate::Keep => {}
        }
        out.fates.push((p.name, fate));
    }
    out
}

#[cfg(test)]
#[path = "pack_plan_tests.rs"]
mod tests;
