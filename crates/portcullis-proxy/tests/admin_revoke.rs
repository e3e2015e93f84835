//! `POST /sessions/revoke` on the admin listener (docs/config-reference.md,
//! login): the listener has no authentication, and deployments bind it to
//! every interface for the metrics scraper, so revocation answers only
//! loopback peers, only JSON, and never a request with an `Origin`.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{client, config, get, send_body, wait_ready};
use portcullis_proxy::Server;
use portcullis_testkit::DevIssuer;
use std::net::{IpAddr, SocketAddr, UdpSocket};

async fn server(admin_listen: &str) -> (Server, DevIssuer) {
    let idp = DevIssuer::start().await.unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: {admin_listen}\naudit:\n  sink: none\n\
         providers:\n  - name: dev\n    issuer: {}\n    audiences: [portal]\n\
         \x20   client_id: portal\n    client_secret: not-used-here\n\
         login:\n  provider: dev\n  cookie:\n    secret: a-cookie-secret-of-at-least-32-bytes!!\n\
         routes:\n  - name: app\n    match: {{ path_prefix: / }}\n    auth: none\n",
        idp.issuer()
    );
    let server = Server::start(config(&yaml), None).await.unwrap();
    wait_ready(server.admin_addr()).await;
    (server, idp)
}

async fn post(to: SocketAddr, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let url = format!("http://{to}/sessions/revoke");
    let body = Bytes::from(body.to_string());
    let (status, _, body) = send_body(&client(), "POST", &url, headers, body).await;
    (status, body)
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn revocation_is_for_the_host_itself_in_json_and_never_from_a_browser() {
    let (server, _idp) = server("127.0.0.1:0").await;
    let admin = server.admin_addr();
    assert_eq!(
        post(admin, &[JSON], r#"{"sub":"alice"}"#).await,
        (200, r#"{"revoked":0}"#.into())
    );
    let charset = ("content-type", "Application/JSON; charset=utf-8");
    assert_eq!(post(admin, &[charset], r#"{"sub":"alice"}"#).await.0, 200);
    // A form is what a cross-site page can send without asking first.
    let form = ("content-type", "application/x-www-form-urlencoded");
    assert_eq!(post(admin, &[form], "sub=alice").await.0, 415);
    assert_eq!(post(admin, &[], r#"{"sub":"alice"}"#).await.0, 415);
    let origin = ("origin", "https://evil.example");
    assert_eq!(
        post(admin, &[JSON, origin], r#"{"sub":"alice"}"#).await.0,
        403
    );
    assert_eq!(post(admin, &[JSON], "{}").await.0, 400);
    server.shutdown().await;
}

/// This host's address on a non-loopback interface, if it has one (no packet
/// is sent: a UDP connect only picks the route).
fn outward_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn a_peer_from_the_network_cannot_revoke() {
    let Some(ip) = outward_address() else {
        eprintln!("skipped: this host has no non-loopback address");
        return;
    };
    let (server, _idp) = server("0.0.0.0:0").await;
    let outside = SocketAddr::new(ip, server.admin_addr().port());
    let (status, body) = post(outside, &[JSON], r#"{"sub":"alice"}"#).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("loopback"), "{body}");
    // The metrics scraper is still welcome from there.
    assert_eq!(get(&format!("http://{outside}/metrics")).await.0, 200);
    server.shutdown().await;
}

/// Istio's sidecar hands inbound mesh traffic to the app from 127.0.0.6: a
/// loopback address, but not the host itself.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_sidecar_relayed_peer_cannot_revoke() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (server, _idp) = server("0.0.0.0:0").await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.6:0".parse().unwrap()).unwrap();
    let to = SocketAddr::from(([127, 0, 0, 1], server.admin_addr().port()));
    let mut tcp = socket.connect(to).await.unwrap();
    let body = r#"{"sub":"alice"}"#;
    let req = format!(
        "POST /sessions/revoke HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    server.shutdown().await;
}

/// The admin listener is often reachable from the network: a peer that opens
/// connections and sends nothing, or half a head, cannot hold them, and past
/// the cap new ones are closed at once while service resumes below it.
#[tokio::test]
async fn the_admin_listener_bounds_and_times_out_its_connections() {
    use portcullis_proxy::admin::{HEAD_TIMEOUT, MAX_CONNECTIONS};
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (server, _idp) = server("127.0.0.1:0").await;
    let admin = server.admin_addr();
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        held.push(tcp);
    }
    // Let the listener take them all before the one over the cap.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut over = tokio::net::TcpStream::connect(admin).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), over.read(&mut buf))
        .await
        .expect("a connection over the cap is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // The held ones are cut once their heads are late, and service resumes.
    let started = Instant::now();
    let mut first = held.swap_remove(0);
    let n = tokio::time::timeout(HEAD_TIMEOUT * 2, first.read(&mut buf))
        .await
        .expect("a half-sent head is cut after HEAD_TIMEOUT")
        .unwrap_or(0);
    assert!(
        started.elapsed() >= HEAD_TIMEOUT - Duration::from_secs(2),
        "cut too early"
    );
    let _ = n;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&format!("http://{admin}/healthz")).await.0, 200);
    server.shutdown().await;
}
