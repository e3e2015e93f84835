//! The MCP front end's guards against a real echo upstream (which records what
//! reached it) and a real development issuer: each test fails when its guard
//! is removed. The full protocol, with the official SDK on both sides, is
//! e2e/test_14_mcp.py.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{client, config, wait_ready};
use http_body_util::{BodyExt, Full};
use portcullis_proxy::Server;
use portcullis_testkit::{DevIssuer, EchoUpstream};
use serde_json::{json, Value};

struct Stack {
    server: Server,
    echo: EchoUpstream,
    idp: DevIssuer,
}

/// One MCP route; `forward_token: true` is set behind `check`'s back, to show
/// that the core removes the caller's token on MCP routes anyway.
async fn stack() -> Stack {
    let idp = DevIssuer::start().await.unwrap();
    let echo = EchoUpstream::start().await.unwrap();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\n\
         providers:\n  - name: dev\n    issuer: {}\n    audiences: [orders-api]\n\
         routes:\n  - name: mcp\n    match: {{ path_prefix: /mcp }}\n    upstream: {}\n    mcp: {{}}\n\
         \x20   policy:\n      allow:\n        - groups: [agents]\n          tools: [get_*]\n",
        idp.issuer(),
        echo.url()
    );
    let mut cfg = config(&yaml);
    cfg.routes[0].forward_token = true;
    let server = Server::start(cfg, None).await.unwrap();
    wait_ready(server.admin_addr()).await;
    Stack { server, echo, idp }
}

impl Stack {
    fn token(&self) -> String {
        self.idp
            .token("bot", "orders-api", 300, json!({"groups": ["agents"]}))
            .unwrap()
    }

    async fn send(&self, method: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}/mcp", self.server.local_addr()))
            .header("authorization", format!("Bearer {}", self.token()))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = client()
            .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn call(tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": tool}}).to_string()
}

#[tokio::test]
async fn the_token_never_reaches_the_server() {
    let s = stack().await;
    let (status, _) = s.send("POST", &[], &call("get_weather")).await;
    assert_eq!(status, 200);
    let seen = s.echo.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        !seen[0].headers.contains_key("authorization"),
        "{:?}",
        seen[0].headers
    );
    assert!(seen[0].headers.contains_key("x-portcullis-assertion"));
}

#[tokio::test]
async fn a_denied_call_is_a_json_rpc_error_and_is_not_forwarded() {
    let s = stack().await;
    let (status, body) = s.send("POST", &[], &call("rm_rf")).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], 3);
    assert_eq!(v["error"]["code"], -32003);
    assert_eq!(v["error"]["data"]["error"], "forbidden");
    assert!(s.echo.seen().is_empty());
    // A non-call method is judged with `tools` set aside: it passes.
    let (status, _) = s
        .send("POST", &[], r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .await;
    assert_eq!(status, 200);
    assert_eq!(s.echo.seen().len(), 1);
}

#[tokio::test]
async fn upgrades_are_not_tunnelled_on_mcp_routes() {
    // Inside a WebSocket tunnel, messages would pass unjudged.
    let s = stack().await;
    let (status, _) = s
        .send(
            "GET",
            &[("connection", "upgrade"), ("upgrade", "websocket")],
            "",
        )
        .await;
    assert_ne!(status, 101);
    let seen = s.echo.seen();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].headers.contains_key("upgrade"));
}

#[tokio::test]
async fn oversized_and_unknown_sessions_are_refused_before_the_server() {
    let s = stack().await;
    // Refused from its Content-Length, before a byte of it is read.
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        s.token(),
        5 << 20
    );
    let answer = common::raw(
        s.server.local_addr(),
        head.as_bytes(),
        std::time::Duration::from_secs(2),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("-32600"), "{answer}");
    let (status, _) = s
        .send(
            "POST",
            &[("mcp-session-id", "never-issued")],
            &call("get_x"),
        )
        .await;
    assert_eq!(status, 404);
    assert!(s.echo.seen().is_empty());
}

#[tokio::test]
async fn messages_the_server_might_read_differently_are_refused() {
    let s = stack().await;
    let long_tool = call(&format!("get_{}", "a".repeat(300)));
    let long_method = json!({"jsonrpc": "2.0", "id": 1, "method": "x".repeat(200)}).to_string();
    let misspelt = [
        r#"{"jsonrpc":"2.0","id":1,"method":"Tools/call","params":{"name":"rm_rf"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call ","params":{"name":"rm_rf"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"TOOLS/LIST"}"#,
    ];
    for body in [long_tool.as_str(), long_method.as_str()]
        .into_iter()
        .chain(misspelt)
    {
        let (status, answer) = s.send("POST", &[], body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(
            serde_json::from_str::<Value>(&answer).unwrap()["error"]["code"],
            -32600
        );
    }
    // A message in a compressed body, or in a method other than POST.
    let (status, _) = s
        .send("POST", &[("content-encoding", "br")], &call("get_a"))
        .await;
    assert_eq!(status, 415);
    for method in ["PUT", "PATCH"] {
        let (status, _) = s.send(method, &[], &call("rm_rf")).await;
        assert_eq!(status, 405, "{method}");
    }
    let (status, _) = s.send("GET", &[], &call("rm_rf")).await;
    assert_eq!(status, 400);
    assert!(s.echo.seen().is_empty(), "{:?}", s.echo.seen());
    // What is forwarded asks for an answer the proxy can read to filter.
    let (status, _) = s
        .send("POST", &[("accept-encoding", "gzip, br")], &call("get_a"))
        .await;
    assert_eq!(status, 200);
    let (status, _) = s.send("GET", &[("accept-encoding", "gzip")], "").await;
    assert_eq!(status, 200);
    let seen = s.echo.seen();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r.headers["accept-encoding"], "identity");
    }
}

/// A body on a method other than POST is never judged, so it never goes on,
/// however it is framed: by `Content-Length`, chunked (`Transfer-Encoding` is
/// hop-by-hop, already gone when the check runs), or as h2 DATA with no header
/// announcing it.
#[tokio::test]
async fn a_body_on_another_method_is_refused_however_it_is_framed() {
    let s = stack().await;
    let message = call("rm_rf");
    for method in ["DELETE", "OPTIONS"] {
        let head = format!(
            "{method} /mcp HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
             {:x}\r\n{message}\r\n0\r\n\r\n",
            s.token(),
            message.len()
        );
        let answer = common::raw(
            s.server.local_addr(),
            head.as_bytes(),
            std::time::Duration::from_secs(2),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{method}: {answer}");
        let (status, _) = s.send(method, &[], &message).await;
        assert_eq!(status, 400, "{method} with a Content-Length");
    }
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let frames = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        hyper::body::Frame::data(Bytes::from(message.clone())),
    )]);
    let req = http::Request::delete(format!("http://{}/mcp", s.server.local_addr()))
        .header("authorization", format!("Bearer {}", s.token()))
        .body(http_body_util::StreamBody::new(frames))
        .unwrap();
    let resp = h2.request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(s.echo.seen().is_empty(), "{:?}", s.echo.seen());
    // Without a body, the transport's DELETE goes on.
    let (status, _) = s.send("DELETE", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(s.echo.seen().len(), 1);
}

/// The MCP route of [`stack`] in front of a stand-in server at `upstream`,
/// and a token for a caller it allows `get_*` tools.
async fn proxy_to(idp: &DevIssuer, upstream: std::net::SocketAddr) -> (Server, String) {
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\n\
         providers:\n  - name: dev\n    issuer: {}\n    audiences: [orders-api]\n\
         routes:\n  - name: mcp\n    match: {{ path_prefix: /mcp }}\n    upstream: http://{upstream}\n    mcp: {{}}\n\
         \x20   policy:\n      allow:\n        - groups: [agents]\n          tools: [get_*]\n",
        idp.issuer(),
    );
    let server = Server::start(config(&yaml), None).await.unwrap();
    wait_ready(server.admin_addr()).await;
    let token = idp
        .token("bot", "orders-api", 300, json!({"groups": ["agents"]}))
        .unwrap();
    (server, token)
}

#[tokio::test]
async fn a_compressed_tool_list_is_not_passed_on() {
    let idp = DevIssuer::start().await.unwrap();
    // An MCP server that answers with a `tools/list` event stream marked as
    // gzip (whatever its bytes): the proxy cannot read it to filter.
    let upstream = common::serve(|_| {
        let event = format!(
            "data: {}\n\n",
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "rm_rf"}]}})
        );
        http::Response::builder()
            .header("content-type", "text/event-stream")
            .header("content-encoding", "gzip")
            .body(Full::new(Bytes::from(event)))
            .unwrap()
    })
    .await;
    let (server, token) = proxy_to(&idp, upstream).await;
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let req = http::Request::post(format!("http://{}/mcp", server.local_addr()))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(list)))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(!String::from_utf8_lossy(&body).contains("rm_rf"));
}

/// A server may answer one message with another's result: the SDK routes an
/// answer by its JSON-RPC id alone, so a `tools/call` sent with the id of a
/// `tools/list` in flight received the whole list. Every answer is filtered,
/// JSON or events, whatever its message asked; a body that is neither passes.
#[tokio::test]
async fn a_tool_list_in_the_answer_to_another_message_is_filtered() {
    let idp = DevIssuer::start().await.unwrap();
    let list = json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": [{"name": "get_a"}, {"name": "rm_rf"}]}});
    let upstream = common::serve(move |target| {
        let (content_type, body) = match target {
            "/mcp/events" => ("text/event-stream", format!("data: {list}\n\n")),
            "/mcp/text" => ("text/plain", list.to_string()),
            _ => ("application/json", list.to_string()),
        };
        http::Response::builder()
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    })
    .await;
    let (server, token) = proxy_to(&idp, upstream).await;
    let ask = |path: &str| {
        let req = http::Request::post(format!("http://{}{path}", server.local_addr()))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(call("get_a"))))
            .unwrap();
        async move {
            let resp = client().request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    for path in ["/mcp", "/mcp/events"] {
        let (status, body) = ask(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.contains("get_a"), "{path}: {body}");
        assert!(!body.contains("rm_rf"), "{path}: {body}");
    }
    // Not JSON by its type, but JSON all the same: a lenient client reads it.
    let (status, body) = ask("/mcp/text").await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("rm_rf"), "{body}");
}
