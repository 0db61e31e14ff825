//! Archive classes on S3: an object's class and restore status (HEAD:
//! `x-amz-storage-class`, `x-amz-restore`), and RestoreObject ("thaw").

use std::sync::atomic::Ordering;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{GlacierJobParameters, RestoreRequest, Tier};
use chrono::{DateTime, Utc};
use xfull_core::archive::{
    ArchiveState, IT_ARCHIVE, IT_DEEP_ARCHIVE, ThawAnswer, ThawTier, needs_thaw,
};
use xfull_core::backend::{BackendError, ObjectMeta};

use crate::S3Backend;
use crate::attempts::Attempts;

impl S3Backend {
    pub(crate) async fn head_archive(
        &self,
        key: &str,
    ) -> Result<(ObjectMeta, ArchiveState), BackendError> {
        let (meta, out) = self.head_object(key).await?;
        let class = out.storage_class().map(|c| c.as_str());
        let tier = out.archive_status().map(|a| a.as_str());
        Ok((meta, state_of(class, tier, out.restore())))
    }

    pub(crate) async fn restore_object(
        &self,
        key: &str,
        days: Option<u32>,
        tier: ThawTier,
    ) -> Result<ThawAnswer, BackendError> {
        self.counters.restore.fetch_add(1, Ordering::Relaxed);
        let job = GlacierJobParameters::builder()
            .tier(Tier::from(tier.name()))
            .build()
            .map_err(|e| BackendError::Other {
                location: self.opts.location(),
                message: format!("building the thaw request of {key}: {e}"),
            })?;
        // Intelligent-Tiering's archive tiers refuse a request with days.
        let request = RestoreRequest::builder()
            .set_days(days.map(|d| i32::try_from(d).unwrap_or(i32::MAX)))
            .glacier_job_parameters(job)
            .build();
        let (sent, made) = send_raw!(
            self,
            self.client
                .restore_object()
                .bucket(&self.opts.bucket)
                .key(self.key(key))
                .restore_request(request),
            0
        );
        match sent {
            // 202: started; 200: a copy exists and its days were extended.
            Ok(_) => Ok(ThawAnswer::Requested),
            Err(e) => match answer_of(e.as_service_error().and_then(|s| s.code())) {
                Some(a) => Ok(a),
                None => Err(self.errors.map(e, key, made)),
            },
        }
    }
}

/// An object's state from its storage class, its Intelligent-Tiering
/// archive tier (`x-amz-archive-status`: `ARCHIVE_ACCESS` or
/// `DEEP_ARCHIVE_ACCESS`, only while it sits there) and `x-amz-restore`
/// header (`ongoing-request="true"`, or `ongoing-request="false",
/// expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"`).
pub(crate) fn state_of(
    class: Option<&str>,
    tier: Option<&str>,
    restore: Option<&str>,
) -> ArchiveState {
    let class = match (class, tier) {
        (Some("INTELLIGENT_TIERING"), Some("ARCHIVE_ACCESS")) => Some(IT_ARCHIVE),
        (Some("INTELLIGENT_TIERING"), Some("DEEP_ARCHIVE_ACCESS")) => Some(IT_DEEP_ARCHIVE),
        (class, _) => class,
    };
    let Some(class) = class.filter(|c| needs_thaw(c)) else {
        return ArchiveState::Hot;
    };
    let class = class.to_string();
    let ongoing = restore.is_some_and(|r| r.contains("ongoing-request=\"true\""));
    if ongoing {
        return ArchiveState::Thawing { class };
    }
    // Intelligent-Tiering shows the archive status only while the object
    // sits in an archive tier: whatever an old restore header says, it is
    // not readable.
    let Some(r) = restore.filter(|_| tier.is_none()) else {
        return ArchiveState::Archived { class };
    };
    let until = r
        .split_once("expiry-date=\"")
        .and_then(|(_, rest)| rest.split('"').next())
        .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
        .map(|d| d.with_timezone(&Utc));
    ArchiveState::Thawed { class, until }
}

/// The answers to RestoreObject that are outcomes, not failures.
fn answer_of(code: Option<&str>) -> Option<ThawAnswer> {
    match code? {
        "RestoreAlreadyInProgress" => Some(ThawAnswer::InProgress),
        // Not in an archive class (S3 says one or the other).
        "ObjectAlreadyInActiveTierError" | "InvalidObjectState" => Some(ThawAnswer::NotArchived),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_headers_read_as_states() {
        let deep = Some("DEEP_ARCHIVE");
        assert_eq!(state_of(None, None, None), ArchiveState::Hot);
        assert_eq!(state_of(Some("GLACIER_IR"), None, None), ArchiveState::Hot);
        assert_eq!(
            state_of(Some("STANDARD_IA"), None, Some("x")),
            ArchiveState::Hot
        );
        let class = "DEEP_ARCHIVE".to_string();
        assert_eq!(
            state_of(deep, None, None),
            ArchiveState::Archived {
                class: class.clone()
            }
        );
        assert_eq!(
            state_of(deep, None, Some("ongoing-request=\"true\"")),
            ArchiveState::Thawing {
                class: class.clone()
            }
        );
        let until = DateTime::parse_from_rfc2822("Fri, 21 Dec 2012 00:00:00 GMT")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            state_of(
                deep,
                None,
                Some("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\"")
            ),
            ArchiveState::Thawed {
                class: class.clone(),
                until: Some(until)
            }
        );
        // Intelligent-Tiering: archived only while in an archive tier;
        // a finished restore moves it back to a hot tier for good.
        let it = Some("INTELLIGENT_TIERING");
        assert_eq!(state_of(it, None, None), ArchiveState::Hot);
        assert_eq!(
            state_of(it, Some("DEEP_ARCHIVE_ACCESS"), None),
            ArchiveState::Archived {
                class: IT_DEEP_ARCHIVE.into()
            }
        );
        assert_eq!(
            state_of(it, Some("ARCHIVE_ACCESS"), Some("ongoing-request=\"true\"")),
            ArchiveState::Thawing {
                class: IT_ARCHIVE.into()
            }
        );
        assert_eq!(
            state_of(Some("STANDARD"), Some("ARCHIVE_ACCESS"), None),
            ArchiveState::Hot
        );
        assert_eq!(
            state_of(
                it,
                Some("ARCHIVE_ACCESS"),
                Some("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\"")
            ),
            ArchiveState::Archived {
                class: IT_ARCHIVE.into()
            }
        );
        // A header that cannot be read is still a finished restore.
        assert_eq!(
            state_of(
                deep,
                None,
                Some("ongoing-request=\"false\", expiry-date=\"soon\"")
            ),
            ArchiveState::Thawed { class, until: None }
        );
    }

    #[test]
    fn restore_answers_that_are_outcomes() {
        assert_eq!(
            answer_of(Some("RestoreAlreadyInProgress")),
            Some(ThawAnswer::InProgress)
        );
        assert_eq!(
            answer_of(Some("InvalidObjectState")),
            Some(ThawAnswer::NotArchived)
        );
        assert_eq!(answer_of(Some("AccessDenied")), None);
        assert_eq!(answer_of(None), None);
    }

    /// Through the SDK: HEAD headers read as a state, 202 and 409 to
    /// RestoreObject as answers, and a refused restore as an error.
    #[tokio::test]
    async fn the_sdk_answers_read_as_states_and_thaw_answers() {
        use xfull_core::backend::Backend;

        use crate::budget_tests::{Fake, backend};
        let fake = Fake::new(&[200, 202, 409, 403]);
        let b = backend(&fake, Default::default()).await;
        let (meta, state) = b.archive_state("packs/ab/x").await.unwrap();
        assert_eq!(meta.size, 3);
        assert!(matches!(state, ArchiveState::Thawing { .. }), "{state:?}");
        assert_eq!(
            b.thaw("packs/ab/x", Some(2), ThawTier::Bulk).await.unwrap(),
            ThawAnswer::Requested
        );
        assert_eq!(
            b.thaw("packs/ab/x", Some(2), ThawTier::Bulk).await.unwrap(),
            ThawAnswer::InProgress
        );
        assert!(b.thaw("packs/ab/x", Some(2), ThawTier::Bulk).await.is_err());
        assert_eq!(b.request_counts()["restore"], 3);
        // Days are sent for the Glacier classes only: Intelligent-Tiering's
        // archive tiers refuse them.
        b.thaw("packs/ab/x", None, ThawTier::Bulk).await.unwrap();
        let bodies = fake.bodies();
        assert!(bodies[1].contains("<Days>2</Days>"), "{bodies:?}");
        assert!(
            bodies[4].contains("<Tier>Bulk</Tier>") && !bodies[4].contains("Days"),
            "{bodies:?}"
        );
    }
}
