//! How alive a lease is, as its writer can tell: how long since the
//! last write of it that the store accepted began. A failed refresh is
//! harmless to a backup (its `check` re-verifies everything), but a
//! server's lease never commits, so nothing else would notice that gc
//! may take it for dead (review 104.1).
//!
//! Measured from when that write *began*: the store dated the lease at
//! or after it, so the store's age of the lease is at most ours. Time is
//! the larger of the monotonic clock (tokio's, so tests can pause it)
//! and the wall clock: the monotonic clock stops while the host is
//! suspended, and a host suspended past the TTL must not think its lease
//! alive. A wall clock stepped forward can only make a lease look older
//! than it is: the safe side.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// What the writer knows of its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    Alive,
    /// No refresh succeeded for half the TTL or more.
    AtRisk {
        since: Duration,
    },
    /// No refresh succeeded for the TTL less the clock margin: a sweep
    /// may take the lease for dead. Sticky; the lease must not be
    /// written again (it would pin points gc may have deleted).
    Lapsed {
        since: Duration,
    },
}

/// The last accepted write's start, and whether the lease lapsed.
#[derive(Debug)]
pub struct LeaseLife {
    at_risk: Duration,
    lapse: Duration,
    state: Mutex<(Instant, SystemTime, bool)>,
}

/// When a write began (give it back to [`LeaseLife::written`]).
#[derive(Clone, Copy, Debug)]
pub struct Began(Instant, SystemTime);

impl Began {
    pub fn now() -> Began {
        Began(Instant::now(), SystemTime::now())
    }
}

impl LeaseLife {
    /// A lease of `ttl` whose first write began at `began`. It counts as
    /// lapsed `margin` before the TTL: a write sent just before lands
    /// within it, and the store's clock may run a little faster.
    pub fn new(ttl: Duration, margin: Duration, began: Began) -> LeaseLife {
        LeaseLife {
            at_risk: ttl / 2,
            lapse: ttl.saturating_sub(margin).max(ttl / 2),
            state: Mutex::new((began.0, began.1, false)),
        }
    }

    fn since(last: Instant, wall: SystemTime) -> Duration {
        let wall = SystemTime::now().duration_since(wall).unwrap_or_default();
        last.elapsed().max(wall)
    }

    /// How alive the lease is now.
    pub fn life(&self) -> Life {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let since = Self::since(s.0, s.1);
        if s.2 || since >= self.lapse {
            s.2 = true;
            Life::Lapsed { since }
        } else if since >= self.at_risk {
            Life::AtRisk { since }
        } else {
            Life::Alive
        }
    }

    /// A write that began at `began` was accepted. One accepted after
    /// the lapse does not revive the lease: a sweep may have judged it
    /// dead before it landed.
    pub fn written(&self, began: Began) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.2 || Self::since(s.0, s.1) >= self.lapse {
            s.2 = true;
        } else if began.0 > s.0 {
            *s = (began.0, began.1, false);
        }
    }

    /// How long without an accepted write makes the lease lapse.
    pub fn lapse_after(&self) -> Duration {
        self.lapse
    }
}
