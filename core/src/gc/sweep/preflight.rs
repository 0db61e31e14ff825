//! Before a sweep writes its marker: may these credentials do what a
//! sweep does? A sweep overwrites its marker as it goes and deletes what
//! no point needs. Credentials that may not (a backup or restore role,
//! docs/least-privilege.md) would otherwise be refused halfway, leaving
//! a marker that looks like a running sweep (backups wait for it, other
//! sweeps yield to it) and that the same credentials cannot mark stopped.
//! So the sweep first overwrites and deletes a probe object of its own:
//! refused, it stops with the store's answer (naming the operation and
//! the key) before writing anything else.

use bytes::Bytes;

use crate::backend::{Backend, PutMode};
use crate::error::Result;

/// Written and deleted by every sweep; nothing reads it. A sweep refused
/// the delete leaves it, and the next sweep that may delete removes it.
pub(crate) const PROBE: &str = crate::keys::GC_PROBE;

/// Fails with the store's refusal (`BackendError::PermissionDenied` for a
/// policy's deny) if these credentials may not overwrite or delete.
pub(crate) async fn may_sweep(backend: &dyn Backend) -> Result<()> {
    let probe = Bytes::from_static(b"xfull gc permission check");
    backend.put(PROBE, probe, PutMode::Overwrite).await?;
    backend.delete_many(&[PROBE.to_string()]).await?;
    Ok(())
}
