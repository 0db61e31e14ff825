//! Serving points: disks of backup points as NBD exports (`xfull serve`)
//! and, through the CLI's FUSE file system, as image files (`xfull
//! mount`). Nothing is restored first: a read fetches the parts (at most
//! 16 MiB of a segment) it covers through restore's part reader (every
//! chunk verified against its id), keeps them in a bounded cache shared
//! by all served disks, and fetches ahead of sequential readers.
//!
//! - [`disk::PointDisk`]: one disk of one point, a read-only
//!   [`crate::nbd::Export`]; damaged data is an `EIO` for its range only
//!   and one typed warning ([`crate::progress::Warning::ServedDataDamaged`]).
//! - [`overlay::Overlay`]: `--writable`: writes, TRIM and WRITE_ZEROES
//!   go to a local sparse file with a persistent block map; the
//!   repository is never written.
//! - [`lease::ServeLease`]: the served points are pinned for as long as
//!   they are served, so gc leaves their data alone.
//!
//! The design and its reasons are in docs/design.md, "Serving points".

mod cache;
pub mod disk;
pub mod lease;
pub mod overlay;
mod overlay_disk;
mod part;
pub mod served;

pub use cache::PartCache;
pub use disk::PointDisk;
pub use lease::ServeLease;
pub use served::{MIN_CACHE_BYTES, ServeOptions, ServeSpec, Served};
