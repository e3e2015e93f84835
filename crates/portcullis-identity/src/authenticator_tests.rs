//! Attack and behaviour tests for [`Authenticator`], offline (FakeFetch) and with
//! tokio's paused clock for the JWKS timing rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::jose::b64_encode;
use crate::keys::pem_encode;
use crate::testutil::{claims, jwks, FakeFetch, TestKey};
use aws_lc_rs::hmac;
use portcullis_core::IdentityKind;
use serde_json::json;
use std::sync::atomic::Ordering;

const ISS: &str = "https://idp.example.com";
const JWKS: &str = "https://idp.example.com/jwks";
const AUD: &str = "orders-api";

fn provider(extra: Value) -> ProviderConfig {
    let mut base = json!({
        "name": "idp",
        "issuer": ISS,
        "jwks_uri": JWKS,
        "audiences": [AUD],
        "algorithms": ["RS256", "PS256", "ES256", "ES384", "EdDSA"],
    });
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(base).unwrap()
}

async fn auth_with(providers: &[ProviderConfig], fetch: &Arc<FakeFetch>) -> Authenticator {
    let a = Authenticator::new(providers, fetch.clone(), IdentityMetrics::new()).unwrap();
    a.start().await;
    a
}

/// One provider whose JWKS holds `keys` (by kid).
async fn setup(keys: &[(&str, &TestKey)]) -> (Authenticator, Arc<FakeFetch>) {
    let fetch = FakeFetch::new();
    let jwk: Vec<Value> = keys.iter().map(|(kid, k)| k.public_jwk(kid)).collect();
    fetch.set(JWKS, 200, &jwks(&jwk));
    let a = auth_with(&[provider(json!({}))], &fetch).await;
    (a, fetch)
}

async fn reason(a: &Authenticator, token: &str) -> Reason {
    a.verify_bearer(token).await.unwrap_err().reason
}

fn raw_token(header: Value, claims: Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64_encode(header.to_string().as_bytes()),
        b64_encode(claims.to_string().as_bytes()),
        b64_encode(sig)
    )
}

fn hs256(header: Value, claims: Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64_encode(header.to_string().as_bytes()),
        b64_encode(claims.to_string().as_bytes())
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
    format!("{input}.{}", b64_encode(tag.as_ref()))
}

#[tokio::test]
async fn every_supported_algorithm_verifies() {
    let rsa = TestKey::rsa();
    let (es256, es384, ed) = (TestKey::es256(), TestKey::es384(), TestKey::ed25519());
    let fetch = FakeFetch::new();
    let mut any_rsa = rsa.public_jwk("rsa-any");
    any_rsa.as_object_mut().unwrap().remove("alg");
    let mut pss = rsa.public_jwk("pss");
    pss["alg"] = json!("PS256");
    let keys = [
        rsa.public_jwk("rsa"),
        any_rsa,
        pss,
        es256.public_jwk("es256"),
        es384.public_jwk("es384"),
        ed.public_jwk("ed"),
    ];
    fetch.set(JWKS, 200, &jwks(&keys));
    let a = auth_with(&[provider(json!({}))], &fetch).await;
    for (kid, key, alg) in [
        ("rsa", &rsa, "RS256"),
        ("rsa-any", &rsa, "RS256"),
        ("rsa-any", &rsa, "PS256"),
        ("pss", &rsa, "PS256"),
        ("es256", &es256, "ES256"),
        ("es384", &es384, "ES384"),
        ("ed", &ed, "EdDSA"),
    ] {
        let t = key.token(
            json!({"alg": alg, "kid": kid, "typ": "at+jwt"}),
            claims(ISS, AUD),
        );
        let id = a
            .verify_bearer(&t)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(id.subject, "user-1");
        assert_eq!(id.provider.as_deref(), Some("idp"));
        assert_eq!(id.issuer.as_deref(), Some(ISS));
        assert_eq!(id.scopes, ["read", "write"]);
        assert_eq!(id.kind, IdentityKind::User);
    }
    // A key whose JWK says RS256 never verifies PS256 (and vice versa).
    let t = rsa.token(json!({"alg": "PS256", "kid": "rsa"}), claims(ISS, AUD));
    assert_eq!(reason(&a, &t).await, Reason::AlgorithmNotAllowed);
    let t = rsa.token(json!({"alg": "RS256", "kid": "pss"}), claims(ISS, AUD));
    assert_eq!(reason(&a, &t).await, Reason::AlgorithmNotAllowed);
}

#[tokio::test]
async fn alg_none_is_refused_in_every_casing() {
    let k = TestKey::es256();
    let (a, _) = setup(&[("k", &k)]).await;
    for alg in ["none", "None", "NONE", "nOnE", "NoNe", "nonE"] {
        for sig in [&b""[..], b"x"] {
            let t = raw_token(json!({"alg": alg, "kid": "k"}), claims(ISS, AUD), sig);
            // The same answer whatever the attacker left in the signature part.
            assert_eq!(reason(&a, &t).await, Reason::AlgorithmNotAllowed, "{alg}");
        }
    }
    // An allowed algorithm with the signature stripped is simply a bad signature.
    let good = k.jwt("k", claims(ISS, AUD));
    let stripped = format!("{}.", good.rsplit_once('.').unwrap().0);
    assert_eq!(reason(&a, &stripped).await, Reason::BadSignature);
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let rsa = TestKey::rsa();
    let (a, _) = setup(&[("k", &rsa)]).await;
    let der = rsa.key.public_key_der().unwrap();
    let pem = pem_encode("PUBLIC KEY", &der);
    let jwk = rsa.public_jwk("k").to_string();
    let n = rsa.public_jwk("k")["n"].as_str().unwrap().to_string();
    for secret in [
        pem.as_bytes(),
        pem.trim_end().as_bytes(),
        &der[..],
        jwk.as_bytes(),
        n.as_bytes(),
    ] {
        let t = hs256(json!({"alg":"HS256","kid":"k"}), claims(ISS, AUD), secret);
        assert_eq!(reason(&a, &t).await, Reason::AlgorithmNotAllowed);
    }

    // Even where HMAC is enabled, only the shared secret is ever the HMAC key.
    let fetch = FakeFetch::new();
    fetch.set(JWKS, 200, &jwks(&[rsa.public_jwk("k")]));
    let secret = "s".repeat(32);
    let p = provider(json!({"algorithms": ["RS256", "HS256"], "shared_secret": secret}));
    let a = auth_with(&[p], &fetch).await;
    let forged = hs256(
        json!({"alg":"HS256","kid":"k"}),
        claims(ISS, AUD),
        pem.as_bytes(),
    );
    assert_eq!(reason(&a, &forged).await, Reason::BadSignature);
    let good = hs256(json!({"alg":"HS256"}), claims(ISS, AUD), secret.as_bytes());
    assert_eq!(a.verify_bearer(&good).await.unwrap().subject, "user-1");
    let hs384 = raw_token(json!({"alg":"HS384"}), claims(ISS, AUD), &[0; 48]);
    assert_eq!(
        reason(&a, &hs384).await,
        Reason::AlgorithmNotAllowed,
        "HS384 not listed"
    );
}

#[tokio::test]
async fn hmac_without_secret_or_none_in_config_is_a_config_error() {
    let f: Arc<dyn Fetch> = FakeFetch::new();
    for extra in [
        json!({"algorithms": ["HS256"]}),
        json!({"algorithms": ["none"]}),
        json!({"algorithms": ["RS256"], "audiences": []}),
        json!({"algorithms": ["HS256"], "shared_secret": "short"}),
        json!({"algorithms": ["XS256"]}),
        json!({"claims": {"groups": "a..b"}}),
    ] {
        let r = Authenticator::new(
            &[provider(extra.clone())],
            f.clone(),
            IdentityMetrics::new(),
        );
        assert!(r.is_err(), "{extra}");
    }
    let dup = [provider(json!({})), provider(json!({"name": "other"}))];
    assert!(
        Authenticator::new(&dup, f, IdentityMetrics::new()).is_err(),
        "same issuer twice"
    );
}

#[tokio::test]
async fn embedded_jwk_header_is_never_trusted() {
    let real = TestKey::es256();
    let attacker = TestKey::es256();
    let (a, fetch) = setup(&[("k", &real)]).await;
    for header in [
        json!({"alg":"ES256","kid":"k","jwk": attacker.public_jwk("k")}),
        json!({"alg":"ES256","jwk": attacker.public_jwk("k")}),
        json!({"alg":"ES256","kid":"attacker","jwk": attacker.public_jwk("attacker")}),
    ] {
        let t = attacker.token(header.clone(), claims(ISS, AUD));
        let r = reason(&a, &t).await;
        assert!(
            matches!(r, Reason::BadSignature | Reason::UnknownKey),
            "{header}: {r}"
        );
    }
    assert!(fetch.urls.lock().unwrap().iter().all(|u| u == JWKS));
}

#[tokio::test]
async fn jku_and_x5u_are_never_fetched() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let real = TestKey::es256();
    let attacker = TestKey::es256();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[real.public_jwk("k")])).unwrap();
    // The real HTTP client: if anything followed jku/x5u, the listener would see it.
    let fetch: Arc<dyn Fetch> = Arc::new(crate::HttpFetch::new(Duration::from_secs(2)).unwrap());
    let p = provider(json!({"jwks_uri": null, "jwks_file": file.to_str().unwrap()}));
    let a = Authenticator::new(&[p], fetch, IdentityMetrics::new()).unwrap();
    a.start().await;
    for header in [
        json!({"alg":"ES256","kid":"attacker","jku": url}),
        json!({"alg":"ES256","kid":"attacker","x5u": url}),
        json!({"alg":"ES256","jku": url, "x5u": url}),
    ] {
        let t = attacker.token(header, claims(ISS, AUD));
        let r = reason(&a, &t).await;
        assert!(
            matches!(r, Reason::BadSignature | Reason::UnknownKey),
            "{r}"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        listener.accept().is_err(),
        "something connected to the jku/x5u URL"
    );
}

#[tokio::test]
async fn kid_path_traversal_is_just_an_unknown_kid() {
    let k = TestKey::es256();
    let (a, fetch) = setup(&[("k", &k)]).await;
    for kid in [
        "../../etc/passwd",
        "/etc/passwd",
        "..\\..\\windows",
        "k/../k",
        "file:///etc/passwd",
    ] {
        let t = k.jwt(kid, claims(ISS, AUD));
        let e = a.verify_bearer(&t).await.unwrap_err();
        assert_eq!(e.reason, Reason::UnknownKey, "{kid}");
        assert!(!e.description.contains("root:"));
    }
    // The kid never reaches a URL: only the configured JWKS was fetched.
    assert!(fetch.urls.lock().unwrap().iter().all(|u| u == JWKS));
}

#[tokio::test]
async fn ecdsa_psychic_signature_is_refused() {
    let (es256, es384) = (TestKey::es256(), TestKey::es384());
    let (a, _) = setup(&[("p256", &es256), ("p384", &es384)]).await;
    for (kid, alg, len) in [("p256", "ES256", 64), ("p384", "ES384", 96)] {
        let t = raw_token(
            json!({"alg": alg, "kid": kid}),
            claims(ISS, AUD),
            &vec![0u8; len],
        );
        assert_eq!(reason(&a, &t).await, Reason::BadSignature, "{alg} r=s=0");
    }
    // r = s = n (the group order) is just as invalid.
    let n = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    let t = raw_token(
        json!({"alg":"ES256","kid":"p256"}),
        claims(ISS, AUD),
        &[n.clone(), n].concat(),
    );
    assert_eq!(reason(&a, &t).await, Reason::BadSignature);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn wrong_curve_key_is_refused() {
    let es384 = TestKey::es384();
    let mut no_alg = es384.public_jwk("noalg");
    no_alg.as_object_mut().unwrap().remove("alg");
    let fetch = FakeFetch::new();
    fetch.set(JWKS, 200, &jwks(&[es384.public_jwk("k"), no_alg]));
    let a = auth_with(&[provider(json!({}))], &fetch).await;
    for kid in ["k", "noalg"] {
        // Header says ES256 but the key is P-384: whatever the signature, refuse.
        let sig = es384.sign(b"whatever");
        let t = raw_token(json!({"alg":"ES256","kid": kid}), claims(ISS, AUD), &sig);
        assert_eq!(reason(&a, &t).await, Reason::AlgorithmNotAllowed, "{kid}");
    }
    // And an RSA key never verifies an EC algorithm (or vice versa).
    let rsa = TestKey::rsa();
    let fetch = FakeFetch::new();
    fetch.set(JWKS, 200, &jwks(&[rsa.public_jwk("r")]));
    let a = auth_with(&[provider(json!({}))], &fetch).await;
    let t = raw_token(json!({"alg":"ES256","kid":"r"}), claims(ISS, AUD), &[1; 64]);
    assert_eq!(reason(&a, &t).await, Reason::AlgorithmNotAllowed);
}

#[tokio::test]
async fn claim_failures_map_to_their_reasons() {
    let k = TestKey::es256();
    let (a, _) = setup(&[("k", &k)]).await;
    let now = crate::util::now_unix();
    let with = |key: &str, v: Value| {
        let mut c = claims(ISS, AUD);
        c[key] = v;
        c
    };
    let cases = [
        (with("exp", json!(now - 3600)), Reason::TokenExpired),
        (with("nbf", json!(now + 3600)), Reason::TokenNotYetValid),
        (with("iat", json!(now + 3600)), Reason::TokenNotYetValid),
        (
            with("exp", json!((now + 300).to_string())),
            Reason::InvalidToken,
        ),
        (with("aud", json!("someone-else")), Reason::WrongAudience),
        (with("aud", json!(42)), Reason::InvalidToken),
        (with("sub", json!(42)), Reason::InvalidToken),
        (with("groups", json!("a,b")), Reason::Allowed),
        (with("groups", json!(7)), Reason::InvalidToken),
        (with("nonce", json!("n")), Reason::Allowed), // has scope: an access token
    ];
    for (c, want) in cases {
        let t = k.jwt("k", c.clone());
        let got = match a.verify_bearer(&t).await {
            Ok(_) => Reason::Allowed,
            Err(e) => e.reason,
        };
        assert_eq!(got, want, "{c}");
    }
    let mut no_exp = claims(ISS, AUD);
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(reason(&a, &k.jwt("k", no_exp)).await, Reason::InvalidToken);
}

#[tokio::test]
async fn unknown_issuer_is_wrong_issuer_and_not_echoed_raw() {
    let k = TestKey::es256();
    let (a, fetch) = setup(&[("k", &k)]).await;
    let calls = fetch.calls();
    let e = a
        .verify_bearer(&k.jwt("k", claims("https://evil.example.com\r\nX: y", AUD)))
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::WrongIssuer);
    assert!(!e.description.contains('\r') && !e.description.contains('\n'));
    assert_eq!(e.provider, None);
    assert_eq!(fetch.calls(), calls, "an unknown issuer triggers no fetch");
    let mut c = claims(ISS, AUD);
    c["iss"] = json!(["https://idp.example.com"]);
    assert_eq!(reason(&a, &k.jwt("k", c)).await, Reason::InvalidToken);
}

#[tokio::test]
async fn a_kid_never_crosses_providers() {
    let ka = TestKey::es256();
    let kb = TestKey::es256();
    let fetch = FakeFetch::new();
    fetch.set(JWKS, 200, &jwks(&[ka.public_jwk("shared")]));
    fetch.set(
        "https://b.example.com/jwks",
        200,
        &jwks(&[kb.public_jwk("shared"), kb.public_jwk("b-only")]),
    );
    let pb = provider(
        json!({"name":"b","issuer":"https://b.example.com","jwks_uri":"https://b.example.com/jwks"}),
    );
    let a = auth_with(&[provider(json!({})), pb], &fetch).await;
    // Signed by B's key, claiming A as issuer.
    assert_eq!(
        reason(&a, &kb.jwt("shared", claims(ISS, AUD))).await,
        Reason::BadSignature
    );
    assert_eq!(
        reason(&a, &kb.jwt("b-only", claims(ISS, AUD))).await,
        Reason::UnknownKey
    );
    let ok = a
        .verify_bearer(&kb.jwt("shared", claims("https://b.example.com", AUD)))
        .await
        .unwrap();
    assert_eq!(ok.provider.as_deref(), Some("b"));
}

#[tokio::test]
async fn id_tokens_are_not_access_tokens() {
    let k = TestKey::es256();
    let (a, _) = setup(&[("k", &k)]).await;
    let id_claims = json!({"iss": ISS, "aud": AUD, "sub": "u", "exp": crate::util::now_unix() + 60, "nonce": "abc", "email": "u@x.io"});
    assert_eq!(
        reason(&a, &k.jwt("k", id_claims)).await,
        Reason::InvalidToken
    );
    for typ in ["id_token", "application/ID_TOKEN", "logout+jwt"] {
        let t = k.token(
            json!({"alg":"ES256","kid":"k","typ": typ}),
            claims(ISS, AUD),
        );
        assert_eq!(reason(&a, &t).await, Reason::InvalidToken, "{typ}");
    }
    // With token_types configured, typ must be one of them.
    let fetch = FakeFetch::new();
    fetch.set(JWKS, 200, &jwks(&[k.public_jwk("k")]));
    let a = auth_with(&[provider(json!({"token_types": ["at+jwt"]}))], &fetch).await;
    assert_eq!(
        reason(&a, &k.jwt("k", claims(ISS, AUD))).await,
        Reason::InvalidToken
    );
    let t = k.token(
        json!({"alg":"ES256","kid":"k","typ":"application/AT+JWT"}),
        claims(ISS, AUD),
    );
    assert!(a.verify_bearer(&t).await.is_ok());
}

#[tokio::test]
async fn huge_token_is_refused_before_any_work() {
    let k = TestKey::es256();
    let (a, fetch) = setup(&[("k", &k)]).await;
    let calls = fetch.calls();
    let mut c = claims(ISS, AUD);
    c["pad"] = json!("x".repeat(100 * 1024));
    let t = k.jwt("unknown-kid", c);
    assert!(t.len() > 100 * 1024);
    let started = std::time::Instant::now();
    let e = a.verify_bearer(&t).await.unwrap_err();
    assert_eq!(e.reason, Reason::InvalidToken);
    assert!(e.description.contains("longer than"));
    assert_eq!(fetch.calls(), calls, "no key fetch for an oversized token");
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(
        a.inner.metrics.cache_count("miss"),
        0,
        "not even hashed into the cache"
    );
}

#[tokio::test]
async fn crit_header_is_refused_even_when_signed() {
    let k = TestKey::es256();
    let (a, _) = setup(&[("k", &k)]).await;
    let t = k.token(
        json!({"alg":"ES256","kid":"k","crit":["exp"],"exp":1}),
        claims(ISS, AUD),
    );
    assert_eq!(reason(&a, &t).await, Reason::InvalidToken);
    let t = k.token(
        json!({"alg":"ES256","kid":"k","b64":false,"crit":["b64"]}),
        claims(ISS, AUD),
    );
    assert_eq!(reason(&a, &t).await, Reason::InvalidToken);
}

#[tokio::test]
async fn encryption_key_is_not_a_signing_key() {
    let k = TestKey::es256();
    let other = TestKey::es256();
    let mut enc = k.public_jwk("enc");
    enc["use"] = json!("enc");
    let fetch = FakeFetch::new();
    fetch.set(JWKS, 200, &jwks(&[other.public_jwk("sig"), enc]));
    let a = auth_with(&[provider(json!({}))], &fetch).await;
    let e = a
        .verify_bearer(&k.jwt("enc", claims(ISS, AUD)))
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::UnknownKey);
    assert!(e.description.contains("use"), "{}", e.description);
}

#[tokio::test]
async fn garbage_never_panics() {
    let k = TestKey::es256();
    let (a, _) = setup(&[("k", &k)]).await;
    for t in [
        "",
        "a",
        "a.b.c",
        "...",
        "Bearer x",
        "é.é.é",
        "a b",
        "e30.e30.e30",
        "=",
        "a.b.c\n",
    ] {
        let _ = a.verify_bearer(t).await;
    }
    assert_eq!(reason(&a, "").await, Reason::MissingToken);
    assert_eq!(
        reason(&a, "opaque-token").await,
        Reason::InvalidToken,
        "no introspection configured"
    );
}

#[tokio::test]
async fn repeated_token_is_a_cache_hit() {
    let k = TestKey::es256();
    let (a, _) = setup(&[("k", &k)]).await;
    let t = k.jwt("k", claims(ISS, AUD));
    let first = a.verify_bearer(&t).await.unwrap();
    let second = a.verify_bearer(&t).await.unwrap();
    assert_eq!(first.subject, second.subject);
    assert_eq!(a.inner.metrics.cache_count("hit"), 1);
    assert_eq!(a.inner.metrics.cache_count("miss"), 1);
    // A token that fails is never cached.
    let bad = k.jwt("k", claims(ISS, "nope"));
    let _ = a.verify_bearer(&bad).await;
    let _ = a.verify_bearer(&bad).await;
    assert_eq!(a.inner.metrics.cache_count("hit"), 1);
}

#[tokio::test]
async fn a_cached_token_with_a_forbidden_character_is_still_refused() {
    // The character check runs after the cache lookup; a token one byte away
    // from a cached one must miss and be refused by it, not served.
    let k = TestKey::es256();
    let (a, _) = setup(&[("k", &k)]).await;
    let t = k.jwt("k", claims(ISS, AUD));
    assert!(a.verify_bearer(&t).await.is_ok());
    for bad in [format!("{t} "), format!("{t}\n"), t.replacen('.', "!.", 1)] {
        let e = a.verify_bearer(&bad).await.unwrap_err();
        assert_eq!(e.reason, Reason::InvalidToken);
        assert!(e.description.contains("not allowed"), "{}", e.description);
    }
    // Refused before any verification: no miss counted, nothing cached.
    assert_eq!(a.inner.metrics.cache_count("miss"), 1);
    assert_eq!(a.inner.metrics.cache_count("hit"), 0);
}

#[tokio::test]
async fn failures_are_counted_by_provider_and_reason() {
    let k = TestKey::es256();
    let (a, _) = setup(&[("k", &k)]).await;
    let _ = a.verify_bearer(&k.jwt("k", claims(ISS, "nope"))).await;
    let _ = a
        .verify_bearer(&k.jwt("k", claims("https://other", AUD)))
        .await;
    let get = |p: &str, r: &str| {
        a.inner
            .metrics
            .auth_failures
            .get_or_create(&crate::metrics::ProviderReasonLabels {
                provider: p.into(),
                reason: r.into(),
            })
            .get()
    };
    assert_eq!(get("idp", "wrong_audience"), 1);
    assert_eq!(get("unknown", "wrong_issuer"), 1);
}

// ---- JWKS timing (paused clock) ----

#[tokio::test(start_paused = true)]
async fn unknown_kid_flood_fetches_once_per_min_refresh() {
    let k = TestKey::es256();
    let (a, fetch) = setup(&[("k", &k)]).await;
    assert_eq!(fetch.calls(), 1);
    let flood = |round: usize| {
        let a = a.clone();
        let k = k.clone();
        async move {
            let tasks: Vec<_> = (0..50)
                .map(|i| {
                    let a = a.clone();
                    let t = k.jwt(&format!("random-{round}-{i}"), claims(ISS, AUD));
                    tokio::spawn(async move { a.verify_bearer(&t).await.unwrap_err().reason })
                })
                .collect();
            for t in tasks {
                assert_eq!(t.await.unwrap(), Reason::UnknownKey);
            }
        }
    };
    flood(0).await;
    // The initial load happened "just now" (< min_refresh), so no refetch at all.
    assert_eq!(fetch.calls(), 1);
    tokio::time::advance(Duration::from_secs(11)).await;
    flood(1).await;
    assert_eq!(fetch.calls(), 2, "one shared refetch for 50 unknown kids");
    flood(2).await;
    assert_eq!(fetch.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn rotated_key_is_accepted_on_first_use() {
    let old = TestKey::es256();
    let new = TestKey::es256();
    let (a, fetch) = setup(&[("old", &old)]).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    fetch.set(
        JWKS,
        200,
        &jwks(&[old.public_jwk("old"), new.public_jwk("new")]),
    );
    let id = a
        .verify_bearer(&new.jwt("new", claims(ISS, AUD)))
        .await
        .unwrap();
    assert_eq!(id.subject, "user-1");
    assert_eq!(fetch.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn bad_jwks_responses_never_replace_good_keys_and_stale_keys_expire() {
    let k = TestKey::es256();
    let fetch = FakeFetch::new();
    fetch.set(JWKS, 200, &jwks(&[k.public_jwk("k")]));
    let p = provider(json!({"jwks_refresh": "1m", "jwks_stale_max": "1h"}));
    let metrics = IdentityMetrics::new();
    let a = Authenticator::new(&[p], fetch.clone(), metrics.clone()).unwrap();
    a.start().await;
    let refresher = a.spawn_refresher();
    let token = || k.jwt("k", claims(ISS, AUD));
    let mut enc = k.public_jwk("k");
    enc["use"] = json!("enc");
    for (status, body) in [
        (200, "not json".to_string()),
        (200, r#"{"keys":[]}"#.to_string()),
        (200, jwks(&[enc])),
        (
            200,
            jwks(&[json!({"kty":"RSA","kid":"k","n":"AQAB","e":"AQAB"})]),
        ),
        (500, String::new()),
    ] {
        fetch.set(JWKS, status, &body);
        let before = fetch.calls();
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(fetch.calls() > before, "refresher ran");
        assert!(
            a.verify_bearer(&token()).await.is_ok(),
            "old keys still serve after {body:.40}"
        );
        assert!(a.readiness()[0].ready);
        assert!(
            a.readiness()[0].detail.contains("last refresh failed"),
            "{}",
            a.readiness()[0].detail
        );
    }
    let invalid = metrics
        .jwks_refresh
        .get_or_create(&crate::metrics::ProviderResultLabels {
            provider: "idp".into(),
            result: "invalid".into(),
        })
        .get();
    assert!(invalid >= 4, "{invalid}");
    // A full outage: keys serve until jwks_stale_max after the last success.
    fetch.fail(JWKS);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let r = a.readiness();
    assert!(!r[0].ready, "{}", r[0].detail);
    assert!(r[0].detail.contains("stale"));
    assert_eq!(reason(&a, &token()).await, Reason::UnknownKey);
    let gauge = metrics
        .jwks_keys
        .get_or_create(&crate::metrics::ProviderLabels {
            provider: "idp".into(),
        })
        .get();
    assert_eq!(gauge, 0);
    // Recovery.
    fetch.set(JWKS, 200, &jwks(&[k.public_jwk("k")]));
    tokio::time::sleep(Duration::from_secs(400)).await;
    assert!(a.readiness()[0].ready);
    refresher.abort();
}

#[tokio::test(start_paused = true)]
async fn cache_control_max_age_shortens_refresh_but_not_below_min_refresh() {
    let k = TestKey::es256();
    let fetch = FakeFetch::new();
    let set = |age: &str| {
        fetch.responses.lock().unwrap().insert(
            JWKS.to_string(),
            Ok(crate::FetchResponse {
                status: 200,
                cache_control: Some(age.to_string()),
                body: jwks(&[k.public_jwk("k")]).into(),
            }),
        );
    };
    set("max-age=60");
    let a = auth_with(&[provider(json!({}))], &fetch).await;
    let cache = a.inner.providers[0].jwks.clone().unwrap();
    let due = cache.next_due() - tokio::time::Instant::now();
    assert_eq!(due, Duration::from_secs(60));
    set("max-age=0");
    tokio::time::advance(Duration::from_secs(61)).await;
    cache.refresh(Trigger::Due).await;
    assert_eq!(
        cache.next_due() - tokio::time::Instant::now(),
        Duration::from_secs(10)
    );
}

#[tokio::test]
async fn readiness_before_and_after_loading() {
    let k = TestKey::es256();
    let fetch = FakeFetch::new();
    let a = Authenticator::new(
        &[provider(json!({}))],
        fetch.clone(),
        IdentityMetrics::new(),
    )
    .unwrap();
    let r = a.readiness();
    assert!(!r[0].ready);
    assert_eq!(r[0].name, "idp");
    a.start().await;
    assert!(a.readiness()[0].detail.contains("keys not loaded"));
    fetch.set(JWKS, 200, &jwks(&[k.public_jwk("k")]));
    // Not due yet after a failure; a token with an unknown kid may refetch though.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(a.verify_bearer(&k.jwt("k", claims(ISS, AUD))).await.is_ok());
    assert!(a.readiness()[0].ready);
}

#[tokio::test]
async fn warm_caches_survive_reload_when_unchanged() {
    let k = TestKey::es256();
    let (a, fetch) = setup(&[("k", &k)]).await;
    assert_eq!(fetch.calls(), 1);
    let same = [provider(json!({"audiences": ["other-api"]}))];
    let b =
        Authenticator::new_from_previous(&a, &same, fetch.clone(), IdentityMetrics::new()).unwrap();
    assert!(b.readiness()[0].ready, "keys carried over");
    b.start().await;
    assert_eq!(fetch.calls(), 1, "no refetch for an unchanged key source");
    assert_eq!(
        reason(&b, &k.jwt("k", claims(ISS, AUD))).await,
        Reason::WrongAudience,
        "new rules apply"
    );
    let changed = [provider(json!({"jwks_refresh": "1m"}))];
    let c = Authenticator::new_from_previous(&a, &changed, fetch.clone(), IdentityMetrics::new())
        .unwrap();
    assert!(!c.readiness()[0].ready);
}

/// Moves the clock past the first provider's refresh time and refreshes its
/// JWKS, as the background task would.
async fn refresh_when_due(a: &Authenticator) {
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(301)).await;
    a.inner.providers[0]
        .jwks
        .as_ref()
        .unwrap()
        .refresh(Trigger::Due)
        .await;
}

#[tokio::test]
async fn removed_key_stops_cached_tokens() {
    let k = TestKey::es256();
    let other = TestKey::es256();
    let (a, fetch) = setup(&[("k", &k)]).await;
    let t = k.jwt("k", claims(ISS, AUD));
    assert!(a.verify_bearer(&t).await.is_ok());
    fetch.set(JWKS, 200, &jwks(&[other.public_jwk("other")]));
    refresh_when_due(&a).await;
    assert_eq!(reason(&a, &t).await, Reason::UnknownKey);
}

/// An emergency rotation that keeps the `kid` but replaces the key: tokens
/// the old key verified must not be served from the cache.
#[tokio::test]
async fn a_key_replaced_under_its_kid_stops_cached_tokens() {
    let k = TestKey::es256();
    let replacement = TestKey::es256();
    let (a, fetch) = setup(&[("k", &k)]).await;
    let t = k.jwt("k", claims(ISS, AUD));
    assert!(a.verify_bearer(&t).await.is_ok());
    fetch.set(JWKS, 200, &jwks(&[replacement.public_jwk("k")]));
    refresh_when_due(&a).await;
    assert_eq!(reason(&a, &t).await, Reason::BadSignature);
    // The new key's tokens verify; an unchanged refresh keeps the cache.
    let fresh = replacement.jwt("k", claims(ISS, AUD));
    assert!(a.verify_bearer(&fresh).await.is_ok());
}

// ---- introspection ----

const INTROSPECT: &str = "https://idp.example.com/introspect";

fn introspecting() -> ProviderConfig {
    provider(json!({
        "introspection": {"endpoint": INTROSPECT, "client_id": "proxy", "client_secret": "s3cr:et", "cache_ttl": "60s"}
    }))
}

#[tokio::test]
async fn introspection_active_inactive_and_negative_cache() {
    let fetch = FakeFetch::new();
    let exp = crate::util::now_unix() + 600;
    fetch.set(
        INTROSPECT,
        200,
        &json!({"active": true, "sub": "svc", "client_id": "svc", "scope": "a b", "aud": AUD, "exp": exp, "iss": ISS}).to_string(),
    );
    let a = Authenticator::new(&[introspecting()], fetch.clone(), IdentityMetrics::new()).unwrap();
    let id = a.verify_bearer("opaque-1").await.unwrap();
    assert_eq!(id.subject, "svc");
    assert_eq!(id.kind, IdentityKind::Service);
    assert_eq!(id.scopes, ["a", "b"]);
    assert_eq!(id.expires_at, Some(exp));
    let calls = fetch.calls();
    assert!(a.verify_bearer("opaque-1").await.is_ok());
    assert_eq!(fetch.calls(), calls, "positive result cached");
    assert_eq!(a.inner.metrics.cache_count("hit"), 1);

    let (auth, body) = fetch.bodies.lock().unwrap()[0].clone();
    assert_eq!(
        auth.as_deref(),
        Some("Basic cHJveHk6czNjciUzQWV0"),
        "client_secret_basic, form-encoded"
    );
    assert_eq!(body, "token=opaque-1&token_type_hint=access_token");

    fetch.set(INTROSPECT, 200, r#"{"active": false}"#);
    assert_eq!(reason(&a, "opaque-2").await, Reason::InvalidToken);
    assert_eq!(reason(&a, "opaque-2").await, Reason::InvalidToken);
    assert_eq!(fetch.calls(), calls + 1, "inactive result cached (briefly)");

    fetch.set(
        INTROSPECT,
        200,
        &json!({"active": true, "sub": "u", "aud": "other"}).to_string(),
    );
    assert_eq!(reason(&a, "opaque-3").await, Reason::WrongAudience);
    fetch.set(
        INTROSPECT,
        200,
        &json!({"active": true, "sub": "u", "aud": AUD, "exp": 5}).to_string(),
    );
    assert_eq!(reason(&a, "opaque-4").await, Reason::TokenExpired);
    fetch.set(INTROSPECT, 200, &json!({"active": "yes"}).to_string());
    assert_eq!(reason(&a, "opaque-5").await, Reason::UpstreamUnavailable);
    fetch.fail(INTROSPECT);
    let before = fetch.calls();
    assert_eq!(reason(&a, "opaque-6").await, Reason::UpstreamUnavailable);
    assert_eq!(reason(&a, "opaque-6").await, Reason::UpstreamUnavailable);
    assert_eq!(fetch.calls(), before + 2, "transport errors are not cached");
}

#[tokio::test]
async fn concurrent_introspections_of_one_token_share_a_call() {
    let fetch = FakeFetch::new();
    fetch.set(
        INTROSPECT,
        200,
        &json!({"active": true, "sub": "u", "aud": AUD}).to_string(),
    );
    let a = Authenticator::new(&[introspecting()], fetch.clone(), IdentityMetrics::new()).unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.verify_bearer("same-token").await.is_ok() })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(fetch.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn every_single_character_change_is_rejected() {
    // Strict base64url (no padding, no stray bits) means each character of the
    // token maps to signed bytes: no edit can leave the signature valid.
    let k = TestKey::es256();
    let (a, _) = setup(&[("k", &k)]).await;
    let token = k.jwt("k", claims(ISS, AUD));
    assert!(a.verify_bearer(&token).await.is_ok());
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=";
    for i in 0..token.len() {
        let original = token.as_bytes()[i];
        for &replacement in [b'A', b'B', b'g', b'w', b'_', b'.', b'='].iter() {
            if replacement == original {
                continue;
            }
            let mut bytes = token.clone().into_bytes();
            bytes[i] = replacement;
            let mutated = String::from_utf8(bytes).unwrap();
            assert!(
                a.verify_bearer(&mutated).await.is_err(),
                "accepted mutation at {i}"
            );
        }
        assert!(ALPHABET.contains(&original));
    }
    // Truncations and extensions.
    for cut in 1..token.len() {
        assert!(
            a.verify_bearer(&token[..cut]).await.is_err(),
            "accepted prefix of length {cut}"
        );
    }
    for suffix in ["A", "=", ".", "==", ".x"] {
        assert!(
            a.verify_bearer(&format!("{token}{suffix}")).await.is_err(),
            "accepted suffix {suffix}"
        );
    }
}

#[test]
fn claims_taken_as_verified_map_with_their_providers_mapping() {
    let kc = provider(json!({
        "name": "kc", "allow_any_audience": true, "audiences": [],
        "claims": {"groups": "realm_access.roles", "scopes": "scp"}
    }));
    let a = Authenticator::new(&[kc], FakeFetch::new(), IdentityMetrics::new()).unwrap();
    let id = a
        .identity_from_claims(json!({"iss": ISS, "sub": "u", "realm_access": {"roles": ["admin"]}, "scp": ["a", "b"], "email": "x@y", "email_verified": false}))
        .unwrap();
    assert_eq!(id.provider.as_deref(), Some("kc"));
    assert_eq!(id.groups, ["admin"]);
    assert_eq!(id.scopes, ["a", "b"]);
    assert_eq!(id.email, None, "unverified email is dropped");

    // A claim of the wrong type is refused as the verifier refuses it.
    let e = a
        .identity_from_claims(json!({"iss": ISS, "sub": "u", "realm_access": {"roles": 5}}))
        .unwrap_err();
    assert_eq!(e.reason, Reason::InvalidToken);
    assert_eq!(e.provider.as_deref(), Some("kc"));
    assert!(
        e.description.contains("realm_access.roles"),
        "{}",
        e.description
    );

    // No provider for the issuer: the default mapping, and no provider named.
    let id = a
        .identity_from_claims(json!({"sub": "svc", "client_id": "svc", "groups": ["g"]}))
        .unwrap();
    assert_eq!(id.kind, IdentityKind::Service);
    assert_eq!(id.provider, None);
    assert_eq!(id.groups, ["g"]);
    let e = a
        .identity_from_claims(json!({"sub": "u", "groups": 5}))
        .unwrap_err();
    assert!(e.description.contains("groups"));
}
