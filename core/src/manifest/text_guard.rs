//! A reader that refuses CBOR text and byte strings longer than a limit
//! before the parser reads them.
//!
//! The CBOR parser allocates a string as long as its header says while it
//! reads it, unknown fields included: a manifest of a few bytes could ask
//! for hundreds of MB for its host name. Every CBOR byte is either part of
//! an item's head or the payload of a string, so following heads and
//! skipping payloads, without knowing the structure, finds every string's
//! length as soon as its head has passed.

use std::io::{self, Read};

/// Where the scan is in the byte stream.
#[derive(Clone, Copy, Debug)]
enum State {
    /// At the first byte of an item's head.
    Head,
    /// Reading the `left` remaining bytes of a head's argument.
    Argument { major: u8, left: u8, value: u64 },
    /// Inside a string's payload, `left` bytes to go.
    Payload { left: u64 },
}

#[derive(Debug)]
pub(super) struct TextGuard<R> {
    inner: R,
    max: u64,
    state: State,
    fault: Option<String>,
}

impl<R: Read> TextGuard<R> {
    pub(super) fn new(inner: R, max: u64) -> Self {
        TextGuard {
            inner,
            max,
            state: State::Head,
            fault: None,
        }
    }

    /// Why the guard stopped the stream, if it did.
    pub(super) fn fault(&self) -> Option<&str> {
        self.fault.as_deref()
    }

    fn scan(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while let Some(&b) = bytes.first() {
            match &mut self.state {
                State::Payload { left } => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Head;
                    }
                    bytes = &bytes[n as usize..];
                    continue;
                }
                State::Head => {
                    let (major, info) = (b >> 5, b & 0x1f);
                    match info {
                        0..=23 => self.item(major, u64::from(info))?,
                        24..=27 => {
                            self.state = State::Argument {
                                major,
                                left: 1 << (info - 24),
                                value: 0,
                            }
                        }
                        // Indefinite-length strings are chunks without a
                        // total; xfull never writes them.
                        31 if major == 2 || major == 3 => {
                            return Err("holds an indefinite-length string".into());
                        }
                        // Indefinite arrays and maps, and their end.
                        31 if matches!(major, 4 | 5 | 7) => {}
                        _ => return Err(format!("holds a malformed CBOR head {b:#04x}")),
                    }
                }
                State::Argument { major, left, value } => {
                    *value = (*value << 8) | u64::from(b);
                    *left -= 1;
                    if *left == 0 {
                        let (major, value) = (*major, *value);
                        self.state = State::Head;
                        self.item(major, value)?;
                    }
                }
            }
            bytes = &bytes[1..];
        }
        Ok(())
    }

    /// An item's head is complete: a string's payload follows.
    fn item(&mut self, major: u8, value: u64) -> Result<(), String> {
        if major == 2 || major == 3 {
            if value > self.max {
                let what = if major == 2 { "byte string" } else { "text" };
                return Err(format!(
                    "holds a {what} of {value} bytes, more than the {} allowed",
                    self.max
                ));
            }
            if value > 0 {
                self.state = State::Payload { left: value };
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for TextGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &self.fault {
            return Err(io::Error::new(io::ErrorKind::InvalidData, f.clone()));
        }
        let n = self.inner.read(buf)?;
        if let Err(why) = self.scan(&buf[..n]) {
            self.fault = Some(why.clone());
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(cbor: &[u8], max: u64) -> Result<(), String> {
        let mut g = TextGuard::new(cbor, max);
        let mut out = Vec::new();
        // One byte at a time and all at once must agree.
        let whole = g.read_to_end(&mut out).map(|_| ());
        let mut g1 = TextGuard::new(cbor, max);
        let mut byte = [0u8; 1];
        let single = loop {
            match g1.read(&mut byte) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        assert_eq!(whole.is_ok(), single.is_ok());
        whole.map_err(|e| e.to_string())
    }

    fn cbor<T: serde::Serialize>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        out
    }

    #[test]
    fn passes_short_strings_and_refuses_long_ones() {
        let doc = (
            "short",
            vec![1u64, 1 << 40, u64::MAX],
            serde_bytes_like(&[7u8; 40]),
            -5i64,
            1.5f64,
            Some("x".repeat(100)),
            None::<u8>,
        );
        assert!(scan(&cbor(&doc), 100).is_ok());
        let e = scan(&cbor(&("x".repeat(101),)), 100).unwrap_err();
        assert!(e.contains("text of 101 bytes"), "{e}");
        let e = scan(&cbor(&(serde_bytes_like(&[0u8; 101]),)), 100).unwrap_err();
        assert!(e.contains("byte string of 101"), "{e}");
        // A head that claims 2^63 bytes is refused at once.
        let mut huge = vec![0x7b];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert!(scan(&huge, 100).is_err());
        assert!(scan(&[0x7f, 0x61, b'a', 0xff], 100).is_err());
        assert!(scan(&[0x1c], 100).is_err());
    }

    /// A byte string (serde serializes `&[u8]` as an array otherwise).
    fn serde_bytes_like(b: &[u8]) -> ciborium::Value {
        ciborium::Value::Bytes(b.to_vec())
    }
}
