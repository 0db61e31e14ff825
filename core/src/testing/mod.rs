//! Test support shared by the crates' tests (feature `testing`): an
//! in-memory backend whose clock the test drives, a decorator that
//! injects faults into any backend, one that gives a backend the rights
//! of a least-privilege role, one that plays an archive class, one that
//! plays S3 Object Lock, one that plays a gc replacing an object while
//! it is read, one that runs a test's hook before a chosen request, one
//! that counts reads in flight at once, and one that applies some PUTs
//! late, as a server does with a request the client stopped waiting
//! for; and deterministic incompressible bytes.

pub mod archive_sim;
pub mod faults;
pub mod hooked;
pub mod in_flight;
pub mod late_puts;
pub mod lock_sim;
pub mod mem;
pub mod replace_sim;
pub mod role;

pub use archive_sim::ArchiveSim;
pub use faults::{FaultPlan, FaultyBackend};
pub use hooked::{Hook, HookAt, Hooked};
pub use in_flight::InFlight;
pub use late_puts::LatePuts;
pub use lock_sim::LockSim;
pub use mem::{Clock, MemBackend};
pub use replace_sim::ReplaceSim;
pub use role::{Role, RoleBackend};

/// [`xorshift_bytes`] from `seed` spread over 64 bits (times the golden
/// ratio), so that neighbouring seeds (1, 2, 3...) give unrelated bytes:
/// `xorshift_bytes` makes its seed odd, so 2 and 3 give the same.
pub fn seeded_bytes(len: usize, seed: u64) -> Vec<u8> {
    xorshift_bytes(len, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// `len` deterministic, incompressible bytes (xorshift64 from `seed`,
/// made odd): cheap enough for tests that write tens of MiB.
pub fn xorshift_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
