//! Mapping SDK errors to the backend's semantic errors, with messages that
//! name the endpoint and bucket.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use xfull_core::backend::BackendError;

#[derive(Debug)]
pub struct Mapper {
    location: String,
}

impl Mapper {
    pub fn new(location: String) -> Self {
        Mapper { location }
    }

    pub fn map<E>(&self, e: SdkError<E, HttpResponse>, key: &str) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let location = self.location.clone();
        let key = key.to_string();
        match &e {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("").to_string();
                let message = se.err().message().unwrap_or("").to_string();
                let detail = if message.is_empty() {
                    format!("{code} (HTTP {status})")
                } else {
                    format!("{code}: {message} (HTTP {status})")
                };
                match (status, code.as_str()) {
                    (412, _) | (_, "PreconditionFailed") => {
                        BackendError::AlreadyExists { location, key }
                    }
                    (_, "NoSuchBucket") => BackendError::Other {
                        location,
                        message: format!("the bucket does not exist: {detail}"),
                    },
                    (404, _) | (_, "NoSuchKey") | (_, "NotFound") => {
                        BackendError::NotFound { location, key }
                    }
                    (401 | 403, _)
                    | (_, "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
                        BackendError::Unauthenticated {
                            location,
                            message: format!(
                                "{detail} (check the credentials and the bucket policy)"
                            ),
                        }
                    }
                    (409, _) => BackendError::Precondition {
                        location,
                        key,
                        message: detail,
                    },
                    (s, _) if s == 503 || s >= 500 || code == "SlowDown" => {
                        BackendError::Transient {
                            location,
                            message: format!("{key}: {detail}"),
                        }
                    }
                    _ => BackendError::Other {
                        location,
                        message: format!("{key}: {detail}"),
                    },
                }
            }
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => BackendError::Transient {
                location,
                message: format!(
                    "cannot reach the endpoint ({}); is the server up, and is the URL and TLS setup right?",
                    chain(&e)
                ),
            },
            _ => BackendError::Other {
                location,
                message: format!("{key}: {}", chain(&e)),
            },
        }
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
