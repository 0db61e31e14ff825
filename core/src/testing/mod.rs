//! Test support shared by the crates' tests (feature `testing`): an
//! in-memory backend whose clock the test drives, a decorator that
//! injects faults into any backend, one that gives a backend the rights
//! of a least-privilege role, one that plays an archive class, one that
//! plays S3 Object Lock, one that plays a gc replacing an object while
//! it is read, and one that runs a test's hook before a chosen request.

pub mod archive_sim;
pub mod faults;
pub mod hooked;
pub mod lock_sim;
pub mod mem;
pub mod replace_sim;
pub mod role;

pub use archive_sim::ArchiveSim;
pub use faults::{FaultPlan, FaultyBackend};
pub use hooked::{Hook, HookAt, Hooked};
pub use lock_sim::LockSim;
pub use mem::{Clock, MemBackend};
pub use replace_sim::ReplaceSim;
pub use role::{Role, RoleBackend};
