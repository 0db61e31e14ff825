//! What the caller says about the bucket, checked before anything is sent,
//! and the endpoint as it may be shown (credentials in its URL hidden).

use aws_sdk_s3::types::StorageClass;

/// How to reach a bucket.
#[derive(Clone, Default)]
pub struct S3Options {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing slash.
    pub prefix: String,
    /// A custom endpoint, e.g. `http://127.0.0.1:9000`; implies path-style.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Emulate create-only puts with HEAD then PUT (servers that ignore
    /// `If-None-Match`).
    pub no_conditional_put: bool,
    /// Storage class for chunk objects, e.g. `STANDARD_IA`, `GLACIER_IR`.
    pub chunk_storage_class: Option<String>,
    /// Server-side encryption: one of [`SSE_VALUES`].
    pub sse: Option<String>,
    /// An access key and secret to use instead of the standard AWS chain
    /// (for programs that embed the backend, and tests).
    pub static_credentials: Option<(String, String)>,
    /// A request and upload budget (`--max-requests-per-second`,
    /// `--max-upload-bytes-per-second`).
    pub limits: crate::Limits,
}

/// The server-side encryption a PUT may ask for (the SDK knows more
/// values, e.g. `aws:fsx`, that S3 buckets refuse).
pub const SSE_VALUES: &[&str] = &["AES256", "aws:kms", "aws:kms:dsse"];

/// The storage classes S3 knows.
pub fn storage_classes() -> &'static [&'static str] {
    StorageClass::values()
}

/// A value that cannot work, found before any request: the caller's
/// mistake (exit status 2 in the CLI).
#[derive(Debug, thiserror::Error)]
#[error("invalid {what} {value:?}: expected {expected}")]
pub struct InvalidOption {
    pub what: &'static str,
    /// As given, with credentials in an endpoint URL hidden.
    pub value: String,
    pub expected: String,
}

/// Why a backend could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// An option cannot work (a usage error).
    #[error(transparent)]
    Invalid(#[from] InvalidOption),
    /// Neither the options nor the standard AWS settings (`AWS_REGION`,
    /// the profile) name a region, and the endpoint is AWS's, which
    /// depends on it.
    #[error("no AWS region for {location}: set AWS_REGION or a region in the AWS profile")]
    NoRegion { location: String },
}

impl From<OpenError> for xfull_core::backend::BackendError {
    fn from(e: OpenError) -> Self {
        let location = match &e {
            OpenError::NoRegion { location } => location.clone(),
            OpenError::Invalid(_) => "s3".into(),
        };
        xfull_core::backend::BackendError::Other {
            location,
            message: e.to_string(),
        }
    }
}

impl S3Options {
    /// Parses `s3://bucket/prefix`.
    pub fn parse_url(url: &str) -> Option<(String, String)> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        Some((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }

    /// Checks the endpoint URL, storage class and encryption.
    pub fn check(&self) -> Result<(), InvalidOption> {
        if let Some(ep) = &self.endpoint {
            check_endpoint(ep)?;
        }
        if let Some(r) = &self.region
            && (r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(InvalidOption {
                what: "region",
                value: r.clone(),
                expected: "a region name like us-east-1".into(),
            });
        }
        one_of(
            "chunk storage class",
            &self.chunk_storage_class,
            storage_classes(),
        )?;
        one_of("server-side encryption", &self.sse, SSE_VALUES)?;
        self.limits.check()
    }

    /// `s3://bucket/prefix`, and the endpoint when custom, for messages.
    pub(crate) fn location(&self) -> String {
        let url = if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        };
        match &self.endpoint {
            Some(ep) => format!("{url} at {}", redact(ep)),
            None => url,
        }
    }
}

// By hand: the endpoint may carry credentials and the secret is one.
impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint.as_deref().map(redact))
            .field("region", &self.region)
            .field("no_conditional_put", &self.no_conditional_put)
            .field("chunk_storage_class", &self.chunk_storage_class)
            .field("sse", &self.sse)
            .field("limits", &self.limits)
            .field(
                "static_credentials",
                &self.static_credentials.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

pub(crate) fn one_of(
    what: &'static str,
    value: &Option<String>,
    valid: &[&str],
) -> Result<(), InvalidOption> {
    match value {
        Some(v) if !valid.contains(&v.as_str()) => Err(InvalidOption {
            what,
            value: v.clone(),
            expected: format!("one of {}", valid.join(", ")),
        }),
        _ => Ok(()),
    }
}

/// Checks a custom endpoint URL: http or https, a host, a valid port, and
/// no credentials (`user:password@`, which some users put there).
fn check_endpoint(url: &str) -> Result<(), InvalidOption> {
    let bad = || InvalidOption {
        what: "endpoint",
        value: redact(url),
        expected: "a URL like http://host:port or https://host[:port][/path]".into(),
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(bad());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (name, port) = match host.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or_else(bad)?;
            if addr.is_empty() || !(after.is_empty() || after.starts_with(':')) {
                return Err(bad());
            }
            (addr, after.strip_prefix(':'))
        }
        None => match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        },
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if name.is_empty() || !port_ok {
        return Err(bad());
    }
    // The SDK would send them in the Host header, which breaks every
    // request's signature: S3 authenticates by signing with the AWS
    // credentials, never by a password in the URL.
    if userinfo.is_some() {
        return Err(InvalidOption {
            what: "endpoint",
            value: redact(url),
            expected: "no user:password@ in it: S3 requests are signed with the AWS \
                       credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile)"
                .into(),
        });
    }
    Ok(())
}

/// The URL with any `user:password@` replaced by `***@`, for the texts
/// that show an endpoint before or without its check (the refusal itself,
/// debug output).
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for ok in [
            "http://127.0.0.1:9000",
            "https://s3.example.com/base",
            "HTTP://[::1]:9000",
        ] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        let e = check_endpoint("http://key:se@cret@h:1/").unwrap_err();
        assert!(e.to_string().contains("http://***@h:1/"), "{e}");
        assert!(!e.to_string().contains("cret"), "{e}");
        for bad in [
            "",
            "127.0.0.1:9000",
            "ftp://h",
            "http://",
            "http://:9000",
            "http://h:0",
            "http://h:99999",
            "http://h:x",
            "http://[::1",
            "http://h /x",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_never_show() {
        assert_eq!(redact("http://k:s@h:1/p@x"), "http://***@h:1/p@x");
        assert_eq!(redact("http://h:1/p@x"), "http://h:1/p@x");
        assert_eq!(redact("no url"), "no url");
        let e = check_endpoint("http://AKIDLEAK:S3CR3T@[::1").unwrap_err();
        assert!(!e.to_string().contains("S3CR3T"), "{e}");
        let o = S3Options {
            bucket: "b".into(),
            endpoint: Some("http://AKIDLEAK:S3CR3T@h:1".into()),
            static_credentials: Some(("AKIDLEAK".into(), "S3CR3T2".into())),
            ..S3Options::default()
        };
        let shown = format!("{o:?} {} {:?}", o.location(), o.check());
        assert!(!shown.contains("S3CR3T"), "{shown}");
        assert!(!shown.contains("AKIDLEAK"), "{shown}");
    }

    #[test]
    fn values_are_checked() {
        let with = |class: &str, sse: &str| S3Options {
            chunk_storage_class: Some(class.into()),
            sse: Some(sse.into()),
            ..S3Options::default()
        };
        assert!(with("GLACIER_IR", "aws:kms").check().is_ok());
        let e = with("COLD", "AES256").check().unwrap_err();
        assert!(e.to_string().contains("DEEP_ARCHIVE"), "{e}");
        let e = with("STANDARD", "rot13").check().unwrap_err();
        assert!(e.to_string().contains("AES256, aws:kms"), "{e}");
    }
}
