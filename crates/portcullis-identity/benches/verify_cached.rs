//! Cost of the common case of `Authenticator::verify_bearer`: a ~900-byte JWT that
//! is already in the verified-token cache (no signature check, just the cache key,
//! the lookup and the identity clone), plus the `b64token` syntax check alone.
//! Run: `cargo bench -p portcullis-identity --bench verify_cached`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_config::ProviderConfig;
use portcullis_identity::fetch::BoxFuture;
use portcullis_identity::jose::Alg;
use portcullis_identity::keys::{mint_with, SigningKey};
use portcullis_identity::{Authenticator, Fetch, FetchError, FetchResponse, IdentityMetrics};
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

const ISS: &str = "https://idp.example.com";
const JWKS: &str = "https://idp.example.com/jwks";

/// Serves one JWKS document for every GET.
struct StaticJwks(Bytes);

impl Fetch for StaticJwks {
    fn get<'a>(
        &'a self,
        _url: &'a str,
        _max_body: usize,
    ) -> BoxFuture<'a, Result<FetchResponse, FetchError>> {
        let body = self.0.clone();
        Box::pin(async move {
            Ok(FetchResponse {
                status: 200,
                cache_control: None,
                body,
            })
        })
    }

    fn post_form<'a>(
        &'a self,
        _url: &'a str,
        _authorization: Option<&'a str>,
        _body: String,
        _max_body: usize,
    ) -> BoxFuture<'a, Result<FetchResponse, FetchError>> {
        Box::pin(async { Err(FetchError::Other("no introspection here".into())) })
    }
}

fn verify_cached(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("cannot build a runtime");
        return;
    };
    let Ok(key) = SigningKey::generate(Alg::ES256) else {
        eprintln!("cannot generate a key");
        return;
    };
    let jwks = json!({ "keys": [key.public_jwk(Some("k1"))] }).to_string();
    let provider: ProviderConfig = match serde_json::from_value(json!({
        "name": "idp",
        "issuer": ISS,
        "jwks_uri": JWKS,
        "audiences": ["orders-api"],
        "algorithms": ["ES256"],
    })) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bad provider config: {e}");
            return;
        }
    };
    let fetch = Arc::new(StaticJwks(Bytes::from(jwks)));
    let auth = match Authenticator::new(&[provider], fetch, IdentityMetrics::new()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cannot build the authenticator: {e}");
            return;
        }
    };
    rt.block_on(auth.start());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Claims sized like a real IdP access token (~900 bytes once signed).
    let claims = json!({
        "iss": ISS,
        "sub": "248289761001",
        "aud": "orders-api",
        "iat": now,
        "exp": now + 3600,
        "email": "alice@example.com",
        "groups": ["admins", "developers", "billing", "on-call"],
        "roles": ["billing-admin", "orders-reader"],
        "scope": "openid profile email orders:read orders:write",
        "client_id": "web-frontend",
        "sid": "7b2f0f1e-5a8e-4d6b-9c1a-2f7c9f0e8d11",
        "jti": "c0a8012e-1b4f-4e7a-8d2c-9f3e6a5b7d10",
        "extra": "x".repeat(220),
    });
    let token = match mint_with(&key, Some("k1"), &claims) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot mint: {e}");
            return;
        }
    };
    if let Err(e) = rt.block_on(auth.verify_bearer(&token)) {
        eprintln!("token does not verify: {e:?}");
        return;
    }
    c.bench_function(&format!("verify_cached_{}b", token.len()), |b| {
        b.iter(|| rt.block_on(auth.verify_bearer(black_box(&token))))
    });
}

criterion_group!(benches, verify_cached);
criterion_main!(benches);
