//! Per-route rate limits (GCRA via governor), keyed per caller as the route says:
//! identity, OAuth client, client IP, or the whole route.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use portcullis_config::{RateLimitConfig, RateLimitKey};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// Keys kept before idle ones are swept: bounds memory under a flood of new callers.
const SWEEP_ABOVE: usize = 100_000;

/// One route's limiter.
#[derive(Clone)]
pub struct RouteLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    pub key: RateLimitKey,
}

impl RouteLimiter {
    pub fn new(cfg: &RateLimitConfig) -> Self {
        let rps = cfg.requests_per_second.max(0.001);
        // governor counts in whole cells per period: one cell every 1/rps seconds.
        let period = Duration::from_secs_f64(1.0 / rps).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(cfg.burst.unwrap_or_else(|| rps.ceil() as u32).max(1))
            .unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        RouteLimiter {
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(quota)),
            key: cfg.key,
        }
    }

    /// Takes one request for `key`. `Err(seconds)` says when to retry.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        if self.limiter.len() > SWEEP_ABOVE {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(&key.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(wait.as_secs_f64().ceil() as u64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_per_key() {
        let l = RouteLimiter::new(&RateLimitConfig {
            requests_per_second: 1.0,
            burst: Some(2),
            key: RateLimitKey::Identity,
        });
        assert!(l.check("alice").is_ok());
        assert!(l.check("alice").is_ok());
        let retry = l.check("alice").unwrap_err();
        assert!(retry >= 1);
        assert!(l.check("bob").is_ok(), "keys are independent");
    }
}
