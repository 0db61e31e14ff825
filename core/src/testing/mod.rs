//! Test support shared by the crates' tests (feature `testing`): an
//! in-memory backend whose clock the test drives, a decorator that
//! injects faults into any backend, and one that gives a backend the
//! rights of a least-privilege role.

pub mod archive_sim;
pub mod faults;
pub mod mem;
pub mod role;

pub use archive_sim::ArchiveSim;
pub use faults::{FaultPlan, FaultyBackend};
pub use mem::{Clock, MemBackend};
pub use role::{Role, RoleBackend};
