//! The client for std threads (the backup reader is one): each call runs
//! the async client on a tokio runtime through its handle.
//!
//! Needs a multi-thread runtime (a current-thread runtime's handle cannot
//! drive the socket from another thread), and must not be called from
//! inside that runtime's tasks (`block_on` would panic there).

use std::ops::Range;

use bytes::Bytes;
use tokio::runtime::Handle;

use super::{Client, ClientOptions, Extent, NbdError, NbdUri};

#[derive(Debug)]
pub struct BlockingClient {
    client: Client,
    handle: Handle,
}

impl BlockingClient {
    pub fn connect(
        handle: Handle,
        uri: &NbdUri,
        contexts: &[&str],
        options: ClientOptions,
    ) -> Result<BlockingClient, NbdError> {
        let client = handle.block_on(Client::connect_with(uri, contexts, options))?;
        Ok(BlockingClient { client, handle })
    }

    /// Wraps a client connected in async code, for use from std threads.
    pub fn from_client(client: Client, handle: Handle) -> BlockingClient {
        BlockingClient { client, handle }
    }

    /// The async client, e.g. to share it with tasks.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn size(&self) -> u64 {
        self.client.size()
    }

    pub fn read(&self, offset: u64, len: usize) -> Result<Bytes, NbdError> {
        self.handle.block_on(self.client.read(offset, len))
    }

    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        self.handle.block_on(self.client.read_at(offset, buf))
    }

    pub fn block_status(&self, context: &str, range: Range<u64>) -> Result<Vec<Extent>, NbdError> {
        self.handle
            .block_on(self.client.block_status(context, range))
    }

    pub fn flush(&self) -> Result<(), NbdError> {
        self.handle.block_on(self.client.flush())
    }

    pub fn close(self) -> Result<(), NbdError> {
        let BlockingClient { client, handle } = self;
        handle.block_on(client.close())
    }
}
