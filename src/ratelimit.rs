//! A per-user token bucket. In-process: behind a load balancer each instance enforces its
//! own share, which bounds abuse without a shared store (a Redis-backed limiter can replace
//! it behind the same interface).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Mutex<HashMap<i32, Bucket>>>,
    capacity: f64,
    per_second: f64,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Entries kept before idle (full) buckets are dropped, so memory stays bounded.
const MAX_TRACKED: usize = 100_000;

impl RateLimiter {
    /// `per_minute` requests a minute, with bursts of up to `per_minute`.
    pub fn per_minute(per_minute: u32) -> Self {
        RateLimiter {
            inner: Arc::default(),
            capacity: f64::from(per_minute.max(1)),
            per_second: f64::from(per_minute.max(1)) / 60.0,
        }
    }

    /// `Ok` to go ahead, or `Err(seconds)` to wait before the next request.
    pub fn check(&self, user_id: i32) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED {
            let (capacity, per_second) = (self.capacity, self.per_second);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < capacity
            });
        }
        let bucket = buckets.entry(user_id).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / self.per_second).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_wait() {
        let limiter = RateLimiter::per_minute(3);
        assert!((0..3).all(|_| limiter.check(1).is_ok()));
        let wait = limiter.check(1).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(limiter.check(2).is_ok(), "other users are not affected");
    }
}
