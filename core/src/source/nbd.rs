//! A source disk read over NBD (a running VM's disk exported by QEMU,
//! qemu-nbd or qemu-storage-daemon), and QEMU dirty bitmaps read over NBD
//! as a change source.
//!
//! The export is read as the guest sees it (a qcow2 disk behind qemu-nbd
//! reads as its guest-visible bytes, not the container's); ranges that
//! `base:allocation` reports as reading zeros are never transferred.

use std::ops::Range;

use tokio::runtime::Handle;

use crate::changes::ExtentSet;
use crate::nbd::{
    BASE_ALLOCATION, BlockingClient, Client, NbdError, NbdUri, STATE_DIRTY, STATE_ZERO,
};

/// Ranges of dirty bits gathered before they are merged into the set:
/// a fragmented bitmap of a large disk is merged in batches, not kept as
/// one long list.
const MERGE_BATCH: usize = 1 << 16;

/// Whether `path` is an NBD URI rather than a file (libnbd's schemes;
/// a file whose name starts like one is given as `./nbd:...`).
pub fn is_nbd_uri(path: &str) -> bool {
    ["nbd://", "nbd+unix://", "nbds://", "nbds+unix://"]
        .iter()
        .any(|s| path.starts_with(s))
}

/// The dirty-bitmap context of bitmap `name`.
pub fn bitmap_context(name: &str) -> String {
    format!("qemu:dirty-bitmap:{name}")
}

#[derive(Debug)]
pub(crate) struct NbdDisk {
    client: BlockingClient,
}

impl NbdDisk {
    /// Connects for reading, with `base:allocation` and the given bitmap
    /// contexts (each must exist on the export: the error lists those
    /// that do).
    pub(crate) async fn connect(uri: &str, bitmaps: &[String]) -> Result<NbdDisk, NbdError> {
        let parsed = NbdUri::parse(uri)?;
        let mut contexts = vec![BASE_ALLOCATION.to_string()];
        contexts.extend(bitmaps.iter().map(|b| bitmap_context(b)));
        let refs: Vec<&str> = contexts.iter().map(String::as_str).collect();
        let client = Client::connect(&parsed, &refs).await?;
        Ok(NbdDisk {
            client: BlockingClient::from_client(client, Handle::current()),
        })
    }

    pub(crate) fn size(&self) -> u64 {
        self.client.size()
    }

    pub(crate) fn client(&self) -> &Client {
        self.client.client()
    }

    /// The ranges inside `range` that do not read as zeros. Called from
    /// blocking threads (the backup's reader, the audit).
    pub(crate) fn data_ranges(&self, range: Range<u64>) -> Result<Vec<Range<u64>>, NbdError> {
        let mut out: Vec<Range<u64>> = Vec::new();
        let mut pos = range.start;
        for e in self.client.block_status(BASE_ALLOCATION, range.clone())? {
            let end = (pos + e.len).min(range.end);
            if e.flags & STATE_ZERO == 0 && pos < end {
                match out.last_mut() {
                    Some(last) if last.end == pos => last.end = end,
                    _ => out.push(pos..end),
                }
            }
            pos = end;
        }
        Ok(out)
    }

    pub(crate) fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        self.client.read_at(offset, buf)
    }
}

/// The ranges a dirty bitmap marks, over the whole export behind
/// `client` (which negotiated the bitmap's context).
pub(crate) async fn dirty_ranges(client: &Client, bitmap: &str) -> Result<ExtentSet, NbdError> {
    let context = bitmap_context(bitmap);
    let size = client.size();
    let mut set = ExtentSet::new();
    let mut batch = Vec::new();
    let mut pos = 0;
    while pos < size {
        let extents = client.block_status(&context, pos..size).await?;
        // `Client::block_status` covers the range asked or fails, so
        // this cannot happen today; should it ever, "nothing more" must
        // not read as "the rest is clean", which would reuse the parent's
        // segments wherever the bitmap marks writes past here (review
        // 105.4).
        if extents.is_empty() {
            return Err(NbdError::Protocol {
                export: client.export().to_string(),
                command: crate::nbd::proto::command_name(crate::nbd::proto::CMD_BLOCK_STATUS),
                offset: pos,
                reason: format!("block status of {context} ended before offset {pos}"),
            });
        }
        for e in extents {
            let end = (pos + e.len).min(size);
            if e.flags & STATE_DIRTY != 0 && pos < end {
                batch.push(pos..end);
            }
            pos = end;
        }
        // Merged whenever the batch outgrows the set twice (as change
        // files are, `changes/parse.rs`): each merge sorts the whole set,
        // so a fixed batch made a fragmented bitmap's reading quadratic
        // (review 87); memory stays within three times the merged set.
        if batch.len() >= MERGE_BATCH.max(2 * set.ranges().len()) {
            set.absorb(&mut batch);
        }
    }
    set.absorb(&mut batch);
    Ok(set)
}

/// Reads bitmap `name` from another node's export of the same disk.
pub(crate) async fn remote_dirty_ranges(
    uri: &str,
    name: &str,
    disk_size: u64,
) -> Result<ExtentSet, String> {
    let parsed = NbdUri::parse(uri).map_err(|e| e.to_string())?;
    let client = Client::connect(&parsed, &[&bitmap_context(name)])
        .await
        .map_err(|e| e.to_string())?;
    if client.size() != disk_size {
        return Err(format!(
            "its export is {} bytes but the disk is {disk_size}: not the same disk",
            client.size()
        ));
    }
    let set = dirty_ranges(&client, name).await.map_err(|e| e.to_string());
    let _ = client.close().await;
    set
}
