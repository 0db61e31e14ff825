//! Exports the server tests serve: a file (holes found with
//! SEEK_DATA/SEEK_HOLE, so real clients see hole chunks and holes in
//! their maps), memory, and wrappers that fail or slow down reads.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use xfull_core::async_trait;
use xfull_core::nbd::{Export, ExportError, Extent, ReadPiece, STATE_HOLE, STATE_ZERO};

#[derive(Debug)]
pub struct FileExport {
    name: String,
    file: Arc<std::fs::File>,
    size: u64,
}

impl FileExport {
    pub fn open(name: &str, path: &Path) -> Arc<dyn Export> {
        let file = std::fs::File::open(path).unwrap();
        let size = file.metadata().unwrap().len();
        Arc::new(FileExport {
            name: name.into(),
            file: Arc::new(file),
            size,
        })
    }

    /// Data and hole runs of `range`: (start, end, is_data).
    fn runs(&self, range: Range<u64>) -> Result<Vec<(u64, u64, bool)>, ExportError> {
        use rustix::fs::{SeekFrom, seek};
        let io = |e: rustix::io::Errno| ExportError::Io(e.to_string());
        let mut out = Vec::new();
        let mut at = range.start;
        while at < range.end {
            let data = match seek(&*self.file, SeekFrom::Data(at)) {
                Ok(d) => d.min(range.end),
                Err(rustix::io::Errno::NXIO) => range.end,
                Err(e) => return Err(io(e)),
            };
            if data > at {
                out.push((at, data, false));
                at = data;
                continue;
            }
            let hole = seek(&*self.file, SeekFrom::Hole(at))
                .map_err(io)?
                .min(range.end);
            out.push((at, hole, true));
            at = hole;
        }
        Ok(out)
    }
}

#[xfull_core::async_trait]
impl Export for FileExport {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> u64 {
        self.size
    }
    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, ExportError> {
        let f = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut b = vec![0u8; len as usize];
            f.read_exact_at(&mut b, offset)
                .map_err(|e| ExportError::Io(e.to_string()))?;
            Ok(Bytes::from(b))
        })
        .await
        .map_err(|e| ExportError::Io(e.to_string()))?
    }
    async fn read_pieces(&self, offset: u64, len: u32) -> Result<Vec<ReadPiece>, ExportError> {
        let mut pieces = Vec::new();
        for (s, e, data) in self.runs(offset..offset + len as u64)? {
            if data {
                pieces.push(ReadPiece::Data(self.read(s, (e - s) as u32).await?));
            } else {
                pieces.push(ReadPiece::Zeroes((e - s) as u32));
            }
        }
        Ok(pieces)
    }
    async fn extents(&self, range: Range<u64>) -> Result<Vec<Extent>, ExportError> {
        let runs = self.runs(range)?;
        Ok(runs
            .into_iter()
            .map(|(s, e, data)| Extent {
                len: e - s,
                flags: if data { 0 } else { STATE_HOLE | STATE_ZERO },
            })
            .collect())
    }
}

/// A writable (or read-only) export in memory.
#[derive(Debug)]
pub struct MemExport {
    pub name: String,
    pub data: Mutex<Vec<u8>>,
    pub writable: bool,
    pub flushes: AtomicU64,
}

impl MemExport {
    pub fn new(name: &str, data: Vec<u8>, writable: bool) -> Arc<MemExport> {
        Arc::new(MemExport {
            name: name.into(),
            data: Mutex::new(data),
            writable,
            flushes: AtomicU64::new(0),
        })
    }
}

#[async_trait]
impl Export for MemExport {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, ExportError> {
        let d = self.data.lock().unwrap();
        Ok(Bytes::copy_from_slice(
            &d[offset as usize..offset as usize + len as usize],
        ))
    }
    fn writable(&self) -> bool {
        self.writable
    }
    async fn write(&self, offset: u64, data: Bytes) -> Result<(), ExportError> {
        let mut d = self.data.lock().unwrap();
        d[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
        Ok(())
    }
    async fn write_zeroes(
        &self,
        offset: u64,
        len: u32,
        _may_trim: bool,
    ) -> Result<(), ExportError> {
        let mut d = self.data.lock().unwrap();
        d[offset as usize..offset as usize + len as usize].fill(0);
        Ok(())
    }
    async fn trim(&self, offset: u64, len: u32) -> Result<(), ExportError> {
        self.write_zeroes(offset, len, true).await
    }
    async fn flush(&self) -> Result<(), ExportError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Fails every read that touches `bad`; counts reads; optionally sleeps
/// in each read (to keep a transfer going while a test acts).
#[derive(Debug)]
pub struct Faulty {
    pub inner: Arc<dyn Export>,
    pub bad: Range<u64>,
    pub delay: Duration,
    pub reads: AtomicU64,
}

impl Faulty {
    pub fn new(inner: Arc<dyn Export>, bad: Range<u64>, delay: Duration) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner,
            bad,
            delay,
            reads: AtomicU64::new(0),
        })
    }
}

#[async_trait]
impl Export for Faulty {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, ExportError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if offset < self.bad.end && self.bad.start < offset + len as u64 {
            return Err(ExportError::Io(format!(
                "injected failure at {}",
                self.bad.start
            )));
        }
        self.inner.read(offset, len).await
    }
    async fn extents(&self, range: Range<u64>) -> Result<Vec<Extent>, ExportError> {
        self.inner.extents(range).await
    }
}
