//! Change sources: what tells a backup which byte ranges may have changed
//! since the parent point.

pub mod extents;
pub mod parse;
pub mod snapshot;

pub use extents::{Extent, ExtentSet};
