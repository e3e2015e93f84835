//! The outbound token client against the testkit IdP's real token endpoint
//! (SPEC §9): every client authentication method, single-flight under
//! concurrency, refresh ahead of expiry, negative cache and backoff, metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use portcullis_config::{CredentialConfig, ProviderConfig};
use portcullis_identity::jose::compact::decode_unverified;
use portcullis_identity::jose::Alg;
use portcullis_identity::keys::SigningKey;
use portcullis_identity::{CredentialStore, Fetch, HttpFetch, IdentityMetrics, OutboundError};
use portcullis_testkit::DevIssuer;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "partner-secret-do-not-log";

fn fetch() -> Arc<dyn Fetch> {
    Arc::new(HttpFetch::new(Duration::from_secs(5)).unwrap())
}

fn credential(extra: Value) -> CredentialConfig {
    let mut base = json!({
        "name": "partner-api",
        "client_id": "billing",
        "scopes": ["orders:read", "orders:write"],
        "audience": "https://partner.example.com",
    });
    base.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(base).unwrap()
}

fn provider(idp: &DevIssuer) -> ProviderConfig {
    serde_json::from_value(json!({
        "name": "idp", "issuer": idp.issuer(), "audiences": ["x"],
    }))
    .unwrap()
}

fn store(idp: &DevIssuer, cfg: CredentialConfig, metrics: &IdentityMetrics) -> CredentialStore {
    CredentialStore::new(&[cfg], &[provider(idp)], &fetch(), metrics, None).unwrap()
}

fn token_of(header: &http::HeaderValue) -> String {
    assert!(
        header.is_sensitive(),
        "the token header is marked sensitive"
    );
    header
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string()
}

async fn secret_idp() -> DevIssuer {
    let idp = DevIssuer::start().await.unwrap();
    idp.token_endpoint().add_secret_client("billing", SECRET);
    idp
}

#[tokio::test]
async fn client_secret_basic_and_post_get_a_token_with_scopes_and_audience() {
    let idp = secret_idp().await;
    for method in ["client_secret_basic", "client_secret_post"] {
        let metrics = IdentityMetrics::new();
        let cfg = credential(json!({
            "token_endpoint": idp.token_url(),
            "client_secret": SECRET,
            "auth_method": method,
        }));
        let store = store(&idp, cfg, &metrics);
        let cred = store.get("partner-api").unwrap();
        let token = token_of(&cred.authorization().await.unwrap());
        let (_, claims) = decode_unverified(&token).unwrap();
        assert_eq!(claims["client_id"], "billing");
        assert_eq!(claims["aud"], "https://partner.example.com");
        assert_eq!(claims["scope"], "orders:read orders:write");
        let form = idp.token_endpoint().last_form();
        assert_eq!(form["audience"], "https://partner.example.com");
        assert_eq!(form["resource"], "https://partner.example.com");
        assert_eq!(
            form.contains_key("client_secret"),
            method == "client_secret_post"
        );
        assert_eq!(metrics.outbound_fetch_count("partner-api", "success"), 1);
        // Debug output never holds the secret.
        let debug = format!("{store:?} {cred:?}");
        assert!(!debug.contains(SECRET), "{debug}");
    }
}

#[tokio::test]
async fn a_wrong_secret_is_an_error_that_names_no_secret() {
    let idp = secret_idp().await;
    let metrics = IdentityMetrics::new();
    let cfg = credential(json!({
        "token_endpoint": idp.token_url(),
        "client_secret": "wrong-secret-value",
    }));
    let store = store(&idp, cfg, &metrics);
    let err = store
        .get("partner-api")
        .unwrap()
        .authorization()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("HTTP 401") && text.contains("invalid_client"),
        "{text}"
    );
    assert!(!text.contains("wrong-secret-value"), "{text}");
    assert_eq!(metrics.outbound_fetch_count("partner-api", "error"), 1);
}

#[tokio::test]
async fn private_key_jwt_assertions_are_verified_by_the_endpoint() {
    for alg in [Alg::ES256, Alg::RS256] {
        let idp = DevIssuer::start().await.unwrap();
        let key = SigningKey::generate(alg).unwrap();
        idp.token_endpoint()
            .add_jwk_client("billing", &key.public_jwk(None))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("billing.pem");
        std::fs::write(&file, key.to_pkcs8_pem().unwrap()).unwrap();
        let metrics = IdentityMetrics::new();
        // The endpoint comes from the provider's discovery document.
        let cfg = credential(json!({
            "provider": "idp",
            "private_key_file": file.to_str().unwrap(),
        }));
        let store = store(&idp, cfg, &metrics);
        let token = token_of(
            &store
                .get("partner-api")
                .unwrap()
                .authorization()
                .await
                .unwrap(),
        );
        assert_eq!(decode_unverified(&token).unwrap().1["sub"], "billing");
        let form = idp.token_endpoint().last_form();
        assert_eq!(
            decode_unverified(&form["client_assertion"]).unwrap().1["aud"],
            idp.token_url()
        );

        // A key the endpoint does not know is refused: the check is real.
        let other = SigningKey::generate(alg).unwrap();
        std::fs::write(&file, other.to_pkcs8_pem().unwrap()).unwrap();
        let cfg = credential(json!({
            "name": "other",
            "token_endpoint": idp.token_url(),
            "private_key_file": file.to_str().unwrap(),
        }));
        let store = CredentialStore::new(&[cfg], &[], &fetch(), &metrics, None).unwrap();
        let err = store
            .get("other")
            .unwrap()
            .authorization()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("invalid_client"), "{err}");
    }
}

#[tokio::test]
async fn many_concurrent_requests_share_one_fetch() {
    let idp = secret_idp().await;
    idp.token_endpoint().set_delay(Duration::from_millis(300));
    let metrics = IdentityMetrics::new();
    let cfg = credential(json!({ "token_endpoint": idp.token_url(), "client_secret": SECRET }));
    let store = store(&idp, cfg, &metrics);
    let cred = store.get("partner-api").unwrap().clone();
    let waiting: Vec<_> = (0..64)
        .map(|_| {
            let cred = cred.clone();
            tokio::spawn(async move { cred.authorization().await })
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    for w in waiting {
        tokens.insert(token_of(&w.await.unwrap().unwrap()));
    }
    assert_eq!(tokens.len(), 1);
    assert_eq!(idp.token_endpoint().requests(), 1);
    assert_eq!(metrics.outbound_fetch_count("partner-api", "success"), 1);
}

#[tokio::test]
async fn tokens_are_refreshed_ahead_of_expiry_by_one_background_fetch() {
    let idp = secret_idp().await;
    // 4s lifetime: refreshed from 3s on, no longer sent after 3.6s.
    idp.token_endpoint().set_ttl(Duration::from_secs(4));
    let metrics = IdentityMetrics::new();
    let cfg = credential(json!({ "token_endpoint": idp.token_url(), "client_secret": SECRET }));
    let store = store(&idp, cfg, &metrics);
    let cred = store.get("partner-api").unwrap().clone();
    let started = std::time::Instant::now();
    let first = token_of(&cred.authorization().await.unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        token_of(&cred.authorization().await.unwrap()),
        first,
        "cached"
    );
    assert_eq!(idp.token_endpoint().requests(), 1);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // Past the refresh point: these requests still get the current token at once,
    // and exactly one refresh runs behind them.
    idp.token_endpoint().set_delay(Duration::from_millis(200));
    for _ in 0..20 {
        assert_eq!(token_of(&cred.authorization().await.unwrap()), first);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(idp.token_endpoint().requests(), 2, "one refresh");
    let second = token_of(&cred.authorization().await.unwrap());
    assert_ne!(second, first, "the refreshed token is used");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "refreshed before the old token expired"
    );
}

#[tokio::test]
async fn a_failing_endpoint_is_backed_off_and_recovers() {
    let idp = secret_idp().await;
    idp.token_endpoint().set_down(true);
    let metrics = IdentityMetrics::new();
    let cfg = credential(json!({ "token_endpoint": idp.token_url(), "client_secret": SECRET }));
    let store = store(&idp, cfg, &metrics);
    let cred = store.get("partner-api").unwrap().clone();
    let err = cred.authorization().await.unwrap_err();
    assert!(matches!(err, OutboundError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("HTTP 503"), "{err}");
    // Within the backoff every caller fails at once, without a request.
    for _ in 0..10 {
        assert!(cred.authorization().await.is_err());
    }
    assert_eq!(idp.token_endpoint().requests(), 1);
    assert_eq!(metrics.outbound_fetch_count("partner-api", "error"), 1);
    // After the first backoff (1s) one new attempt; it fails again, and the next
    // backoff is longer (2s).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(cred.authorization().await.is_err());
    assert_eq!(idp.token_endpoint().requests(), 2);
    idp.token_endpoint().set_down(false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(cred.authorization().await.is_err(), "still backing off");
    assert_eq!(idp.token_endpoint().requests(), 2);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(cred.authorization().await.is_ok(), "recovered");
    assert_eq!(idp.token_endpoint().requests(), 3);
}

#[tokio::test]
async fn an_unchanged_credential_keeps_its_token_across_a_reload() {
    let idp = secret_idp().await;
    let metrics = IdentityMetrics::new();
    let cfg = credential(json!({ "token_endpoint": idp.token_url(), "client_secret": SECRET }));
    let first = store(&idp, cfg.clone(), &metrics);
    first
        .get("partner-api")
        .unwrap()
        .authorization()
        .await
        .unwrap();
    let providers = [provider(&idp)];
    let same = CredentialStore::new(
        std::slice::from_ref(&cfg),
        &providers,
        &fetch(),
        &metrics,
        Some(&first),
    )
    .unwrap();
    same.get("partner-api")
        .unwrap()
        .authorization()
        .await
        .unwrap();
    assert_eq!(idp.token_endpoint().requests(), 1);
    let mut changed_cfg = cfg;
    changed_cfg.scopes = vec!["orders:read".into()];
    let changed =
        CredentialStore::new(&[changed_cfg], &providers, &fetch(), &metrics, Some(&first)).unwrap();
    changed
        .get("partner-api")
        .unwrap()
        .authorization()
        .await
        .unwrap();
    assert_eq!(idp.token_endpoint().requests(), 2);
}
