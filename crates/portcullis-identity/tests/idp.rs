//! End-to-end-ish tests: the real HTTP fetcher against the in-process identity
//! provider (`portcullis_testkit::DevIssuer`: discovery, JWKS, introspection),
//! made to serve the tests' own keys and the faults of a real one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use portcullis_config::ProviderConfig;
use portcullis_identity::jose::Alg;
use portcullis_identity::keys::{mint_with, SigningKey};
use portcullis_identity::{Authenticator, Fetch, HttpFetch, IdentityMetrics, Reason};
use portcullis_testkit::DevIssuer;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn provider(idp: &DevIssuer, extra: Value) -> ProviderConfig {
    let mut base = json!({"name": "idp", "issuer": idp.issuer(), "audiences": ["api"]});
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn token(key: &SigningKey, kid: &str, iss: &str, sub: &str) -> String {
    let claims = json!({"iss": iss, "aud": "api", "sub": sub, "exp": now() + 300, "iat": now(), "scope": "read"});
    mint_with(key, Some(kid), &claims).unwrap()
}

fn jwks(keys: &[(&SigningKey, &str)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(k, kid)| k.public_jwk(Some(kid)))
        .collect();
    json!({ "keys": keys }).to_string()
}

fn fetcher() -> Arc<dyn Fetch> {
    Arc::new(HttpFetch::new(Duration::from_secs(2)).unwrap())
}

fn metrics_text(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test]
async fn discovery_finds_keys_and_tokens_verify() {
    let idp = DevIssuer::start().await.unwrap();
    let key = SigningKey::generate(Alg::ES256).unwrap();
    idp.serve_jwks(200, jwks(&[(&key, "k1")]));
    let auth = Authenticator::new(
        &[provider(&idp, json!({}))],
        fetcher(),
        IdentityMetrics::new(),
    )
    .unwrap();
    auth.start().await;
    let ready = auth.readiness();
    assert!(ready[0].ready, "{}", ready[0].detail);
    assert_eq!(idp.hits("/.well-known/openid-configuration"), 1);
    let id = auth
        .verify_bearer(&token(&key, "k1", &idp.issuer(), "alice"))
        .await
        .unwrap();
    assert_eq!(id.subject, "alice");
    assert_eq!(id.scopes, ["read"]);
}

/// A reload is how an operator drops a key from a `jwks_file` at once: the
/// file is read again then, though the key cache is otherwise carried over.
#[tokio::test]
async fn a_reload_reads_the_jwks_file_again_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    let (old, new) = (
        SigningKey::generate(Alg::ES256).unwrap(),
        SigningKey::generate(Alg::ES256).unwrap(),
    );
    std::fs::write(&file, jwks(&[(&old, "old")])).unwrap();
    let issuer = "https://files.example.com";
    let p: ProviderConfig = serde_json::from_value(json!({
        "name": "files", "issuer": issuer, "audiences": ["api"],
        "discovery": false, "jwks_file": file.to_str().unwrap(),
    }))
    .unwrap();
    let before =
        Authenticator::new(std::slice::from_ref(&p), fetcher(), IdentityMetrics::new()).unwrap();
    before.start().await;
    assert!(before
        .verify_bearer(&token(&old, "old", issuer, "a"))
        .await
        .is_ok());
    std::fs::write(&file, jwks(&[(&new, "new")])).unwrap();
    let after =
        Authenticator::new_from_previous(&before, &[p], fetcher(), IdentityMetrics::new()).unwrap();
    after.start().await;
    assert!(after
        .verify_bearer(&token(&old, "old", issuer, "b"))
        .await
        .is_err());
    assert!(after
        .verify_bearer(&token(&new, "new", issuer, "c"))
        .await
        .is_ok());
}

#[tokio::test]
async fn discovery_with_a_different_issuer_is_refused() {
    let idp = DevIssuer::start().await.unwrap();
    let key = SigningKey::generate(Alg::ES256).unwrap();
    idp.serve_jwks(200, jwks(&[(&key, "k1")]));
    idp.announce_issuer("http://evil.example");
    let auth = Authenticator::new(
        &[provider(&idp, json!({}))],
        fetcher(),
        IdentityMetrics::new(),
    )
    .unwrap();
    auth.start().await;
    let ready = auth.readiness();
    assert!(!ready[0].ready);
    assert!(
        ready[0].detail.contains("not the configured"),
        "{}",
        ready[0].detail
    );
    assert_eq!(
        idp.hits("/jwks"),
        0,
        "keys of a mismatched issuer are never fetched"
    );
}

#[tokio::test]
async fn rotated_key_is_accepted_on_first_use() {
    let idp = DevIssuer::start().await.unwrap();
    let old = SigningKey::generate(Alg::ES256).unwrap();
    let new = SigningKey::generate(Alg::EdDSA).unwrap();
    idp.serve_jwks(200, jwks(&[(&old, "old")]));
    let p = provider(
        &idp,
        json!({"jwks_min_refresh": "200ms", "algorithms": ["ES256", "EdDSA"]}),
    );
    let auth = Authenticator::new(&[p], fetcher(), IdentityMetrics::new()).unwrap();
    auth.start().await;
    idp.serve_jwks(200, jwks(&[(&old, "old"), (&new, "new")]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = auth
        .verify_bearer(&token(&new, "new", &idp.issuer(), "bob"))
        .await
        .unwrap();
    assert_eq!(id.subject, "bob");
    assert_eq!(idp.hits("/jwks"), 2);
}

#[tokio::test]
async fn outage_keeps_cached_keys_serving_and_ready() {
    let idp = DevIssuer::start().await.unwrap();
    let key = SigningKey::generate(Alg::ES256).unwrap();
    idp.serve_jwks(200, jwks(&[(&key, "k1")]));
    let p = provider(
        &idp,
        json!({"jwks_refresh": "1s", "jwks_min_refresh": "1s"}),
    );
    let auth = Authenticator::new(&[p], fetcher(), IdentityMetrics::new()).unwrap();
    auth.start().await;
    let refresher = auth.spawn_refresher();
    assert!(auth
        .verify_bearer(&token(&key, "k1", &idp.issuer(), "a"))
        .await
        .is_ok());
    idp.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A token never seen before (not in the verified-token cache) still verifies.
    assert!(auth
        .verify_bearer(&token(&key, "k1", &idp.issuer(), "b"))
        .await
        .is_ok());
    let ready = auth.readiness();
    assert!(ready[0].ready, "{}", ready[0].detail);
    assert!(
        ready[0].detail.contains("last refresh failed"),
        "{}",
        ready[0].detail
    );
    // An unknown kid during the outage is refused, not hung.
    let other = SigningKey::generate(Alg::ES256).unwrap();
    let e = auth
        .verify_bearer(&token(&other, "k2", &idp.issuer(), "c"))
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::UnknownKey);
    refresher.abort();
}

#[tokio::test]
async fn random_kid_flood_fetches_once_per_min_refresh() {
    let idp = DevIssuer::start().await.unwrap();
    let key = SigningKey::generate(Alg::ES256).unwrap();
    idp.serve_jwks(200, jwks(&[(&key, "k1")]));
    let p = provider(
        &idp,
        json!({"jwks_uri": format!("{}/jwks", idp.issuer()), "jwks_min_refresh": "2s"}),
    );
    let auth = Authenticator::new(&[p], fetcher(), IdentityMetrics::new()).unwrap();
    auth.start().await;
    assert_eq!(idp.hits("/jwks"), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let auth = auth.clone();
        let t = token(&key, &format!("random-{i}-{}", now()), &idp.issuer(), "x");
        tasks.push(tokio::spawn(async move {
            auth.verify_bearer(&t).await.unwrap_err().reason
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Reason::UnknownKey);
    }
    assert_eq!(idp.hits("/jwks"), 2, "100 unknown kids, one shared refetch");
    assert_eq!(
        idp.hits("/.well-known/openid-configuration"),
        0,
        "jwks_uri configured: no discovery"
    );
}

#[tokio::test]
async fn cache_hits_are_counted_in_the_registry() {
    let idp = DevIssuer::start().await.unwrap();
    let key = SigningKey::generate(Alg::ES256).unwrap();
    idp.serve_jwks(200, jwks(&[(&key, "k1")]));
    let metrics = IdentityMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let auth =
        Authenticator::new(&[provider(&idp, json!({}))], fetcher(), metrics.clone()).unwrap();
    auth.start().await;
    let t = token(&key, "k1", &idp.issuer(), "a");
    auth.verify_bearer(&t).await.unwrap();
    auth.verify_bearer(&t).await.unwrap();
    auth.verify_bearer(&t).await.unwrap();
    let text = metrics_text(&registry);
    assert!(
        text.contains(r#"portcullis_token_cache_total{result="hit"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_token_cache_total{result="miss"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_jwks_keys{provider="idp"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_jwks_refresh_total{provider="idp",result="success"} 1"#),
        "{text}"
    );
    // Metrics survive a reload: the new authenticator shares the same series.
    let reloaded = Authenticator::new_from_previous(
        &auth,
        &[provider(&idp, json!({}))],
        fetcher(),
        metrics.clone(),
    )
    .unwrap();
    let _ = reloaded.verify_bearer("not a token").await;
    assert!(metrics_text(&registry).contains(
        r#"portcullis_auth_failures_total{provider="unknown",reason="invalid_token"} 1"#
    ));
}

#[tokio::test]
async fn malformed_jwks_does_not_replace_good_keys() {
    let idp = DevIssuer::start().await.unwrap();
    let key = SigningKey::generate(Alg::ES256).unwrap();
    idp.serve_jwks(200, jwks(&[(&key, "k1")]));
    let metrics = IdentityMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let p = provider(
        &idp,
        json!({"jwks_refresh": "1s", "jwks_min_refresh": "1s"}),
    );
    let auth = Authenticator::new(&[p], fetcher(), metrics.clone()).unwrap();
    auth.start().await;
    let refresher = auth.spawn_refresher();
    idp.serve_jwks(
        200,
        r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "k1"}]}"#
            .into(),
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    idp.serve_jwks(200, "<html>oops</html>".into());
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // Larger than the body cap: refused while reading, never parsed.
    let huge = format!(
        r#"{{"keys":[{}]}}"#,
        vec![jwks(&[(&key, "k1")]); 2000].join(",")
    );
    idp.serve_jwks(200, huge);
    let before = idp.hits("/jwks");
    tokio::time::sleep(Duration::from_millis(4200)).await;
    assert!(idp.hits("/jwks") > before);
    assert!(idp.hits("/jwks") >= 4);
    assert!(auth
        .verify_bearer(&token(&key, "k1", &idp.issuer(), "a"))
        .await
        .is_ok());
    assert!(auth.readiness()[0].ready);
    let text = metrics_text(&registry);
    assert!(
        text.contains(r#"portcullis_jwks_refresh_total{provider="idp",result="invalid"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_jwks_keys{provider="idp"} 1"#),
        "{text}"
    );
    refresher.abort();
}

/// An opaque token goes to one provider only: the one whose `token_prefix`
/// it has, else the one without a prefix. Asked in turn, provider `a` would
/// see every token `b` issued, and could replay them as `b`'s users.
#[tokio::test]
async fn an_opaque_token_goes_to_its_own_provider_only() {
    let (a, b) = (
        DevIssuer::start().await.unwrap(),
        DevIssuer::start().await.unwrap(),
    );
    let active = |sub: &str| json!({"active": true, "sub": sub, "aud": "api", "exp": now() + 600});
    a.introspection()
        .answer_for("plain-token", active("from-a"));
    b.introspection().answer_for("pat_of_b", active("from-b"));
    let introspecting = |idp: &DevIssuer, name: &str, prefix: Option<&str>| {
        let mut p = provider(
            idp,
            json!({
                "discovery": false,
                "introspection": {
                    "endpoint": format!("{}/introspect", idp.issuer()),
                    "client_id": "portcullis", "client_secret": "s", "token_prefix": prefix,
                }
            }),
        );
        p.name = name.into();
        p
    };
    let auth = Authenticator::new(
        &[
            introspecting(&a, "a", None),
            introspecting(&b, "b", Some("pat_")),
        ],
        fetcher(),
        IdentityMetrics::new(),
    )
    .unwrap();
    auth.start().await;
    assert_eq!(
        auth.verify_bearer("pat_of_b").await.unwrap().subject,
        "from-b"
    );
    assert_eq!(a.hits("/introspect"), 0, "b's token went to a");
    assert_eq!(
        auth.verify_bearer("plain-token").await.unwrap().subject,
        "from-a"
    );
    assert_eq!(b.hits("/introspect"), 1, "a's token went to b");
    // b's prefix and unknown there: never tried at a as well.
    let e = auth.verify_bearer("pat_unknown").await.unwrap_err();
    assert_eq!(e.provider.as_deref(), Some("b"));
    assert_eq!(a.hits("/introspect"), 1);
}

/// Made-up tokens miss every cache: each would be a call on the proxy's
/// client credentials. Calls open at once are bounded, and a lookup that
/// cannot start one soon is `upstream_unavailable`, not one more call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_opaque_tokens_keeps_introspection_calls_bounded() {
    let idp = DevIssuer::start().await.unwrap();
    idp.introspection().set_delay(Duration::from_millis(2500));
    let p = provider(
        &idp,
        json!({
            "discovery": false,
            "introspection": {"endpoint": format!("{}/introspect", idp.issuer()), "client_id": "portcullis", "client_secret": "s"}
        }),
    );
    // A client that waits out the slow IdP, longer than a lookup waits for a call.
    let patient: Arc<dyn Fetch> = Arc::new(HttpFetch::new(Duration::from_secs(10)).unwrap());
    let auth = Arc::new(Authenticator::new(&[p], patient, IdentityMetrics::new()).unwrap());
    auth.start().await;
    let lookups: Vec<_> = (0..40)
        .map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.verify_bearer(&format!("made-up-{i}")).await })
        })
        .collect();
    let mut reasons = HashMap::new();
    for lookup in lookups {
        let e = lookup.await.unwrap().unwrap_err();
        *reasons.entry(e.reason).or_insert(0) += 1;
    }
    assert_eq!(idp.introspection().most_open(), 32);
    assert_eq!(reasons.get(&Reason::InvalidToken), Some(&32), "{reasons:?}");
    assert_eq!(
        reasons.get(&Reason::UpstreamUnavailable),
        Some(&8),
        "{reasons:?}"
    );
    assert_eq!(idp.hits("/introspect"), 32);
}

#[tokio::test]
async fn introspection_active_inactive_with_negative_caching() {
    let idp = DevIssuer::start().await.unwrap();
    idp.introspection().answer_for(
        "good-opaque",
        json!({"active": true, "sub": "svc-1", "client_id": "svc-1", "aud": "api", "scope": "orders:read", "exp": now() + 600}),
    );
    let p = provider(
        &idp,
        json!({
            "discovery": false,
            "introspection": {"endpoint": format!("{}/introspect", idp.issuer()), "client_id": "portcullis", "client_secret": "top secret"}
        }),
    );
    let auth = Authenticator::new(&[p], fetcher(), IdentityMetrics::new()).unwrap();
    auth.start().await;
    assert!(auth.readiness()[0].ready);
    let id = auth.verify_bearer("good-opaque").await.unwrap();
    assert_eq!(id.subject, "svc-1");
    assert_eq!(id.scopes, ["orders:read"]);
    assert_eq!(id.kind, portcullis_identity::IdentityKind::Service);
    assert!(auth.verify_bearer("good-opaque").await.is_ok());
    assert_eq!(idp.hits("/introspect"), 1, "active result cached");
    assert_eq!(
        idp.introspection().last_authorization().as_deref(),
        Some("Basic cG9ydGN1bGxpczp0b3Arc2VjcmV0")
    );
    // Active, but a refresh token: never a bearer credential here.
    idp.introspection().answer_for(
        "refresh-opaque",
        json!({"active": true, "sub": "svc-1", "aud": "api", "token_type": "refresh_token"}),
    );
    let e = auth.verify_bearer("refresh-opaque").await.unwrap_err();
    assert_eq!(e.reason, Reason::InvalidToken);
    assert_eq!(idp.hits("/introspect"), 2);
    for _ in 0..3 {
        let e = auth.verify_bearer("revoked-opaque").await.unwrap_err();
        assert_eq!(e.reason, Reason::InvalidToken);
        assert_eq!(e.provider.as_deref(), Some("idp"));
    }
    assert_eq!(
        idp.hits("/introspect"),
        3,
        "inactive result negatively cached"
    );
}
