//! Per-route rate limits (GCRA), keyed per caller as the route says: identity,
//! OAuth client, client IP, or the whole route. Counted in Redis when
//! `shared_state` is set (one budget for every replica,
//! [`crate::shared_state::limiter`]), else — and while Redis is down with
//! `on_redis_down: local` — by this replica alone (governor). Both answer in
//! the same terms, so a 429 says the same whichever counted it.

use crate::respond::{RateLimitHeaders, Refusal};
use crate::shared_state::limiter::{self, Budget};
use crate::shared_state::SharedState;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use portcullis_config::{OnRedisDown, RateLimitConfig, RateLimitKey};
use portcullis_core::Reason;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// Keys kept before idle ones are swept: bounds memory under a flood of new callers.
const SWEEP_ABOVE: usize = 100_000;

type Local =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// One route's limiter.
#[derive(Clone)]
pub struct RouteLimiter {
    local: Arc<Local>,
    budget: Budget,
    /// `portcullis:rl:ROUTE:`, the route's Redis keys.
    prefix: Arc<str>,
    pub key: RateLimitKey,
}

impl RouteLimiter {
    pub fn new(route: &str, cfg: &RateLimitConfig) -> Self {
        let rps = cfg.requests_per_second.max(0.001);
        // One request every 1/rps seconds.
        let interval = Duration::from_secs_f64(1.0 / rps).max(Duration::from_micros(1));
        let burst = NonZeroU32::new(cfg.burst.unwrap_or_else(|| rps.ceil() as u32).max(1))
            .unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        RouteLimiter {
            local: Arc::new(RateLimiter::keyed(quota).with_middleware()),
            budget: Budget {
                interval,
                burst: burst.get(),
            },
            prefix: format!("portcullis:rl:{route}:").into(),
            key: cfg.key,
        }
    }

    /// Takes one request for `key`: from the shared budget when `shared` is
    /// set and Redis answers, else from this replica's. The refusal is a 429
    /// (or, with `on_redis_down: deny` while Redis is down, a 503).
    pub async fn check(&self, shared: Option<&SharedState>, key: &str) -> Result<(), Refusal> {
        let Some(shared) = shared else {
            return self.check_local(key);
        };
        let redis_key = crate::shared_state::key(&self.prefix, key);
        match limiter::take(&shared.redis, &redis_key, self.budget).await {
            Ok(taken) if taken.allowed => Ok(()),
            Ok(taken) => Err(self.refusal(taken.retry_after, taken.reset)),
            Err(_) if shared.on_down == OnRedisDown::Local => self.check_local(key),
            Err(_) => Err(Refusal::dependency_unavailable(
                "rate limits cannot be checked right now (shared state unavailable); try again shortly",
            )),
        }
    }

    fn check_local(&self, key: &str) -> Result<(), Refusal> {
        if self.local.len() > SWEEP_ABOVE {
            self.local.retain_recent();
        }
        match self.local.check_key(&key.to_string()) {
            Ok(_) => Ok(()),
            Err(not_until) => {
                let retry = not_until.wait_time_from(DefaultClock::default().now());
                // Refused: the burst refills fully `burst` intervals after the
                // next request would be allowed.
                let reset = retry + self.budget.interval * self.budget.burst.saturating_sub(1);
                Err(self.refusal(retry, reset))
            }
        }
    }

    /// The 429 with `Retry-After` and the IETF `RateLimit` / `RateLimit-Policy`
    /// fields (draft-ietf-httpapi-ratelimit-headers).
    fn refusal(&self, retry: Duration, reset: Duration) -> Refusal {
        let mut r = Refusal::new(Reason::RateLimited);
        let retry_after = ceil_secs(retry).max(1);
        r.retry_after = Some(retry_after);
        r.rate_limit = Some(Box::new(RateLimitHeaders {
            quota: self.budget.burst,
            window: ceil_secs(self.budget.interval * self.budget.burst).max(1),
            remaining: 0,
            reset: ceil_secs(reset).max(retry_after),
        }));
        r
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rps: f64, burst: u32) -> RouteLimiter {
        RouteLimiter::new(
            "r",
            &RateLimitConfig {
                requests_per_second: rps,
                burst: Some(burst),
                key: RateLimitKey::Identity,
            },
        )
    }

    #[tokio::test]
    async fn burst_then_refuse_per_key() {
        let l = limiter(1.0, 2);
        assert!(l.check(None, "alice").await.is_ok());
        assert!(l.check(None, "alice").await.is_ok());
        let refused = l.check(None, "alice").await.unwrap_err();
        assert_eq!(refused.reason, Reason::RateLimited);
        assert!(refused.retry_after.unwrap() >= 1);
        assert!(l.check(None, "bob").await.is_ok(), "keys are independent");
    }

    #[tokio::test]
    async fn refusal_states_the_policy() {
        let l = limiter(10.0, 20);
        for _ in 0..20 {
            l.check(None, "k").await.unwrap();
        }
        let r = l.check(None, "k").await.unwrap_err();
        let h = r.rate_limit.unwrap();
        assert_eq!((h.quota, h.window, h.remaining), (20, 2, 0));
        assert_eq!(r.retry_after, Some(1), "0.1 s rounds up to 1 s");
        assert!(h.reset >= 1 && h.reset <= 2, "{h:?}");
    }
}
