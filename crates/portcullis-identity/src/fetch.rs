//! HTTP fetching behind a small trait, so the JWKS cache, discovery and
//! introspection are tested offline and the proxy can share one client.
//!
//! [`HttpFetch`] is the real implementation: hyper-util's pooled legacy client over
//! hyper-rustls (TLS and connector from [`crate::https`], the one builder every
//! outbound client uses; `https://` and `http://`), with a
//! whole-request timeout and a cap on the body size. It follows no redirects: an
//! IdP endpoint that redirects is misconfigured, and following would let a
//! redirect move key fetching somewhere else.

use crate::https::{self, Trust};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis_core::error_chain;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed `Send` future, so [`Fetch`] can be used as `Arc<dyn Fetch>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An HTTP response reduced to what identity needs.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    pub status: u16,
    /// The `Cache-Control` header, when present and valid UTF-8.
    pub cache_control: Option<String>,
    pub body: Bytes,
}

/// Why a fetch failed. Messages never contain request bodies or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL")]
    InvalidUrl,
    #[error("request failed: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("response body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Other(String),
}

/// GET and form-POST with a size cap. Implementations must time out, must not
/// follow redirects, and must never log the `authorization` value or the body.
pub trait Fetch: Send + Sync {
    /// GET `url`; the body is refused when longer than `max_body` bytes.
    fn get<'a>(
        &'a self,
        url: &'a str,
        max_body: usize,
    ) -> BoxFuture<'a, Result<FetchResponse, FetchError>>;

    /// POST an `application/x-www-form-urlencoded` `body` (already encoded) with an
    /// optional `Authorization` header value.
    fn post_form<'a>(
        &'a self,
        url: &'a str,
        authorization: Option<&'a str>,
        body: String,
        max_body: usize,
    ) -> BoxFuture<'a, Result<FetchResponse, FetchError>>;

    /// A fetcher like this one that also trusts the CA certificates of `ca_pem`
    /// (`providers[].ca_file`, `credentials[].ca_file`). `None`: this fetcher has
    /// no TLS of its own to extend (test doubles), use it as it is.
    fn trusting(&self, ca_pem: &[u8]) -> Result<Option<Arc<dyn Fetch>>, FetchError> {
        let _ = ca_pem;
        Ok(None)
    }
}

/// The real [`Fetch`]: one pooled HTTPS/HTTP client.
#[derive(Clone)]
pub struct HttpFetch {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFetch")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpFetch {
    /// A client whose every request (connect, TLS, headers, body) must finish
    /// within `timeout`. Uses the aws-lc-rs provider explicitly and the Mozilla
    /// roots, independent of any process-wide rustls default.
    pub fn new(timeout: Duration) -> Result<Self, FetchError> {
        Self::with_extra_roots(timeout, &[])
    }

    /// Like [`new`](Self::new), also trusting the CA certificates in `ca_pem` (for
    /// an IdP behind a private CA, such as a Kubernetes API server). Empty
    /// `ca_pem` means the Mozilla roots only; PEM without a certificate is an error.
    pub fn with_extra_roots(timeout: Duration, ca_pem: &[u8]) -> Result<Self, FetchError> {
        let trust = if ca_pem.is_empty() {
            Trust::Public
        } else {
            Trust::PublicAnd(ca_pem)
        };
        let tls = https::tls_config(trust, None).map_err(|e| FetchError::Other(e.0))?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https::connector(tls, None));
        Ok(Self { client, timeout })
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<FetchResponse, FetchError> {
        let work = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| FetchError::Connect(error_chain(&e)))?;
            let status = response.status().as_u16();
            let cache_control = response
                .headers()
                .get(CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // Refuse early when the server announces an oversized body.
            let announced = response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if announced.is_some_and(|n| n > max_body as u64) {
                return Err(FetchError::TooLarge(max_body));
            }
            let body = Limited::new(response.into_body(), max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        FetchError::TooLarge(max_body)
                    } else {
                        FetchError::Connect(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(FetchResponse {
                status,
                cache_control,
                body,
            })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| FetchError::Timeout)?
    }
}

fn uri(url: &str) -> Result<http::Uri, FetchError> {
    let uri: http::Uri = url.parse().map_err(|_| FetchError::InvalidUrl)?;
    match uri.scheme_str() {
        Some("https") | Some("http") if uri.host().is_some() => Ok(uri),
        _ => Err(FetchError::InvalidUrl),
    }
}

impl Fetch for HttpFetch {
    fn trusting(&self, ca_pem: &[u8]) -> Result<Option<Arc<dyn Fetch>>, FetchError> {
        Ok(Some(Arc::new(Self::with_extra_roots(
            self.timeout,
            ca_pem,
        )?)))
    }

    fn get<'a>(
        &'a self,
        url: &'a str,
        max_body: usize,
    ) -> BoxFuture<'a, Result<FetchResponse, FetchError>> {
        Box::pin(async move {
            let request = Request::builder()
                .method(Method::GET)
                .uri(uri(url)?)
                .header(http::header::ACCEPT, "application/json")
                .header(http::header::USER_AGENT, "portcullis")
                .body(Full::new(Bytes::new()))
                .map_err(|e| FetchError::Other(e.to_string()))?;
            self.send(request, max_body).await
        })
    }

    fn post_form<'a>(
        &'a self,
        url: &'a str,
        authorization: Option<&'a str>,
        body: String,
        max_body: usize,
    ) -> BoxFuture<'a, Result<FetchResponse, FetchError>> {
        Box::pin(async move {
            let mut builder = Request::builder()
                .method(Method::POST)
                .uri(uri(url)?)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(http::header::ACCEPT, "application/json")
                .header(http::header::USER_AGENT, "portcullis");
            if let Some(auth) = authorization {
                let mut value = http::HeaderValue::from_str(auth)
                    .map_err(|_| FetchError::Other("invalid client credentials".into()))?;
                value.set_sensitive(true);
                builder = builder.header(AUTHORIZATION, value);
            }
            let request = builder
                .body(Full::new(Bytes::from(body)))
                .map_err(|_| FetchError::Other("could not build request".into()))?;
            self.send(request, max_body).await
        })
    }
}

/// `max-age` from a `Cache-Control` value, if any (and not `no-store`/`no-cache`,
/// which we read as "0": refresh as soon as we are allowed to).
pub(crate) fn max_age(cache_control: &str) -> Option<Duration> {
    let mut age = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            age = value
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

/// The `Authorization` value of RFC 6749 §2.3.1 client authentication: id and
/// secret form-encoded, joined by `:`, then HTTP Basic. Holds the secret: never log it.
pub(crate) fn basic_authorization(client_id: &str, client_secret: &str) -> String {
    use base64::Engine as _;
    let credentials = format!("{}:{}", form_encode(client_id), form_encode(client_secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(max_age("public, max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn extra_roots_must_hold_a_certificate() {
        assert!(HttpFetch::with_extra_roots(Duration::from_secs(1), b"junk").is_err());
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["ca.internal".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        assert!(HttpFetch::with_extra_roots(Duration::from_secs(1), ca.pem().as_bytes()).is_ok());
    }

    #[test]
    fn only_http_urls() {
        assert!(uri("https://idp.example.com/jwks").is_ok());
        assert!(uri("file:///etc/passwd").is_err());
        assert!(uri("/relative").is_err());
    }
}
