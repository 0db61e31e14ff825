//! NBD URIs in libnbd's syntax (the one qemu, nbdinfo and nbdcopy take):
//!
//! - `nbd://HOST[:PORT]/EXPORT` (TCP, port 10809 by default; IPv6 hosts
//!   in brackets),
//! - `nbd+unix:///EXPORT?socket=PATH`, `nbd+unix://?socket=PATH` (the
//!   empty export name, a server's default export).
//!
//! The export is the path without its leading `/`, percent-decoded.
//! Anything else is refused with the URI and what is wrong, TLS schemes
//! with a hint (TLS is out of scope).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::NbdError;
use super::proto::MAX_STRING;

/// The IANA port of NBD.
pub const DEFAULT_PORT: u16 = 10809;

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
            Target::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// A parsed NBD URI: a server and an export on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NbdUri {
    pub target: Target,
    pub export: String,
}

impl NbdUri {
    pub fn unix(socket: impl Into<PathBuf>, export: impl Into<String>) -> NbdUri {
        NbdUri {
            target: Target::Unix(socket.into()),
            export: export.into(),
        }
    }

    pub fn parse(uri: &str) -> Result<NbdUri, NbdError> {
        let bad = |reason: &str| NbdError::InvalidUri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let Some((scheme, rest)) = uri.split_once("://") else {
            return Err(bad(
                "expected nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH",
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        match scheme.as_str() {
            "nbd" | "nbd+unix" => {}
            "nbds" | "nbds+unix" | "nbds+vsock" => {
                return Err(NbdError::TlsUnsupported {
                    uri: uri.to_string(),
                });
            }
            "nbd+vsock" => return Err(bad("vsock transport is not supported")),
            _ => {
                return Err(bad(&format!(
                    "unknown scheme {scheme:?} (expected nbd or nbd+unix)"
                )));
            }
        }
        if rest.contains('#') {
            return Err(bad("a fragment (#...) has no meaning here"));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let export = decode(path).ok_or_else(|| bad("bad percent-encoding in the export name"))?;
        if export.len() > MAX_STRING {
            return Err(bad("the export name is longer than 4096 bytes"));
        }
        let params = parse_query(query).map_err(|r| bad(&r))?;
        let target = if scheme == "nbd" {
            if let Some((k, _)) = params.first() {
                return Err(bad(&format!("unsupported query parameter {k:?}")));
            }
            tcp_target(authority).map_err(|r| bad(&r))?
        } else {
            if !authority.is_empty() {
                return Err(bad(
                    "nbd+unix:// takes no host: write nbd+unix:///EXPORT?socket=PATH",
                ));
            }
            let mut socket = None;
            for (k, v) in params {
                match k.as_str() {
                    "socket" if socket.is_none() => socket = Some(v),
                    "socket" => return Err(bad("socket= is given twice")),
                    _ => return Err(bad(&format!("unsupported query parameter {k:?}"))),
                }
            }
            match socket {
                Some(s) if !s.is_empty() => Target::Unix(PathBuf::from(s)),
                _ => return Err(bad("nbd+unix:// needs ?socket=PATH")),
            }
        };
        Ok(NbdUri { target, export })
    }
}

impl FromStr for NbdUri {
    type Err = NbdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NbdUri::parse(s)
    }
}

impl fmt::Display for NbdUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let export = encode(&self.export);
        match &self.target {
            Target::Unix(p) => {
                let socket = encode(&p.to_string_lossy());
                write!(f, "nbd+unix:///{export}?socket={socket}")
            }
            Target::Tcp { .. } => write!(f, "nbd://{}/{export}", self.target),
        }
    }
}

fn tcp_target(authority: &str) -> Result<Target, String> {
    if authority.is_empty() {
        return Err("nbd:// needs a host".into());
    }
    if authority.contains('@') {
        return Err("user names are not supported".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err("unclosed '[' in the host".into());
        };
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err("unexpected text after the IPv6 address".into()),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("nbd:// needs a host".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("bad port {p:?} (a number from 1 to 65535)")),
        },
    };
    Ok(Target::Tcp {
        host: host.to_string(),
        port,
    })
}

fn parse_query(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(q) = query else { return Ok(vec![]) };
    let mut out = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = decode(k).ok_or("bad percent-encoding in the query")?;
        let v = decode(v).ok_or("bad percent-encoding in the query")?;
        out.push((k, v));
    }
    Ok(out)
}

/// Percent-decoding to UTF-8; `None` when malformed.
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~/".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}
