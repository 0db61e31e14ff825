//! Errors of the NBD module. Every variant names what is wrong: the
//! server or URI, the export, the command and byte offset, and the
//! server's own message when it sent one, so that the CLI can print it as
//! is. Callers branch on variants, never on message text.

use std::fmt;

/// An NBD error number, as servers send it (`NBD_EIO`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub u32);

impl Errno {
    pub const EPERM: Errno = Errno(1);
    pub const EIO: Errno = Errno(5);
    pub const ENOMEM: Errno = Errno(12);
    pub const EINVAL: Errno = Errno(22);
    pub const ENOSPC: Errno = Errno(28);
    pub const EOVERFLOW: Errno = Errno(75);
    pub const ENOTSUP: Errno = Errno(95);
    pub const ESHUTDOWN: Errno = Errno(108);
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match *self {
            Errno::EPERM => "EPERM (operation not permitted)",
            Errno::EIO => "EIO (input/output error)",
            Errno::ENOMEM => "ENOMEM (out of memory)",
            Errno::EINVAL => "EINVAL (invalid argument)",
            Errno::ENOSPC => "ENOSPC (no space left)",
            Errno::EOVERFLOW => "EOVERFLOW (value too large)",
            Errno::ENOTSUP => "ENOTSUP (not supported)",
            Errno::ESHUTDOWN => "ESHUTDOWN (server shutting down)",
            Errno(n) => return write!(f, "error {n}"),
        };
        f.write_str(text)
    }
}

/// `": message"` when there is one.
pub(crate) fn colon(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// Everything that can go wrong talking NBD.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NbdError {
    /// The URI is not one this client understands.
    #[error("invalid NBD URI {uri:?}: {reason}")]
    InvalidUri { uri: String, reason: String },

    /// `nbds://`: TLS is out of scope.
    #[error(
        "NBD URI {uri:?} asks for TLS, which xfull does not support; \
         connect through a unix socket (nbd+unix://) or an SSH tunnel instead"
    )]
    TlsUnsupported { uri: String },

    /// The server cannot be reached.
    #[error("cannot connect to NBD server {server}: {message}")]
    Connect { server: String, message: String },

    /// The handshake failed before an export was chosen (not an NBD
    /// server, an unsupported negotiation, TLS required, a malformed
    /// option reply).
    #[error("NBD server {server}: {reason}")]
    Handshake { server: String, reason: String },

    /// The server has no such export.
    #[error(
        "NBD server {server} has no export {export:?}{}{}",
        colon(message),
        available_list(available)
    )]
    ExportNotFound {
        server: String,
        export: String,
        message: String,
        available: Vec<String>,
    },

    /// The server refused an option the connection needs.
    #[error(
        "NBD export {export:?}: the server refused {option} with {reply}{}",
        colon(message)
    )]
    OptionRefused {
        export: String,
        option: &'static str,
        reply: String,
        message: String,
    },

    /// A metadata context asked for at connect time does not exist (an
    /// unknown dirty bitmap, say).
    #[error(
        "NBD export {export:?} has no metadata context {context:?}; available: {}",
        if available.is_empty() { "none".to_string() } else { available.join(", ") }
    )]
    UnknownContext {
        export: String,
        context: String,
        available: Vec<String>,
    },

    /// Block status for a context that was not negotiated at connect time.
    #[error("NBD export {export:?}: metadata context {context:?} was not requested at connect")]
    ContextNotNegotiated { export: String, context: String },

    /// The server does not offer a feature this call needs.
    #[error("NBD export {export:?}: the server does not support {what}")]
    Unsupported { export: String, what: &'static str },

    /// A request outside the export.
    #[error(
        "NBD export {export:?}: {command} of {len} bytes at offset {offset} \
         goes past the end of the export ({size} bytes)"
    )]
    OutOfRange {
        export: String,
        command: &'static str,
        offset: u64,
        len: u64,
        size: u64,
    },

    /// The server answered a command with an error (the connection goes
    /// on). `offset` is where the server said the error is, or the
    /// request's offset when it did not say.
    #[error(
        "NBD export {export:?}: {command} at offset {offset} failed on the server: {errno}{}",
        colon(message)
    )]
    Command {
        export: String,
        command: &'static str,
        offset: u64,
        len: u64,
        errno: Errno,
        message: String,
    },

    /// The connection ended while this request was in flight.
    #[error("NBD export {export:?}: connection lost during {command} at offset {offset}: {reason}")]
    Disconnected {
        export: String,
        command: &'static str,
        offset: u64,
        reason: String,
    },

    /// The server stayed silent longer than the client's timeout.
    #[error(
        "NBD server {server}, export {export:?}: no reply from the server for {secs} s \
         ({command} at offset {offset} waiting); connection closed"
    )]
    Timeout {
        server: String,
        export: String,
        command: &'static str,
        offset: u64,
        secs: f64,
    },

    /// The server kept sending, but a reply was not whole within its
    /// bound (the timeout plus its length at 1 MiB/s): a server trickling
    /// bytes resets the silence watchdog, so this bounds it instead.
    #[error(
        "NBD server {server}, export {export:?}: a reply took longer than {secs} s \
         to arrive whole, sent too slowly ({command} at offset {offset} waiting); \
         connection closed"
    )]
    ReplyTooSlow {
        server: String,
        export: String,
        command: &'static str,
        offset: u64,
        secs: f64,
    },

    /// The server sent something the protocol forbids; the connection is
    /// closed (a hard disconnect, as the spec says).
    #[error(
        "NBD export {export:?}: the server broke the protocol during {command} \
         at offset {offset}: {reason}"
    )]
    Protocol {
        export: String,
        command: &'static str,
        offset: u64,
        reason: String,
    },

    /// The server cannot listen where asked.
    #[error("NBD server: cannot listen on {address}: {message}")]
    Listen { address: String, message: String },

    /// Two exports with one name.
    #[error("NBD server: two exports are named {name:?}")]
    DuplicateExport { name: String },
}

fn available_list(available: &[String]) -> String {
    if available.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = available.iter().map(|n| format!("{n:?}")).collect();
        format!(" (available: {})", names.join(", "))
    }
}

/// What an [`crate::nbd::Export`] answers when it cannot do a request.
/// The server turns it into an NBD error for that request only; the
/// message goes to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading or writing the backing data failed (`NBD_EIO`).
    #[error("input/output error: {0}")]
    Io(String),
    /// A write to a read-only export (`NBD_EPERM`).
    #[error("the export is read-only")]
    ReadOnly,
    /// No space to store the write (`NBD_ENOSPC`).
    #[error("no space left: {0}")]
    NoSpace(String),
    /// The request makes no sense for this export (`NBD_EINVAL`).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ExportError {
    pub fn errno(&self) -> Errno {
        match self {
            ExportError::Io(_) => Errno::EIO,
            ExportError::ReadOnly => Errno::EPERM,
            ExportError::NoSpace(_) => Errno::ENOSPC,
            ExportError::Invalid(_) => Errno::EINVAL,
        }
    }
}
