//! End-to-end tests of the data plane: a real server on 127.0.0.1:0 in front of a
//! real echo upstream, driven over real sockets.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use std::time::Duration;

const OPEN_ROUTES: &str = r#"
  - name: exact
    match: { path: /exact, methods: [GET] }
    upstream: UPSTREAM
    auth: none
  - name: wild-host
    match: { hosts: ["*.example.com"], path_prefix: /api }
    upstream: UPSTREAM
    auth: none
  - name: regex
    match: { path_regex: "^/items/[0-9]+$" }
    upstream: UPSTREAM
    auth: none
  - name: api
    match: { path_prefix: /api }
    upstream: UPSTREAM
    auth: none
  - name: post-only
    match: { path_prefix: /submit, methods: [POST] }
    upstream: UPSTREAM
    auth: none
"#;

#[tokio::test]
async fn routing_table_first_match_wins() {
    let h = Harness::start(OPEN_ROUTES).await;
    let c = client();
    let cases = [
        ("GET", "/exact", 200),
        ("POST", "/exact", 404),
        ("GET", "/exact/more", 404),
        ("GET", "/api/orders", 200),
        ("GET", "/api", 200),
        ("GET", "/apix", 404),
        ("GET", "/items/42", 200),
        ("GET", "/items/42x", 404),
        ("POST", "/submit", 200),
        ("GET", "/submit", 404),
        ("GET", "/nothing", 404),
    ];
    for (method, path, want) in cases {
        let (status, _, body) = send(&c, method, &h.url(path), &[]).await;
        assert_eq!(status, want, "{method} {path}: {body}");
    }
    // Which route answered is visible in metrics by name.
    let (status, _, body) =
        send(&c, "GET", &h.url("/api/x"), &[("host", "shop.example.com")]).await;
    assert_eq!(status, 200, "{body}");
    let metrics = get(&format!("http://{}/metrics", h.server.admin_addr()))
        .await
        .1;
    assert!(metrics.contains(r#"route="wild-host""#), "{metrics}");
    assert!(metrics.contains(r#"route="regex""#), "{metrics}");
}

#[tokio::test]
async fn no_route_is_404_json() {
    let h = Harness::start(OPEN_ROUTES).await;
    let (status, headers, body) = send(&client(), "GET", &h.url("/nope"), &[]).await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "no_route");
    assert!(json["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(h.echo.seen().is_empty());
}

#[tokio::test]
async fn upstream_receives_exactly_the_normalized_path() {
    let h = Harness::start(OPEN_ROUTES).await;
    let c = client();
    let cases = [
        ("/api//a///b", "/api/a/b"),
        ("/api/./a/./b", "/api/a/b"),
        ("/api/x/../y", "/api/y"),
        ("/api/%2e%2e/api/z", "/api/z"),
        ("/api/%41bc", "/api/Abc"),
        ("/api/a;b=c", "/api/a;b=c"),
        ("/api/CaSe", "/api/CaSe"),
        ("/api/q?x=%2F&y=1", "/api/q?x=%2F&y=1"),
    ];
    for (sent, expected) in cases {
        h.echo.clear();
        let (status, _, body) = send(&c, "GET", &h.url(sent), &[]).await;
        assert_eq!(status, 200, "{sent}: {body}");
        let seen = h.echo.seen();
        assert_eq!(seen.len(), 1, "{sent}");
        assert_eq!(seen[0].path_and_query, expected, "{sent}");
    }
    // `..` cannot climb out of a route: /api/../exact is judged (and routed) as /exact.
    h.echo.clear();
    let (status, _, _) = send(&c, "GET", &h.url("/api/../exact"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(h.echo.seen()[0].path_and_query, "/exact");
    for refused in ["/api/a%2Fb", "/api/a%2fb", "/api/a%5Cb"] {
        h.echo.clear();
        let (status, _, body) = send(&c, "GET", &h.url(refused), &[]).await;
        assert_eq!(status, 400, "{refused}: {body}");
        assert!(h.echo.seen().is_empty(), "{refused} reached the upstream");
    }
    let raw_backslash = raw(
        h.server.local_addr(),
        b"GET /api/a\\b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(raw_backslash.starts_with("HTTP/1.1 400"), "{raw_backslash}");
    assert!(h.echo.seen().is_empty());
}

#[tokio::test]
async fn encoded_slashes_allowed_when_configured() {
    let preamble = SERVER_PREAMBLE.replace(
        "  listen: 127.0.0.1:0\nadmin",
        "  listen: 127.0.0.1:0\n  allow_encoded_slashes: true\nadmin",
    );
    let h = Harness::start_with(&preamble, OPEN_ROUTES).await;
    let (status, _, _) = send(&client(), "GET", &h.url("/api/a%2Fb"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(h.echo.seen()[0].path_and_query, "/api/a%2Fb");
}

#[tokio::test]
async fn smuggling_shapes_are_refused_and_never_forwarded() {
    let h = Harness::start(OPEN_ROUTES).await;
    let shapes: &[(&str, &[u8])] = &[
        ("CL+TE", b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE+CL", b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
        ("differing CL", b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"),
        ("CL list", b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nabcde"),
        // Refused by the guard, not left to hyper's bare 400 without a JSON body or audit line.
        ("CL list that agrees", b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc"),
        ("raw byte 0xFF in the target", b"GET /api/\xff HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("TE xchunked", b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        ("TE list", b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        ("TE space before colon", b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("TE vertical tab", b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n"),
        ("obs-fold", b"GET /api HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n"),
        ("bare LF", b"GET /api HTTP/1.1\nHost: x\n\n"),
        ("NUL in header", b"GET /api HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
    ];
    for (name, bytes) in shapes {
        h.echo.clear();
        let reply = raw(h.server.local_addr(), bytes, Duration::from_secs(3)).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{name}: got {reply:?}");
        assert!(
            reply.contains("\"error\":\"bad_request\""),
            "{name}: {reply}"
        );
        assert!(
            reply.to_ascii_lowercase().contains("connection: close"),
            "{name}: {reply}"
        );
        // The server closed the connection (read_to_end returned) and nothing reached the upstream.
        assert!(h.echo.seen().is_empty(), "{name} reached the upstream");
    }
}

#[tokio::test]
async fn a_refused_head_is_audited_with_its_method_and_host() {
    let s = common::idp_stack::IdpStack::start(
        "",
        "",
        "  - name: open\n    match: { path_prefix: / }\n    upstream: UPSTREAM\n    auth: none\n",
    )
    .await;
    let addr = s.server.local_addr();
    let smuggle = b"POST /api HTTP/1.1\r\nHost: Shop.Example.com.:8080\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let reply = raw(addr, smuggle, Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    // Not a method token, and two hosts: neither is told.
    let garbage = b"G(T /api HTTP/1.1\r\nHost: a\r\nHost: b\r\nX\x00: y\r\n\r\n";
    let reply = raw(addr, garbage, Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let lines = s.audit_when(2).await;
    assert_eq!(lines[0]["status"], 400, "{lines:?}");
    assert_eq!(lines[0]["method"], "POST", "{lines:?}");
    assert_eq!(lines[0]["host"], "shop.example.com", "{lines:?}");
    assert_eq!(lines[0]["path"], "-", "{lines:?}");
    assert_eq!(lines[1]["method"], "-", "{lines:?}");
    assert_eq!(lines[1]["host"], "", "{lines:?}");
    assert!(s.echo.seen().is_empty());
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let preamble = SERVER_PREAMBLE.replace(
        "  listen: 127.0.0.1:0\nadmin",
        "  listen: 127.0.0.1:0\n  max_header_bytes: 4KiB\nadmin",
    );
    let h = Harness::start_with(&preamble, OPEN_ROUTES).await;
    let ask = |fields: String| {
        let req = format!("GET /api HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
        let addr = h.server.local_addr();
        async move { raw(addr, req.as_bytes(), Duration::from_secs(3)).await }
    };
    let big = "a".repeat(8 * 1024);
    let reply = ask(format!("X-Big: {big}\r\n")).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert!(h.echo.seen().is_empty());
    // More header lines than hyper takes: the same JSON 431, not hyper's bare one.
    let reply = ask((0..101).map(|i| format!("X-{i}: v\r\n")).collect()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert!(reply.contains("\"error\":"), "{reply}");
    assert!(h.echo.seen().is_empty());
    // Fewer are fine (the guard's boundary, 100, is its unit test's: the echo
    // upstream, hyper too, would refuse 100 plus the proxy's own headers).
    let many: String = (0..80).map(|i| format!("X-{i}: v\r\n")).collect();
    let reply = ask(format!("{many}Connection: close\r\n")).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test]
async fn oversized_h2_headers_get_the_same_431_and_an_audit_line() {
    let s = common::idp_stack::IdpStack::start(
        "  max_header_bytes: 4KiB\n",
        "",
        "  - name: open\n    match: { path_prefix: / }\n    upstream: UPSTREAM\n    auth: none\n",
    )
    .await;
    let h2: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let ask = |size: usize| {
        let req = http::Request::get(s.url("/api/h2"))
            .header("x-big", "a".repeat(size))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        h2.request(req)
    };
    let resp = ask(3 * 1024).await.unwrap();
    assert_eq!(resp.status(), 200);
    // Over the limit but within what h2 reads whole: the proxy's own 431, with
    // the JSON error and an audit line, and nothing forwarded.
    let resp = ask(6 * 1024).await.unwrap();
    assert_eq!(resp.status(), 431);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("\"error\":"),
        "{body:?}"
    );
    let lines = s.audit_when(2).await;
    assert_eq!(lines[1]["status"], 431, "{lines:?}");
    assert_eq!(s.echo.seen().len(), 1);
    // Past twice the limit h2 refuses by itself: still never forwarded.
    let refused = ask(9 * 1024).await;
    assert!(
        refused.as_ref().map_or(true, |r| r.status() == 431),
        "{refused:?}"
    );
    assert_eq!(s.echo.seen().len(), 1);
}

#[tokio::test]
async fn slowloris_is_cut_off() {
    let preamble = SERVER_PREAMBLE.replace(
        "  listen: 127.0.0.1:0\nadmin",
        "  listen: 127.0.0.1:0\n  header_read_timeout: 300ms\nadmin",
    );
    let h = Harness::start_with(&preamble, OPEN_ROUTES).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(h.server.local_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET /api HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // Keep dribbling a header byte at a time; the server must still hang up.
    let mut buf = [0u8; 64];
    let closed = loop {
        if tcp.write_all(b"X").await.is_err() {
            break true;
        }
        match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            _ => {}
        }
        if started.elapsed() > Duration::from_secs(5) {
            break false;
        }
    };
    assert!(closed, "slow client was not cut off");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(h.echo.seen().is_empty());
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    // A port that was just free: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let routes = format!(
        r#"
  - name: dead
    match: {{ path_prefix: /dead }}
    upstream: http://{dead}
    auth: none
    retries: 2
  - name: slow
    match: {{ path_prefix: /sleep }}
    upstream: UPSTREAM
    auth: none
    timeout: 200ms
"#
    );
    let h = Harness::start(&routes).await;
    let (status, _, body) = send(&client(), "GET", &h.url("/dead"), &[]).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_unavailable"));
    let (status, _, body) = send(&client(), "GET", &h.url("/sleep/2000"), &[]).await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("upstream_timeout"));
}

#[tokio::test]
async fn retries_reach_a_healthy_endpoint_for_idempotent_requests() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let routes = format!(
        r#"
  - name: mixed
    match: {{ path_prefix: / }}
    upstream: [http://{dead}, UPSTREAM]
    auth: none
    retries: 1
"#
    );
    let h = Harness::start(&routes).await;
    let c = client();
    for _ in 0..6 {
        let (status, _, body) = send(&c, "GET", &h.url("/x"), &[]).await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test]
async fn hop_by_hop_and_forwarding_headers() {
    let h = Harness::start(OPEN_ROUTES).await;
    let (status, _, body) = send(
        &client(),
        "GET",
        &h.url("/api/h"),
        &[
            ("connection", "x-drop-me"),
            ("x-drop-me", "1"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-request-id", "spoofed-id"),
            ("x-auth-request-user", "admin"),
            ("X_Auth_Request_Email", "root@example.com"),
            ("x-portcullis-assertion", "forged"),
            // Other proxies' identity headers, whole families of them.
            ("remote-groups", "admins"),
            ("x-webauth-role", "Admin"),
            ("x-remote-extra-scopes", "cluster-admin"),
            ("impersonate-user", "system:admin"),
            // Origin headers that frameworks believe.
            ("x-forwarded-ssl", "on"),
            ("x-original-host", "admin.internal"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = &h.echo.seen()[0].headers;
    for forged in [
        "remote-groups",
        "x-webauth-role",
        "x-remote-extra-scopes",
        "impersonate-user",
        "x-forwarded-ssl",
        "x-original-host",
    ] {
        assert!(seen.get(forged).is_none(), "{forged} reached the service");
    }
    assert!(seen.get("x-drop-me").is_none());
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_ne!(seen["x-request-id"], "spoofed-id");
    assert!(seen.get("x-auth-request-user").is_none());
    assert!(seen.get("x_auth_request_email").is_none());
    assert!(seen.get("x-portcullis-assertion").is_none());
    assert!(seen.get("traceparent").is_some());
}

#[tokio::test]
async fn trusted_proxy_headers_are_kept() {
    let preamble = SERVER_PREAMBLE.replace(
        "  listen: 127.0.0.1:0\nadmin",
        "  listen: 127.0.0.1:0\n  trusted_proxies: [127.0.0.1/32]\nadmin",
    );
    let h = Harness::start_with(&preamble, OPEN_ROUTES).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, headers, _) = send(
        &client(),
        "GET",
        &h.url("/api/t"),
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-request-id", "gw-123"),
            ("traceparent", tp),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-id"], "gw-123");
    let seen = &h.echo.seen()[0].headers;
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-request-id"], "gw-123");
    assert!(seen["traceparent"]
        .to_str()
        .unwrap()
        .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let h = Harness::start(OPEN_ROUTES).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(h.server.local_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET /api/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp.write_all(b"ping through the tunnel").await.unwrap();
    let mut got = vec![0u8; 23];
    tokio::time::timeout(Duration::from_secs(3), tcp.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"ping through the tunnel");

    // HTTP/1.0 has no upgrades: an upstream asked in HTTP/1.1 would switch
    // while the client, which never reads a 101, waits for an answer.
    let reply = raw(
        h.server.local_addr(),
        b"GET /api/ws HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    let seen = h.echo.seen();
    assert!(seen.last().unwrap().headers.get("upgrade").is_none());
}

#[tokio::test]
async fn h2c_prior_knowledge_and_h1_on_one_port() {
    let h = Harness::start(OPEN_ROUTES).await;
    let h2: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let resp = h2
        .request(
            http::Request::get(h.url("/api/h2"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let (status, _) = get(&h.url("/api/h1")).await;
    assert_eq!(status, 200);
    assert_eq!(h.echo.seen().len(), 2);
    // h2 lets each cookie travel as its own field; the HTTP/1.1 upstream gets
    // one `Cookie` line (a server reading only the first would lose the rest).
    h.echo.clear();
    let resp = h2
        .request(
            http::Request::get(h.url("/api/cookies"))
                .header("cookie", "a=1")
                .header("cookie", "session=s")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = h.echo.seen();
    let cookies: Vec<_> = seen[0].headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; session=s"]);
}

#[tokio::test]
async fn path_parameters_cannot_dodge_a_route() {
    // Tomcat and Spring serve `/admin;x` as `/admin`: it must be judged by the
    // `/admin` route, not by the public catch-all after it.
    let h = Harness::start(
        r#"
  - name: admin
    match: { path_prefix: /admin }
    upstream: UPSTREAM
  - name: public
    match: { path_prefix: / }
    upstream: UPSTREAM
    auth: none
"#,
    )
    .await;
    let c = client();
    for sneaky in [
        "/admin;x",
        "/admin;jsessionid=1/users",
        "/x/../admin;/users",
        // Some servers decode `%3B` before stripping parameters; and Express, IIS
        // and case-insensitive file systems serve `/ADMIN` as `/admin`.
        "/admin%3B",
        "/admin%3bx/users",
        "/Admin/users",
        "/ADMIN",
        "/%41dmin/users",
    ] {
        let (status, _, body) = send(&c, "GET", &h.url(sneaky), &[]).await;
        assert_eq!(status, 401, "{sneaky}: {body}");
    }
    assert!(h.echo.seen().is_empty());
    let (status, _, _) = send(&c, "GET", &h.url("/public"), &[]).await;
    assert_eq!(status, 200, "control: the catch-all serves other paths");
    for refused in ["/public/..;/admin", "/public/.;/admin"] {
        let (status, _, _) = send(&c, "GET", &h.url(refused), &[]).await;
        assert_eq!(status, 400, "{refused}");
    }
}

#[tokio::test]
async fn a_refused_upgrade_closes_the_connection() {
    // After a request that asks for an upgrade the head guard stops inspecting the
    // connection; when no upgrade happens, nothing more may travel on it.
    let h = Harness::start(
        "  - name: closed\n    match: { path_prefix: /closed }\n    upstream: UPSTREAM\n  - name: open\n    match: { path_prefix: / }\n    upstream: UPSTREAM\n    auth: none\n",
    )
    .await;
    let reply = raw(
        h.server.local_addr(),
        b"GET /closed HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nPOST /open HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert_eq!(
        reply.matches("HTTP/1.1 ").count(),
        1,
        "a second request was answered: {reply}"
    );
    assert!(h.echo.seen().is_empty());
}

/// Hosts an upstream reads as `admin.example` (nginx and Go cut at the first
/// `:`; URL parsers drop userinfo, query and fragment) must not be judged as
/// some other name and fall through to a public catch-all; and a quote in the
/// host must not write parameters into `Forwarded`.
#[tokio::test]
async fn a_host_that_an_upstream_would_cut_short_is_refused() {
    let h = Harness::start(
        r#"
  - name: admin-host
    match: { hosts: [admin.example], path_prefix: / }
    upstream: UPSTREAM
    auth: required
  - name: public
    match: { path_prefix: / }
    upstream: UPSTREAM
    auth: none
"#,
    )
    .await;
    let c = client();
    let (status, _, _) = send(&c, "GET", &h.url("/x"), &[("host", "admin.example")]).await;
    assert_eq!(status, 401, "the control: the admin host wants a token");
    for host in [
        "admin.example:abc",
        "admin.example:+80",
        "x@admin.example",
        "admin.example?x",
        "admin.example,other",
        "x\", for=6.6.6.6;proto=https;host=\"admin.example",
    ] {
        h.echo.clear();
        let request = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let reply = raw(
            h.server.local_addr(),
            request.as_bytes(),
            Duration::from_secs(3),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{host}: got {reply:?}");
        assert!(h.echo.seen().is_empty(), "{host} reached the upstream");
    }
}

/// Express, Koa and ASP.NET Core serve `/admin/` as `/admin`: a trailing `/`
/// must not take a request past an exact route to a public catch-all.
#[tokio::test]
async fn a_trailing_slash_cannot_dodge_an_exact_route() {
    let h = Harness::start(
        r#"
  - name: admin
    match: { path: /admin }
    upstream: UPSTREAM
    auth: required
  - name: public
    match: { path_prefix: / }
    upstream: UPSTREAM
    auth: none
"#,
    )
    .await;
    let c = client();
    for path in ["/admin", "/admin/", "/Admin/", "/admin/;x"] {
        let (status, _, body) = send(&c, "GET", &h.url(path), &[]).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    let (status, _, body) = send(&c, "GET", &h.url("/admin/x"), &[]).await;
    assert_eq!(status, 200, "a path below it is not the exact path: {body}");
    // The upstream receives the path as sent, its trailing slash included.
    let (status, _, body) = send(&c, "GET", &h.url("/docs/"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echoed(&body)["path"], "/docs/");
}
