//! Caches of verified credentials, so a repeated token costs one hash and one
//! lookup instead of a signature verification or an introspection round trip.
//!
//! Keys are SHA-256 digests (of the token, plus the introspection endpoint for
//! introspection results) — never the token itself, so a heap dump does not hold
//! reusable credentials. Each entry carries its own lifetime, which never runs
//! past the token's `exp` (+ skew); lookups re-check the wall clock as well,
//! because the cache's own timer is monotonic and coarse.

use moka::future::Cache;
use moka::Expiry;
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

/// A bounded cache of `Arc<V>` by 32-byte digest, each entry expiring by its own
/// [`Lifetime`].
pub(crate) struct DigestCache<V: Lifetime + Send + Sync + 'static> {
    inner: Cache<[u8; 32], Arc<V>>,
}

impl<V: Lifetime + Send + Sync + 'static> DigestCache<V> {
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            inner: Cache::builder()
                .max_capacity(capacity)
                .expire_after(PerEntry)
                .build(),
        }
    }

    pub(crate) async fn get(&self, key: &[u8; 32]) -> Option<Arc<V>> {
        self.inner.get(key).await
    }

    pub(crate) async fn insert(&self, key: [u8; 32], value: Arc<V>) {
        if value.ttl() > Duration::ZERO {
            self.inner.insert(key, value).await;
        }
    }

    pub(crate) async fn remove(&self, key: &[u8; 32]) {
        self.inner.invalidate(key).await;
    }

    /// Single-flight fill: concurrent callers for the same key share one `init`.
    /// Errors are not cached.
    pub(crate) async fn get_or_try_insert<E, F>(
        &self,
        key: [u8; 32],
        init: F,
    ) -> Result<Arc<V>, Arc<E>>
    where
        F: std::future::Future<Output = Result<Arc<V>, E>>,
        E: Send + Sync + 'static,
    {
        self.inner.try_get_with(key, init).await
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
        c.insert([1; 32], Arc::new(V(Duration::ZERO))).await;
        assert!(c.get(&[1; 32]).await.is_none());
        c.insert([2; 32], Arc::new(V(Duration::from_secs(3600))))
            .await;
        assert!(c.get(&[2; 32]).await.is_some());
        assert_eq!(
            PerEntry.expire_after_create(
                &[2u8; 32],
                &Arc::new(V(Duration::from_secs(3600))),
                Instant::now()
            ),
            Some(MAX_ENTRY_TTL)
        );
        c.remove(&[2; 32]).await;
        assert!(c.get(&[2; 32]).await.is_none());
    }
}
