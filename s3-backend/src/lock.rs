//! Object Lock on S3: puts with a retention (`x-amz-object-lock-mode`,
//! `-retain-until-date`, and the checksum header such puts require), an
//! object's retention from HEAD, PutObjectRetention, and whether the
//! bucket has object lock at all (GetObjectLockConfiguration).

use std::sync::atomic::Ordering;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::DateTime as SdkTime;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ObjectLockEnabled, ObjectLockMode, ObjectLockRetention,
    ObjectLockRetentionMode,
};
use chrono::DateTime;
use xfull_core::backend::{BackendError, Retained};
use xfull_core::lock::{LockMode, Retention};

use crate::S3Backend;
use crate::attempts::Attempts;

/// A put carrying `retention`. S3 refuses a locked put without a
/// checksum (Content-MD5 or `x-amz-checksum-*`): CRC32, which the SDK
/// computes (the client otherwise sends checksums only when required).
pub(crate) fn with_retention(req: PutObjectFluentBuilder, r: &Retention) -> PutObjectFluentBuilder {
    req.object_lock_mode(ObjectLockMode::from(r.mode.as_s3()))
        .object_lock_retain_until_date(SdkTime::from_secs(r.until.timestamp()))
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
}

/// The retention a HEAD shows (to `s3:GetObjectRetention` only).
pub(crate) fn retention_of(out: &HeadObjectOutput) -> Option<Retention> {
    let mode = out
        .object_lock_mode()
        .and_then(|m| LockMode::parse(m.as_str()))?;
    let until = out
        .object_lock_retain_until_date()
        .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))?;
    Some(Retention { mode, until })
}

impl S3Backend {
    pub(crate) async fn head_retention(&self, key: &str) -> Result<Retained, BackendError> {
        let (meta, out) = self.head_object(key).await?;
        Ok(Retained {
            meta,
            retention: retention_of(&out),
            version: out.version_id().map(str::to_string),
        })
    }

    /// Of `version` when given: a version put since the HEAD that saw it
    /// must not be the one locked.
    pub(crate) async fn put_retention(
        &self,
        key: &str,
        version: Option<&str>,
        r: Retention,
    ) -> Result<(), BackendError> {
        self.counters.retention.fetch_add(1, Ordering::Relaxed);
        let retention = ObjectLockRetention::builder()
            .mode(ObjectLockRetentionMode::from(r.mode.as_s3()))
            .retain_until_date(SdkTime::from_secs(r.until.timestamp()))
            .build();
        send!(
            self,
            self.client
                .put_object_retention()
                .bucket(&self.opts.bucket)
                .key(self.key(key))
                .set_version_id(version.map(str::to_string))
                .retention(retention),
            key
        )
        .map(|_| ())
    }

    pub(crate) async fn bucket_lock_enabled(&self) -> Result<bool, BackendError> {
        self.counters.get.fetch_add(1, Ordering::Relaxed);
        let (sent, made) = send_raw!(
            self,
            self.client
                .get_object_lock_configuration()
                .bucket(&self.opts.bucket),
            0
        );
        match sent {
            Ok(out) => Ok(out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                == Some(&ObjectLockEnabled::Enabled)),
            Err(e)
                if e.as_service_error().and_then(|s| s.code())
                    == Some("ObjectLockConfigurationNotFoundError") =>
            {
                Ok(false)
            }
            Err(e) => Err(self
                .errors
                .map(e, "(the bucket's object lock setting)", made)),
        }
    }
}

#[cfg(test)]
mod tests {
    use xfull_core::backend::Backend;

    use super::*;
    use crate::budget_tests::{Fake, backend};

    /// The extension names the version its HEAD saw: without it S3 locks
    /// the current version, which may be one put between the two requests
    /// (review, stop 56).
    #[tokio::test]
    async fn an_extension_names_the_version_its_head_saw() {
        let fake = Fake::new(&[]);
        let b = backend(&fake, Default::default()).await;
        let seen = b.retention("nodes/ab/x").await.unwrap();
        assert_eq!(seen.version.as_deref(), Some("v7"));
        let r = seen.retention.expect("the HEAD's retention");
        assert_eq!(r.mode, LockMode::Compliance);
        let longer = Retention {
            until: r.until + chrono::Duration::days(1),
            ..r
        };
        b.extend_retention("nodes/ab/x", seen.version.as_deref(), longer)
            .await
            .unwrap();
        let uris = fake.uris();
        assert!(
            uris[1].contains("retention") && uris[1].contains("versionId=v7"),
            "{uris:?}"
        );
    }
}
