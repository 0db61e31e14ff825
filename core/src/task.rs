//! Running CPU- or IO-bound work off the async runtime.

use crate::error::{Error, Result};

/// Runs `f` on the blocking pool; a panic or cancellation of that thread
/// becomes an internal error naming `what`.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("{what} died: {e}")))
}
