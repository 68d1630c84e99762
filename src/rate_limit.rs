//! Per-caller rate limits (token buckets), so one buggy terminal or stolen token cannot
//! crowd out everyone else. Each instance limits what it serves; with N instances behind a
//! balancer a caller gets at most N times the rate, which is the point of having N.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Most callers tracked at once; past it, idle (full) buckets are dropped first and, if
/// none is idle, new callers are refused until some are.
pub const MAX_TRACKED_CALLERS: usize = 100_000;

/// A refill rate and a burst size, both in requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Requests available, in thousandths (integer arithmetic, no drift).
    milli_tokens: u64,
    updated: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: Rate) -> RateLimiter {
        RateLimiter { rate, buckets: Mutex::new(HashMap::new()) }
    }

    fn full(&self) -> u64 {
        u64::from(self.rate.burst.max(1)) * 1_000
    }

    /// Take one request from `key`'s bucket, or say in how many whole seconds to retry.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), u32> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let full = self.full();
        let per_second = u64::from(self.rate.per_second.max(1));
        if !buckets.contains_key(key) && buckets.len() >= MAX_TRACKED_CALLERS {
            buckets.retain(|_, bucket| refilled(bucket, now, per_second, full) < full);
            if buckets.len() >= MAX_TRACKED_CALLERS {
                return Err(1);
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { milli_tokens: full, updated: now });
        bucket.milli_tokens = refilled(bucket, now, per_second, full);
        bucket.updated = now;
        if bucket.milli_tokens >= 1_000 {
            bucket.milli_tokens -= 1_000;
            Ok(())
        } else {
            let missing = 1_000 - bucket.milli_tokens;
            // Milli-tokens accrue at `per_second` per millisecond.
            let wait_ms = missing.div_ceil(per_second);
            Err(u32::try_from(wait_ms.div_ceil(1_000)).unwrap_or(u32::MAX).max(1))
        }
    }
}

fn refilled(bucket: &Bucket, now: Instant, per_second: u64, full: u64) -> u64 {
    let elapsed_ms = u64::try_from(now.saturating_duration_since(bucket.updated).as_millis()).unwrap_or(u64::MAX);
    bucket.milli_tokens.saturating_add(elapsed_ms.saturating_mul(per_second)).min(full)
}

/// At most `per_window` uses per caller in each fixed window (for rare, sensitive actions such
/// as revealing an ID number, where a per-second bucket would be far too generous).
#[derive(Debug)]
pub struct WindowQuota {
    per_window: u32,
    window_ms: i64,
    /// Caller -> (start of its current window, uses in it).
    uses: Mutex<HashMap<String, (i64, u32)>>,
}

impl WindowQuota {
    pub fn new(per_window: u32, window_ms: i64) -> WindowQuota {
        WindowQuota { per_window, window_ms: window_ms.max(1), uses: Mutex::new(HashMap::new()) }
    }

    /// Count one use by `key` at `now_ms`, or say in how many whole seconds its window ends.
    pub fn check(&self, key: &str, now_ms: i64) -> Result<(), u32> {
        let mut uses = self.uses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let window_start = now_ms - now_ms.rem_euclid(self.window_ms);
        if !uses.contains_key(key) && uses.len() >= MAX_TRACKED_CALLERS {
            uses.retain(|_, (start, _)| *start == window_start);
            if uses.len() >= MAX_TRACKED_CALLERS {
                return Err(1);
            }
        }
        let entry = uses.entry(key.to_owned()).or_insert((window_start, 0));
        if entry.0 != window_start {
            *entry = (window_start, 0);
        }
        if entry.1 < self.per_window {
            entry.1 += 1;
            Ok(())
        } else {
            let left_ms = window_start + self.window_ms - now_ms;
            let left_s = (left_ms + 999) / 1_000;
            Err(u32::try_from(left_s).unwrap_or(u32::MAX).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_is_allowed_then_requests_wait_for_the_refill() {
        let limiter = RateLimiter::new(Rate { per_second: 2, burst: 3 });
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("tok", start), Ok(()));
        }
        assert_eq!(limiter.check("tok", start), Err(1));
        assert_eq!(limiter.check("other", start), Ok(()), "callers have their own buckets");
        // Half a second refills one request at 2 per second.
        assert_eq!(limiter.check("tok", start + Duration::from_millis(500)), Ok(()));
        assert_eq!(limiter.check("tok", start + Duration::from_millis(500)), Err(1));
    }

    #[test]
    fn a_window_quota_refuses_past_its_count_until_the_next_window() {
        let quota = WindowQuota::new(2, 3_600_000);
        assert_eq!(quota.check("tok", 7_200_000), Ok(()));
        assert_eq!(quota.check("tok", 7_200_001), Ok(()));
        assert_eq!(quota.check("tok", 7_200_002), Err(3_600));
        assert_eq!(quota.check("other", 7_200_002), Ok(()));
        assert_eq!(quota.check("tok", 10_800_000), Ok(()), "a new hour");
    }
}
