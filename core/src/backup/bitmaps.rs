//! Dirty bitmaps as a change source: the union of the bitmaps given for a
//! disk, read over NBD with block status, and the description recorded
//! in the point (which bitmaps of which nodes supplied the changes).

use crate::changes::ExtentSet;
use crate::error::{Error, Result};
use crate::names::DiskName;
use crate::source::DiskSource;
use crate::source::nbd::{dirty_ranges, remote_dirty_ranges};

use super::plan::BitmapRef;

/// The union of `bitmaps` for disk `name`, and their description.
pub(super) async fn read(
    name: &DiskName,
    source: &DiskSource,
    bitmaps: &[BitmapRef],
) -> Result<(ExtentSet, String)> {
    let mut all = ExtentSet::new();
    let mut described = Vec::new();
    for b in bitmaps {
        let set = match (&b.uri, source.nbd_client()) {
            (None, Some(client)) => dirty_ranges(client, &b.name)
                .await
                .map_err(|e| e.to_string()),
            (None, None) => Err("the disk is not an NBD export".to_string()),
            (Some(uri), _) => remote_dirty_ranges(uri, &b.name, source.size()).await,
        }
        .map_err(|reason| Error::Source {
            path: source.path().to_path_buf(),
            error: std::io::Error::other(format!("disk {name}: dirty bitmap {b}: {reason}")),
        })?;
        described.push(format!(
            "{} ({} bytes dirty, from {})",
            b.name,
            set.bytes(),
            b.uri.as_deref().unwrap_or(&source.path().to_string_lossy())
        ));
        all = all.union(&set);
    }
    Ok((all, described.join(", ")))
}
