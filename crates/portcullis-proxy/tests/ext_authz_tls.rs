//! The ext_authz gRPC listener over TLS: with `client_ca_file`, only an Envoy
//! presenting a certificate from that CA gets an answer.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::certs::{leaf, new_ca, write, Ca};
use common::ext_authz::{check_on, envoy_check};
use common::*;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis_proxy::ext_authz::proto::*;
use portcullis_proxy::ext_authz::{CHECK_PATH, HEALTH_PATH};
use portcullis_proxy::Server;
use rcgen::{KeyPair, SanType};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;
use tonic_prost::ProstCodec;

/// A gRPC client over TLS (h2 by ALPN) trusting `ca`, presenting `client`.
fn grpc(
    addr: std::net::SocketAddr,
    ca: &Ca,
    client: Option<&(rcgen::Certificate, KeyPair)>,
) -> Grpc {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_only()
        .enable_http2()
        .build();
    let client: TlsClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector);
    let origin = format!("https://localhost:{}", addr.port())
        .parse()
        .unwrap();
    tonic::client::Grpc::with_origin(client, origin)
}

type TlsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    tonic::body::Body,
>;
type Grpc = tonic::client::Grpc<TlsClient>;

async fn health(grpc: &mut Grpc) -> Result<i32, tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let resp = grpc
        .unary(
            tonic::Request::new(HealthCheckRequest {
                service: "envoy.service.auth.v3.Authorization".into(),
            }),
            HEALTH_PATH.parse().unwrap(),
            ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
        )
        .await?;
    Ok(resp.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_listener_answers_only_envoy_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("mesh CA");
    let server_cert = leaf(&ca, vec![SanType::DnsName("localhost".try_into().unwrap())]);
    let envoy = leaf(
        &ca,
        vec![SanType::URI(
            "spiffe://cluster.local/ns/istio-system/sa/ingress"
                .try_into()
                .unwrap(),
        )],
    );
    let stranger_ca = new_ca("someone else");
    let stranger = leaf(&stranger_ca, vec![]);
    let yaml = format!(
        "{SERVER_PREAMBLE}ext_authz:\n  grpc_listen: 127.0.0.1:0\n  tls:\n    cert_file: {}\n    key_file: {}\n    client_ca_file: {}\nroutes:\n  - name: open\n    match: {{ path_prefix: / }}\n    auth: none\n",
        write(dir.path(), "server.pem", &server_cert.0.pem()),
        write(dir.path(), "server.key", &server_cert.1.serialize_pem()),
        write(dir.path(), "ca.pem", &ca.cert.pem()),
    );
    let server = Server::start(config(&yaml), None).await.unwrap();
    let addr = server.ext_authz_addr().unwrap();

    let mut trusted = grpc(addr, &ca, Some(&envoy));
    assert_eq!(health(&mut trusted).await.unwrap(), SERVING);
    trusted.ready().await.unwrap();
    let check = trusted
        .unary(
            tonic::Request::new(envoy_check("GET", "/x", &[], "")),
            CHECK_PATH.parse().unwrap(),
            ProstCodec::<CheckRequest, CheckResponse>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(check.status.unwrap().code, 0);

    // No client certificate, or one from another CA: no answer at all.
    let mut anonymous = grpc(addr, &ca, None);
    assert!(health(&mut anonymous).await.is_err());
    let mut foreign = grpc(addr, &ca, Some(&stranger));
    assert!(health(&mut foreign).await.is_err());
    // Stopped with the server.
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Whether `source.principal` counts from an address outside
/// `trusted_proxies` depends on what the running listener enforces: a reload
/// that adds `tls.client_ca_file` does not change the plain listener already
/// running, so its strangers are no more believed than before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_asks_for_client_certificates_does_not_make_strangers_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("mesh CA");
    let server_cert = leaf(&ca, vec![SanType::DnsName("localhost".try_into().unwrap())]);
    let tail = "workload_identity:\n  trust_domain: cluster.local\n  accept: [xfcc]\nroutes:\n  - name: shop\n    match: { path_prefix: / }\n    policy:\n      allow:\n        - workloads: [spiffe://cluster.local/ns/shop/sa/cart]\n";
    let plain = format!("{SERVER_PREAMBLE}ext_authz:\n  grpc_listen: 127.0.0.1:0\n{tail}");
    let server = Server::start(config(&plain), None).await.unwrap();
    let check = || async {
        let cart = "spiffe://cluster.local/ns/shop/sa/cart";
        let resp = check_on(&server, envoy_check("GET", "/x", &[], cart)).await;
        resp.status.unwrap().code
    };
    assert_eq!(
        check().await,
        16,
        "a stranger's principal counts for nothing"
    );
    let with_tls = format!(
        "{SERVER_PREAMBLE}ext_authz:\n  grpc_listen: 127.0.0.1:0\n  tls:\n    cert_file: {}\n    key_file: {}\n    client_ca_file: {}\n{tail}",
        write(dir.path(), "server.pem", &server_cert.0.pem()),
        write(dir.path(), "server.key", &server_cert.1.serialize_pem()),
        write(dir.path(), "ca.pem", &ca.cert.pem()),
    );
    server.apply(config(&with_tls)).unwrap();
    assert_eq!(check().await, 16, "still plain, still a stranger");
    server.shutdown().await;
}
