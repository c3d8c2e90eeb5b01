//! A per-user token bucket. In-process: behind a load balancer each instance enforces its
//! own share, which bounds abuse without a shared store (a Redis-backed limiter can replace
//! it behind the same interface).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::client_addr::ClientAddr;
use crate::config::LimitSettings;
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

    /// Gives back the token `check` took: for limits that count failures only, the
    /// attempt takes a token up front (so concurrent attempts cannot all slip through) and
    /// a success returns it.
    pub fn refund(&self, key: &K) {
        let mut buckets = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(bucket.capacity);
        }
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

/// The limits on signing in and signing up. Failed logins count per username *and client
/// address* (so a stranger hammering one account locks out only themselves, not the owner
/// signing in from elsewhere) and per address (so one client cannot spray many usernames);
/// registrations per address. A success gives its login tokens back.
#[derive(Clone)]
pub struct AuthLimits {
    pub login_per_account: RateLimiter<(String, ClientAddr)>,
    pub login_per_address: RateLimiter<ClientAddr>,
    pub registration_per_address: RateLimiter<ClientAddr>,
}

impl AuthLimits {
    pub fn new(limits: &LimitSettings) -> Self {
        AuthLimits {
            login_per_account: RateLimiter::per_minute(limits.login_attempts_per_minute),
            login_per_address: RateLimiter::per_minute(
                limits.login_attempts_per_minute_per_address,
            ),
            registration_per_address: RateLimiter::per_minute(
                limits.registrations_per_minute_per_address,
            ),
        }
    }

    /// Takes a login attempt's tokens, or refuses with `429` and the longer wait.
    pub fn admit_login(
        &self,
        username: &str,
        from: ClientAddr,
    ) -> Result<LoginAttempt<'_>, AppError> {
        // Usernames are at most 32 bytes: a longer key is no account, and bounds what the
        // limiter holds.
        let account = (username.chars().take(33).collect::<String>(), from);
        let by_address = self.login_per_address.check(from);
        let by_account = self.login_per_account.check(account.clone());
        match (by_address, by_account) {
            (Ok(()), Ok(())) => Ok(LoginAttempt {
                limits: self,
                account,
            }),
            (address, account_result) => {
                // Whichever bucket did admit keeps its token: the attempt was made.
                let wait = [address.err(), account_result.err()]
                    .into_iter()
                    .flatten()
                    .max()
                    .unwrap_or(1);
                Err(AppError::RateLimited {
                    retry_after_seconds: wait,
                })
            }
        }
    }
}

/// An admitted login: `succeeded` gives its tokens back; dropped, it counts as a failure.
pub struct LoginAttempt<'a> {
    limits: &'a AuthLimits,
    account: (String, ClientAddr),
}

impl LoginAttempt<'_> {
    pub fn succeeded(self) {
        self.limits.login_per_address.refund(&self.account.1);
        self.limits.login_per_account.refund(&self.account);
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

    #[test]
    fn a_refund_gives_one_token_back_and_never_more_than_the_capacity() {
        let limiter = RateLimiter::per_minute(2);
        assert!(limiter.check(7).is_ok());
        assert!(limiter.check(7).is_ok());
        assert!(limiter.check(7).is_err());
        limiter.refund(&7);
        assert!(limiter.check(7).is_ok());
        limiter.refund(&7);
        limiter.refund(&7);
        limiter.refund(&7);
        assert!(limiter.check(7).is_ok());
        assert!(limiter.check(7).is_ok());
        assert!(limiter.check(7).is_err(), "refunds stop at the capacity");
    }
}
