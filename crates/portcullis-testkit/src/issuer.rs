//! A development token issuer on loopback: OIDC discovery, a JWKS, key rotation,
//! token minting, a token endpoint for client credentials ([`TokenEndpoint`]),
//! browser sign-in by authorization code ([`crate::authorize`]), and token
//! introspection ([`IntrospectionEndpoint`]).
//! Keys are generated at start; nothing is ever written to disk.
//! Used by every test that needs an identity provider, and by `portcullis demo`.
//!
//! The faults an IdP has in the wild are test controls here: a JWKS other
//! than the issuer's keys (malformed, oversized, an error status), discovery
//! naming another issuer, slow answers, and an outage that also closes the
//! connections already open; and what it saw: requests by path.

use crate::authorize::Authorized;
use crate::introspection::IntrospectionEndpoint;
use crate::lock;
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
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use tokio::net::TcpListener;

struct Keys {
    /// Newest first: the first key signs, all are published.
    keys: Vec<SigningKey>,
}

/// What the issuer serves besides its keys, and what it saw.
#[derive(Default)]
struct Served {
    /// Served at `/jwks` instead of the keys: (status, body).
    jwks: Option<(u16, String)>,
    /// Named as `issuer` in discovery instead of the issuer's own URL.
    announced_issuer: Option<String>,
    /// Requests by path.
    hits: HashMap<String, usize>,
}

/// Everything a connection answers from.
struct Endpoints {
    issuer: String,
    keys: RwLock<Keys>,
    served: Mutex<Served>,
    token: TokenEndpoint,
    introspection: IntrospectionEndpoint,
}

/// A running development issuer.
#[derive(Clone)]
pub struct DevIssuer {
    pub addr: SocketAddr,
    endpoints: Arc<Endpoints>,
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
        let endpoints = Arc::new(Endpoints {
            issuer: format!("http://{addr}"),
            keys: RwLock::new(Keys { keys: vec![key] }),
            served: Mutex::default(),
            token: TokenEndpoint::default(),
            introspection: IntrospectionEndpoint::default(),
        });
        let shared = endpoints.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set: stopping the issuer drops it and
            // closes every one of them, as an outage would.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                // Finished connections leave the set as new ones come.
                while connections.try_join_next().is_some() {}
                let endpoints = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let endpoints = endpoints.clone();
                        async move { Ok::<_, Infallible>(answer(req, &endpoints).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(DevIssuer {
            addr,
            endpoints,
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
        &self.endpoints.token
    }

    /// The introspection endpoint (`{issuer}/introspect`): register opaque
    /// tokens, slow it down, see its calls.
    pub fn introspection(&self) -> &IntrospectionEndpoint {
        &self.endpoints.introspection
    }

    /// The user the next browser sign-in (`GET /authorize`) signs in, with
    /// `claims` added to the ID token (`json!({})` for none).
    pub fn sign_in_as(&self, sub: &str, claims: Value) {
        self.endpoints
            .token
            .sign_ins()
            .sign_in_as(Some((sub, claims)));
    }

    /// How many requests asked for `path` (`/jwks`, `/introspect`,
    /// `/.well-known/openid-configuration`, …).
    pub fn hits(&self, path: &str) -> usize {
        lock(&self.endpoints.served)
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Serves `body` with `status` at `/jwks` instead of the issuer's keys: a
    /// JWKS of the test's own keys, or a broken one.
    pub fn serve_jwks(&self, status: u16, body: String) {
        lock(&self.endpoints.served).jwks = Some((status, body));
    }

    /// Discovery names `issuer` as the issuer from now on.
    pub fn announce_issuer(&self, issuer: &str) {
        lock(&self.endpoints.served).announced_issuer = Some(issuer.to_string());
    }

    /// Adds a new signing key (same algorithm) in front; the old ones stay published.
    pub fn rotate(&self) -> Result<(), KeyError> {
        let mut keys = self
            .endpoints
            .keys
            .write()
            .map_err(|_| KeyError::SignFailed)?;
        let alg = keys.keys.first().map(SigningKey::alg).unwrap_or(Alg::ES256);
        keys.keys.insert(0, SigningKey::generate(alg)?);
        Ok(())
    }

    /// Signs `claims` exactly as given with the current key.
    pub fn sign(&self, claims: &Value) -> Result<String, KeyError> {
        let keys = self
            .endpoints
            .keys
            .read()
            .map_err(|_| KeyError::SignFailed)?;
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

    /// Stops serving and closes every open connection (an IdP outage).
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

async fn answer(req: Request<Incoming>, endpoints: &Endpoints) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    *lock(&endpoints.served)
        .hits
        .entry(path.clone())
        .or_default() += 1;
    let issuer = endpoints.issuer.as_str();
    let post = req.method() == http::Method::POST;
    if post && matches!(path.as_str(), "/token" | "/introspect") {
        let authorization = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        if path == "/introspect" {
            let answer = endpoints.introspection.answer(authorization, &body).await;
            return json_response(&answer);
        }
        let sign = |claims: &Value| {
            let keys = endpoints.keys.read().ok()?;
            mint_with(keys.keys.first()?, None, claims).ok()
        };
        let url = format!("{issuer}/token");
        let answer = endpoints
            .token
            .answer(authorization.as_deref(), &body, &url, issuer, sign)
            .await;
        let mut resp = json_response(&answer.body);
        *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
        return resp;
    }
    if path == "/authorize" && req.method() == http::Method::GET {
        let query = req.uri().query().unwrap_or("");
        let token = &endpoints.token;
        return match token
            .sign_ins()
            .authorize(query, |id, uri| token.may_redirect(id, uri))
        {
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
    let body = match path.as_str() {
        "/.well-known/openid-configuration" => json!({
            "issuer": lock(&endpoints.served).announced_issuer.as_deref().unwrap_or(issuer),
            "jwks_uri": format!("{issuer}/jwks"),
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "introspection_endpoint": format!("{issuer}/introspect"),
            "id_token_signing_alg_values_supported": ["ES256", "RS256", "EdDSA"],
        }),
        "/jwks" => {
            if let Some((status, body)) = lock(&endpoints.served).jwks.clone() {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                return json_text(status, body);
            }
            let published: Vec<Value> = endpoints
                .keys
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
    json_text(StatusCode::OK, body.to_string())
}

fn json_text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
