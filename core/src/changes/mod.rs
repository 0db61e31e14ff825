//! Change sources: what tells a backup which byte ranges may have changed
//! since the parent point.

pub mod extents;
pub mod parse;
#[cfg(test)]
mod parse_oracle;
pub mod snapshot;

pub use extents::{Extent, ExtentSet};
