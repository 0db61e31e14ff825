//! Test support shared by the crates' tests (feature `testing`): an
//! in-memory backend whose clock the test drives, and a decorator that
//! injects faults into any backend.

pub mod archive_sim;
pub mod faults;
pub mod mem;

pub use archive_sim::ArchiveSim;
pub use faults::{FaultPlan, FaultyBackend};
pub use mem::{Clock, MemBackend};
