//! `VM@ID` and `VM@latest`, the way users name points.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;
use crate::id::PointId;
use crate::names::VmName;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointSpec {
    pub vm: VmName,
    /// `None` means the VM's latest point.
    pub id: Option<PointId>,
}

impl FromStr for PointSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (vm, id) = s.split_once('@').ok_or_else(|| {
            Error::InvalidArgument(format!(
                "point {s:?} must be VM@ID or VM@latest, e.g. vm1@20261125T194155Z-3fa2"
            ))
        })?;
        let vm = vm.parse()?;
        let id = match id {
            "latest" => None,
            id => Some(id.parse()?),
        };
        Ok(PointSpec { vm, id })
    }
}

impl fmt::Display for PointSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{}@{id}", self.vm),
            None => write!(f, "{}@latest", self.vm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let p: PointSpec = "vm1@latest".parse().unwrap();
        assert_eq!(p.id, None);
        let p: PointSpec = "vm1@20261125T194155Z-3fa2".parse().unwrap();
        assert_eq!(p.to_string(), "vm1@20261125T194155Z-3fa2");
        for bad in ["vm1", "@latest", "vm1@", "vm1@yesterday", "../x@latest"] {
            assert!(bad.parse::<PointSpec>().is_err(), "{bad}");
        }
    }
}
