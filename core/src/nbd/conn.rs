//! The byte stream under a connection: a unix or TCP socket, or any
//! `AsyncRead + AsyncWrite` (tests and fuzzing use in-memory pipes), split
//! into a buffered read half and a buffered write half so that one task
//! reads replies while others send requests.

use tokio::io::{AsyncRead, AsyncWrite, BufReader, BufWriter};
use tokio::net::{TcpStream, UnixStream};

use super::NbdError;
use super::uri::Target;

pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
pub(crate) type Reader = BufReader<BoxRead>;
pub(crate) type Writer = BufWriter<BoxWrite>;

/// Headers are small and payloads large: large payloads bypass the
/// buffer (tokio reads them straight into the destination), so this only
/// batches headers.
const BUFFER: usize = 64 << 10;

pub(crate) fn buffered(r: BoxRead, w: BoxWrite) -> (Reader, Writer) {
    (
        BufReader::with_capacity(BUFFER, r),
        BufWriter::with_capacity(BUFFER, w),
    )
}

/// Splits any stream into boxed halves.
pub(crate) fn split<T>(io: T) -> (BoxRead, BoxWrite)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(io);
    (Box::new(r), Box::new(w))
}

/// Connects to a server; errors name the target.
pub(crate) async fn connect(target: &Target) -> Result<(BoxRead, BoxWrite), NbdError> {
    let err = |e: std::io::Error| NbdError::Connect {
        server: target.to_string(),
        message: e.to_string(),
    };
    match target {
        Target::Unix(path) => {
            let s = UnixStream::connect(path).await.map_err(err)?;
            let (r, w) = s.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        Target::Tcp { host, port } => {
            let s = TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(err)?;
            // The spec asks both sides to disable Nagle: a request header
            // must not wait for an ACK of the previous one.
            s.set_nodelay(true).map_err(err)?;
            let (r, w) = s.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
    }
}
