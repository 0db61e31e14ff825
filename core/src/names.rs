//! Validated names for VMs, disks and labels.
//!
//! Names become parts of object keys and file names, so they are checked
//! once, at the edge, and carried as types afterwards.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Longest VM or disk name.
pub const MAX_NAME_LEN: usize = 128;

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
}
