//! A per-user token bucket. In-process: behind a load balancer each instance enforces its
//! own share, which bounds abuse without a shared store (a Redis-backed limiter can replace
//! it behind the same interface).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::AppError;

/// Keyed by user id unless said otherwise.
pub struct RateLimiter<K = i32> {
    inner: Arc<Mutex<HashMap<K, TokenBucket>>>,
    per_minute: u32,
}

impl<K> Clone for RateLimiter<K> {
    fn clone(&self) -> Self {
        RateLimiter {
            inner: self.inner.clone(),
            per_minute: self.per_minute,
        }
    }
}

/// Entries kept before idle (full) buckets are dropped, so memory stays bounded.
const MAX_TRACKED: usize = 100_000;

impl<K: Hash + Eq> RateLimiter<K> {
    /// `per_minute` requests a minute per key, with bursts of up to `per_minute`.
    pub fn per_minute(per_minute: u32) -> Self {
        RateLimiter {
            inner: Arc::default(),
            per_minute,
        }
    }

    /// `Ok` to go ahead, or `Err(seconds)` to wait before the next request.
    pub fn check(&self, key: K) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::per_minute(self.per_minute))
            .take(now)
    }

    /// `check` as a handler needs it: a refusal is `429 rate_limited` with `Retry-After`.
    pub fn admit(&self, key: K) -> Result<(), AppError> {
        self.check(key)
            .map_err(|retry_after_seconds| AppError::RateLimited {
                retry_after_seconds,
            })
    }
}

/// One token bucket: `capacity` tokens, refilled evenly over a minute. Small and without
/// allocation, so a WebSocket connection can hold its own.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    capacity: f32,
    tokens: f32,
    updated: Instant,
}

impl TokenBucket {
    pub fn per_minute(per_minute: u32) -> Self {
        let capacity = per_minute.max(1) as f32;
        TokenBucket {
            capacity,
            tokens: capacity,
            updated: Instant::now(),
        }
    }

    fn per_second(&self) -> f32 {
        self.capacity / 60.0
    }

    fn refilled(&self, now: Instant) -> f32 {
        let elapsed = now.duration_since(self.updated).as_secs_f32();
        (self.tokens + elapsed * self.per_second()).min(self.capacity)
    }

    fn is_full(&self, now: Instant) -> bool {
        self.refilled(now) >= self.capacity
    }

    /// Takes a token: `Ok`, or `Err(seconds)` until one is back.
    pub fn take(&mut self, now: Instant) -> Result<(), u64> {
        self.tokens = self.refilled(now);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / self.per_second()).ceil() as u64)
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

    #[test]
    fn a_bucket_refills_over_the_minute() {
        let start = Instant::now();
        let mut bucket = TokenBucket::per_minute(60);
        assert!((0..60).all(|_| bucket.take(start).is_ok()));
        assert_eq!(bucket.take(start), Err(1));
        assert!(
            bucket
                .take(start + std::time::Duration::from_secs(2))
                .is_ok()
        );
    }
}
