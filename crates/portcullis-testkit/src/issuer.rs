//! A development token issuer on loopback: OIDC discovery, a JWKS, key rotation,
//! token minting, a token endpoint for client credentials ([`TokenEndpoint`]),
//! and browser sign-in by authorization code ([`crate::authorize`]).
//! Keys are generated at start; nothing is ever written to disk.
//! Used by the end-to-end tests and by `portcullis demo`.

use crate::authorize::Authorized;
use crate::token_endpoint::TokenEndpoint;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use portcullis_identity::jose::Alg;
use portcullis_identity::keys::{mint_with, KeyError, SigningKey};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;

struct Keys {
    /// Newest first: the first key signs, all are published.
    keys: Vec<SigningKey>,
}

/// A running development issuer.
#[derive(Clone)]
pub struct DevIssuer {
    pub addr: SocketAddr,
    keys: Arc<RwLock<Keys>>,
    jwks_fetches: Arc<AtomicUsize>,
    token: Arc<TokenEndpoint>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl DevIssuer {
    /// Starts on 127.0.0.1 with an OS-chosen port and one ES256 key.
    pub async fn start() -> std::io::Result<DevIssuer> {
        Self::start_with(Alg::ES256).await
    }

    /// Starts with one key of `alg` (RS256, ES256, ES384 or EdDSA).
    pub async fn start_with(alg: Alg) -> std::io::Result<DevIssuer> {
        let key = SigningKey::generate(alg).map_err(std::io::Error::other)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let keys = Arc::new(RwLock::new(Keys { keys: vec![key] }));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let token = Arc::new(TokenEndpoint::default());
        let issuer = format!("http://{addr}");
        let (k, f, t) = (keys.clone(), jwks_fetches.clone(), token.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (k, f, t, issuer) = (k.clone(), f.clone(), t.clone(), issuer.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (k, f, t, issuer) = (k.clone(), f.clone(), t.clone(), issuer.clone());
                        async move { Ok::<_, Infallible>(answer(req, &k, &f, &t, &issuer).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(DevIssuer {
            addr,
            keys,
            jwks_fetches,
            token,
            task: Arc::new(task),
        })
    }

    /// The issuer URL (`iss`), also the base of discovery.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token endpoint's URL (also in discovery as `token_endpoint`).
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The token endpoint: register clients, set lifetimes and outages, count requests.
    pub fn token_endpoint(&self) -> &TokenEndpoint {
        &self.token
    }

    /// The user the next browser sign-in (`GET /authorize`) signs in, with
    /// `claims` added to the ID token (`json!({})` for none).
    pub fn sign_in_as(&self, sub: &str, claims: Value) {
        self.token.sign_ins().sign_in_as(Some((sub, claims)));
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::Relaxed)
    }

    /// Adds a new signing key (same algorithm) in front; the old ones stay published.
    pub fn rotate(&self) -> Result<(), KeyError> {
        let mut keys = self.keys.write().map_err(|_| KeyError::SignFailed)?;
        let alg = keys.keys.first().map(SigningKey::alg).unwrap_or(Alg::ES256);
        keys.keys.insert(0, SigningKey::generate(alg)?);
        Ok(())
    }

    /// Signs `claims` exactly as given with the current key.
    pub fn sign(&self, claims: &Value) -> Result<String, KeyError> {
        let keys = self.keys.read().map_err(|_| KeyError::SignFailed)?;
        let key = keys.keys.first().ok_or(KeyError::SignFailed)?;
        mint_with(key, None, claims)
    }

    /// A token for `sub` and `aud`, valid for `ttl_secs` (negative: already expired),
    /// with `extra` claims merged in (they win over the defaults).
    pub fn token(
        &self,
        sub: &str,
        aud: &str,
        ttl_secs: i64,
        extra: Value,
    ) -> Result<String, KeyError> {
        let now = now();
        let mut claims = json!({
            "iss": self.issuer(),
            "sub": sub,
            "aud": aud,
            "iat": now,
            "exp": now + ttl_secs,
            "jti": format!("{now}-{}", rand_suffix()),
        });
        if let (Some(base), Value::Object(more)) = (claims.as_object_mut(), extra) {
            base.extend(more);
        }
        self.sign(&claims)
    }

    /// Stops serving (simulates an IdP outage).
    pub fn stop(&self) {
        self.task.abort();
    }
}

fn now() -> i64 {
    i64::try_from(crate::unix_now()).unwrap_or(i64::MAX)
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now() as u64);
    h.finish()
}

async fn answer(
    req: Request<Incoming>,
    keys: &RwLock<Keys>,
    fetches: &AtomicUsize,
    token: &TokenEndpoint,
    issuer: &str,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/token" && req.method() == http::Method::POST {
        let authorization = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let sign = |claims: &Value| {
            let keys = keys.read().ok()?;
            mint_with(keys.keys.first()?, None, claims).ok()
        };
        let url = format!("{issuer}/token");
        let answer = token
            .answer(authorization.as_deref(), &body, &url, issuer, sign)
            .await;
        let mut resp = json_response(&answer.body);
        *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
        return resp;
    }
    if req.uri().path() == "/authorize" && req.method() == http::Method::GET {
        let query = req.uri().query().unwrap_or("");
        return match token.sign_ins().authorize(query, |id| token.knows(id)) {
            Authorized::Redirect(location) => {
                let mut resp = Response::new(Full::new(Bytes::new()));
                *resp.status_mut() = StatusCode::FOUND;
                if let Ok(v) = http::HeaderValue::from_str(&location) {
                    resp.headers_mut().insert(http::header::LOCATION, v);
                }
                resp
            }
            Authorized::Refused(status, code) => {
                let mut resp = json_response(&json!({ "error": code }));
                *resp.status_mut() =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                resp
            }
        };
    }
    let body = match req.uri().path() {
        "/.well-known/openid-configuration" => json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "id_token_signing_alg_values_supported": ["ES256", "RS256", "EdDSA"],
        }),
        "/jwks" => {
            fetches.fetch_add(1, Ordering::Relaxed);
            let published: Vec<Value> = keys
                .read()
                .map(|k| k.keys.iter().map(|key| key.public_jwk(None)).collect())
                .unwrap_or_default();
            json!({ "keys": published })
        }
        _ => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"not found")));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            return resp;
        }
    };
    json_response(&body)
}

fn json_response(body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
