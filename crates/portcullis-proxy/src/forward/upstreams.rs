//! A route's upstream endpoints: round-robin with passive health. An endpoint that
//! fails to connect (or answers 502/503) several times in a row is skipped for a
//! while; when every endpoint is ejected the proxy still tries them in turn rather
//! than failing without trying.

use super::client::UpstreamClient;
use super::idle::IdleConnections;
use http::header::HeaderValue;
use http::uri::{Authority, Scheme};
use http::Uri;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Consecutive failures after which an endpoint is ejected.
const EJECT_AFTER: u32 = 3;
/// How long an ejected endpoint is skipped.
const EJECT_FOR: Duration = Duration::from_secs(10);

/// One upstream URL, parsed once at config load.
#[derive(Debug)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix from the upstream URL, without a trailing `/` (often empty).
    pub base_path: String,
    /// `scheme://authority`: the default assertion audience.
    pub origin: String,
    /// `scheme://authority/`, what the connector dials.
    pub connect_uri: Uri,
    /// `host[:port]` without any user info: the `Host` (HTTP/1.1) of a
    /// request that named no host itself; `host_authority` is the same as the
    /// `:authority` of such a request over h2. Both made once, here, so that
    /// neither conversion can fail on a request.
    pub host: HeaderValue,
    pub host_authority: Authority,
    /// Its kept connections.
    pub idle: Arc<IdleConnections>,
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
}

impl Endpoint {
    /// Parses an upstream URL (`http://host:port[/base]` or `https://...`).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid upstream URL `{url}`: {e}"))?;
        let scheme = uri
            .scheme()
            .filter(|s| **s == Scheme::HTTP || **s == Scheme::HTTPS)
            .cloned()
            .ok_or_else(|| format!("upstream `{url}` must start with http:// or https://"))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("upstream `{url}` has no host"))?;
        let base_path = uri.path().trim_end_matches('/').to_string();
        let connect_uri = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| format!("invalid upstream URL `{url}`: {e}"))?;
        let host_port = match authority.port() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => authority.host().to_string(),
        };
        let host = HeaderValue::from_str(&host_port)
            .map_err(|e| format!("invalid upstream host in `{url}`: {e}"))?;
        let host_authority = Authority::try_from(host_port.as_str())
            .map_err(|e| format!("invalid upstream host in `{url}`: {e}"))?;
        Ok(Endpoint {
            connect_uri,
            host,
            host_authority,
            idle: Arc::default(),
            origin: format!("{scheme}://{authority}"),
            scheme,
            authority,
            base_path,
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        })
    }

    fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }
}

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A route's endpoints and the client that reaches them.
pub struct UpstreamPool {
    pub endpoints: Vec<Endpoint>,
    pub client: UpstreamClient,
    /// `login.cookie.name` when login is configured: no answer from these
    /// endpoints may set that cookie or the sign-in cookies named after it
    /// (see [`super::headers::drop_our_set_cookies`]).
    pub login_cookie: Option<String>,
    next: AtomicUsize,
}

impl UpstreamPool {
    pub fn new(endpoints: Vec<Endpoint>, client: UpstreamClient) -> Self {
        UpstreamPool {
            endpoints,
            client,
            login_cookie: None,
            next: AtomicUsize::new(0),
        }
    }

    /// The pool, guarding the login cookie `name` (`None`: login is not configured).
    pub fn guarding_login_cookie(mut self, name: Option<&str>) -> Self {
        self.login_cookie = name.map(str::to_string);
        self
    }

    /// The next endpoint in round-robin order that is not ejected.
    pub fn pick(&self) -> Option<&Endpoint> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        (0..n)
            .map(|i| &self.endpoints[(start + i) % n])
            .find(|e| !e.is_ejected(now))
            .or_else(|| self.endpoints.get(start % n))
    }

    /// Records the outcome of a request to `endpoint`.
    pub fn report(&self, endpoint: &Endpoint, healthy: bool) {
        if healthy {
            endpoint.consecutive_failures.store(0, Ordering::Relaxed);
            return;
        }
        let failures = endpoint
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if failures >= EJECT_AFTER {
            let until = now_ms() + EJECT_FOR.as_millis() as u64;
            endpoint.ejected_until_ms.store(until, Ordering::Relaxed);
            endpoint.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::warn!(upstream = %endpoint.origin, "upstream ejected after repeated failures");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(urls: &[&str]) -> UpstreamPool {
        let eps = urls.iter().map(|u| Endpoint::parse(u).unwrap()).collect();
        UpstreamPool::new(eps, UpstreamClient::plain())
    }

    #[test]
    fn parses_upstreams() {
        let e = Endpoint::parse("http://127.0.0.1:8000/base/").unwrap();
        assert_eq!(e.base_path, "/base");
        assert_eq!(e.origin, "http://127.0.0.1:8000");
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("/just/a/path").is_err());
    }

    #[tokio::test]
    async fn round_robin_skips_ejected() {
        let p = pool(&["http://a:1", "http://b:1"]);
        let first: Vec<String> = (0..4).map(|_| p.pick().unwrap().origin.clone()).collect();
        assert_eq!(
            first,
            ["http://a:1", "http://b:1", "http://a:1", "http://b:1"]
        );
        let a = &p.endpoints[0];
        for _ in 0..EJECT_AFTER {
            p.report(a, false);
        }
        for _ in 0..4 {
            assert_eq!(p.pick().unwrap().origin, "http://b:1");
        }
    }
}
