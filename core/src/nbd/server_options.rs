//! The server's side of the fixed newstyle handshake: options until
//! `NBD_OPT_GO` (or `NBD_OPT_EXPORT_NAME`) picks an export.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::{Reader, Writer};
use super::decode;
use super::proto::*;
use super::server::Inner;
use super::{BASE_ALLOCATION, Export};

/// Option data is names and queries: more than this is refused by
/// closing the connection (the length is read before any allocation).
const MAX_OPTION_DATA: u32 = 64 << 10;
/// The id of `base:allocation`, the only context this server offers.
pub(crate) const ALLOCATION_ID: u32 = 1;

/// What a client negotiated for transmission.
#[derive(Debug)]
pub(crate) struct Session {
    pub export: Arc<dyn Export>,
    pub structured: bool,
    /// `base:allocation` selected for this export.
    pub allocation: bool,
}

/// The transmission flags of an export.
pub(crate) fn transmission_flags(e: &dyn Export) -> u16 {
    let mut f = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH;
    if e.writable() {
        f |= TFLAG_SEND_FUA | TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES;
    } else {
        // Nothing changes underneath a read-only export, so several
        // connections see the same bytes (nbdcopy then uses several).
        f |= TFLAG_READ_ONLY | TFLAG_CAN_MULTI_CONN;
    }
    f
}

struct Negotiation<'a> {
    inner: &'a Inner,
    w: &'a mut Writer,
    structured: bool,
    /// Export name and whether `base:allocation` was selected, from the
    /// last `SET_META_CONTEXT`.
    meta: Option<(String, bool)>,
}

/// Runs the handshake. `Ok(None)`: the client ended it (ABORT, or left).
/// `Err`: why the connection is closed. The caller drops it when the
/// server stops (the client has nothing in flight yet).
pub(crate) async fn negotiate(
    inner: &Inner,
    r: &mut Reader,
    w: &mut Writer,
) -> Result<Option<Session>, String> {
    let io = |e: std::io::Error| format!("negotiation: {e}");
    let mut greeting = Vec::with_capacity(18);
    greeting.extend_from_slice(&NBDMAGIC.to_be_bytes());
    greeting.extend_from_slice(&IHAVEOPT.to_be_bytes());
    let offered = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;
    greeting.extend_from_slice(&offered.to_be_bytes());
    w.write_all(&greeting).await.map_err(io)?;
    w.flush().await.map_err(io)?;
    let flags = r.read_u32().await.map_err(io)?;
    let flags = decode::client_flags(flags, offered).map_err(|m| m.0)?;
    let no_zeroes = flags & FLAG_C_NO_ZEROES != 0;
    let mut n = Negotiation {
        inner,
        w,
        structured: false,
        meta: None,
    };
    loop {
        let mut h = [0u8; 16];
        match r.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io(e)),
        }
        let (option, len) = decode::option_header(&h).map_err(|m| m.0)?;
        if len > MAX_OPTION_DATA {
            return Err(format!("{} with {len} bytes of data", option_name(option)));
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data).await.map_err(io)?;
        match option {
            OPT_EXPORT_NAME => return n.export_name(&data, no_zeroes).await.map(Some),
            OPT_ABORT => {
                // The client may already be gone: ignore write errors.
                let _ = n.reply(option, REP_ACK, &[]).await;
                return Ok(None);
            }
            OPT_LIST => n.list(&data).await?,
            OPT_STRUCTURED_REPLY if data.is_empty() => {
                n.structured = true;
                n.reply(option, REP_ACK, &[]).await?;
            }
            OPT_INFO | OPT_GO => {
                if let Some(s) = n.info_go(option, &data).await? {
                    return Ok(Some(s));
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => n.meta_context(option, &data).await?,
            OPT_STRUCTURED_REPLY => n.reply(option, REP_ERR_INVALID, b"unexpected data").await?,
            OPT_STARTTLS => {
                n.reply(option, REP_ERR_UNSUP, b"TLS is not supported")
                    .await?
            }
            _ => n.reply(option, REP_ERR_UNSUP, &[]).await?,
        }
    }
}

impl Negotiation<'_> {
    async fn reply(&mut self, option: u32, reply: u32, data: &[u8]) -> Result<(), String> {
        let h = encode_option_reply_header(option, reply, data.len() as u32);
        let res = async {
            self.w.write_all(&h).await?;
            self.w.write_all(data).await?;
            self.w.flush().await
        }
        .await;
        res.map_err(|e| format!("negotiation: {e}"))
    }

    async fn list(&mut self, data: &[u8]) -> Result<(), String> {
        if !data.is_empty() {
            return self
                .reply(OPT_LIST, REP_ERR_INVALID, b"unexpected data")
                .await;
        }
        let names: Vec<String> = self.inner.exports.keys().cloned().collect();
        for name in names {
            let mut d = (name.len() as u32).to_be_bytes().to_vec();
            d.extend_from_slice(name.as_bytes());
            self.reply(OPT_LIST, REP_SERVER, &d).await?;
        }
        self.reply(OPT_LIST, REP_ACK, &[]).await
    }

    async fn export_name(&mut self, data: &[u8], no_zeroes: bool) -> Result<Session, String> {
        let name = String::from_utf8_lossy(data).into_owned();
        // No error reply exists for this option: closing is the answer.
        let Some(export) = self.inner.export(&name) else {
            return Err(format!("NBD_OPT_EXPORT_NAME for unknown export {name:?}"));
        };
        let mut b = Vec::with_capacity(134);
        b.extend_from_slice(&export.size().to_be_bytes());
        b.extend_from_slice(&transmission_flags(export.as_ref()).to_be_bytes());
        if !no_zeroes {
            b.extend_from_slice(&[0u8; 124]);
        }
        let res = async {
            self.w.write_all(&b).await?;
            self.w.flush().await
        }
        .await;
        res.map_err(|e| format!("negotiation: {e}"))?;
        let allocation = self.allocation_for(&name);
        Ok(Session {
            export,
            structured: self.structured,
            allocation,
        })
    }

    /// Contexts count only if selected for the export finally chosen.
    fn allocation_for(&self, name: &str) -> bool {
        matches!(&self.meta, Some((n, true)) if n == name)
    }

    async fn info_go(&mut self, option: u32, data: &[u8]) -> Result<Option<Session>, String> {
        let req = match decode::go_request(data) {
            Ok(r) => r,
            Err(m) => {
                return self
                    .reply(option, REP_ERR_INVALID, m.0.as_bytes())
                    .await
                    .map(|_| None);
            }
        };
        let Some(export) = self.inner.export(&req.export) else {
            let msg = format!("no export named {:?}", req.export);
            return self
                .reply(option, REP_ERR_UNKNOWN, msg.as_bytes())
                .await
                .map(|_| None);
        };
        let mut info = INFO_EXPORT.to_be_bytes().to_vec();
        info.extend_from_slice(&export.size().to_be_bytes());
        info.extend_from_slice(&transmission_flags(export.as_ref()).to_be_bytes());
        self.reply(option, REP_INFO, &info).await?;
        // Always sent (the spec allows it): clients that did not ask
        // still learn the maximum payload.
        let mut bs = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        bs.extend_from_slice(&1u32.to_be_bytes());
        bs.extend_from_slice(&4096u32.to_be_bytes());
        bs.extend_from_slice(&self.inner.options.max_payload.max(4096).to_be_bytes());
        self.reply(option, REP_INFO, &bs).await?;
        if req.infos.contains(&INFO_NAME) {
            let mut n = INFO_NAME.to_be_bytes().to_vec();
            n.extend_from_slice(export.name().as_bytes());
            self.reply(option, REP_INFO, &n).await?;
        }
        self.reply(option, REP_ACK, &[]).await?;
        if option == OPT_INFO {
            return Ok(None);
        }
        let allocation = self.allocation_for(&req.export);
        Ok(Some(Session {
            export,
            structured: self.structured,
            allocation,
        }))
    }

    async fn meta_context(&mut self, option: u32, data: &[u8]) -> Result<(), String> {
        if option == OPT_SET_META_CONTEXT {
            // A SET replaces the previous selection even when it fails.
            self.meta = None;
        }
        if !self.structured {
            return self
                .reply(
                    option,
                    REP_ERR_INVALID,
                    b"negotiate structured replies first",
                )
                .await;
        }
        let req = match decode::meta_context_request(data) {
            Ok(r) => r,
            Err(m) => return self.reply(option, REP_ERR_INVALID, m.0.as_bytes()).await,
        };
        if self.inner.export(&req.export).is_none() {
            let msg = format!("no export named {:?}", req.export);
            return self.reply(option, REP_ERR_UNKNOWN, msg.as_bytes()).await;
        }
        let matches = if option == OPT_LIST_META_CONTEXT {
            req.queries.is_empty()
                || req
                    .queries
                    .iter()
                    .any(|q| q == "base:" || q == BASE_ALLOCATION)
        } else {
            req.queries.iter().any(|q| q == BASE_ALLOCATION)
        };
        if matches {
            // Listed contexts carry id 0, as the spec asks.
            let id = if option == OPT_SET_META_CONTEXT {
                ALLOCATION_ID
            } else {
                0
            };
            let mut d = id.to_be_bytes().to_vec();
            d.extend_from_slice(BASE_ALLOCATION.as_bytes());
            self.reply(option, REP_META_CONTEXT, &d).await?;
        }
        if option == OPT_SET_META_CONTEXT {
            self.meta = Some((req.export, matches));
        }
        self.reply(option, REP_ACK, &[]).await
    }
}
