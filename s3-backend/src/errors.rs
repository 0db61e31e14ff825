//! Mapping SDK errors to the backend's semantic errors, with messages that
//! say what is wrong and name the endpoint and bucket.
//!
//! Only what proves an object absent is `NotFound`; an object in an
//! archive tier is `Archived`, throttling and outages are `Transient`,
//! bad or missing credentials `Unauthenticated`, and a request that known
//! credentials may not make (a 403 AccessDenied from a policy, as
//! least-privilege roles meet by design) `PermissionDenied`, naming the
//! operation, the key and the S3 action to grant: none of them is damage
//! to stored data.

use std::error::Error;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::delete_objects::DeleteObjectsError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::get_object_lock_configuration::GetObjectLockConfigurationError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsError;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
use aws_sdk_s3::operation::put_object::PutObjectError;
use aws_sdk_s3::operation::put_object_retention::PutObjectRetentionError;
use aws_sdk_s3::operation::restore_object::RestoreObjectError;
use xfull_core::backend::{BackendError, Operation};

use crate::client::{ANSWER_TIMEOUT, CONNECT_TIMEOUT, Timeouts};
use crate::transport::{Failure, chain};

#[derive(Debug)]
pub(crate) struct Mapper {
    location: String,
    /// How messages name the endpoint: the location shows a custom one.
    endpoint: String,
    https: bool,
}

impl Mapper {
    pub fn new(location: String, endpoint: Option<&str>, region: &str) -> Self {
        Mapper {
            location,
            endpoint: match endpoint {
                // The location names it.
                Some(_) => "the endpoint".into(),
                None => format!("the AWS S3 endpoint of region {region}"),
            },
            https: endpoint.is_none_or(|ep| ep.to_ascii_lowercase().starts_with("https")),
        }
    }

    pub fn https(&self) -> bool {
        self.https
    }

    /// Maps the error of a request for `key` that made `attempts` attempts.
    pub fn map<E>(&self, e: SdkError<E, HttpResponse>, key: &str, attempts: u32) -> BackendError
    where
        E: ProvideErrorMetadata + Error + 'static,
    {
        match &e {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let region = se.raw().headers().get("x-amz-bucket-region").map(shown);
                let code = se.err().code().unwrap_or("");
                let detail = match se.err().message() {
                    Some(m) if !m.is_empty() => {
                        format!("{}: {} (HTTP {status})", shown(code), shown(m))
                    }
                    _ => format!("{} (HTTP {status})", shown(code))
                        .trim_start()
                        .to_string(),
                };
                let operation = operation_of(se.err());
                self.answer(
                    status,
                    code,
                    &detail,
                    region.as_deref(),
                    key,
                    attempts,
                    operation,
                )
            }
            _ => {
                if let Some(c) = find::<CredentialsError>(&e) {
                    return self.credentials(c);
                }
                let timed_out = matches!(e, SdkError::TimeoutError(_))
                    || matches!(&e, SdkError::DispatchFailure(d) if d.is_timeout());
                let failure = Failure::of(&e, timed_out, self.https);
                self.transport(failure, &chain(&e), key, attempts)
            }
        }
    }

    /// An HTTP answer that is an error, to a request for `operation` (if
    /// known).
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &self,
        status: u16,
        code: &str,
        detail: &str,
        bucket_region: Option<&str>,
        key: &str,
        attempts: u32,
        operation: Option<Operation>,
    ) -> BackendError {
        let (location, key) = (self.location.clone(), key.to_string());
        let denied = |why: &str| BackendError::Unauthenticated {
            location: self.location.clone(),
            message: format!("{detail}: {why}"),
        };
        let other = |message: String| BackendError::Other {
            location: self.location.clone(),
            message,
        };
        match (status, code) {
            // GET of an object in GLACIER or DEEP_ARCHIVE not restored.
            (_, "InvalidObjectState") => BackendError::Archived { location, key },
            (412, _) | (_, "PreconditionFailed") => BackendError::AlreadyExists { location, key },
            (_, "NoSuchBucket") => other(format!(
                "the bucket does not exist ({detail}); create it, or fix the bucket name in \
                 the repository URL"
            )),
            (404, _) | (_, "NoSuchKey" | "NotFound") => BackendError::NotFound { location, key },
            (_, "RequestTimeTooSkewed") => {
                denied("this machine's clock and the server's differ by too much; set the clock")
            }
            (_, "InvalidAccessKeyId") => {
                denied("the server does not know this access key id; check the credentials")
            }
            (_, "SignatureDoesNotMatch") => {
                denied("the secret key does not belong to the access key id; check the credentials")
            }
            (_, "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired") => {
                denied("the session token is invalid or expired; get new credentials")
            }
            // The server knows the credentials (the codes above say when
            // it does not) and its policy refuses this request. A HEAD's
            // 403 has no body, hence no code.
            (403, "") if operation.is_some() => {
                // Without a code the 403 may as well be bad or expired
                // credentials or a skewed clock: say both.
                let operation = operation.unwrap_or(Operation::Read);
                let detail = format!(
                    "{detail} (HTTP 403 without an error code, as to a HEAD: a policy refused \
                     it, or the credentials are invalid or expired, or the clock is off)"
                );
                self.refused(&key, operation, &detail)
            }
            (403, "AccessDenied") | (_, "AccessDenied") if operation.is_some() => {
                let operation = operation.unwrap_or(Operation::Read);
                self.refused(&key, operation, detail)
            }
            (401 | 403, _) | (_, "AccessDenied") => denied(
                "these credentials may not do this; check them, the bucket policy and the \
                 user's permissions",
            ),
            (301 | 307, _) | (_, "PermanentRedirect" | "AuthorizationHeaderMalformed") => {
                other(match bucket_region {
                    Some(r) => format!("the bucket is in region {r}; use that region ({detail})"),
                    None => format!("the bucket is in another region ({detail})"),
                })
            }
            (409, _) => BackendError::Precondition {
                location,
                key,
                message: detail.to_string(),
            },
            // Not implemented or unsupported: no retry mends it.
            (501 | 505, _) => other(format!("{key}: {detail}")),
            (429 | 500..=599, _)
            | (
                _,
                "SlowDown"
                | "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "TooManyRequests"
                | "RequestTimeout",
            ) => BackendError::Transient {
                location,
                message: format!(
                    "the server is throttling or failing: {key}: {detail} after {}",
                    count(attempts)
                ),
            },
            _ => other(format!("{key}: {detail}")),
        }
    }

    /// A request the store's policy refused to these credentials.
    pub fn refused(&self, key: &str, operation: Operation, detail: &str) -> BackendError {
        BackendError::PermissionDenied {
            location: self.location.clone(),
            key: key.to_string(),
            operation,
            message: format!(
                "{detail}: these credentials lack {} here (see the bucket policy and the \
                 user's permissions; docs/least-privilege.md lists what each command needs)",
                operation.s3_action()
            ),
        }
    }

    /// One key of a DeleteObjects request that the server did not delete:
    /// the request succeeded (HTTP 200) and lists the keys it refused, as
    /// AWS does when a policy denies `s3:DeleteObject` on them.
    pub fn not_deleted(&self, key: &str, code: &str, message: &str) -> BackendError {
        let detail = format!("{}: {}", shown(code), shown(message));
        if code == "AccessDenied" {
            return self.refused(key, Operation::Delete, &detail);
        }
        BackendError::Other {
            location: self.location.clone(),
            message: format!("deleting {key}: {detail}"),
        }
    }

    /// A request that got no HTTP answer.
    fn transport(&self, failure: Failure, detail: &str, key: &str, attempts: u32) -> BackendError {
        let ep = &self.endpoint;
        let tries = format!("after {}", count(attempts));
        let transient = |message: String| BackendError::Transient {
            location: self.location.clone(),
            message,
        };
        match failure {
            Failure::Dns => transient(format!(
                "cannot resolve the host name of {ep} ({tries}): check the URL and DNS ({detail})"
            )),
            Failure::Refused => transient(format!(
                "connection refused by {ep} ({tries}): is the server up, and is the port right? \
                 ({detail})"
            )),
            Failure::ConnectTimeout => transient(format!(
                "no connection to {ep} within {} s ({tries}): the host or a firewall drops \
                 the packets, the address is wrong, or a TLS handshake got no answer ({detail})",
                CONNECT_TIMEOUT.as_secs()
            )),
            Failure::Unreachable => transient(format!(
                "{ep} is unreachable from here ({tries}): check the address and the network \
                 ({detail})"
            )),
            Failure::Tls => BackendError::Other {
                location: self.location.clone(),
                message: format!(
                    "TLS with {ep} failed: does it speak https (or only http), and is its \
                     certificate trusted here? ({detail})"
                ),
            },
            Failure::NoAnswer => transient(format!(
                "{ep} accepted the connection but went silent ({tries}): no answer within {} s \
                 of a request being sent (more after a large upload), or an upload it stopped \
                 taking; the server is hung or overloaded, or the link is slower than {} KiB/s \
                 per upload ({detail})",
                ANSWER_TIMEOUT.as_secs(),
                Timeouts::DEFAULT.upload_floor >> 10,
            )),
            Failure::Dropped => transient(format!(
                "the connection to {ep} broke during the request for {key} ({tries}) ({detail})"
            )),
            Failure::Other => BackendError::Other {
                location: self.location.clone(),
                message: format!("{key}: {detail}"),
            },
        }
    }

    /// The credential chain found nothing, or failed.
    fn credentials(&self, e: &CredentialsError) -> BackendError {
        let message = match e {
            CredentialsError::CredentialsNotLoaded(_) => format!(
                "no AWS credentials found; tried: environment variables (AWS_ACCESS_KEY_ID, \
                 AWS_SECRET_ACCESS_KEY), the shared files {} and {} (profile {:?}), web identity \
                 (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN), container credentials (ECS, EKS), \
                 EC2 instance metadata{}",
                var_or("AWS_CONFIG_FILE", "~/.aws/config"),
                var_or("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
                var_or("AWS_PROFILE", "default"),
                if std::env::var("AWS_EC2_METADATA_DISABLED")
                    .is_ok_and(|v| v.eq_ignore_ascii_case("true"))
                {
                    " (disabled by AWS_EC2_METADATA_DISABLED)"
                } else {
                    ""
                }
            ),
            other => format!(
                "cannot load the AWS credentials: {}",
                chain(other).replace('\n', " ")
            ),
        };
        BackendError::Unauthenticated {
            location: self.location.clone(),
            message,
        }
    }
}

/// Server text as it may be printed: no control characters (a hostile
/// server could send terminal escapes), at most 300 characters.
fn shown(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if text.chars().count() > 300 {
        out.push_str("...");
    }
    out
}

fn var_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn count(attempts: u32) -> String {
    if attempts == 1 {
        "1 attempt".into()
    } else {
        format!("{attempts} attempts")
    }
}

/// What a request asked for, from the type of its error: the mapper is
/// generic over the SDK's per-operation error types, and a request type
/// not listed here (None) keeps the generic "access denied" answer.
fn operation_of<E: Error + 'static>(e: &E) -> Option<Operation> {
    let e: &(dyn Error + 'static) = e;
    if e.is::<GetObjectError>() || e.is::<HeadObjectError>() {
        Some(Operation::Read)
    } else if e.is::<ListObjectsV2Error>() {
        Some(Operation::List)
    } else if e.is::<PutObjectError>() {
        Some(Operation::Write)
    } else if e.is::<DeleteObjectsError>() {
        Some(Operation::Delete)
    } else if e.is::<RestoreObjectError>() {
        Some(Operation::Thaw)
    } else if e.is::<PutObjectRetentionError>() {
        Some(Operation::Retain)
    } else if e.is::<GetObjectLockConfigurationError>() {
        Some(Operation::ReadLock)
    } else if e.is::<ListObjectVersionsError>() {
        Some(Operation::ListVersions)
    } else {
        None
    }
}

/// The first error of type `T` in `e`'s cause chain.
fn find<'a, T: Error + 'static>(e: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(s) = cur {
        if let Some(t) = s.downcast_ref::<T>() {
            return Some(t);
        }
        cur = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper() -> Mapper {
        Mapper::new("s3://b/p".into(), Some("http://127.0.0.1:9"), "us-east-1")
    }

    #[test]
    fn a_policy_refusal_names_the_operation_key_and_action() {
        let m = mapper();
        let e = m.answer(
            403,
            "AccessDenied",
            "AccessDenied: Access Denied (HTTP 403)",
            None,
            "packs/ab/cd",
            1,
            Some(Operation::Write),
        );
        assert!(
            matches!(&e, BackendError::PermissionDenied { key, operation: Operation::Write, .. } if key == "packs/ab/cd"),
            "{e}"
        );
        assert!(e.to_string().contains("s3:PutObject"), "{e}");
        // A HEAD's 403 carries no code.
        let e = m.answer(
            403,
            "",
            "(HTTP 403)",
            None,
            "config",
            1,
            Some(Operation::Read),
        );
        assert!(
            e.is_permission_denied() && e.to_string().contains("s3:GetObject"),
            "{e}"
        );
        // Unknown credentials stay Unauthenticated.
        let e = m.answer(
            403,
            "InvalidAccessKeyId",
            "x",
            None,
            "k",
            1,
            Some(Operation::Read),
        );
        assert!(matches!(e, BackendError::Unauthenticated { .. }), "{e}");
        let e = m.not_deleted("points/v/1", "AccessDenied", "Access Denied.");
        assert!(
            matches!(
                &e,
                BackendError::PermissionDenied {
                    operation: Operation::Delete,
                    ..
                }
            ) && e.to_string().contains("s3:DeleteObject")
                && e.to_string().contains("points/v/1"),
            "{e}"
        );
    }

    #[test]
    fn server_text_is_tamed() {
        assert_eq!(shown("a\u{1b}[2Jb\nc"), "a [2Jb c");
        let long = "x".repeat(1000);
        assert_eq!(shown(&long).len(), 303);
    }
}
