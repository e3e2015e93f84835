//! `providers[].ca_file` and `credentials[].ca_file`: an IdP behind a private CA
//! is reachable when its CA is configured, and refused (as any unknown issuer
//! would be) when it is not. The IdP is the testkit issuer behind a TLS
//! terminator whose certificate a fresh CA signed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use portcullis_config::{CredentialConfig, ProviderConfig};
use portcullis_identity::{Authenticator, CredentialStore, Fetch, HttpFetch, IdentityMetrics};
use portcullis_testkit::DevIssuer;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// TLS on 127.0.0.1:PORT for `localhost`, forwarding to `backend`. Returns the
/// port and the CA certificate (PEM).
async fn tls_front(backend: std::net::SocketAddr) -> (u16, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(leaf.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, ca_cert.pem())
}

fn fetch() -> Arc<dyn Fetch> {
    Arc::new(HttpFetch::new(Duration::from_secs(5)).unwrap())
}

#[tokio::test]
async fn a_token_endpoint_behind_a_private_ca_needs_its_ca_file() {
    let idp = DevIssuer::start().await.unwrap();
    idp.token_endpoint().add_secret_client("billing", "s3cret");
    let (port, ca_pem) = tls_front(idp.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let credential = |ca: Option<&std::path::Path>| -> CredentialConfig {
        serde_json::from_value(json!({
            "name": "partner",
            "token_endpoint": format!("https://localhost:{port}/token"),
            "client_id": "billing",
            "client_secret": "s3cret",
            "ca_file": ca.map(|p| p.to_str().unwrap()),
        }))
        .unwrap()
    };
    let metrics = IdentityMetrics::new();
    let without = CredentialStore::new(&[credential(None)], &[], &fetch(), &metrics, None).unwrap();
    let err = without
        .get("partner")
        .unwrap()
        .authorization()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(idp.token_endpoint().requests(), 0);

    let with =
        CredentialStore::new(&[credential(Some(&ca_file))], &[], &fetch(), &metrics, None).unwrap();
    assert!(with.get("partner").unwrap().authorization().await.is_ok());
    assert_eq!(idp.token_endpoint().requests(), 1);
}

#[tokio::test]
async fn a_jwks_behind_a_private_ca_needs_the_providers_ca_file() {
    let idp = DevIssuer::start().await.unwrap();
    let (port, ca_pem) = tls_front(idp.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let token = idp.token("alice", "orders-api", 300, json!({})).unwrap();
    for (ca, accepted) in [(None, false), (Some(&ca_file), true)] {
        let provider: ProviderConfig = serde_json::from_value(json!({
            "name": "private",
            "issuer": idp.issuer(),
            "jwks_uri": format!("https://localhost:{port}/jwks"),
            "audiences": ["orders-api"],
            "ca_file": ca.map(|p| p.to_str().unwrap()),
        }))
        .unwrap();
        let auth = Authenticator::new(&[provider], fetch(), IdentityMetrics::new()).unwrap();
        auth.start().await;
        assert_eq!(
            auth.verify_bearer(&token).await.is_ok(),
            accepted,
            "ca_file {ca:?}"
        );
    }
    // A CA file that holds no certificate is refused when the provider is built.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "no certificate here").unwrap();
    let provider: ProviderConfig = serde_json::from_value(json!({
        "name": "private", "issuer": idp.issuer(), "audiences": ["orders-api"],
        "ca_file": junk.to_str().unwrap(),
    }))
    .unwrap();
    let err = Authenticator::new(&[provider], fetch(), IdentityMetrics::new()).unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
}
