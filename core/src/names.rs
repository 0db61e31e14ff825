//! Validated names for VMs, disks and labels, and the free text stored
//! with points (label values, host names).
//!
//! Names become parts of object keys and file names, so they are checked
//! once, at the edge, and carried as types afterwards. Free text is
//! printed to terminals later: it must not hold what a terminal obeys
//! (escape sequences, line breaks, bidirectional overrides).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Longest VM or disk name.
pub const MAX_NAME_LEN: usize = 128;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 1024;
/// Longest host name, in bytes (DNS names are at most 253).
pub const MAX_HOST_LEN: usize = 255;

/// Characters a terminal may act on instead of showing: control
/// characters (C0, DEL, C1: escape sequences, line breaks, bells) and the
/// invisible format characters that reorder or hide text (bidirectional
/// overrides and isolates, zero-width characters, line and paragraph
/// separators, the byte order mark).
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
        )
}

fn check(kind: &'static str, s: &str) -> Result<(), Error> {
    let bad = |reason: &str| Error::InvalidName {
        kind,
        name: s.to_string(),
        reason: reason.to_string(),
    };
    if s.is_empty() {
        return Err(bad("must not be empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(bad(&format!("longer than {MAX_NAME_LEN} characters")));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(&format!(
            "character {c:?} is not allowed (use A-Z a-z 0-9 . _ -)"
        )));
    }
    // "." and ".." would name a directory, not an entry inside one.
    if s.bytes().all(|b| b == b'.') {
        return Err(bad("must not consist of dots only"));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                check($kind, s)?;
                Ok($ty(s.to_string()))
            }
        }

        impl TryFrom<String> for $ty {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                check($kind, &s)?;
                Ok($ty(s))
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A virtual machine's name: `[A-Za-z0-9._-]{1,128}`, not only dots.
    VmName,
    "VM name"
);
name_type!(
    /// A disk's name within a VM, same rules as [`VmName`].
    DiskName,
    "disk name"
);
name_type!(
    /// A label key, same rules as [`VmName`].
    LabelKey,
    "label key"
);

fn check_text(kind: &'static str, s: &str, max: usize, empty_ok: bool) -> Result<(), Error> {
    let bad = |reason: String| Error::InvalidName {
        kind,
        name: s.to_string(),
        reason,
    };
    if s.is_empty() && !empty_ok {
        return Err(bad("must not be empty".into()));
    }
    if s.len() > max {
        return Err(bad(format!("longer than {max} bytes")));
    }
    if let Some(c) = s.chars().find(|&c| is_unprintable(c)) {
        return Err(bad(format!(
            "character {c:?} is not allowed (control and invisible characters would act on \
             the terminals that print it)"
        )));
    }
    Ok(())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $max:expr, $empty_ok:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $ty(String);

        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                check_text($kind, s, $max, $empty_ok)?;
                Ok($ty(s.to_string()))
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_type!(
    /// A label's value: printable text (may be empty), at most
    /// [`MAX_LABEL_VALUE_LEN`] bytes.
    LabelValue,
    "label value",
    MAX_LABEL_VALUE_LEN,
    true
);
text_type!(
    /// The host a point was taken on: printable text, at most
    /// [`MAX_HOST_LEN`] bytes.
    HostName,
    "host name",
    MAX_HOST_LEN,
    false
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["vm1", "web-01.prod", "a", "A_b", &"x".repeat(128)] {
            ok.parse::<VmName>().unwrap();
        }
    }

    #[test]
    fn refuses_bad_names() {
        for bad in ["", "..", ".", "../x", "a/b", "a b", "é", &"x".repeat(129)] {
            let err = bad.parse::<DiskName>().unwrap_err();
            assert!(matches!(err, Error::InvalidName { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn label_values_and_hosts_are_printable_text() {
        for ok in [
            "",
            "gold",
            "a b",
            "été",
            "ü/x=y",
            &"v".repeat(MAX_LABEL_VALUE_LEN),
        ] {
            ok.parse::<LabelValue>().unwrap();
        }
        for ok in ["node-a", "node a.example", &"h".repeat(MAX_HOST_LEN)] {
            ok.parse::<HostName>().unwrap();
        }
        for bad in [
            "\x1b[2J",
            "a\nb",
            "a\rb",
            "\u{7}",
            "\u{9b}1m",
            "x\u{202e}y",
            "\u{2028}",
        ] {
            for err in [
                bad.parse::<LabelValue>().unwrap_err(),
                bad.parse::<HostName>().unwrap_err(),
            ] {
                assert!(matches!(err, Error::InvalidName { .. }), "{bad:?}: {err}");
                assert!(err.to_string().contains("not allowed"), "{err}");
            }
        }
        assert!("".parse::<HostName>().is_err());
        assert!(
            "v".repeat(MAX_LABEL_VALUE_LEN + 1)
                .parse::<LabelValue>()
                .is_err()
        );
        assert!("h".repeat(MAX_HOST_LEN + 1).parse::<HostName>().is_err());
    }
}
