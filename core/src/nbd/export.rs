//! What the server serves: anything implementing [`Export`] (a backup
//! point, a file, memory). The server checks every request against the
//! export's size and the advertised maximum before calling it, so an
//! export only sees requests inside itself.

use std::fmt::Debug;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ExportError, Extent};

/// A piece of a read: bytes, or a run of zeros the server sends as a
/// hole chunk without materialising it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadPiece {
    Data(Bytes),
    Zeroes(u32),
}

impl ReadPiece {
    pub fn len(&self) -> u64 {
        match self {
            ReadPiece::Data(b) => b.len() as u64,
            ReadPiece::Zeroes(n) => *n as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An export. Errors answer that request only (`ExportError::Io` becomes
/// `NBD_EIO` for its range); the connection and the server go on.
///
/// A writable export overrides [`Export::writable`] and the write
/// methods; otherwise the server advertises the export read-only and
/// refuses writes with `NBD_EPERM` without calling it.
#[async_trait]
pub trait Export: Send + Sync + Debug + 'static {
    /// The name clients ask for (`nbd+unix:///NAME?socket=...`).
    fn name(&self) -> &str;

    /// Size in bytes (fixed while served).
    fn size(&self) -> u64;

    /// The `len` bytes at `offset` (inside the export, `len` at most the
    /// advertised maximum payload, 32 MiB by default).
    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, ExportError>;

    /// The same as pieces summing to `len`: zero runs the export knows of
    /// go to the client as hole chunks. Defaults to one piece from
    /// [`Export::read`].
    async fn read_pieces(&self, offset: u64, len: u32) -> Result<Vec<ReadPiece>, ExportError> {
        Ok(vec![ReadPiece::Data(self.read(offset, len).await?)])
    }

    /// `base:allocation` extents starting at `range.start`, contiguous and
    /// non-empty (flags [`super::STATE_HOLE`], [`super::STATE_ZERO`]). They
    /// may stop short of `range.end` (the client asks again from there).
    /// Defaults to "all data".
    async fn extents(&self, range: Range<u64>) -> Result<Vec<Extent>, ExportError> {
        Ok(vec![Extent {
            len: range.end - range.start,
            flags: 0,
        }])
    }

    fn writable(&self) -> bool {
        false
    }

    async fn write(&self, _offset: u64, _data: Bytes) -> Result<(), ExportError> {
        Err(ExportError::ReadOnly)
    }

    /// Makes `len` bytes at `offset` read as zeros; `may_trim` says the
    /// client allows punching a hole instead of writing zeros.
    async fn write_zeroes(
        &self,
        _offset: u64,
        _len: u32,
        _may_trim: bool,
    ) -> Result<(), ExportError> {
        Err(ExportError::ReadOnly)
    }

    /// The client no longer needs these bytes (their content is then
    /// unspecified until written again).
    async fn trim(&self, _offset: u64, _len: u32) -> Result<(), ExportError> {
        Err(ExportError::ReadOnly)
    }

    /// Makes completed writes durable.
    async fn flush(&self) -> Result<(), ExportError> {
        Ok(())
    }
}
