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

/// A `localhost` certificate from `ca` and its key, written into `dir`: their paths.
fn server_files(dir: &Path, ca: &Ca) -> (String, String) {
    let (cert, key) = leaf(
        ca,
        "localhost",
        vec![SanType::DnsName("localhost".try_into().unwrap())],
    );
    let cert_file = write(dir, "server.pem", &cert.pem());
    let key_file = write(dir, "server.key", &key.serialize_pem());
    (cert_file, key_file)
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
    let (cert_file, key_file) = server_files(dir.path(), &ca);
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

/// A reload applies `server.tls`: a client CA taken out stops vouching at the
/// next handshake, and `client_auth: required` refuses clients without one.
/// Kept from start, both went on as before, silently. The listen address a
/// reload cannot change stays the runtime's, and so the assertion's `iss`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_the_listeners_tls_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (new_ca("first CA"), new_ca("second CA"));
    let (cert_file, key_file) = server_files(dir.path(), &ca);
    let first = write(dir.path(), "first.pem", &ca.cert.pem());
    let second = write(dir.path(), "second.pem", &other.cert.pem());
    let echo = EchoUpstream::start().await.unwrap();
    let yaml = |listen: &str, client_ca: &str, client_auth: &str| {
        format!(
            "server:\n  listen: {listen}\n  tls:\n    cert_file: {cert_file}\n    key_file: {key_file}\n    client_ca_file: {client_ca}\n    client_auth: {client_auth}\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\nroutes:\n  - match: {{ path_prefix: / }}\n    upstream: {}\n    auth: none\n",
            echo.url()
        )
    };
    let server = Server::start(config(&yaml("127.0.0.1:0", &first, "optional")), None)
        .await
        .unwrap();
    let addr = server.local_addr();
    let (cert, key) = leaf(&ca, "web", vec![]);
    let with_cert = || client_config(&ca, Some((&cert, &key)));
    assert_eq!(tls_get(addr, with_cert(), "/a").await.unwrap().1, 200);

    server
        .apply(config(&yaml("127.0.0.1:1", &second, "optional")))
        .unwrap();
    assert!(
        tls_get(addr, with_cert(), "/b").await.is_err(),
        "a certificate of the CA taken out still completed the handshake"
    );
    assert_eq!(
        tls_get(addr, client_config(&ca, None), "/c")
            .await
            .unwrap()
            .1,
        200
    );
    let runtime = server.shared.runtime.load_full();
    assert_eq!(runtime.config.server.listen, "127.0.0.1:0");
    assert!(
        !runtime.public_url.contains("127.0.0.1:1"),
        "{}",
        runtime.public_url
    );

    server
        .apply(config(&yaml("127.0.0.1:0", &first, "required")))
        .unwrap();
    assert!(tls_get(addr, client_config(&ca, None), "/d").await.is_err());
    assert_eq!(tls_get(addr, with_cert(), "/e").await.unwrap().1, 200);
}

/// A TLS upstream that requires a client certificate from `ca` and answers with the
/// HTTP version it saw (h2 when ALPN picked it).
async fn mtls_upstream(ca: &Ca, server: (&rcgen::Certificate, &KeyPair)) -> std::net::SocketAddr {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server.0.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.1.serialize_der())),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("{:?}", req.version());
                        let mut resp = http::Response::new(Full::new(Bytes::from(body)));
                        // What the request named: h2's `:authority`, and any `Host`.
                        let authority = req.uri().authority().map(|a| a.to_string());
                        let hosts = req.headers().get_all(http::header::HOST).iter().count();
                        if let Some(a) = authority.and_then(|a| a.parse().ok()) {
                            resp.headers_mut().insert("x-authority", a);
                        }
                        resp.headers_mut().insert("x-host-headers", hosts.into());
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mtls_with_own_ca_and_h2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("upstream CA");
    let (scert, skey) = leaf(
        &ca,
        "orders.internal",
        vec![SanType::DnsName("orders.internal".try_into().unwrap())],
    );
    let upstream = mtls_upstream(&ca, (&scert, &skey)).await;
    let (ccert, ckey) = leaf(&ca, "portcullis", vec![]);
    let ca_file = write(dir.path(), "ca.pem", &ca.cert.pem());
    let cert_file = write(dir.path(), "client.pem", &ccert.pem());
    let key_file = write(dir.path(), "client.key", &ckey.serialize_pem());
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\nroutes:\n  - name: mtls\n    match: {{ path_prefix: /mtls }}\n    upstream: https://{upstream}\n    upstream_tls: {{ ca_file: {ca_file}, cert_file: {cert_file}, key_file: {key_file}, server_name: orders.internal }}\n    auth: none\n  - name: no-client-cert\n    match: {{ path_prefix: /nocert }}\n    upstream: https://{upstream}\n    upstream_tls: {{ ca_file: {ca_file}, server_name: orders.internal }}\n    auth: none\n  - name: wrong-name\n    match: {{ path_prefix: /wrongname }}\n    upstream: https://{upstream}\n    upstream_tls: {{ ca_file: {ca_file}, cert_file: {cert_file}, key_file: {key_file}, server_name: other.internal }}\n    auth: none\n"
    );
    let server = Server::start(config(&yaml), None).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let (status, headers, body) = send(&client(), "GET", &format!("{base}/mtls"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "HTTP/2.0", "h2 upstream negotiated by ALPN");
    // The judged host goes as `:authority`, not beside a different one.
    assert_eq!(
        headers["x-authority"],
        server.local_addr().to_string().as_str()
    );
    assert_eq!(headers["x-host-headers"], "0");
    // Pooled: a second request reuses the connection and still works.
    assert_eq!(get(&format!("{base}/mtls")).await.0, 200);
    assert_eq!(get(&format!("{base}/nocert")).await.0, 502);
    assert_eq!(get(&format!("{base}/wrongname")).await.0, 502);
}
