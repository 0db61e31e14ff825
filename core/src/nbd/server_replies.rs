//! Replies of the server's transmission phase: each written whole under
//! the connection's write lock (data and hole chunks of a read, block
//! status, errors), or given up once the connection's replies are
//! abandoned.

use tokio::io::AsyncWriteExt;

use super::ReadPiece;
use super::error::Errno;
use super::proto::*;
use super::server_options::ALLOCATION_ID;
use super::server_requests::{ABANDONED, Ctx, transfer_bound};

/// Writes one whole reply.
pub(super) async fn send(ctx: &Ctx, parts: &[&[u8]]) -> Result<(), String> {
    let bytes = parts.iter().map(|p| p.len() as u64).sum();
    unless_abandoned(ctx, async {
        let mut w = ctx.writer.lock().await;
        taken_within(ctx, bytes, async {
            for p in parts {
                w.write_all(p).await?;
            }
            w.flush().await
        })
        .await
    })
    .await
}

/// Runs `write` (of a reply of `bytes`, the write lock held) until the
/// client has taken it, or fails once it has not within its bound: a
/// client that stopped reading would hold its slot for ever. The time
/// spent waiting for the lock (other replies going out) is not counted.
async fn taken_within(
    ctx: &Ctx,
    bytes: u64,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    let bound = transfer_bound(ctx.request_timeout, bytes);
    tokio::time::timeout(bound, write)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "a reply of {bytes} bytes was not taken by the client within {} s",
                    bound.as_secs_f64()
                ),
            ))
        })
}

/// Runs `write` (which takes the write lock) until it completes or the
/// connection's replies are abandoned; giving up drops the lock too.
async fn unless_abandoned(
    ctx: &Ctx,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> Result<(), String> {
    let mut abandoned = ctx.abandoned.clone();
    tokio::select! {
        res = write => res.map_err(|e| format!("sending a reply: {e}")),
        Ok(_) = abandoned.wait_for(|a| *a) => Err(ABANDONED.into()),
    }
}

pub(super) async fn send_error(
    ctx: &Ctx,
    cookie: u64,
    errno: Errno,
    msg: &str,
) -> Result<(), String> {
    if !ctx.structured {
        return send(ctx, &[&encode_simple_reply(errno.0, cookie)]).await;
    }
    let msg = &msg.as_bytes()[..msg.len().min(MAX_STRING)];
    let mut p = errno.0.to_be_bytes().to_vec();
    p.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    p.extend_from_slice(msg);
    let h = encode_chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, p.len() as u32);
    send(ctx, &[&h, &p]).await
}

pub(super) async fn read(ctx: &Ctx, cookie: u64, offset: u64, len: u32) -> Result<(), String> {
    if len == 0 {
        return send_empty(ctx, cookie).await;
    }
    let pieces = match ctx.export.read_pieces(offset, len).await {
        Ok(p) => p,
        Err(x) => return send_error(ctx, cookie, x.errno(), &x.to_string()).await,
    };
    let total = pieces.iter().try_fold(0u64, |a, p| a.checked_add(p.len()));
    if total != Some(len as u64) {
        let msg = format!("the export returned {total:?} bytes for a read of {len}");
        return send_error(ctx, cookie, Errno::EIO, &msg).await;
    }
    let pieces: Vec<ReadPiece> = pieces.into_iter().filter(|p| !p.is_empty()).collect();
    if !ctx.structured {
        return send_simple_read(ctx, cookie, &pieces).await;
    }
    let mut heads = Vec::with_capacity(pieces.len());
    let mut at = offset;
    for (i, p) in pieces.iter().enumerate() {
        let flags = if i + 1 == pieces.len() {
            REPLY_FLAG_DONE
        } else {
            0
        };
        let mut h = match p {
            ReadPiece::Data(b) => {
                encode_chunk_header(flags, REPLY_TYPE_OFFSET_DATA, cookie, 8 + b.len() as u32)
                    .to_vec()
            }
            ReadPiece::Zeroes(_) => {
                encode_chunk_header(flags, REPLY_TYPE_OFFSET_HOLE, cookie, 12).to_vec()
            }
        };
        h.extend_from_slice(&at.to_be_bytes());
        if let ReadPiece::Zeroes(n) = p {
            h.extend_from_slice(&n.to_be_bytes());
        }
        heads.push(h);
        at += p.len();
    }
    let mut parts: Vec<&[u8]> = Vec::with_capacity(pieces.len() * 2);
    for (h, p) in heads.iter().zip(&pieces) {
        parts.push(h);
        if let ReadPiece::Data(b) = p {
            parts.push(b);
        }
    }
    send(ctx, &parts).await
}

async fn send_empty(ctx: &Ctx, cookie: u64) -> Result<(), String> {
    if ctx.structured {
        let h = encode_chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0);
        send(ctx, &[&h]).await
    } else {
        send(ctx, &[&encode_simple_reply(0, cookie)]).await
    }
}

async fn send_simple_read(ctx: &Ctx, cookie: u64, pieces: &[ReadPiece]) -> Result<(), String> {
    static ZEROES: [u8; 64 << 10] = [0; 64 << 10];
    let bytes = 16 + pieces.iter().map(|p| p.len()).sum::<u64>();
    unless_abandoned(ctx, async {
        let mut w = ctx.writer.lock().await;
        taken_within(ctx, bytes, async {
            w.write_all(&encode_simple_reply(0, cookie)).await?;
            for p in pieces {
                match p {
                    ReadPiece::Data(b) => w.write_all(b).await?,
                    ReadPiece::Zeroes(n) => {
                        let mut left = *n as usize;
                        while left > 0 {
                            let k = left.min(ZEROES.len());
                            w.write_all(&ZEROES[..k]).await?;
                            left -= k;
                        }
                    }
                }
            }
            w.flush().await
        })
        .await
    })
    .await
}

pub(super) async fn status(
    ctx: &Ctx,
    cookie: u64,
    offset: u64,
    len: u32,
    one: bool,
) -> Result<(), String> {
    let end = offset + len as u64;
    let extents = match ctx.export.extents(offset..end).await {
        Ok(x) => x,
        Err(x) => return send_error(ctx, cookie, x.errno(), &x.to_string()).await,
    };
    // Descriptors from the export's extents, clipped to the request
    // (which also keeps each within 32 bits).
    let mut p = ALLOCATION_ID.to_be_bytes().to_vec();
    let mut at = offset;
    let mut n = 0;
    for x in extents {
        if x.len == 0 || at >= end || n == MAX_STATUS_DESCRIPTORS || (one && n == 1) {
            break;
        }
        let l = x.len.min(end - at);
        p.extend_from_slice(&(l as u32).to_be_bytes());
        p.extend_from_slice(&x.flags.to_be_bytes());
        at += l;
        n += 1;
    }
    if n == 0 {
        let msg = "the export returned no extents";
        return send_error(ctx, cookie, Errno::EIO, msg).await;
    }
    let h = encode_chunk_header(
        REPLY_FLAG_DONE,
        REPLY_TYPE_BLOCK_STATUS,
        cookie,
        p.len() as u32,
    );
    send(ctx, &[&h, &p]).await
}
