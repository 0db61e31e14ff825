//! The client's one-shot listings, each on a connection of its own and
//! ended with `NBD_OPT_ABORT`: exports and metadata contexts. Apart from
//! `client.rs`, which is about the connection that serves requests.

use super::client::{Client, ClientOptions};
use super::conn;
use super::handshake::{Handshake, within};
use super::{NbdError, NbdUri};

impl Client {
    /// Lists the metadata contexts matching `queries` (all if empty) on
    /// a connection of its own, e.g. `["qemu:dirty-bitmap:"]` for the
    /// dirty bitmaps an export offers.
    pub async fn list_meta_contexts(
        uri: &NbdUri,
        queries: &[&str],
    ) -> Result<Vec<String>, NbdError> {
        let server = uri.target.to_string();
        within(&server, ClientOptions::default().timeout, async {
            let (r, w) = conn::connect(&uri.target).await?;
            let (mut r, mut w) = conn::buffered(r, w);
            let mut h =
                Handshake::start(&mut r, &mut w, server.clone(), uri.export.clone()).await?;
            let res = match h.structured_replies().await {
                Ok(true) => h.list_meta_contexts(queries).await,
                Ok(false) => Err(NbdError::Unsupported {
                    export: uri.export.clone(),
                    what: "structured replies (needed for metadata contexts)",
                }),
                Err(e) => Err(e),
            };
            h.abort().await;
            res
        })
        .await
    }

    /// Lists the server's exports on a connection of its own.
    pub async fn list_exports(uri: &NbdUri) -> Result<Vec<String>, NbdError> {
        let server = uri.target.to_string();
        within(&server, ClientOptions::default().timeout, async {
            let (r, w) = conn::connect(&uri.target).await?;
            let (mut r, mut w) = conn::buffered(r, w);
            let mut h =
                Handshake::start(&mut r, &mut w, server.clone(), uri.export.clone()).await?;
            let res = h.list_exports().await;
            h.abort().await;
            res
        })
        .await
    }
}
