//! Key files: 32 random bytes in a small text file, an alternative to a
//! password for hosts that run unattended.
//!
//! ```text
//! xfull key file v1
//! <64 hex digits>
//! ```

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::crypto::secret::{Secret, SecretKey};
use crate::error::{Error, Result};

const FIRST_LINE: &str = "xfull key file v1";
/// A key file is 86 bytes; anything much longer is not one.
const MAX_LEN: u64 = 256;

fn source(path: &Path) -> String {
    format!("key file {}", path.display())
}

fn failed(path: &Path, reason: impl Into<String>) -> Error {
    Error::SecretSource {
        secret: source(path),
        reason: reason.into(),
    }
}

/// Writes a new key file at `path` (never over an existing file; readable
/// by its owner only) and returns its secret.
pub fn generate(path: &Path) -> Result<Secret> {
    generate_with(path, |f, text| {
        f.write_all(text).and_then(|()| f.sync_all())
    })
}

/// [`generate`], writing the new file's text with `write` (a failing
/// writer in tests: a full disk cannot be had on demand).
fn generate_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File, &[u8]) -> std::io::Result<()>,
) -> Result<Secret> {
    let key = SecretKey::random();
    let text = Zeroizing::new(format!("{FIRST_LINE}\n{}\n", hex::encode(key.as_bytes())));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| failed(path, format!("cannot create it: {e}")))?;
    if let Err(e) = write(&mut f, text.as_bytes()) {
        // Not a key file, yet named by `--key-file`: a next `init` would
        // find it there and read it rather than make one.
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(failed(path, format!("cannot write it: {e}")));
    }
    Ok(Secret::key_file(&key, source(path)))
}

/// Reads the key file at `path`.
pub fn read(path: &Path) -> Result<Secret> {
    let f = std::fs::File::open(path).map_err(|e| failed(path, e.to_string()))?;
    let mut text = Zeroizing::new(String::new());
    f.take(MAX_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|e| failed(path, format!("not a key file: {e}")))?;
    Ok(Secret::key_file(
        &parse(&text).map_err(|r| failed(path, r))?,
        source(path),
    ))
}

fn parse(text: &str) -> std::result::Result<SecretKey, String> {
    if text.len() as u64 > MAX_LEN {
        return Err("not a key file (too long)".into());
    }
    let mut lines = text.lines();
    if lines.next() != Some(FIRST_LINE) {
        return Err(format!(
            "not a key file (its first line is not {FIRST_LINE:?})"
        ));
    }
    let mut key = Zeroizing::new([0u8; 32]);
    let hex_line = lines.next().unwrap_or_default().trim();
    hex::decode_to_slice(hex_line, &mut *key)
        .map_err(|_| "its key line is not 64 hex digits".to_string())?;
    if lines.any(|l| !l.trim().is_empty()) {
        return Err("not a key file (text after the key)".into());
    }
    Ok(SecretKey::from_bytes(*key))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn generated_files_read_back_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let made = generate(&path).unwrap();
        let read = read(&path).unwrap();
        assert_eq!(made.bytes(), read.bytes());
        assert_eq!(read.bytes().len(), 32);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Never over an existing file.
        let e = generate(&path).unwrap_err();
        assert!(e.to_string().contains("cannot create it"), "{e}");
        assert_eq!(super::read(&path).unwrap().bytes(), made.bytes());
    }

    /// A write that fails (a full disk) left the new file behind, empty
    /// or part-written: not a key file, yet `--key-file` named it, and
    /// the next `init --key-file` found it there and read it instead of
    /// making one (review, 2026-12-07). It is removed.
    #[test]
    fn a_failed_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let e = generate_with(&path, |f, text| {
            f.write_all(&text[..10])?;
            Err(std::io::Error::other("no space left on device"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("cannot write it"), "{e}");
        assert!(!path.exists(), "a part-written key file was left");
    }

    #[test]
    fn missing_or_foreign_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = read(&missing).unwrap_err();
        assert!(
            matches!(&e, Error::SecretSource { secret: source, .. } if source.contains("nope"))
        );
        for text in [
            "",
            "hunter2\n",
            "xfull key file v1\n1234\n",
            &format!("xfull key file v1\n{}\nmore\n", "ab".repeat(32)),
            &"x".repeat(1000),
        ] {
            let p = dir.path().join("bad");
            std::fs::write(&p, text).unwrap();
            let e = read(&p).unwrap_err();
            assert!(matches!(e, Error::SecretSource { .. }), "{text:?}: {e}");
        }
        let p = dir.path().join("crlf");
        std::fs::write(&p, format!("xfull key file v1\r\n{}\r\n", "ab".repeat(32))).unwrap();
        assert_eq!(read(&p).unwrap().bytes(), &[0xab; 32]);
    }
}
