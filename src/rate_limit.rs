//! Per-caller rate limits (token buckets), so one buggy terminal or stolen token cannot
//! crowd out everyone else. Each instance limits what it serves; with N instances behind a
//! balancer a caller gets at most N times the rate, which is the point of having N.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    /// Requests available, in millionths (integer arithmetic, no drift).
    micro_tokens: u64,
    updated: Instant,
}

/// One request, in the bucket's unit.
const REQUEST: u64 = 1_000_000;

#[derive(Debug)]
pub struct RateLimiter {
    /// Requests added per minute (a per-second rate times 60).
    per_minute: u64,
    burst: u64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: Rate) -> RateLimiter {
        RateLimiter::per_minute(rate.per_second.saturating_mul(60), rate.burst)
    }

    /// A limit slower than one request a second (failed sign-ins).
    pub fn per_minute(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_minute: u64::from(per_minute.max(1)),
            burst: u64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn full(&self) -> u64 {
        self.burst * REQUEST
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> u64 {
        let elapsed_ms = now.saturating_duration_since(bucket.updated).as_millis();
        // per_minute × 1,000,000 µ-requests / 60,000 ms.
        let added = elapsed_ms.saturating_mul(u128::from(self.per_minute)).saturating_mul(50) / 3;
        u64::try_from(u128::from(bucket.micro_tokens).saturating_add(added)).unwrap_or(u64::MAX).min(self.full())
    }

    /// Whole seconds until `micro_tokens` grow to one request.
    fn retry_after_s(&self, micro_tokens: u64) -> u32 {
        let missing = REQUEST.saturating_sub(micro_tokens);
        let wait_ms = (u128::from(missing) * 3).div_ceil(u128::from(self.per_minute) * 50);
        u32::try_from(wait_ms.div_ceil(1_000)).unwrap_or(u32::MAX).max(1)
    }

    /// Take one request from `key`'s bucket, or say in how many whole seconds to retry.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), u32> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let full = self.full();
        if !buckets.contains_key(key) && buckets.len() >= MAX_TRACKED_CALLERS {
            buckets.retain(|_, bucket| self.refilled(bucket, now) < full);
            if buckets.len() >= MAX_TRACKED_CALLERS {
                return Err(1);
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { micro_tokens: full, updated: now });
        bucket.micro_tokens = self.refilled(bucket, now);
        bucket.updated = now;
        if bucket.micro_tokens >= REQUEST {
            bucket.micro_tokens -= REQUEST;
            Ok(())
        } else {
            Err(self.retry_after_s(bucket.micro_tokens))
        }
    }

    /// Whether `key` has a request left, without taking it: for limits counted only on
    /// failure, asked before the attempt so an exhausted caller is refused unchecked.
    pub fn allows(&self, key: &str, now: Instant) -> Result<(), u32> {
        let buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(bucket) = buckets.get(key) else { return Ok(()) };
        let micro_tokens = self.refilled(bucket, now);
        if micro_tokens >= REQUEST { Ok(()) } else { Err(self.retry_after_s(micro_tokens)) }
    }
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

/// At most `per_key` requests in flight per caller at once, so one caller's slow requests
/// use up only its own share of a lane. A caller is tracked only while it has a request in
/// flight, and at most [`MAX_TRACKED_CALLERS`] at once.
#[derive(Debug)]
pub struct InFlightBudget {
    per_key: u32,
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

/// One request's place in its caller's budget, given back when dropped.
#[derive(Debug)]
pub struct InFlightPermit {
    key: String,
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

impl InFlightBudget {
    pub fn new(per_key: u32) -> InFlightBudget {
        InFlightBudget { per_key: per_key.max(1), in_flight: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// A place for one more request of `key`, or `None` when it already has its share in
    /// flight (or too many callers are in flight at once).
    pub fn try_acquire(&self, key: &str) -> Option<InFlightPermit> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !in_flight.contains_key(key) && in_flight.len() >= MAX_TRACKED_CALLERS {
            return None;
        }
        let count = in_flight.entry(key.to_owned()).or_insert(0);
        if *count >= self.per_key {
            return None;
        }
        *count += 1;
        Some(InFlightPermit { key: key.to_owned(), in_flight: Arc::clone(&self.in_flight) })
    }

    /// Callers with a request in flight now.
    pub fn tracked(&self) -> usize {
        self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }
}

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = in_flight.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_flight.remove(&self.key);
            }
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
    fn a_limit_counted_on_failure_is_asked_first_without_spending() {
        let limiter = RateLimiter::per_minute(6, 2);
        let start = Instant::now();
        assert_eq!(limiter.allows("10.0.0.1", start), Ok(()), "an unknown caller is allowed");
        assert_eq!(limiter.allows("10.0.0.1", start), Ok(()), "asking spends nothing");
        assert_eq!(limiter.check("10.0.0.1", start), Ok(()));
        assert_eq!(limiter.check("10.0.0.1", start), Ok(()));
        assert_eq!(limiter.allows("10.0.0.1", start), Err(10), "six a minute: one each ten seconds");
        assert_eq!(limiter.allows("10.0.0.2", start), Ok(()));
        assert_eq!(limiter.allows("10.0.0.1", start + Duration::from_secs(4)), Err(6));
        assert_eq!(limiter.allows("10.0.0.1", start + Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn each_caller_has_its_own_in_flight_share_given_back_on_drop() {
        let budget = InFlightBudget::new(2);
        let first = budget.try_acquire("tok_a").expect("first");
        let second = budget.try_acquire("tok_a").expect("second");
        assert!(budget.try_acquire("tok_a").is_none(), "a third is over the share");
        let other = budget.try_acquire("tok_b").expect("another caller has its own share");
        drop(first);
        let third = budget.try_acquire("tok_a").expect("a place was given back");
        drop((second, third, other));
        assert_eq!(budget.tracked(), 0, "callers with nothing in flight are forgotten");
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
