//! Silence on a connection, timed from the last sign of progress: an
//! upload the server stops taking (no piece of the body taken for 20 s),
//! or an answer that does not come once the connection has the body's
//! last byte (`Timeouts::answer_after`: 30 s, plus what may still be in
//! transit at the floor rate).
//!
//! The SDK's read timeout cannot say this: it counts from the moment the
//! request starts, so an upload's own transfer eats into it, and a 32 MiB
//! pack would need 9 Mbit/s to finish in time. Nor can its stalled-stream
//! protection for uploads: it counts the bytes the connection takes from
//! the body, and a body in memory is one frame, taken whole at once.
//! So the body is handed over here in pieces, which hyper takes as the
//! socket takes bytes, and each piece taken is progress.
//!
//! This sits in front of the real connector only, below the request
//! budget, so a retry waiting for its slot is not counted as silence.
//! Both failures are timeouts to the SDK: `transport.rs` classifies them
//! as a server that stopped answering (2 attempts).

use std::pin::Pin;
use std::task::{Context, Poll};

use aws_sdk_s3::config::{HttpClient, RuntimeComponents, SharedHttpClient};
use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

use crate::client::Timeouts;

/// The most of a body handed to the connection at once: small next to
/// what 20 s move at the floor (1.25 MiB), large enough that a 32 MiB
/// pack is 128 frames (64 KiB pieces measured no faster or slower on
/// loopback, within the noise of 230-260 ms per pack).
const PIECE: usize = 256 << 10;

/// An HTTP client whose requests fail on silence.
#[derive(Debug)]
pub(crate) struct Watched {
    pub inner: SharedHttpClient,
    pub timeouts: Timeouts,
}

impl HttpClient for Watched {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        // Rebuilt per call and stateless, like the budget's wrapper; the
        // inner client keeps the connection pool.
        SharedHttpConnector::new(WatchedConnector {
            inner: self.inner.http_connector(settings, components),
            timeouts: self.timeouts,
        })
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct WatchedConnector {
    inner: SharedHttpConnector,
    timeouts: Timeouts,
}

/// How far a request's body has gone.
#[derive(Clone, Copy, Debug)]
struct Progress {
    /// When the last piece was taken (at first: when the request started).
    at: Instant,
    /// Whether that was the end of the body.
    done: bool,
}

/// Why a request was given up on.
#[derive(Debug, thiserror::Error)]
enum Silent {
    #[error("upload stalled: the connection took no more of the body for {0} s")]
    Stalled(u64),
    #[error("no response within {0} s of sending the request")]
    Unanswered(u64),
}

impl HttpConnector for WatchedConnector {
    fn call(&self, mut request: HttpRequest) -> HttpConnectorFuture {
        let length = request.body().content_length().unwrap_or(0);
        let (stall, answer) = (self.timeouts.stall, self.timeouts.answer_after(length));
        let body = std::mem::replace(request.body_mut(), SdkBody::taken());
        let done = Body::is_end_stream(&body);
        let (progress, seen) = watch::channel(Progress {
            at: Instant::now(),
            done,
        });
        *request.body_mut() = if done {
            body
        } else {
            SdkBody::from_body_1_x(Pieces {
                inner: body,
                current: Bytes::new(),
                progress: Some(progress),
            })
        };
        let call = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            tokio::select! {
                answer = call => answer,
                silent = silence(seen, stall, answer) => {
                    Err(ConnectorError::timeout(Box::new(silent)))
                }
            }
        })
    }
}

/// Resolves when the request has been silent too long: its body taken no
/// further for `stall`, or no answer `answer` after its last piece.
async fn silence(mut seen: watch::Receiver<Progress>, stall: Duration, answer: Duration) -> Silent {
    loop {
        let p = *seen.borrow_and_update();
        let (limit, failure) = if p.done {
            (answer, Silent::Unanswered(answer.as_secs()))
        } else {
            (stall, Silent::Stalled(stall.as_secs()))
        };
        tokio::select! {
            () = tokio::time::sleep_until(p.at + limit) => return failure,
            moved = seen.changed() => {
                // The body was dropped: the connection has all it will
                // take of it (a failed request ends on its own), so only
                // the answer is awaited, from the last piece taken.
                if moved.is_err() {
                    tokio::time::sleep_until(p.at + answer).await;
                    return Silent::Unanswered(answer.as_secs());
                }
            }
        }
    }
}

/// A request body handed over in pieces of at most [`PIECE`], each taken
/// one reported as progress.
struct Pieces {
    inner: SdkBody,
    /// The rest of the frame being handed over.
    current: Bytes,
    progress: Option<watch::Sender<Progress>>,
}

impl Pieces {
    /// Reports a piece taken; `last` when nothing can follow it.
    fn report(&mut self, last: bool) {
        let done = last || self.is_end_stream();
        if let Some(p) = &self.progress {
            p.send_replace(Progress {
                at: Instant::now(),
                done,
            });
        }
        if done {
            self.progress = None;
        }
    }
}

impl Body for Pieces {
    type Data = Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.current.is_empty() {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.current = data,
                    // Trailers end a body.
                    Err(trailers) => {
                        self.report(true);
                        return Poll::Ready(Some(Ok(trailers)));
                    }
                },
                Poll::Ready(None) => {
                    self.report(true);
                    return Poll::Ready(None);
                }
                other => return other,
            }
        }
        let n = self.current.len().min(PIECE);
        let piece = self.current.split_to(n);
        // A sized body's last piece may be its end: hyper does not always
        // ask again.
        self.report(false);
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.current.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let (rest, current) = (self.inner.size_hint(), self.current.len() as u64);
        let mut hint = SizeHint::new();
        // Upper first: a lower bound above the upper one panics.
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + current);
        }
        hint.set_lower(rest.lower() + current);
        hint
    }
}
