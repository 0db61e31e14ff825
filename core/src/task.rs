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

/// Runs `fut` in a task of its own and waits for it. A caller that stops
/// waiting does not cancel it: it runs to its end (a write whose request
/// may already be on its way must be answered before anything that has
/// to come after it, see `session::put_lease`). A panic in it is resumed
/// here; a task cancelled by the runtime's shutdown is an internal error
/// naming `what`.
pub(crate) async fn detached<T: Send + 'static>(
    what: &str,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T> {
    match tokio::spawn(fut).await {
        Ok(out) => Ok(out),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::Internal(format!("{what} died: {e}"))),
    }
}
