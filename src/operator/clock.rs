//! A clock that tests can hold still and move: signature windows, business days and QR
//! expiry all read it, so a test can put the sandbox (and the client checking its
//! signatures) on any day without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::domain::time::UnixMs;

/// Wall-clock time, or a manual time shared by every clone.
#[derive(Clone, Debug)]
pub struct Clock {
    source: Arc<Source>,
}

#[derive(Debug)]
enum Source {
    System,
    Manual(AtomicI64),
}

impl Clock {
    pub fn system() -> Clock {
        Clock { source: Arc::new(Source::System) }
    }

    /// A clock standing at `start_ms` (unix ms) until it is set or advanced.
    pub fn manual(start_ms: i64) -> Clock {
        Clock { source: Arc::new(Source::Manual(AtomicI64::new(start_ms))) }
    }

    pub fn now_ms(&self) -> i64 {
        match &*self.source {
            Source::System => UnixMs::now().0,
            Source::Manual(ms) => ms.load(Ordering::SeqCst),
        }
    }

    pub fn now_s(&self) -> i64 {
        self.now_ms().div_euclid(1_000)
    }

    /// Moves a manual clock; returns false (and does nothing) on the system clock.
    pub fn set_ms(&self, now_ms: i64) -> bool {
        match &*self.source {
            Source::System => false,
            Source::Manual(ms) => {
                ms.store(now_ms, Ordering::SeqCst);
                true
            }
        }
    }

    /// Moves a manual clock forward; returns false (and does nothing) on the system clock.
    pub fn advance_ms(&self, delta_ms: i64) -> bool {
        match &*self.source {
            Source::System => false,
            Source::Manual(ms) => {
                ms.fetch_add(delta_ms, Ordering::SeqCst);
                true
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_is_shared_by_its_clones_and_moves_only_when_told() {
        let clock = Clock::manual(1_000);
        let other = clock.clone();
        assert_eq!(other.now_ms(), 1_000);
        assert!(clock.advance_ms(2_500));
        assert_eq!(other.now_ms(), 3_500);
        assert_eq!(other.now_s(), 3);
        assert!(clock.set_ms(10));
        assert_eq!(other.now_ms(), 10);
        assert!(!Clock::system().set_ms(0));
    }
}
