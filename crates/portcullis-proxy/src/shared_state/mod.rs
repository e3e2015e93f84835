//! State shared by every replica through Redis (SPEC §2 `shared_state`): the
//! cluster-wide rate limits ([`limiter`]) today, login sessions and revocations
//! through the same [`Redis`] handle.
//!
//! One handle per process, kept across config reloads while `shared_state` is
//! unchanged. It wraps the redis crate's `ConnectionManager`: a multiplexed
//! connection that pipelines every concurrent command (a request costs one round
//! trip and no pool checkout) and reconnects by itself; one per thread that
//! uses it ([`per_thread`]), so a request's Redis exchange stays on its worker.
//!
//! Up or down: every command is bounded by `shared_state.timeout`, so a dead or
//! hung Redis never holds a request longer than that; a failed call sends its
//! request to the fallback. A few failures in a row, or a failed probe, mark
//! Redis down (one warning); while down, callers skip Redis at once (no waiting on
//! it per request) and a probe (`PING` every [`PROBE_EVERY`]) notices when it
//! answers again (one info line). `portcullis_shared_state_up` follows.
//!
//! The URL may hold a password: only [`portcullis_config::redact_url_password`]'s
//! form of it is ever logged, and error texts from the client are scrubbed of it.

pub mod limiter;
mod per_thread;

use portcullis_config::{OnRedisDown, SharedStateConfig};
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the probe pings Redis, whether it is up or down: a dead Redis is
/// noticed within this even without traffic, a recovered one within this too.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// The longest a (re)connection attempt may take (TCP, TLS, AUTH, SELECT).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Failed calls in a row that mark Redis down. One slow answer (a busy host,
/// a fork for a snapshot) only sends that request to the fallback; a dead
/// Redis refuses connections at once, so three come within a millisecond.
const DOWN_AFTER: u32 = 3;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Why a Redis call gave no answer. The text is safe to log (no password).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// `shared_state` as the data plane uses it: the Redis handle and what rate
/// limits do while it is down.
#[derive(Clone)]
pub struct SharedState {
    pub redis: Redis,
    pub on_down: OnRedisDown,
}

/// The process's Redis connection and whether it answers. Cheap to clone; a
/// Redis session store keeps a clone and calls [`Redis::run`] (or takes
/// [`Redis::connection`] for multi-step work and reports with
/// [`Redis::report`]).
#[derive(Clone)]
pub struct Redis {
    link: Arc<Link>,
    /// Stops the probe when the last clone goes (a reload to another URL, or
    /// shutdown).
    _probe: Arc<AbortOnDrop>,
}

struct Link {
    /// Tells this link's per-thread connections from an older link's.
    id: u64,
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The probe's connection (and the fallback should a thread's fail to build).
    manager: ConnectionManager,
    state: AtomicU8,
    /// Failed calls since the last success.
    failures: AtomicU32,
    gauge: Gauge,
    timeout: Duration,
    /// The URL as it may be logged.
    shown: String,
    /// The password, to scrub from error texts (a client error could echo it).
    secret: Option<String>,
}

static NEXT_LINK: AtomicU64 = AtomicU64::new(1);

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SharedState {
    /// Connects (lazily: nothing waits for Redis here) and starts the probe.
    /// Needs a Tokio runtime. `gauge` is `portcullis_shared_state_up`.
    pub fn start(cfg: &SharedStateConfig, gauge: Gauge) -> Result<SharedState, String> {
        Ok(SharedState {
            redis: Redis::start(cfg, gauge)?,
            on_down: cfg.on_redis_down,
        })
    }

    /// This state for a reloaded `cfg`: the same connection when only
    /// `on_redis_down` changed (nothing to redial), else `None`.
    pub fn carried_to(&self, before: &SharedStateConfig, cfg: &SharedStateConfig) -> Option<Self> {
        let same_link = before.redis == cfg.redis
            && before.timeout == cfg.timeout
            && before.ca_file == cfg.ca_file;
        same_link.then(|| SharedState {
            redis: self.redis.clone(),
            on_down: cfg.on_redis_down,
        })
    }
}

impl Redis {
    /// What `portcullis check` verifies offline: the URL is one the client
    /// accepts and the CA file is a PEM bundle. No connection is made.
    pub fn check(cfg: &SharedStateConfig) -> Result<(), String> {
        client(cfg).map(drop)
    }

    /// See [`SharedState::start`].
    pub fn start(cfg: &SharedStateConfig, gauge: Gauge) -> Result<Redis, String> {
        Self::start_probing_every(cfg, gauge, PROBE_EVERY)
    }

    /// [`Redis::start`] with another probe period (tests).
    fn start_probing_every(
        cfg: &SharedStateConfig,
        gauge: Gauge,
        every: Duration,
    ) -> Result<Redis, String> {
        let client = client(cfg)?;
        let timeout = cfg.timeout.get();
        // No response timeout in the client: each request is bounded by
        // `timeout` around its whole exchange, the probe by its own longer one.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // The probe retries every second; the manager need not retry long itself.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let shown = cfg.redacted_redis_url();
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| format!("shared_state.redis `{shown}`: {e}"))?;
        gauge.set(0);
        let link = Arc::new(Link {
            id: NEXT_LINK.fetch_add(1, Ordering::Relaxed),
            client,
            config,
            manager,
            state: AtomicU8::new(UNKNOWN),
            failures: AtomicU32::new(0),
            gauge,
            timeout,
            shown,
            secret: password(&cfg.redis),
        });
        let probe = tokio::spawn(probe(link.clone(), every));
        Ok(Redis {
            link,
            _probe: Arc::new(AbortOnDrop(probe)),
        })
    }

    /// False once a call failed, until the probe reaches Redis again. Callers
    /// that are down skip Redis instead of waiting on it.
    pub fn is_up(&self) -> bool {
        self.link.state.load(Ordering::Relaxed) != DOWN
    }

    /// The bound on one call (`shared_state.timeout`).
    pub fn timeout(&self) -> Duration {
        self.link.timeout
    }

    /// This thread's multiplexed connection (see [`per_thread`]), for work
    /// [`Redis::run`] does not fit. Never waits.
    pub fn connection(&self) -> ConnectionManager {
        per_thread::connection(&self.link)
    }

    /// Runs one exchange with Redis, bounded by the timeout. While Redis is
    /// down it fails at once; failures and timeouts in a row mark it down. A connection
    /// found dropped (Redis restarted since this thread last used it) is
    /// retried once on the fresh one the manager dials, within the same bound.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, Unavailable>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(Unavailable("Redis is down".into()));
        }
        let exchange = async {
            match call(self.connection()).await {
                Err(e) if e.is_unrecoverable_error() => call(self.connection()).await,
                done => done,
            }
        };
        let result = tokio::time::timeout(self.link.timeout, exchange).await;
        self.report(result)
    }

    /// Records the outcome of a call made on [`Redis::connection`] (a timeout
    /// elapsed, or the client's answer) and hands it back with a loggable error.
    pub fn report<T>(
        &self,
        result: Result<RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, Unavailable> {
        self.link.report(result, DOWN_AFTER)
    }
}

impl Link {
    /// Records one call's outcome: a success means up; `down_after` failures in
    /// a row mean down.
    fn report<T>(
        &self,
        result: Result<RedisResult<T>, tokio::time::error::Elapsed>,
        down_after: u32,
    ) -> Result<T, Unavailable> {
        let error = match result {
            Ok(Ok(value)) => {
                self.failures.store(0, Ordering::Relaxed);
                self.mark(UP, None);
                return Ok(value);
            }
            Ok(Err(e)) => self.scrub(&e.to_string()),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= down_after {
            self.mark(DOWN, Some(&error));
        }
        Err(Unavailable(error))
    }

    /// Moves to `to`; a change of state is logged once and shown by the gauge.
    fn mark(&self, to: u8, error: Option<&str>) {
        let from = self.state.swap(to, Ordering::Relaxed);
        if from == to {
            return;
        }
        if to == UP {
            self.gauge.set(1);
            if from == DOWN {
                tracing::info!(redis = %self.shown, "shared state: Redis answers again; limits are shared again");
            } else {
                tracing::info!(redis = %self.shown, "shared state: connected to Redis");
            }
        } else {
            self.gauge.set(0);
            tracing::warn!(
                redis = %self.shown,
                error = error.unwrap_or(""),
                "shared state: Redis unreachable; rate limits follow on_redis_down until it answers"
            );
        }
    }

    fn scrub(&self, text: &str) -> String {
        scrub(text, self.secret.as_deref())
    }
}

/// `text` with every occurrence of `secret` replaced by `***`.
fn scrub(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(secret) if !secret.is_empty() => text.replace(secret, "***"),
        _ => text.to_string(),
    }
}

/// Pings Redis every `every` ([`PROBE_EVERY`]) for as long as the handle lives: the
/// only way back from down, and the gauge's truth when there is no traffic.
async fn probe(link: Arc<Link>, every: Duration) {
    // A ping waits longer than a request would: it may carry a reconnection.
    let wait = CONNECT_TIMEOUT + link.timeout;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut conn = link.manager.clone();
        let started = tokio::time::Instant::now();
        let ping = tokio::time::timeout(wait, async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await;
        match ping {
            // Up only when it answers as fast as a request needs: a Redis that
            // takes seconds would fail every request and flap.
            Ok(Ok(_)) if started.elapsed() > link.timeout => {}
            // The probe waited long enough: one failure of its own means down.
            ping => {
                let _ = link.report(ping, 1);
            }
        }
    }
}

/// The client for `cfg` (no I/O): the URL parsed by the redis crate, and for
/// `rediss://` with `ca_file` that bundle as the only trusted roots.
fn client(cfg: &SharedStateConfig) -> Result<redis::Client, String> {
    let shown = cfg.redacted_redis_url();
    let secret = password(&cfg.redis);
    let scrub = |e: redis::RedisError| {
        format!(
            "shared_state.redis `{shown}`: {}",
            scrub(&e.to_string(), secret.as_deref())
        )
    };
    match &cfg.ca_file {
        None => redis::Client::open(cfg.redis.as_str()).map_err(scrub),
        Some(file) => {
            // Checked as PEM here so that a bad file fails `check`, not the
            // first connection.
            crate::tls::load_certs(file).map_err(|e| format!("shared_state.ca_file: {e}"))?;
            let pem = std::fs::read(file)
                .map_err(|e| format!("shared_state.ca_file: {file}: cannot read: {e}"))?;
            redis::Client::build_with_tls(
                cfg.redis.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(scrub)
        }
    }
}

/// Keys longer than this are hashed: a subject is the caller's (verified, but
/// unbounded) and Redis keeps every key in memory.
const MAX_KEY: usize = 200;

/// The Redis key `prefix` + `caller` (e.g. `portcullis:rl:ROUTE:` + the
/// caller's key), hashed when `caller` is long.
pub fn key(prefix: &str, caller: &str) -> String {
    if caller.len() <= MAX_KEY {
        return format!("{prefix}{caller}");
    }
    format!("{prefix}sha256:{}", sha256_hex(caller.as_bytes()))
}

/// SHA-256 of `data` in lowercase hex: how values that Redis must not hold
/// (long, or identifying) are written there.
pub fn sha256_hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut hex = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The password part of a URL's userinfo, as written.
fn password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let userinfo = &rest[..rest[..end].rfind('@')?];
    let raw = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    Some(raw.to_string())
}

#[cfg(test)]
pub(crate) mod tests;
