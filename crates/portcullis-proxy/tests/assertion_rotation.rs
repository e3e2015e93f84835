//! End-to-end: assertion keys in `signing_keys_dir` rotate every 2 s while requests
//! flow. Every assertion the upstream received verifies against the JWKS the proxy
//! publishes at that moment, and keeps verifying against every later JWKS until it
//! expires; a restarted server signs with the same keys.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use portcullis_identity::jose::compact::parse;
use portcullis_identity::jose::jwk::parse_jwk;
use portcullis_proxy::Server;
use portcullis_testkit::{DevIssuer, EchoUpstream};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Verifies `token` with the key its `kid` names in `jwks`; returns its claims, or
/// why it does not verify.
fn verify(token: &str, jwks: &Value) -> Result<Value, String> {
    let c = parse(token).map_err(|e| e.to_string())?;
    let alg = c.header.algorithm().map_err(|e| e.to_string())?;
    let kid = c.header.kid.clone().ok_or("no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or(format!("kid {kid} not published"))?;
    let key = parse_jwk(jwk.as_object().unwrap())?;
    if !key.verify(alg, c.signing_input, &c.signature) {
        return Err(format!("bad signature for kid {kid}"));
    }
    Ok(Value::Object(c.claims))
}

async fn start(
    dir: &std::path::Path,
    idp: &DevIssuer,
    echo: &EchoUpstream,
) -> (Server, String, String) {
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  public_url: https://proxy.example.com\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\n\
         assertion:\n  signing_keys_dir: {}\n  rotate_every: 2s\n  ttl: 3s\n\
         providers:\n  - name: dev\n    issuer: {}\n    audiences: [orders-api]\n\
         routes:\n  - name: orders\n    match: {{ path_prefix: /orders }}\n    upstream: {}\n    policy:\n      allow:\n        - authenticated: true\n",
        dir.display(),
        idp.issuer(),
        echo.url()
    );
    let server = Server::start(config(&yaml), None).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let admin = format!("http://{}", server.admin_addr());
    for _ in 0..100 {
        if get(&format!("{admin}/readyz")).await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (server, base, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assertions_verify_against_the_published_jwks_across_rotations_and_restarts() {
    let idp = DevIssuer::start().await.unwrap();
    let echo = EchoUpstream::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("assertion-keys");
    let (server, base, _) = start(&dir, &idp, &echo).await;
    let client = client();
    let mut received: Vec<(String, u64)> = Vec::new();
    let mut kids = std::collections::BTreeSet::new();
    let started = now();
    let mut i = 0;
    while now() < started + 7 {
        // A new subject each time, so the assertion cache cannot hand back an
        // assertion signed before the rotation.
        let token = idp
            .token(&format!("user-{i}"), "orders-api", 300, json!({}))
            .unwrap();
        i += 1;
        let auth = format!("Bearer {token}");
        let (status, _, body) = send(
            &client,
            "GET",
            &format!("{base}/orders/1"),
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let seen = echo.seen();
        let assertion = seen.last().unwrap().headers["x-portcullis-assertion"]
            .to_str()
            .unwrap()
            .to_string();
        let (_, jwks) = get(&format!("{base}/.well-known/portcullis/jwks.json")).await;
        let jwks: Value = serde_json::from_str(&jwks).unwrap();
        let claims = verify(&assertion, &jwks).unwrap();
        assert_eq!(claims["iss"], "https://proxy.example.com");
        kids.insert(parse(&assertion).unwrap().header.kid.unwrap());
        received.push((assertion, claims["exp"].as_u64().unwrap()));
        // Every assertion received earlier that has not expired still verifies.
        let t = now();
        for (earlier, exp) in received.iter().filter(|(_, exp)| *exp > t) {
            if let Err(e) = verify(earlier, &jwks) {
                panic!("an unexpired assertion (exp {exp}, now {t}) no longer verifies: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(kids.len() >= 3, "keys rotated every 2 s: {kids:?}");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().all(|f| f.starts_with("assertion-es256-")),
        "{files:?}"
    );

    // A restart (same directory) publishes the keys of the assertions in flight.
    let (last, _) = received.last().unwrap().clone();
    server.shutdown().await;
    let (_server, base, _) = start(&dir, &idp, &echo).await;
    let (_, jwks) = get(&format!("{base}/.well-known/portcullis/jwks.json")).await;
    verify(&last, &serde_json::from_str(&jwks).unwrap()).unwrap();
}
