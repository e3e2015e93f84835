//! An h2 upstream's shared connection carries a bounded number of streams at
//! once; requests beyond that go over another connection instead of queueing
//! behind long-lived streams (server-sent events, MCP streams, gRPC streaming)
//! until their `request_timeout`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use bytes::Bytes;
use common::certs::{leaf, new_ca, write, Ca};
use common::*;
use http_body::Frame;
use http_body_util::{Either, Full, StreamBody};
use portcullis_proxy::Server;
use rcgen::SanType;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The streams an h2 server is expected to allow at least (RFC 9113 §6.5.2
/// recommends no fewer than 100), and what this upstream allows exactly.
const STREAMS: u32 = 100;

struct H2Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Requests being served now.
    open: Arc<AtomicUsize>,
}

/// An h2-only TLS upstream allowing [`STREAMS`] concurrent streams. `/head`
/// holds its whole answer and `/body` its body (the head goes at once) until
/// `release` turns true; any other path answers `ok`.
async fn h2_upstream(ca: &Ca, release: watch::Receiver<bool>) -> H2Upstream {
    let (cert, key) = leaf(
        ca,
        vec![SanType::DnsName("up.internal".try_into().unwrap())],
    );
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (conns, opened) = (Arc::clone(&connections), Arc::clone(&open));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            let (acceptor, release, open) =
                (acceptor.clone(), release.clone(), Arc::clone(&opened));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    let (mut release, open) = (release.clone(), Arc::clone(&open));
                    async move {
                        open.fetch_add(1, Ordering::SeqCst);
                        let body = match req.uri().path() {
                            "/head" => {
                                let _ = release.wait_for(|r| *r).await;
                                Either::Left(Full::new(Bytes::from("held head")))
                            }
                            "/body" => {
                                open.fetch_add(1, Ordering::SeqCst);
                                let open = Arc::clone(&open);
                                let held = futures_util::stream::once(async move {
                                    let _ = release.wait_for(|r| *r).await;
                                    open.fetch_sub(1, Ordering::SeqCst);
                                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(
                                        "held body",
                                    )))
                                });
                                Either::Right(StreamBody::new(held))
                            }
                            _ => Either::Left(Full::new(Bytes::from("ok"))),
                        };
                        open.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(http::Response::new(body))
                    }
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .max_concurrent_streams(STREAMS)
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
            });
        }
    });
    H2Upstream {
        addr,
        connections,
        open,
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// [`STREAMS`] requests held open by the upstream, then one more: it is
/// answered at once, over a second connection, and the held ones complete.
async fn one_more_than_a_connection_carries(held_path: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("h2 upstream CA");
    let (release_tx, release) = watch::channel(false);
    let upstream = h2_upstream(&ca, release).await;
    let ca_file = write(dir.path(), "ca.pem", &ca.cert.pem());
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  request_timeout: 3s\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\nroutes:\n  - name: up\n    match: {{ path_prefix: / }}\n    upstream: https://{}\n    upstream_tls: {{ ca_file: {ca_file}, server_name: up.internal }}\n    auth: none\n",
        upstream.addr
    );
    let server = Server::start(config(&yaml), None).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    assert_eq!(get(&format!("{base}/")).await, (200, "ok".to_string()));
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);

    let held: Vec<_> = (0..STREAMS)
        .map(|_| {
            let url = format!("{base}{held_path}");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    wait_for("the upstream to hold every stream", || {
        upstream.open.load(Ordering::SeqCst) == STREAMS as usize
    })
    .await;

    let started = std::time::Instant::now();
    assert_eq!(get(&format!("{base}/")).await, (200, "ok".to_string()));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "queued behind the held streams for {:?}",
        started.elapsed()
    );
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);

    release_tx.send(true).unwrap();
    for h in held {
        assert_eq!(h.await.unwrap().0, 200);
    }
    // Both connections can take requests again; no third is opened.
    for _ in 0..3 {
        assert_eq!(get(&format!("{base}/")).await.0, 200);
    }
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_a_connections_streams_do_not_wait_for_held_answers() {
    one_more_than_a_connection_carries("/head").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_counts_until_its_body_ends_not_its_head() {
    one_more_than_a_connection_carries("/body").await;
}
