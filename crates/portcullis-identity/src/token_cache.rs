//! Caches of verified credentials, so a repeated token costs one hash and one
//! lookup instead of a signature verification or an introspection round trip.
//!
//! Keys are keyed 128-bit PRF outputs ([`crate::util::cache_key`]: of the token,
//! plus the introspection endpoint for introspection results) — never the token
//! itself, so a heap dump does not hold reusable credentials. Each entry carries
//! its own lifetime, which never runs past the token's `exp` (+ skew); lookups
//! re-check the wall clock as well, because the cache's own timer is monotonic
//! and coarse.

use crate::metrics::{IdentityMetrics, ResultLabels};
use crate::util::CacheKey;
use moka::future::Cache;
use moka::Expiry;
use prometheus_client::metrics::counter::Counter;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Entries live at most this long even for long-lived tokens, so that a key
/// removed from a JWKS (or a config change) stops old tokens within minutes.
pub(crate) const MAX_ENTRY_TTL: Duration = Duration::from_secs(300);
/// Bound on entries; each is an Identity of a few hundred bytes plus its claims.
pub(crate) const MAX_ENTRIES: u64 = 50_000;

/// A value that knows how long it may be cached.
pub(crate) trait Lifetime {
    fn ttl(&self) -> Duration;
}

struct PerEntry;

impl<K, V: Lifetime> Expiry<K, Arc<V>> for PerEntry {
    fn expire_after_create(
        &self,
        _key: &K,
        value: &Arc<V>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl().min(MAX_ENTRY_TTL))
    }
}

/// The hasher of maps keyed by [`crate::KeyedHash`] outputs (these caches, the
/// proxy's assertion cache). Keys are already outputs of a keyed PRF: uniform, and
/// not predictable without the per-process secret, so there is nothing to gain
/// from hashing them again under SipHash (~250 instructions per lookup); their low
/// 64 bits serve as the hash as they are. Entries still compare whole keys, so
/// even equal hashes could not mix two entries up.
#[derive(Default, Clone, Copy)]
pub struct PrfKeyHasher(u64);

impl Hasher for PrfKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used for `CacheKey` (which takes `write_u128`); kept correct anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = self.0.rotate_left(8) ^ key as u64;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A bounded cache of `Arc<V>` by [`CacheKey`], each entry expiring by its own
/// [`Lifetime`].
pub(crate) struct DigestCache<V: Lifetime + Send + Sync + 'static> {
    inner: Cache<CacheKey, Arc<V>, BuildHasherDefault<PrfKeyHasher>>,
}

impl<V: Lifetime + Send + Sync + 'static> DigestCache<V> {
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            inner: Cache::builder()
                .max_capacity(capacity)
                .expire_after(PerEntry)
                .build_with_hasher(BuildHasherDefault::default()),
        }
    }

    pub(crate) async fn get(&self, key: &CacheKey) -> Option<Arc<V>> {
        self.inner.get(key).await
    }

    pub(crate) async fn insert(&self, key: CacheKey, value: Arc<V>) {
        if value.ttl() > Duration::ZERO {
            self.inner.insert(key, value).await;
        }
    }

    pub(crate) async fn remove(&self, key: &CacheKey) {
        self.inner.invalidate(key).await;
    }

    /// Single-flight fill: concurrent callers for the same key share one `init`.
    /// Errors are not cached.
    pub(crate) async fn get_or_try_insert<E, F>(
        &self,
        key: CacheKey,
        init: F,
    ) -> Result<Arc<V>, Arc<E>>
    where
        F: std::future::Future<Output = Result<Arc<V>, E>>,
        E: Send + Sync + 'static,
    {
        self.inner.try_get_with(key, init).await
    }
}

/// `portcullis_token_cache_total{result}`'s two series, looked up once: counting a
/// lookup is then one atomic add, not a label `String` and a map lookup each time.
/// The series live in the shared [`IdentityMetrics`] family, so every
/// authenticator (and its successors on reload) adds to the same counters.
#[derive(Clone)]
pub(crate) struct CacheCounters {
    hit: Counter,
    miss: Counter,
}

impl CacheCounters {
    pub(crate) fn new(metrics: &IdentityMetrics) -> Self {
        let series = |result: &str| {
            metrics
                .token_cache
                .get_or_create(&ResultLabels {
                    result: result.to_string(),
                })
                .clone()
        };
        Self {
            hit: series("hit"),
            miss: series("miss"),
        }
    }

    pub(crate) fn count(&self, hit: bool) {
        if hit {
            self.hit.inc();
        } else {
            self.miss.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct V(Duration);
    impl Lifetime for V {
        fn ttl(&self) -> Duration {
            self.0
        }
    }

    #[tokio::test]
    async fn zero_ttl_is_not_cached_and_ttl_is_capped() {
        let c = DigestCache::<V>::new(10);
        c.insert(1, Arc::new(V(Duration::ZERO))).await;
        assert!(c.get(&1).await.is_none());
        c.insert(2, Arc::new(V(Duration::from_secs(3600)))).await;
        assert!(c.get(&2).await.is_some());
        assert_eq!(
            PerEntry.expire_after_create(
                &2u128,
                &Arc::new(V(Duration::from_secs(3600))),
                Instant::now()
            ),
            Some(MAX_ENTRY_TTL)
        );
        c.remove(&2).await;
        assert!(c.get(&2).await.is_none());
    }

    #[tokio::test]
    async fn keys_with_equal_low_bits_stay_apart() {
        let c = DigestCache::<V>::new(10);
        let (a, b) = (7u128, 7u128 | (1 << 100));
        c.insert(a, Arc::new(V(Duration::from_secs(1)))).await;
        c.insert(b, Arc::new(V(Duration::from_secs(2)))).await;
        assert_eq!(c.get(&a).await.map(|v| v.0), Some(Duration::from_secs(1)));
        assert_eq!(c.get(&b).await.map(|v| v.0), Some(Duration::from_secs(2)));
        assert!(c.get(&(7 | (1 << 99))).await.is_none());
    }

    #[test]
    fn cache_counters_add_to_the_shared_series() {
        let m = IdentityMetrics::new();
        let (one, two) = (CacheCounters::new(&m), CacheCounters::new(&m));
        one.count(true);
        two.count(true);
        two.count(false);
        assert_eq!(m.cache_count("hit"), 2);
        assert_eq!(m.cache_count("miss"), 1);
    }
}
