//! The cluster-wide rate limiter: GCRA (the generic cell rate algorithm, what
//! the local limiter `governor` runs too) as one Lua script that Redis runs
//! atomically, so every replica takes from the same budget in one round trip.
//!
//! The key holds one number, the theoretical arrival time (TAT) of the next
//! request in microseconds of Redis's own clock (`TIME`), so the replicas'
//! clocks never matter. It expires when its budget is full again: an idle
//! caller costs no memory.

use super::{Redis, Unavailable};
use std::sync::LazyLock;
use std::time::Duration;

/// KEYS[1]: the caller's counter. ARGV[1]: the emission interval (µs between
/// requests at the sustained rate), ARGV[2]: the burst. Returns {allowed (0|1),
/// µs until a refused request may be retried, requests left in the burst now,
/// µs until the whole burst is available again}.
///
/// `replicate_commands` lets a script write after `TIME` on Redis 3.2–4 (from
/// 5 on it is the default, and a no-op).
const GCRA: &str = r"
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
local allow_at = tat + interval - burst * interval
if allow_at > now then
  return {0, allow_at - now, 0, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, 0, math.floor((now - allow_at) / interval), new_tat - now}
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));

/// One route's budget: `burst` requests at once, then one every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub interval: Duration,
    pub burst: u32,
}

/// What the shared limiter said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub allowed: bool,
    /// For a refused request: when one would be allowed.
    pub retry_after: Duration,
    /// Requests the caller may still make at once.
    pub remaining: u64,
    /// When the caller's whole burst is available again.
    pub reset: Duration,
}

/// Takes one request from `key`'s budget: one `EVALSHA` (the script is loaded
/// on the first `NOSCRIPT`, e.g. after Redis restarted empty).
pub async fn take(redis: &Redis, key: &str, budget: Budget) -> Result<Taken, Unavailable> {
    let interval_us = u64::try_from(budget.interval.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let (allowed, retry_us, remaining, reset_us): (i64, i64, i64, i64) = redis
        .run(|mut conn| async move {
            SCRIPT
                .key(key)
                .arg(interval_us)
                .arg(budget.burst)
                .invoke_async(&mut conn)
                .await
        })
        .await?;
    let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    Ok(Taken {
        allowed: allowed == 1,
        retry_after: micros(retry_us),
        remaining: u64::try_from(remaining).unwrap_or(0),
        reset: micros(reset_us),
    })
}
