//! What went wrong below HTTP: the name did not resolve, nothing listens,
//! the host drops our packets, TLS failed, or the server went silent.
//!
//! The SDK reports all of these as a `ConnectorError` (io, timeout or
//! other) whose cause chain holds the underlying hyper, rustls and io
//! errors, none of which it exports; so besides io error kinds this reads
//! the chain's text, for the phrases those crates use. Unit tests pin the
//! phrases seen from this SDK version.

use std::error::Error;
use std::io::ErrorKind;

/// A request that got no HTTP answer, by cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The endpoint's host name does not resolve.
    Dns,
    /// Nothing listens at the address (TCP reset to our SYN).
    Refused,
    /// No TCP connection within the connect timeout: the host or a
    /// firewall drops the packets, or the address is wrong.
    ConnectTimeout,
    /// No route to the host or its network.
    Unreachable,
    /// The TLS handshake failed: a plain-HTTP server, an untrusted or
    /// mismatched certificate.
    Tls,
    /// Connected, but silent: no answer in time, an upload not taken
    /// (`silence.rs`), or the attempt timeout.
    NoAnswer,
    /// The connection broke during the exchange.
    Dropped,
    /// Anything else.
    Other,
}

impl Failure {
    /// Classifies an error chain from the SDK. `timed_out` says the SDK
    /// already called it a timeout (connect, read or attempt).
    pub fn of(e: &(dyn Error + 'static), timed_out: bool, https: bool) -> Failure {
        let text = chain(e).to_ascii_lowercase();
        let kinds = io_kinds(e);
        let has = |k: ErrorKind| kinds.contains(&k);
        if text.contains("dns error") || text.contains("failed to lookup address") {
            Failure::Dns
        } else if has(ErrorKind::ConnectionRefused) || text.contains("connection refused") {
            Failure::Refused
        } else if text.contains("connect timeout") {
            Failure::ConnectTimeout
        } else if timed_out {
            Failure::NoAnswer
        } else if has(ErrorKind::NetworkUnreachable)
            || has(ErrorKind::HostUnreachable)
            || text.contains("unreachable")
            || text.contains("no route to host")
        {
            Failure::Unreachable
        } else if ["tls", "certificate", "handshake", "corrupt message"]
            .iter()
            .any(|w| text.contains(w))
            // hyper's "client error (Connect)" is the connect phase, which
            // for https includes the handshake; the TCP causes are above.
            || (https && text.contains("(connect)"))
        {
            Failure::Tls
        } else if [
            ErrorKind::ConnectionReset,
            ErrorKind::ConnectionAborted,
            ErrorKind::BrokenPipe,
            ErrorKind::UnexpectedEof,
        ]
        .into_iter()
        .any(has)
            || [
                "connection reset",
                "connection closed",
                "broken pipe",
                "incomplete",
            ]
            .iter()
            .any(|w| text.contains(w))
        {
            Failure::Dropped
        } else {
            Failure::Other
        }
    }

    /// How many attempts a request gets for this failure, when fewer than
    /// the SDK's: a host that cannot be reached now rarely can a second
    /// later, and each attempt costs a whole timeout, so more attempts
    /// only delay the error (see the README's numbers).
    pub fn max_attempts(self) -> Option<u32> {
        match self {
            Failure::Dns | Failure::Refused | Failure::ConnectTimeout | Failure::Unreachable => {
                Some(3)
            }
            Failure::NoAnswer => Some(2),
            Failure::Tls => Some(1),
            Failure::Dropped | Failure::Other => None,
        }
    }
}

/// An error and its causes on one line.
pub(crate) fn chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        // Wrappers often repeat their cause's text.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

fn io_kinds(e: &(dyn Error + 'static)) -> Vec<ErrorKind> {
    let mut kinds = Vec::new();
    let mut cur = Some(e);
    while let Some(s) = cur {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            kinds.push(io.kind());
        }
        cur = s.source();
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Msg(&'static str);
    impl std::fmt::Display for Msg {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Msg {}

    fn of(text: &'static str, timed_out: bool, https: bool) -> Failure {
        Failure::of(&Msg(text), timed_out, https)
    }

    /// Texts seen from aws-sdk-s3 1.157 (smithy http client 1.5).
    #[test]
    fn phrases_of_this_sdk() {
        use Failure::*;
        let cases = [
            (
                "io error: client error (Connect): dns error: failed to lookup address information: Name or service not known",
                false,
                false,
                Dns,
            ),
            (
                "io error: client error (Connect): tcp connect error: Connection refused (os error 111)",
                false,
                false,
                Refused,
            ),
            (
                "timeout: client error (Connect): HTTP connect timeout occurred after 5s: timed out",
                true,
                false,
                ConnectTimeout,
            ),
            (
                "dispatch failure: timeout: no response within 30 s of sending the request",
                true,
                false,
                NoAnswer,
            ),
            (
                "dispatch failure: timeout: upload stalled: the connection took no more of the body for 20 s",
                true,
                false,
                NoAnswer,
            ),
            (
                "operation attempt timeout (single attempt) occurred after 300s",
                true,
                false,
                NoAnswer,
            ),
            (
                "io error: client error (Connect): tcp connect error: Network is unreachable (os error 101)",
                false,
                false,
                Unreachable,
            ),
            (
                "io error: client error (Connect): received corrupt message of type InvalidContentType",
                false,
                true,
                Tls,
            ),
            (
                "io error: client error (Connect): invalid peer certificate: UnknownIssuer",
                false,
                true,
                Tls,
            ),
            (
                "io error: client error (SendRequest): connection closed before message completed",
                false,
                false,
                Dropped,
            ),
            (
                "io error: client error (SendRequest): Connection reset by peer (os error 104)",
                false,
                false,
                Dropped,
            ),
            ("other: something new", false, false, Other),
        ];
        for (text, timed_out, https, want) in cases {
            assert_eq!(of(text, timed_out, https), want, "{text}");
        }
    }

    #[test]
    fn io_kinds_count_without_text() {
        let e = std::io::Error::from(ErrorKind::ConnectionRefused);
        assert_eq!(Failure::of(&e, false, false), Failure::Refused);
    }
}
