//! Errors of the QMP module. QEMU's own message is quoted as it sent it,
//! with the command that failed, so that the CLI can print it as is.

/// Everything that can go wrong talking QMP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QmpError {
    /// The socket cannot be reached.
    #[error("cannot connect to the QMP socket {socket}: {message}")]
    Connect { socket: String, message: String },

    /// The server is not speaking QMP, or broke the protocol.
    #[error("QMP socket {socket}: {reason}")]
    Protocol { socket: String, reason: String },

    /// QEMU answered a command with an error.
    #[error("QEMU refused {command} ({class}): {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },

    /// The connection ended (QEMU exited, or closed the monitor).
    #[error("QMP socket {socket}: the connection ended during {during}")]
    Closed { socket: String, during: String },

    /// The server stayed silent longer than the timeout.
    #[error("QMP socket {socket}: no answer for {secs} s during {during}")]
    Timeout {
        socket: String,
        during: String,
        secs: u64,
    },

    /// A QEMU block job (creating the fleecing image, say) failed.
    #[error("QEMU job {job} failed: {message}")]
    Job { job: String, message: String },

    /// What QEMU reported cannot be used as asked.
    #[error("{0}")]
    Unusable(String),

    /// Local file work for the session failed (the fleecing image).
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl QmpError {
    /// The class QEMU gave a refused command (`GenericError`,
    /// `CommandNotFound`, `DeviceNotFound`, ...).
    pub fn class(&self) -> Option<&str> {
        match self {
            QmpError::Command { class, .. } => Some(class),
            _ => None,
        }
    }
}
