//! Archive storage classes (S3 GLACIER, DEEP_ARCHIVE): where an object
//! stands, how to ask for a temporary readable copy ("thaw"), and what
//! that costs.
//!
//! Only chunk data (packs) ever goes to such a class (`ObjectClass::Data`);
//! nodes, manifests and the index stay hot, so backup, gc and structural
//! verify never need a thaw, and a restore plan reads only metadata.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Where an object stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ArchiveState {
    /// Readable now: a hot class (or a store without archive classes).
    Hot,
    /// In an archive class with no readable copy: needs a thaw.
    Archived { class: String },
    /// A thaw was asked for and is running.
    Thawing { class: String },
    /// A readable copy exists until `until`.
    Thawed {
        class: String,
        until: Option<DateTime<Utc>>,
    },
}

impl ArchiveState {
    /// Whether a restore can read the object now: hot, or a thawed copy
    /// not past its expiry date. AWS removes the copy at expiry and its
    /// `x-amz-restore` header can lag behind (a stale or lying server
    /// keeps it): such a copy is archived again, and a thaw must ask for
    /// it anew (review, stop 51).
    pub fn readable(&self) -> bool {
        match self {
            ArchiveState::Hot => true,
            ArchiveState::Thawed { until, .. } => !expired(until),
            ArchiveState::Archived { .. } | ArchiveState::Thawing { .. } => false,
        }
    }

    /// Whether it takes a thaw to read it: archived with no thaw running,
    /// or a thawed copy past its expiry date.
    pub fn needs_thaw(&self) -> bool {
        match self {
            ArchiveState::Archived { .. } => true,
            ArchiveState::Thawed { until, .. } => expired(until),
            ArchiveState::Hot | ArchiveState::Thawing { .. } => false,
        }
    }

    /// A thawed copy that ends before `by`: a thaw asked for now extends
    /// it (S3 answers a RestoreObject of a restored object so).
    pub fn thawed_until_before(&self, by: DateTime<Utc>) -> bool {
        matches!(self, ArchiveState::Thawed { until: Some(u), .. } if *u < by)
    }

    /// The archive class, if any.
    pub fn class(&self) -> Option<&str> {
        match self {
            ArchiveState::Hot => None,
            ArchiveState::Archived { class }
            | ArchiveState::Thawing { class }
            | ArchiveState::Thawed { class, .. } => Some(class),
        }
    }
}

fn expired(until: &Option<DateTime<Utc>>) -> bool {
    until.is_some_and(|u| u <= Utc::now())
}

/// How fast (and at what price) a thaw runs: S3's retrieval tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ThawTier {
    Expedited,
    Standard,
    Bulk,
}

impl ThawTier {
    pub const ALL: [ThawTier; 3] = [ThawTier::Expedited, ThawTier::Standard, ThawTier::Bulk];

    pub fn name(self) -> &'static str {
        match self {
            ThawTier::Expedited => "Expedited",
            ThawTier::Standard => "Standard",
            ThawTier::Bulk => "Bulk",
        }
    }
}

/// What a thaw request got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThawAnswer {
    /// Accepted: the copy will be readable within the tier's time (or it
    /// was already, and its days were extended).
    Requested,
    /// A thaw of this object is already running: nothing new was asked.
    InProgress,
    /// The object is not in an archive class: nothing to thaw.
    NotArchived,
}

/// What thawing `objects` objects of `bytes` in `class` at `tier` is
/// expected to cost and take, at AWS list prices (us-east-1, as of 2024,
/// written from memory like docs/cost.md: check the provider's page
/// before a large restore). `None` where the class has no such tier
/// (Deep Archive has no Expedited) or is not an archive class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub tier: ThawTier,
    pub dollars: f64,
    /// The provider's stated time until the copy is readable.
    pub hours: &'static str,
}

pub fn estimate(class: &str, tier: ThawTier, objects: u64, bytes: u64) -> Option<Estimate> {
    // (per GB, per 1,000 requests, time). Intelligent-Tiering charges no
    // retrieval for Standard and Bulk restores from its archive tiers.
    let (per_gb, per_k, hours) = match (class, tier) {
        (IT_ARCHIVE, ThawTier::Expedited) => (0.03, 10.0, "1-5 minutes"),
        (IT_ARCHIVE, ThawTier::Standard) => (0.0, 0.0, "3-5 hours"),
        (IT_ARCHIVE, ThawTier::Bulk) => (0.0, 0.0, "5-12 hours"),
        (IT_DEEP_ARCHIVE, ThawTier::Standard) => (0.0, 0.0, "within 12 hours"),
        (IT_DEEP_ARCHIVE, ThawTier::Bulk) => (0.0, 0.0, "within 48 hours"),
        ("GLACIER", ThawTier::Expedited) => (0.03, 10.0, "1-5 minutes"),
        ("GLACIER", ThawTier::Standard) => (0.01, 0.05, "3-5 hours"),
        ("GLACIER", ThawTier::Bulk) => (0.0, 0.0, "5-12 hours"),
        ("DEEP_ARCHIVE", ThawTier::Standard) => (0.02, 0.10, "within 12 hours"),
        ("DEEP_ARCHIVE", ThawTier::Bulk) => (0.0025, 0.025, "within 48 hours"),
        _ => return None,
    };
    let gb = bytes as f64 / 1e9;
    Some(Estimate {
        tier,
        dollars: gb * per_gb + objects as f64 / 1000.0 * per_k,
        hours,
    })
}

/// An object of S3 Intelligent-Tiering moved to its optional Archive
/// Access tier (HEAD: `x-amz-storage-class: INTELLIGENT_TIERING`,
/// `x-amz-archive-status: ARCHIVE_ACCESS`): named as one class here.
pub const IT_ARCHIVE: &str = "INTELLIGENT_TIERING_ARCHIVE_ACCESS";
/// The same in the Deep Archive Access tier.
pub const IT_DEEP_ARCHIVE: &str = "INTELLIGENT_TIERING_DEEP_ARCHIVE_ACCESS";

/// Whether objects in this storage class need a thaw before a read.
pub fn needs_thaw(class: &str) -> bool {
    matches!(
        class,
        "GLACIER" | "DEEP_ARCHIVE" | IT_ARCHIVE | IT_DEEP_ARCHIVE
    )
}

/// Whether a thaw of this class makes a copy for a number of days (the
/// Glacier classes). Intelligent-Tiering instead moves the object back to
/// its Frequent Access tier for good, and refuses a request naming days.
pub fn thaw_keeps_days(class: &str) -> bool {
    !matches!(class, IT_ARCHIVE | IT_DEEP_ARCHIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_follow_the_price_table_and_refuse_missing_tiers() {
        let e = estimate("DEEP_ARCHIVE", ThawTier::Bulk, 2000, 100_000_000_000).unwrap();
        assert!((e.dollars - (100.0 * 0.0025 + 2.0 * 0.025)).abs() < 1e-9);
        assert!(estimate("DEEP_ARCHIVE", ThawTier::Expedited, 1, 1).is_none());
        assert!(estimate("STANDARD_IA", ThawTier::Bulk, 1, 1).is_none());
        assert!(needs_thaw("GLACIER") && !needs_thaw("GLACIER_IR"));
        assert!(needs_thaw(IT_DEEP_ARCHIVE) && !needs_thaw("INTELLIGENT_TIERING"));
        let free = estimate(IT_DEEP_ARCHIVE, ThawTier::Bulk, 10, 1 << 40).unwrap();
        assert_eq!(free.dollars, 0.0);
        assert!(estimate(IT_DEEP_ARCHIVE, ThawTier::Expedited, 1, 1).is_none());
        assert!(thaw_keeps_days("DEEP_ARCHIVE") && !thaw_keeps_days(IT_ARCHIVE));
    }
}
