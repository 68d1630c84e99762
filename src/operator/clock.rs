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
    /// Wall-clock time moved by an offset in ms: it runs, and can be put on another day.
    Offset(AtomicI64),
}

impl Clock {
    pub fn system() -> Clock {
        Clock { source: Arc::new(Source::System) }
    }

    /// Wall-clock time until it is set or advanced; from then on it runs from there.
    pub fn adjustable() -> Clock {
        Clock { source: Arc::new(Source::Offset(AtomicI64::new(0))) }
    }

    /// A clock standing at `start_ms` (unix ms) until it is set or advanced.
    pub fn manual(start_ms: i64) -> Clock {
        Clock { source: Arc::new(Source::Manual(AtomicI64::new(start_ms))) }
    }

    pub fn now_ms(&self) -> i64 {
        match &*self.source {
            Source::System => UnixMs::now().0,
            Source::Manual(ms) => ms.load(Ordering::SeqCst),
            Source::Offset(offset_ms) => UnixMs::now().0 + offset_ms.load(Ordering::SeqCst),
        }
    }

    /// Whether `set_ms` and `advance_ms` move it (the system clock never moves).
    pub fn can_move(&self) -> bool {
        !matches!(&*self.source, Source::System)
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
            Source::Offset(offset_ms) => {
                offset_ms.store(now_ms - UnixMs::now().0, Ordering::SeqCst);
                true
            }
        }
    }

    /// Moves a manual clock forward; returns false (and does nothing) on the system clock.
    pub fn advance_ms(&self, delta_ms: i64) -> bool {
        match &*self.source {
            Source::System => false,
            Source::Manual(ms) | Source::Offset(ms) => {
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

    #[test]
    fn an_adjustable_clock_runs_from_where_it_is_set() {
        let clock = Clock::adjustable();
        assert!((clock.now_ms() - UnixMs::now().0).abs() < 1_000, "starts at wall-clock time");
        let week_ago = UnixMs::now().0 - 7 * 86_400_000;
        assert!(clock.clone().set_ms(week_ago));
        let read = clock.now_ms();
        assert!(read >= week_ago && read - week_ago < 1_000, "moved to the day it was set to");
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(clock.now_ms() > read, "and runs on from there");
        assert!(clock.advance_ms(86_400_000));
        assert!(clock.now_ms() - week_ago >= 86_400_000);
    }
}
