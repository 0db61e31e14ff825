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
        on_own_connection(uri, async |h| match h.structured_replies().await? {
            true => h.list_meta_contexts(queries).await,
            false => Err(NbdError::Unsupported {
                export: uri.export.clone(),
                what: "structured replies (needed for metadata contexts)",
            }),
        })
        .await
    }

    /// Lists the server's exports on a connection of its own.
    pub async fn list_exports(uri: &NbdUri) -> Result<Vec<String>, NbdError> {
        on_own_connection(uri, async |h| h.list_exports().await).await
    }
}

/// Runs `ask` in the negotiation of a connection of its own to `uri`,
/// within the default timeout, and ends it with `NBD_OPT_ABORT` whatever
/// `ask` gave.
async fn on_own_connection<T>(
    uri: &NbdUri,
    ask: impl AsyncFnOnce(&mut Handshake<'_>) -> Result<T, NbdError>,
) -> Result<T, NbdError> {
    let server = uri.target.to_string();
    within(&server, ClientOptions::default().timeout, async {
        let (r, w) = conn::connect(&uri.target).await?;
        let (mut r, mut w) = conn::buffered(r, w);
        let mut h = Handshake::start(&mut r, &mut w, server.clone(), uri.export.clone()).await?;
        let res = ask(&mut h).await;
        h.abort().await;
        res
    })
    .await
}
