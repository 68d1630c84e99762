//! The in-memory half of terminal replay protection: nonces this instance has accepted,
//! kept until their signature window closes, so a replay to the same instance is refused
//! without a write. Every accepted nonce is also recorded in the database
//! (`terminal_nonces`), which is what other instances and a restarted process go by.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::ids::TerminalId;
use crate::domain::time::UnixMs;

/// Most nonces remembered at once; past it (all still live) requests are refused rather
/// than let through unchecked.
pub const DEFAULT_NONCE_CAPACITY: usize = 1_000_000;

#[derive(Debug)]
pub struct NonceCache {
    capacity: usize,
    seen: Mutex<HashMap<(TerminalId, String), UnixMs>>,
}

/// What the cache says about a nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceVerdict {
    Fresh,
    Replayed,
    /// The cache is full of live nonces.
    Full,
}

impl NonceCache {
    pub fn new(capacity: usize) -> NonceCache {
        NonceCache { capacity, seen: Mutex::new(HashMap::new()) }
    }

    /// Remember `nonce` until `expires_at`, unless it is already remembered.
    pub fn insert(&self, terminal: &TerminalId, nonce: &str, expires_at: UnixMs, now: UnixMs) -> NonceVerdict {
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (terminal.clone(), nonce.to_owned());
        if seen.get(&key).is_some_and(|expiry| *expiry > now) {
            return NonceVerdict::Replayed;
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, expiry| *expiry > now);
            if seen.len() >= self.capacity {
                return NonceVerdict::Full;
            }
        }
        seen.insert(key, expires_at);
        NonceVerdict::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_fresh_once_within_its_window_and_the_cache_stays_bounded() {
        let cache = NonceCache::new(2);
        let terminal = TerminalId::generate();
        let now = UnixMs(1_000);
        assert_eq!(cache.insert(&terminal, "a", UnixMs(5_000), now), NonceVerdict::Fresh);
        assert_eq!(cache.insert(&terminal, "a", UnixMs(5_000), now), NonceVerdict::Replayed);
        assert_eq!(cache.insert(&TerminalId::generate(), "a", UnixMs(5_000), now), NonceVerdict::Fresh);
        assert_eq!(cache.insert(&terminal, "b", UnixMs(5_000), now), NonceVerdict::Full);
        // Once the window closes, room frees up.
        assert_eq!(cache.insert(&terminal, "b", UnixMs(9_000), UnixMs(6_000)), NonceVerdict::Fresh);
    }
}
