//! A backup session's writer: what it finds already stored, the packs it
//! fills per disk, and the index objects that make its packs findable.
//!
//! - [`SessionPacks::find`] answers, before a chunk is compressed,
//!   whether it is stored: in a pack of this session, or in a pack the
//!   index names (the caller then records that pack in its lease, see
//!   docs/design.md, "Pack layout"), or not at all;
//! - [`DiskPacks`] appends one disk's new chunks, in the order given (disk
//!   order, near enough: segments finish out of order by at most the
//!   pipeline's width), and stores sealed packs, a bounded number at once;
//! - the entries of stored packs become an index object every
//!   [`INDEX_FLUSH`] chunks and at [`SessionPacks::finish`], which the
//!   session calls before it commits its manifest: a committed point's
//!   chunks are always findable. A session that dies leaves packs no
//!   index names; gc deletes them once older than its cutoff.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::index::IndexEntry;
use super::index_write::store_entries;
use super::known::{KnownChunks, entries_of};
use super::lookup::ChunkIndex;
use super::packer::{PackUploads, Packer, StoredPack};
use super::{PACK_TARGET, PACKS_IN_FLIGHT};
use crate::backend::Backend;
use crate::codec::Codec;
use crate::error::Result;
use crate::id::ObjectId;
use crate::lease::ObjectRef;
use crate::repo::Stored;

/// Entries a session holds before it writes them as an index object
/// (80 bytes each in the object, about 100 in memory: about 100 MB).
pub const INDEX_FLUSH: usize = 1 << 20;

/// Where a chunk is, as far as the session knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Not stored: the session must store it.
    New,
    /// In a pack this session stored.
    Own,
    /// In this pack, written by another session.
    In(ObjectId),
}

#[derive(Debug)]
pub struct SessionPacks {
    backend: Arc<dyn Backend>,
    codec: Arc<Codec>,
    known: KnownChunks,
    state: Mutex<State>,
    /// Held while an index object is written, so that two flushes never
    /// race and `finish` waits for one in progress.
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// Packs this session stored.
    own: HashSet<ObjectId>,
    /// Entries of stored packs not yet in an index object.
    pending: Vec<IndexEntry>,
    /// Index objects written.
    written: Vec<String>,
    /// Packs and index objects this session put that were already there
    /// (same bytes: possible without encryption, where packs and index
    /// objects are named by plain content): the session did not write
    /// them, so its lease must name them (see docs/design.md, "gc over
    /// packs").
    existed: Vec<ObjectRef>,
}

impl SessionPacks {
    pub(super) fn new(
        backend: Arc<dyn Backend>,
        codec: Arc<Codec>,
        index: Arc<ChunkIndex>,
    ) -> Self {
        SessionPacks {
            backend,
            codec,
            known: KnownChunks::new(index),
            state: Mutex::new(State::default()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where each id is stored, in the order given (one batched index
    /// lookup for those not in this session's packs).
    pub async fn find(&self, ids: &[ObjectId]) -> Result<Vec<Found>> {
        let places = self.known.find(ids).await?;
        let state = self.state();
        Ok(places
            .into_iter()
            .map(|p| match p {
                None => Found::New,
                Some(e) if state.own.contains(&e.pack) => Found::Own,
                Some(e) => Found::In(e.pack),
            })
            .collect())
    }

    /// A writer for one disk's new chunks.
    pub fn disk(self: &Arc<Self>) -> DiskPacks {
        DiskPacks {
            session: self.clone(),
            // Blobs come compressed and sealed: the packer's level is unused.
            packer: Packer::new(self.codec.clone(), PACK_TARGET, 0),
            uploads: PackUploads::new(self.backend.clone(), PACKS_IN_FLIGHT),
            stored: DiskStored::default(),
        }
    }

    async fn note(&self, packs: Vec<StoredPack>) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        let full = {
            let mut state = self.state();
            for p in &packs {
                state.own.insert(p.name);
                self.known.note_stored(p);
                if p.stored == Stored::Existed {
                    state.existed.push(ObjectRef::Pack(p.name));
                }
            }
            state.pending.extend(entries_of(&packs));
            state.pending.len() >= INDEX_FLUSH
        };
        if full {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        let _one = self.flushing.lock().await;
        let entries = std::mem::take(&mut self.state().pending);
        for (key, stored) in store_entries(&*self.backend, &self.codec, "", entries).await? {
            let mut state = self.state();
            if stored == Stored::Existed
                && let Some(name) = crate::keys::parse_index(&key)
            {
                state.existed.push(ObjectRef::Index(name));
            }
            state.written.push(key);
        }
        Ok(())
    }

    /// Why part of the index could not be read, if a lookup of the
    /// session passed over a damaged block: chunks only it placed were
    /// stored again.
    pub fn index_damage(&self) -> Option<String> {
        self.known.index_damage()
    }

    /// The packs and index objects found already stored since the last
    /// call, for the session's lease.
    pub fn take_existed(&self) -> Vec<ObjectRef> {
        std::mem::take(&mut self.state().existed)
    }

    /// Writes the index object of the packs not yet indexed: call after
    /// every disk finished and before committing the point. Returns the
    /// index objects the session wrote.
    pub async fn finish(&self) -> Result<Vec<String>> {
        self.flush().await?;
        Ok(self.state().written.clone())
    }
}

/// What one disk stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStored {
    /// Packs put (new objects; an identical pack already there counts
    /// too, as its bytes were sent).
    pub packs: u64,
    /// Their bytes, trailers included.
    pub bytes: u64,
}

/// One disk's packer and uploads.
#[derive(Debug)]
pub struct DiskPacks {
    session: Arc<SessionPacks>,
    packer: Packer,
    uploads: PackUploads,
    stored: DiskStored,
}

impl DiskPacks {
    /// Appends a chunk's stored bytes (from `Placement::encode_chunk`);
    /// stores the pack it fills. A failed pack put is returned here or by
    /// [`DiskPacks::finish`].
    pub async fn add(&mut self, id: ObjectId, plain_len: usize, blob: &[u8]) -> Result<()> {
        if let Some(sealed) = self.packer.push_stored(id, plain_len, blob)? {
            self.uploads.send(sealed).await?;
        }
        let done = self.uploads.take_stored();
        self.record(done).await
    }

    async fn record(&mut self, done: Vec<StoredPack>) -> Result<()> {
        for p in &done {
            self.stored.packs += 1;
            self.stored.bytes += p.size;
        }
        self.session.note(done).await
    }

    /// Seals the open pack and sends it: the disk's last puts go on
    /// while the caller does other work (a backup checks the sweeps).
    pub async fn seal(mut self) -> Result<DiskUploads> {
        if let Some(sealed) = self.packer.seal() {
            self.uploads.send(sealed).await?;
        }
        Ok(DiskUploads { packs: self })
    }

    /// Seals and stores the open pack and waits for every put.
    pub async fn finish(self) -> Result<DiskStored> {
        self.seal().await?.wait().await
    }
}

/// A disk's packs, all sealed, the last puts maybe in flight.
#[derive(Debug)]
pub struct DiskUploads {
    packs: DiskPacks,
}

impl DiskUploads {
    /// Waits for every put; what the disk stored.
    pub async fn wait(mut self) -> Result<DiskStored> {
        let p = &mut self.packs;
        let uploads = std::mem::replace(
            &mut p.uploads,
            PackUploads::new(p.session.backend.clone(), 1),
        );
        let rest = uploads.finish().await?;
        p.record(rest).await?;
        Ok(p.stored)
    }
}
