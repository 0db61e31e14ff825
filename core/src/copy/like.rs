//! Whether a target names and seals content as its source does, which
//! `copy` needs to move stored bytes verbatim: the same segment size and
//! chunking (the same data cut into the same chunks and segments), and
//! the same keys (the same ids, and seals that open in both), or no
//! encryption on either side. `init --like` makes such a target.

use crate::crypto::DataCipher;
use crate::error::{Error, Result};
use crate::repo::Repository;

/// Refuses a target that was not made like `source` (see the module
/// doc), naming every difference; refuses a target that is the source.
/// Costs no request: both are open.
pub fn check(source: &Repository, target: &Repository) -> Result<()> {
    let (s, t) = (source.config(), target.config());
    if s.repo_id == t.repo_id {
        return Err(Error::InvalidArgument(format!(
            "{} is the repository being copied (repository id {}): give another one to --to",
            target.location(),
            t.repo_id
        )));
    }
    let mut differences = Vec::new();
    if s.segment_size != t.segment_size {
        differences.push(format!(
            "segment size {} there, {} here",
            t.segment_size, s.segment_size
        ));
    }
    if s.chunking != t.chunking {
        differences.push(format!(
            "chunks {}/{}/{} min/avg/max there, {}/{}/{} here",
            t.chunking.min,
            t.chunking.avg,
            t.chunking.max,
            s.chunking.min,
            s.chunking.avg,
            s.chunking.max
        ));
    }
    match (source.codec().master_keys(), target.codec().master_keys()) {
        (None, None) => {}
        (Some(a), Some(b)) if a.same_repository(b) => {}
        (Some(_), Some(_)) => differences.push("other encryption keys".into()),
        (Some(_), None) => differences.push("unencrypted, the source is encrypted".into()),
        (None, Some(_)) => differences.push("encrypted, the source is not".into()),
    }
    // Stored bytes move verbatim: AES-256-GCM chunk data (format 4) in a
    // format 2 or 3 target would be unreadable by the builds of its
    // format. (XChaCha20-Poly1305 chunk data in format 4 is read.)
    let sealed = source.codec().is_encrypted() && target.codec().is_encrypted();
    if sealed && s.data_cipher() == DataCipher::Aes256Gcm && t.data_cipher() != s.data_cipher() {
        differences.push(format!(
            "format {}, whose builds cannot read the source's chunk data (format {}, \
             AES-256-GCM)",
            t.stored_format(),
            s.stored_format()
        ));
    }
    if differences.is_empty() {
        return Ok(());
    }
    Err(Error::NotLike {
        from: source.location(),
        target: target.location(),
        reason: differences.join("; "),
    })
}
