//! Test helpers: keys generated at test time (no committed private keys), token
//! minting with arbitrary headers, and an offline [`Fetch`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::fetch::{BoxFuture, Fetch, FetchError, FetchResponse};
use crate::jose::{b64_encode, Alg};
use crate::keys::SigningKey;
use crate::util::now_unix;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone)]
pub(crate) struct TestKey {
    pub alg: Alg,
    pub key: Arc<SigningKey>,
}

impl TestKey {
    fn new(alg: Alg) -> Self {
        Self {
            alg,
            key: Arc::new(SigningKey::generate(alg).unwrap()),
        }
    }
    /// RSA generation is slow; tests share one key.
    pub fn rsa() -> Self {
        static K: OnceLock<TestKey> = OnceLock::new();
        K.get_or_init(|| Self::new(Alg::RS256)).clone()
    }
    pub fn es256() -> Self {
        Self::new(Alg::ES256)
    }
    pub fn es384() -> Self {
        Self::new(Alg::ES384)
    }
    pub fn ed25519() -> Self {
        Self::new(Alg::EdDSA)
    }
    pub fn public_jwk(&self, kid: &str) -> Value {
        self.key.public_jwk(Some(kid))
    }
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.key.sign(msg).unwrap()
    }
    /// A token with exactly this header; signed with the header's `alg` when this key
    /// can produce it, else with the key's own algorithm.
    pub fn token(&self, header: Value, claims: Value) -> String {
        let alg = header["alg"]
            .as_str()
            .and_then(Alg::parse)
            .filter(|a| a.kty() == self.alg.kty() && (a.kty() == "RSA" || *a == self.alg))
            .unwrap_or(self.alg);
        let mut out = b64_encode(header.to_string().as_bytes());
        out.push('.');
        out.push_str(&b64_encode(claims.to_string().as_bytes()));
        let sig = self.key.sign_with(alg, out.as_bytes()).unwrap();
        out.push('.');
        out.push_str(&b64_encode(&sig));
        out
    }
    /// The usual header `{alg, kid, typ: JWT}`.
    pub fn jwt(&self, kid: &str, claims: Value) -> String {
        self.token(
            json!({"alg": self.alg.as_str(), "kid": kid, "typ": "JWT"}),
            claims,
        )
    }
}

pub(crate) fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// Valid access-token claims for `iss`/`aud`, expiring in 5 minutes.
pub(crate) fn claims(iss: &str, aud: &str) -> Value {
    let now = now_unix();
    json!({"iss": iss, "aud": aud, "sub": "user-1", "exp": now + 300, "iat": now, "scope": "read write"})
}

/// An offline [`Fetch`]: canned responses per URL, every request counted and recorded.
#[derive(Default)]
pub(crate) struct FakeFetch {
    pub responses: Mutex<HashMap<String, Result<FetchResponse, FetchError>>>,
    pub calls: AtomicUsize,
    pub urls: Mutex<Vec<String>>,
    pub bodies: Mutex<Vec<(Option<String>, String)>>,
}

impl FakeFetch {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn set(&self, url: &str, status: u16, body: &str) {
        self.responses.lock().unwrap().insert(
            url.to_string(),
            Ok(FetchResponse {
                status,
                cache_control: None,
                body: bytes::Bytes::from(body.to_string()),
            }),
        );
    }
    pub fn fail(&self, url: &str) {
        self.responses
            .lock()
            .unwrap()
            .insert(url.to_string(), Err(FetchError::Connect("refused".into())));
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn answer(&self, url: &str) -> Result<FetchResponse, FetchError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.urls.lock().unwrap().push(url.to_string());
        self.responses
            .lock()
            .unwrap()
            .get(url)
            .cloned()
            .unwrap_or(Err(FetchError::Connect("no route".into())))
    }
}

impl Fetch for FakeFetch {
    fn get<'a>(
        &'a self,
        url: &'a str,
        _max: usize,
    ) -> BoxFuture<'a, Result<FetchResponse, FetchError>> {
        Box::pin(async move { self.answer(url) })
    }
    fn post_form<'a>(
        &'a self,
        url: &'a str,
        authorization: Option<&'a str>,
        body: String,
        _max: usize,
    ) -> BoxFuture<'a, Result<FetchResponse, FetchError>> {
        Box::pin(async move {
            self.bodies
                .lock()
                .unwrap()
                .push((authorization.map(str::to_string), body));
            self.answer(url)
        })
    }
}
