//! The client's side of the fixed newstyle handshake: structured replies,
//! metadata contexts, then `NBD_OPT_GO` (or `NBD_OPT_EXPORT_NAME` for a
//! server without it).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::{Reader, Writer};
use super::decode::{self, Info, OptionReply};
use super::proto::*;
use super::{NbdError, error::colon};

/// An option reply carries at most a few strings: anything longer is
/// refused before it is allocated.
const MAX_OPTION_REPLY: u32 = 64 << 10;
/// Bounds on a list reply (exports or contexts) from a hostile server:
/// each reply is bounded, so is their number and their sum.
const MAX_LIST_ITEMS: usize = 4096;
const MAX_LIST_BYTES: usize = 1 << 20;

/// What the handshake settled.
#[derive(Clone, Debug)]
pub(crate) struct Negotiated {
    pub size: u64,
    pub flags: u16,
    pub structured: bool,
    pub min_block: u32,
    pub preferred_block: u32,
    pub max_payload: u32,
    /// Context ids and names the server selected.
    pub contexts: Vec<(u32, String)>,
}

pub(crate) struct Handshake<'a> {
    pub r: &'a mut Reader,
    pub w: &'a mut Writer,
    pub server: String,
    pub export: String,
    no_zeroes: bool,
}

impl<'a> Handshake<'a> {
    /// Reads the greeting and answers with the client flags.
    pub async fn start(
        r: &'a mut Reader,
        w: &'a mut Writer,
        server: String,
        export: String,
    ) -> Result<Handshake<'a>, NbdError> {
        let mut h = Handshake {
            r,
            w,
            server,
            export,
            no_zeroes: false,
        };
        let mut g = [0u8; 18];
        h.r.read_exact(&mut g).await.map_err(|e| h.io(e))?;
        let flags = decode::greeting(&g).map_err(|m| h.fail(m.0))?;
        h.no_zeroes = flags & FLAG_NO_ZEROES != 0;
        let mut cflags = FLAG_C_FIXED_NEWSTYLE;
        if h.no_zeroes {
            cflags |= FLAG_C_NO_ZEROES;
        }
        h.w.write_all(&cflags.to_be_bytes())
            .await
            .map_err(|e| h.io(e))?;
        Ok(h)
    }

    fn fail(&self, reason: impl Into<String>) -> NbdError {
        NbdError::Handshake {
            server: self.server.clone(),
            reason: reason.into(),
        }
    }

    fn io(&self, e: std::io::Error) -> NbdError {
        let reason = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "the server closed the connection during the handshake".to_string()
        } else {
            format!("handshake failed: {e}")
        };
        self.fail(reason)
    }

    fn refused(&self, option: u32, reply: &OptionReply, data: &[u8]) -> NbdError {
        NbdError::OptionRefused {
            export: self.export.clone(),
            option: option_name(option),
            reply: reply_name(reply.reply),
            message: decode::message(data),
        }
    }

    async fn send(&mut self, option: u32, data: &[u8]) -> Result<(), NbdError> {
        let h = encode_option_header(option, data.len() as u32);
        let res = async {
            self.w.write_all(&h).await?;
            self.w.write_all(data).await?;
            self.w.flush().await
        }
        .await;
        res.map_err(|e| self.io(e))
    }

    /// One reply to `option`, its length checked before reading it.
    async fn reply(&mut self, option: u32) -> Result<(OptionReply, Vec<u8>), NbdError> {
        let mut h = [0u8; 20];
        self.r.read_exact(&mut h).await.map_err(|e| self.io(e))?;
        let reply = decode::option_reply(&h).map_err(|m| self.fail(m.0))?;
        if reply.option != option {
            return Err(self.fail(format!(
                "answered {} while {} was asked",
                option_name(reply.option),
                option_name(option)
            )));
        }
        if reply.len > MAX_OPTION_REPLY {
            return Err(self.fail(format!(
                "a reply of {} bytes to {}",
                reply.len,
                option_name(option)
            )));
        }
        let mut data = vec![0u8; reply.len as usize];
        self.r.read_exact(&mut data).await.map_err(|e| self.io(e))?;
        Ok((reply, data))
    }

    /// Asks for structured replies; `false` when the server has none
    /// (reads then use simple replies, and block status is unavailable).
    pub async fn structured_replies(&mut self) -> Result<bool, NbdError> {
        self.send(OPT_STRUCTURED_REPLY, &[]).await?;
        let (reply, _) = self.reply(OPT_STRUCTURED_REPLY).await?;
        Ok(reply.reply == REP_ACK)
    }

    /// Replies of a listing option until its final ACK, bounded.
    async fn list(&mut self, option: u32, data: &[u8]) -> Result<Vec<(u32, Vec<u8>)>, NbdError> {
        self.send(option, data).await?;
        let mut items = Vec::new();
        let mut bytes = 0;
        loop {
            let (reply, data) = self.reply(option).await?;
            bytes += data.len();
            if bytes > MAX_LIST_BYTES {
                return Err(self.fail(format!(
                    "more than {MAX_LIST_BYTES} bytes of replies to {}",
                    option_name(option)
                )));
            }
            match reply.reply {
                REP_ACK => return Ok(items),
                r if r & REP_FLAG_ERROR != 0 => return Err(self.refused(option, &reply, &data)),
                r => {
                    if items.len() >= MAX_LIST_ITEMS {
                        return Err(self.fail(format!(
                            "more than {MAX_LIST_ITEMS} replies to {}",
                            option_name(option)
                        )));
                    }
                    items.push((r, data));
                }
            }
        }
    }

    /// Selects metadata contexts; every one asked for must exist.
    pub async fn set_meta_contexts(
        &mut self,
        names: &[&str],
    ) -> Result<Vec<(u32, String)>, NbdError> {
        let data = encode_meta_context_request(&self.export, names);
        let items = match self.list(OPT_SET_META_CONTEXT, &data).await {
            // The option names the export: an unknown one is said as
            // such, with the exports there are.
            Err(NbdError::OptionRefused { reply, message, .. })
                if reply == reply_name(REP_ERR_UNKNOWN) =>
            {
                let available = self.list_exports().await.unwrap_or_default();
                return Err(NbdError::ExportNotFound {
                    server: self.server.clone(),
                    export: self.export.clone(),
                    message,
                    available,
                });
            }
            r => r?,
        };
        let mut selected: Vec<(u32, String)> = Vec::new();
        for (kind, data) in items {
            if kind != REP_META_CONTEXT {
                return Err(self.fail(format!("{} to NBD_OPT_SET_META_CONTEXT", reply_name(kind))));
            }
            let (id, name) = decode::meta_context(&data).map_err(|m| self.fail(m.0))?;
            if selected.iter().any(|(i, _)| *i == id) {
                return Err(self.fail(format!("context id {id} given twice")));
            }
            selected.push((id, name));
        }
        for want in names {
            if !selected.iter().any(|(_, n)| n == want) {
                // Say what there is: an unknown dirty bitmap is the
                // usual mistake, and its namespace lists the others.
                let query = match want.rfind(':') {
                    Some(i) => &want[..=i],
                    None => *want,
                };
                let available = self.list_meta_contexts(&[query]).await.unwrap_or_default();
                return Err(NbdError::UnknownContext {
                    export: self.export.clone(),
                    context: want.to_string(),
                    available,
                });
            }
        }
        Ok(selected)
    }

    /// Names of the contexts matching the queries (all if none).
    pub async fn list_meta_contexts(&mut self, queries: &[&str]) -> Result<Vec<String>, NbdError> {
        let data = encode_meta_context_request(&self.export, queries);
        let items = self.list(OPT_LIST_META_CONTEXT, &data).await?;
        let mut names = Vec::new();
        for (kind, data) in items {
            if kind == REP_META_CONTEXT {
                let (_, name) = decode::meta_context(&data).map_err(|m| self.fail(m.0))?;
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Names of the server's exports.
    pub async fn list_exports(&mut self) -> Result<Vec<String>, NbdError> {
        let items = self.list(OPT_LIST, &[]).await?;
        let mut names = Vec::new();
        for (kind, data) in items {
            if kind == REP_SERVER {
                names.push(decode::server_entry(&data).map_err(|m| self.fail(m.0))?);
            }
        }
        Ok(names)
    }

    /// Ends negotiation politely (the server may close without a reply).
    pub async fn abort(&mut self) {
        let _ = self.send(OPT_ABORT, &[]).await;
    }

    /// `NBD_OPT_GO` with a block-size request: enters transmission.
    pub async fn go(
        &mut self,
        structured: bool,
        contexts: Vec<(u32, String)>,
    ) -> Result<Negotiated, NbdError> {
        let data = encode_go_request(&self.export, &[INFO_BLOCK_SIZE]);
        self.send(OPT_GO, &data).await?;
        let mut export = None;
        let mut block = None;
        loop {
            let (reply, data) = self.reply(OPT_GO).await?;
            match reply.reply {
                REP_INFO => match decode::info(&data).map_err(|m| self.fail(m.0))? {
                    Info::Export { size, flags } => export = Some((size, flags)),
                    Info::BlockSize {
                        min,
                        preferred,
                        max,
                    } => block = Some(self.block_sizes(min, preferred, max)?),
                    _ => {}
                },
                REP_ACK => break,
                REP_ERR_UNSUP => return self.export_name(structured, contexts).await,
                REP_ERR_UNKNOWN => {
                    let available = self.list_exports().await.unwrap_or_default();
                    return Err(NbdError::ExportNotFound {
                        server: self.server.clone(),
                        export: self.export.clone(),
                        message: decode::message(&data),
                        available,
                    });
                }
                REP_ERR_TLS_REQD => {
                    return Err(self.fail(format!(
                        "export {:?} requires TLS, which xfull does not support{}",
                        self.export,
                        colon(&decode::message(&data))
                    )));
                }
                r if r & REP_FLAG_ERROR != 0 => return Err(self.refused(OPT_GO, &reply, &data)),
                r => return Err(self.fail(format!("{} to NBD_OPT_GO", reply_name(r)))),
            }
        }
        let Some((size, flags)) = export else {
            return Err(self.fail("NBD_OPT_GO succeeded without NBD_INFO_EXPORT"));
        };
        let (min_block, preferred_block, max_payload) =
            block.unwrap_or((1, 4096, DEFAULT_MAX_PAYLOAD));
        Ok(Negotiated {
            size,
            flags,
            structured,
            min_block,
            preferred_block,
            max_payload,
            contexts,
        })
    }

    /// Checks advertised block sizes; returns (min, preferred, max) with
    /// max rounded down to a multiple of min.
    fn block_sizes(&self, min: u32, preferred: u32, max: u32) -> Result<(u32, u32, u32), NbdError> {
        if !min.is_power_of_two() || min > 64 << 10 {
            return Err(self.fail(format!(
                "minimum block size {min} (a power of 2 up to 64 KiB)"
            )));
        }
        let max = max - max % min;
        if max < min {
            return Err(self.fail(format!(
                "maximum payload {max} below the minimum block {min}"
            )));
        }
        // The preferred size is only a hint for alignment: ignore a bad one.
        let preferred = if preferred.is_power_of_two() && preferred >= min {
            preferred
        } else {
            min.max(4096)
        };
        Ok((min, preferred, max))
    }

    /// The old way into transmission: no error reply, the server just
    /// closes if the export does not exist.
    async fn export_name(
        &mut self,
        structured: bool,
        contexts: Vec<(u32, String)>,
    ) -> Result<Negotiated, NbdError> {
        let name = self.export.clone();
        self.send(OPT_EXPORT_NAME, name.as_bytes()).await?;
        let mut b = [0u8; 10];
        if let Err(e) = self.r.read_exact(&mut b).await {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                return Err(NbdError::ExportNotFound {
                    server: self.server.clone(),
                    export: name,
                    message: "the server closed the connection at NBD_OPT_EXPORT_NAME".into(),
                    available: vec![],
                });
            }
            return Err(self.io(e));
        }
        if !self.no_zeroes {
            let mut z = [0u8; 124];
            self.r.read_exact(&mut z).await.map_err(|e| self.io(e))?;
        }
        let size = u64::from_be_bytes(b[..8].try_into().unwrap_or_default());
        let flags = u16::from_be_bytes([b[8], b[9]]);
        Ok(Negotiated {
            size,
            flags,
            structured,
            min_block: 1,
            preferred_block: 4096,
            max_payload: DEFAULT_MAX_PAYLOAD,
            contexts,
        })
    }
}

/// Structured replies, contexts, then GO.
pub(crate) async fn negotiate(
    h: &mut Handshake<'_>,
    contexts: &[&str],
) -> Result<Negotiated, NbdError> {
    let structured = h.structured_replies().await?;
    let selected = if contexts.is_empty() {
        vec![]
    } else if !structured {
        return Err(NbdError::Unsupported {
            export: h.export.clone(),
            what: "structured replies (needed for block status)",
        });
    } else {
        h.set_meta_contexts(contexts).await?
    };
    h.go(structured, selected).await
}

/// Runs a connect step under the timeout.
pub(crate) async fn within<T>(
    server: &str,
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, NbdError>>,
) -> Result<T, NbdError> {
    tokio::time::timeout(timeout, f).await.unwrap_or_else(|_| {
        Err(NbdError::Handshake {
            server: server.to_string(),
            reason: format!("no answer within {} s", timeout.as_secs_f64()),
        })
    })
}
