//! Browser sign-in against the real proxy, for what its cookies may and may
//! not do: an upstream cannot set them, a session cookie that outlived its
//! session stands in nobody's way, a browser's sign-ins in progress stay
//! few however many pages start one, and a page on another origin cannot use
//! the session to change anything.
//!
//! The provider is the development issuer (authorization code with PKCE);
//! the test plays the browser, with a cookie jar that keeps cookies by name
//! and path as browsers do.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use bytes::Bytes;
use common::{client, config, send, send_body, serve, wait_ready};
use http::{HeaderMap, Response};
use http_body_util::Full;
use portcullis_proxy::Server;
use portcullis_testkit::{DevIssuer, EchoUpstream};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

struct Stack {
    server: Server,
    idp: DevIssuer,
    /// The `Set-Cookie`s the cookie-setting upstream answers with.
    upstream_cookies: Arc<Mutex<Vec<String>>>,
    _echo: EchoUpstream,
    /// The config it started with.
    yaml: String,
}

const SECRET: &str = "a-cookie-secret-of-at-least-32-bytes!!";

impl Stack {
    async fn start(with_login: bool) -> Stack {
        let idp = DevIssuer::start().await.unwrap();
        idp.token_endpoint()
            .add_secret_client("portal", "portal-secret");
        let upstream_cookies: Arc<Mutex<Vec<String>>> = Arc::default();
        let set = upstream_cookies.clone();
        let setter = serve(move |_| {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
            for c in set.lock().unwrap().iter() {
                resp.headers_mut().append("set-cookie", c.parse().unwrap());
            }
            resp
        })
        .await;
        let echo = EchoUpstream::start().await.unwrap();
        let (login, login_route) = if with_login {
            (
                format!(
                    "login:\n  provider: dev\n  trusted_origins: [\"http://*.apps.test\"]\n\
                     \x20 allowed_redirect_hosts: [\"*.test\"]\n\
                     \x20 cookie:\n    secret: {SECRET}\n"
                ),
                "    login: true\n",
            )
        } else {
            (String::new(), "")
        };
        let yaml = format!(
            "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\n\
             providers:\n  - name: dev\n    issuer: {issuer}\n    audiences: [portal]\n\
             \x20   client_id: portal\n    client_secret: portal-secret\n\
             {login}\
             routes:\n\
             \x20 - name: app\n    match: {{ path_prefix: /app }}\n    upstream: {echo}\n{login_route}\
             \x20   policy:\n      allow:\n        - authenticated: true\n\
             \x20 - name: api\n    match: {{ path_prefix: /api }}\n    upstream: {echo}\n\
             \x20   policy:\n      allow:\n        - authenticated: true\n\
             \x20 - name: open\n    match: {{ path_prefix: /open }}\n    upstream: {echo}\n    auth: optional\n\
             \x20   policy:\n      allow:\n        - methods: [GET]\n\
             \x20 - name: board\n    match: {{ path_prefix: /board }}\n    upstream: {echo}\n    auth: optional\n\
             \x20   policy:\n      allow:\n        - methods: [POST]\n\
             \x20 - name: setter\n    match: {{ path_prefix: /setter }}\n    upstream: http://{setter}\n    auth: none\n",
            issuer = idp.issuer(),
            echo = echo.url(),
        );
        let server = Server::start(config(&yaml), None).await.unwrap();
        wait_ready(server.admin_addr()).await;
        // `{public_url}/.portcullis/callback` (SPEC §4), public_url being
        // `http://LISTEN` when unset: the one redirect URI the provider takes.
        idp.token_endpoint()
            .add_redirect_uri("portal", "http://127.0.0.1:0/.portcullis/callback");
        Stack {
            server,
            idp,
            upstream_cookies,
            _echo: echo,
            yaml,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.local_addr())
    }

    async fn call(&self, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
        send(&client(), "GET", &self.url(path), headers).await
    }

    /// A bearer token for `sub` from the provider.
    fn bearer(&self, sub: &str) -> String {
        let token = self.idp.token(sub, "portal", 300, json!({})).unwrap();
        format!("Bearer {token}")
    }

    /// A new browser, signed in at `/app/x` as `sub`: the `Cookie` line it
    /// sends with a request for `path`.
    async fn signed_in(&self, sub: &str, path: &str) -> String {
        let mut jar = Jar::default();
        assert_eq!(self.sign_in(&mut jar, "/app/x", sub).await, 302);
        jar.header(path)
    }

    /// Starts a sign-in at `path` with the cookies of `jar` and completes it
    /// at the provider and the callback as `sub`; the jar keeps what the proxy set.
    async fn sign_in(&self, jar: &mut Jar, path: &str, sub: &str) -> u16 {
        let authorize = self.start_sign_in(jar, path).await;
        self.callback(jar, &authorize, sub).await
    }

    /// A page load that starts a sign-in; returns where it sends the browser
    /// (the provider's authorization URL).
    async fn start_sign_in(&self, jar: &mut Jar, path: &str) -> String {
        let cookie = jar.header(path);
        let (status, headers, body) = self
            .call(path, &[("accept", "text/html"), ("cookie", &cookie)])
            .await;
        assert_eq!(status, 302, "{body}");
        jar.take(&headers);
        let location = headers["location"].to_str().unwrap().to_string();
        assert!(location.starts_with(&format!("{}/authorize?", self.idp.issuer())));
        location
    }

    /// The browser goes to the provider's `authorize` URL, where `sub` signs
    /// in, and is sent back to the callback with a code.
    async fn callback(&self, jar: &mut Jar, authorize: &str, sub: &str) -> u16 {
        self.callback_with(jar, authorize, sub, json!({})).await
    }

    /// [`Stack::callback`], with `claims` in the ID token besides the usual.
    async fn callback_with(&self, jar: &mut Jar, authorize: &str, sub: &str, claims: Value) -> u16 {
        self.idp.sign_in_as(sub, claims);
        let (status, headers, body) = send(&client(), "GET", authorize, &[]).await;
        assert_eq!(status, 302, "{body}");
        // To the redirect URI, on server.public_url (here the configured
        // listen address, port 0): the path is what reaches the proxy.
        let back = headers["location"].to_str().unwrap();
        let path = &back[back.find("/.portcullis/callback?").unwrap()..];
        let cookie = jar.header(path);
        let (status, headers, _) = self.call(path, &[("cookie", &cookie)]).await;
        jar.take(&headers);
        status
    }
}

/// A browser's cookies: one per name and path, in the order they were first
/// set (a replaced cookie keeps its place, RFC 6265 §5.3), sent longer paths
/// first (§5.4).
#[derive(Default)]
struct Jar {
    cookies: Vec<(String, String, String)>,
}

impl Jar {
    fn take(&mut self, headers: &HeaderMap) {
        for v in headers.get_all("set-cookie") {
            let text = v.to_str().unwrap();
            let mut parts = text.split(';').map(str::trim);
            let (name, value) = parts.next().unwrap().split_once('=').unwrap();
            let mut path = "/".to_string();
            let mut gone = false;
            for attr in parts {
                if let Some(p) = attr.strip_prefix("Path=") {
                    path = p.to_string();
                }
                if attr == "Max-Age=0" {
                    gone = true;
                }
            }
            let at = self
                .cookies
                .iter()
                .position(|(n, p, _)| n == name && *p == path);
            match (at, gone) {
                (Some(i), true) => {
                    self.cookies.remove(i);
                }
                (Some(i), false) => self.cookies[i].2 = value.to_string(),
                (None, false) => self
                    .cookies
                    .push((name.to_string(), path, value.to_string())),
                (None, true) => {}
            }
        }
    }

    fn header(&self, request_path: &str) -> String {
        let path = request_path.split('?').next().unwrap();
        let mut sent: Vec<&(String, String, String)> = self
            .cookies
            .iter()
            .filter(|(_, p, _)| {
                p == "/" || path == p || path.starts_with(&format!("{}/", p.trim_end_matches('/')))
            })
            .collect();
        sent.sort_by_key(|(_, p, _)| std::cmp::Reverse(p.len()));
        sent.iter()
            .map(|(n, _, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| v.as_str())
    }

    /// The sign-in cookies (not their markers).
    fn sign_ins(&self) -> usize {
        self.cookies
            .iter()
            .filter(|(n, p, _)| n.starts_with("_portcullis_s") && p == "/.portcullis/callback")
            .count()
    }
}

fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn clears_session(headers: &HeaderMap) -> bool {
    set_cookies(headers)
        .iter()
        .any(|c| c.starts_with("_portcullis=; Path=/; Max-Age=0"))
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string()
}

/// An upstream that answers with the proxy's session cookie (its own, or a
/// session of the attacker's, perhaps through a header injection) would sign
/// the browser in as someone else, or with a narrower path make it send two
/// sessions: no `Set-Cookie` of the proxy's cookies ever comes from upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_cannot_set_the_proxys_cookies() {
    let s = Stack::start(true).await;
    // A real session of the attacker's, as an upstream could hand out.
    let mut attacker = Jar::default();
    assert_eq!(s.sign_in(&mut attacker, "/app/x", "mallory").await, 302);
    let planted = attacker.value("_portcullis").unwrap().to_string();
    *s.upstream_cookies.lock().unwrap() = vec![
        "theme=dark; Path=/".to_string(),
        format!("_portcullis={planted}; Path=/; HttpOnly"),
        format!(" _portcullis={planted}; Path=/app"),
        "_portcullis_s0a0b0c0d=forged; Path=/.portcullis/callback".to_string(),
        "_portcullis_sm0a0b0c0d=1; Path=/".to_string(),
        "_Portcullis=another-name".to_string(),
    ];
    let (status, headers, _) = s.call("/setter", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        set_cookies(&headers),
        ["theme=dark; Path=/", "_Portcullis=another-name"]
    );
    // A browser that had none stays signed out.
    let mut victim = Jar::default();
    victim.take(&headers);
    let (status, _, body) = s
        .call("/api/x", &[("cookie", &victim.header("/api/x"))])
        .await;
    assert_eq!((status, error_of(&body).as_str()), (401, "missing_token"));

    // Without login the proxy has no cookies of its own: nothing is taken.
    let plain = Stack::start(false).await;
    *plain.upstream_cookies.lock().unwrap() = vec!["_portcullis=theirs".to_string()];
    let (_, headers, _) = plain.call("/setter", &[]).await;
    assert_eq!(set_cookies(&headers), ["_portcullis=theirs"]);
}

/// A session cookie that names no live session (ended, unknown, forged)
/// counts as no session beside a bearer token and on a route that does not
/// require a caller; where one is required it is `session_expired`, and
/// every refusal clears it. A live session and a token naming different
/// callers stay a 400 (SPEC §5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_session_cookie_stands_in_nobodys_way() {
    let s = Stack::start(true).await;
    let bob = s.bearer("bob");
    // A real session, signed out.
    let signed_out = s.signed_in("alice", "/app/x").await;
    let (_, _, whoami) = s
        .call("/.portcullis/whoami", &[("cookie", &signed_out)])
        .await;
    let csrf = serde_json::from_str::<Value>(&whoami).unwrap()["session"]["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, _) = send_body(
        &client(),
        "POST",
        &s.url("/.portcullis/logout"),
        &[
            ("cookie", &signed_out),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Bytes::from(format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status, 200);
    for dead in ["_portcullis=junk", signed_out.as_str()] {
        // A valid bearer token decides alone.
        let (status, headers, body) = s
            .call("/api/x", &[("authorization", &bob), ("cookie", dead)])
            .await;
        assert_eq!(status, 200, "{dead}: {body}");
        // The dead cookie is cleared in the answer that succeeded, too.
        assert!(clears_session(&headers), "{headers:?}");
        assert_eq!(
            common::echoed(&body)["headers"]["x-auth-request-user"][0],
            "bob"
        );
        // An invalid one is refused for what it is, and the cookie cleared.
        let (status, headers, body) = s
            .call(
                "/api/x",
                &[("authorization", "Bearer nope"), ("cookie", dead)],
            )
            .await;
        assert_eq!(status, 401);
        assert_ne!(error_of(&body), "session_expired", "{body}");
        assert!(clears_session(&headers), "{headers:?}");
        // `auth: optional`: anonymous.
        let (status, _, body) = s.call("/open/x", &[("cookie", dead)]).await;
        assert_eq!(status, 200, "{dead}: {body}");
        // A required caller and nothing else: session_expired, cleared.
        let (status, headers, body) = s.call("/api/x", &[("cookie", dead)]).await;
        assert_eq!((status, error_of(&body).as_str()), (401, "session_expired"));
        assert!(clears_session(&headers), "{headers:?}");
        let (status, headers, _) = s.call("/.portcullis/whoami", &[("cookie", dead)]).await;
        assert_eq!(status, 401);
        assert!(clears_session(&headers), "{headers:?}");
        // A browser on a `login: true` route is sent to sign in, and the dead
        // cookie goes with the same answer.
        let (status, headers, _) = s
            .call("/app/x", &[("cookie", dead), ("accept", "text/html")])
            .await;
        assert_eq!(status, 302);
        assert!(clears_session(&headers), "{headers:?}");
        assert!(headers["location"]
            .to_str()
            .unwrap()
            .starts_with(&s.idp.issuer()));
    }

    // A live session: beside a token of the same caller, fine; of another, 400.
    let live = s.signed_in("alice", "/api/x").await;
    let (status, headers, _) = s.call("/api/x", &[("cookie", &live)]).await;
    assert_eq!(status, 200);
    assert!(set_cookies(&headers).is_empty());
    let alice = s.bearer("alice");
    let (status, _, _) = s
        .call("/api/x", &[("authorization", &alice), ("cookie", &live)])
        .await;
    assert_eq!(status, 200);
    let (status, _, body) = s
        .call("/api/x", &[("authorization", &bob), ("cookie", &live)])
        .await;
    assert_eq!((status, error_of(&body).as_str()), (400, "bad_request"));
    let (status, _, body) = s
        .call("/open/x", &[("authorization", &bob), ("cookie", &live)])
        .await;
    assert_eq!(status, 400, "{body}");
}

/// Every page load without a session starts a sign-in, and each adds a
/// cookie the callback receives: an attacker's page that causes a hundred
/// navigations would make the callback too large to read (431) or push the
/// session cookie out of the browser. Past four in progress, the oldest are
/// cleared by the request that starts the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_in_progress_stay_few() {
    let s = Stack::start(true).await;
    let mut jar = Jar::default();
    let mut started = Vec::new();
    for i in 0..12 {
        // Through a protected page, and through the login endpoint.
        let path = if i % 2 == 0 {
            format!("/app/page-{i}")
        } else {
            format!("/.portcullis/login?rd=/app/page-{i}")
        };
        started.push(s.start_sign_in(&mut jar, &path).await);
        assert!(jar.sign_ins() <= 5, "{} after {}", jar.sign_ins(), i + 1);
    }
    assert_eq!(jar.sign_ins(), 5);
    let callback = jar.header("/.portcullis/callback");
    assert!(callback.len() < 2_000, "{}", callback.len());
    // The latest completes, and takes its own cookies with it.
    assert_eq!(
        s.callback(&mut jar, started.last().unwrap(), "alice").await,
        302
    );
    assert_eq!(jar.sign_ins(), 4);
    let markers = jar
        .cookies
        .iter()
        .filter(|(n, p, _)| n.starts_with("_portcullis_sm") && p == "/")
        .count();
    assert_eq!(markers, 4);
    let (status, _, _) = s.call("/app/x", &[("cookie", &jar.header("/app/x"))]).await;
    assert_eq!(status, 200);
    // One of the oldest cannot: its cookie is gone.
    assert_eq!(s.callback(&mut jar, &started[0], "alice").await, 400);
}

/// A sibling subdomain is the same site, so `SameSite=Lax` lets its pages
/// POST with the session cookie, and open WebSockets with it: a request that
/// only the cookie authenticates and that can change something must come from
/// a trusted origin (the request's own, `public_url`'s, an allowed host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_origins_page_cannot_use_the_session() {
    let s = Stack::start(true).await;
    let cookie = s.signed_in("alice", "/api/x").await;
    let own = format!("http://{}", s.server.local_addr());
    let post = |headers: Vec<(&'static str, String)>| {
        let url = s.url("/api/x");
        let cookie = cookie.clone();
        async move {
            let mut all: Vec<(&str, &str)> = vec![("cookie", cookie.as_str())];
            all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
            send_body(&client(), "POST", &url, &all, Bytes::from_static(b"x=1")).await
        }
    };
    for (headers, want) in [
        // (A redirect target is not a trusted origin.)
        (vec![("origin", "http://evil.test".to_string())], 403),
        (vec![("referer", "http://evil.test/form".to_string())], 403),
        (vec![("origin", "null".to_string())], 403),
        (vec![("sec-fetch-site", "same-site".to_string())], 403),
        (vec![("origin", own.replace("127.0.0.1", "localhost"))], 403),
        (vec![("origin", own.clone())], 200),
        (vec![("origin", "http://portal.apps.test".to_string())], 200),
        (vec![("sec-fetch-site", "same-origin".to_string())], 200),
        // No word from a browser about another page: a script's request.
        (vec![], 200),
    ] {
        let (status, _, body) = post(headers.clone()).await;
        assert_eq!(status, want, "{headers:?}: {body}");
        if want == 403 {
            assert_eq!(error_of(&body), "forbidden");
            assert!(body.contains("cross-site request forgery"), "{body}");
        }
    }
    // A token is not something another page can make the browser send.
    let alice = s.bearer("alice");
    let (status, _, _) = post(vec![
        ("authorization", alice),
        ("origin", "http://evil.test".to_string()),
    ])
    .await;
    assert_eq!(status, 200);
    // Reading is the service's to keep safe, and navigation must work ...
    let (status, _, _) = s
        .call(
            "/api/x",
            &[("cookie", &cookie), ("origin", "http://evil.test")],
        )
        .await;
    assert_eq!(status, 200);
    // ... but a WebSocket handshake is a GET that opens a channel both ways.
    let (status, _, body) = s
        .call(
            "/api/x",
            &[
                ("cookie", &cookie),
                ("origin", "http://evil.test"),
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        )
        .await;
    assert_eq!((status, error_of(&body).as_str()), (403, "forbidden"));

    // Where no caller is required, another page's request counts as one
    // without the cookie: anonymous, not alice, and not refused.
    let board = |origin: &'static str| {
        let (url, cookie) = (s.url("/board/x"), cookie.clone());
        async move {
            let headers = [("cookie", cookie.as_str()), ("origin", origin)];
            send_body(
                &client(),
                "POST",
                &url,
                &headers,
                Bytes::from_static(b"x=1"),
            )
            .await
        }
    };
    let subject = |body: &str| {
        common::echoed(body)["headers"]["x-auth-request-user"][0]
            .as_str()
            .map(str::to_string)
    };
    let (status, _, body) = board("http://evil.test").await;
    assert_eq!((status, subject(&body)), (200, None), "{body}");
    let (status, _, body) = board("http://portal.apps.test").await;
    assert_eq!(
        (status, subject(&body)),
        (200, Some("alice".into())),
        "{body}"
    );
}

/// A sign-out form needs the session's CSRF token unless it is posted from
/// the same origin: `public_url`'s, or that of the host it was posted to
/// (scheme, host and port all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_from_the_same_origin_needs_no_token() {
    let s = Stack::start(true).await;
    let own = format!("http://{}", s.server.local_addr());
    let other_port = format!("http://127.0.0.1:{}", s.server.local_addr().port() ^ 1);
    for (origin, ends) in [
        ("http://evil.test", false),
        (other_port.as_str(), false),
        ("null", false),
        (own.as_str(), true),
    ] {
        let cookie = s.signed_in("alice", "/app/x").await;
        let (status, _, body) = send_body(
            &client(),
            "POST",
            &s.url("/.portcullis/logout"),
            &[
                ("cookie", &cookie),
                ("origin", origin),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            Bytes::new(),
        )
        .await;
        let (after, _, _) = s.call("/api/x", &[("cookie", &cookie)]).await;
        if ends {
            assert!(matches!(status, 200 | 302), "{origin}: {status} {body}");
            assert_eq!(after, 401, "{origin}: the session outlived its sign-out");
        } else {
            assert_eq!(
                (status, error_of(&body).as_str()),
                (403, "forbidden"),
                "{origin}"
            );
            assert_eq!(after, 200, "{origin}: a refused sign-out ended the session");
        }
    }
}

/// The assertion for a signed-in caller lasts while the session does, not
/// only while the ID token the session began with did: without a refresh
/// token that one is never renewed (its `exp` is often an hour off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_assertion_outlives_its_id_token() {
    let s = Stack::start(true).await;
    let mut jar = Jar::default();
    let authorize = s.start_sign_in(&mut jar, "/app/x").await;
    // Expired 10 s ago, still within the provider's 30 s of clock skew.
    let exp = portcullis_testkit::unix_now() - 10;
    let status = s
        .callback_with(&mut jar, &authorize, "alice", json!({ "exp": exp }))
        .await;
    assert_eq!(status, 302);
    let (status, _, body) = s.call("/app/x", &[("cookie", &jar.header("/app/x"))]).await;
    assert_eq!(status, 200, "{body}");
    let assertion = common::echoed(&body)["headers"]["x-portcullis-assertion"][0]
        .as_str()
        .unwrap()
        .to_string();
    let claims = portcullis_identity::jose::compact::parse(&assertion)
        .unwrap()
        .claims;
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(
        exp > iat && exp > portcullis_testkit::unix_now(),
        "{claims:?}"
    );
}

/// A reload that signs browsers in with another provider ends the sessions
/// the old one began: it is no longer trusted for sign-ins, and their refresh
/// tokens must never go to the new provider's token endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_login_moves_to_another_provider() {
    let s = Stack::start(true).await;
    let cookie = s.signed_in("alice", "/app/x").await;
    assert_eq!(s.call("/app/x", &[("cookie", &cookie)]).await.0, 200);
    let other = DevIssuer::start().await.unwrap();
    let moved = s
        .yaml
        .replace("login:\n  provider: dev\n", "login:\n  provider: other\n")
        .replace(
            "providers:\n",
            &format!(
                "providers:\n  - name: other\n    issuer: {}\n    audiences: [portal]\n\
                 \x20   client_id: portal\n    client_secret: portal-secret\n",
                other.issuer()
            ),
        );
    assert_ne!(moved, s.yaml);
    s.server.apply(config(&moved)).unwrap();
    let (status, _, body) = s.call("/app/x", &[("cookie", &cookie)]).await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (401, "session_expired"),
        "{body}"
    );
}

/// The URL a sign-in comes back to travels in the sign-in cookie, which a
/// browser drops past 4096 bytes (and the sign-in then fails at the
/// callback): a URL too long to remember comes back to its path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_never_makes_a_cookie_too_large_to_keep() {
    let s = Stack::start(true).await;
    let mut jar = Jar::default();
    let page = format!("/app/report?q={}", "x".repeat(3500));
    let authorize = s.start_sign_in(&mut jar, &page).await;
    let longest = jar
        .cookies
        .iter()
        .map(|(n, _, v)| n.len() + 1 + v.len())
        .max()
        .unwrap();
    assert!(longest <= 4096, "{longest}");
    s.idp.sign_in_as("alice", json!({}));
    let (_, headers, _) = send(&client(), "GET", &authorize, &[]).await;
    let back = headers["location"].to_str().unwrap();
    let path = &back[back.find("/.portcullis/callback?").unwrap()..];
    let cookie = jar.header(path);
    let (status, headers, body) = s.call(path, &[("cookie", &cookie)]).await;
    assert_eq!(status, 302, "{body}");
    assert_eq!(headers["location"], "/app/report");

    // Through the login endpoint (forward-auth's front proxies send the
    // whole original URL there): the same.
    let rd = format!("/app/x?{}", "y".repeat(3000));
    let mut jar = Jar::default();
    let authorize = s
        .start_sign_in(&mut jar, &format!("/.portcullis/login?rd={rd}"))
        .await;
    s.idp.sign_in_as("alice", json!({}));
    let (_, headers, _) = send(&client(), "GET", &authorize, &[]).await;
    let back = headers["location"].to_str().unwrap();
    let path = &back[back.find("/.portcullis/callback?").unwrap()..];
    let (status, headers, body) = s.call(path, &[("cookie", &jar.header(path))]).await;
    assert_eq!(status, 302, "{body}");
    assert_eq!(headers["location"], "/app/x");
}
