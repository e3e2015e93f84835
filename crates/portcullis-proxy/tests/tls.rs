//! TLS termination: h2 by ALPN and HTTP/1.1 on one port, client certificates
//! requested per `client_auth`, and certificate files re-read when they change.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use portcullis_proxy::Server;
use portcullis_testkit::EchoUpstream;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert,
        issuer: rcgen::Issuer::new(params, key),
    }
}

fn leaf(ca: &Ca, cn: &str, sans: Vec<SanType>) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = sans;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert, key)
}

fn write(dir: &Path, name: &str, pem: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    p.display().to_string()
}

fn client_config(ca: &Ca, client: Option<(&rcgen::Certificate, &KeyPair)>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg
}

/// Connects over TLS and sends one GET; returns (negotiated ALPN, status, server cert).
async fn tls_get(
    addr: std::net::SocketAddr,
    cfg: rustls::ClientConfig,
    path: &str,
) -> Result<(Option<Vec<u8>>, u16, Vec<u8>), String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let server_cert = tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec();
    let io = hyper_util::rt::TokioIo::new(tls);
    let req = http::Request::get(format!("https://localhost{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let status = if alpn.as_deref() == Some(b"h2") {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        status
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = req;
        req.headers_mut()
            .insert("host", http::HeaderValue::from_static("localhost"));
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        status
    };
    Ok((alpn, status, server_cert))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_client_certs_and_cert_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("test CA");
    let (server_cert, server_key) = leaf(
        &ca,
        "localhost",
        vec![SanType::DnsName("localhost".try_into().unwrap())],
    );
    let cert_file = write(dir.path(), "server.pem", &server_cert.pem());
    let key_file = write(dir.path(), "server.key", &server_key.serialize_pem());
    let ca_file = write(dir.path(), "ca.pem", &ca.cert.pem());
    let echo = EchoUpstream::start().await.unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  tls:\n    cert_file: {cert_file}\n    key_file: {key_file}\n    client_ca_file: {ca_file}\n    client_auth: optional\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\nroutes:\n  - match: {{ path_prefix: / }}\n    upstream: {}\n    auth: none\n",
        echo.url()
    );
    let server = Server::start(config(&yaml), None).await.unwrap();
    let addr = server.local_addr();

    // h2 by ALPN, and HTTP/1.1 for a client that only speaks it.
    let (alpn, status, first_cert) = tls_get(addr, client_config(&ca, None), "/a").await.unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(status, 200);
    let mut h1 = client_config(&ca, None);
    h1.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (alpn, status, _) = tls_get(addr, h1, "/b").await.unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(status, 200);

    // A client certificate from the trusted CA completes the handshake; one from
    // another CA is refused and counted.
    let spiffe = SanType::URI("spiffe://cluster.local/ns/shop/sa/web".try_into().unwrap());
    let (ccert, ckey) = leaf(&ca, "web", vec![spiffe]);
    let (_, status, _) = tls_get(addr, client_config(&ca, Some((&ccert, &ckey))), "/c")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let rogue = new_ca("rogue CA");
    let (rcert, rkey) = leaf(&rogue, "evil", vec![]);
    assert!(
        tls_get(addr, client_config(&ca, Some((&rcert, &rkey))), "/d")
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let metrics = get(&format!("http://{}/metrics", server.admin_addr()))
        .await
        .1;
    assert!(
        metrics.contains("portcullis_tls_handshake_failures_total"),
        "{metrics}"
    );

    // Rotate the certificate on disk: new handshakes get the new one.
    let (new_cert, new_key) = leaf(
        &ca,
        "localhost",
        vec![SanType::DnsName("localhost".try_into().unwrap())],
    );
    std::fs::write(&key_file, new_key.serialize_pem()).unwrap();
    std::fs::write(&cert_file, new_cert.pem()).unwrap();
    let mut rotated = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (_, status, cert) = tls_get(addr, client_config(&ca, None), "/e").await.unwrap();
        assert_eq!(status, 200);
        if cert != first_cert {
            assert_eq!(CertificateDer::from(cert), *new_cert.der());
            rotated = true;
            break;
        }
    }
    assert!(rotated, "certificate was not reloaded from disk");
}
