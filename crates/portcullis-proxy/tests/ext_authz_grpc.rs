//! The ext_authz listener as a gRPC server: framing edge cases, requests that
//! are not gRPC calls, the HTTP/2 limits and the graceful stop, driven by a raw
//! HTTP/2 client (`h2`) that can send what a well-behaved gRPC client would not.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use bytes::Bytes;
use common::*;
use h2::client::SendRequest;
use http::{HeaderMap, Request};
use portcullis_proxy::ext_authz::proto::{HealthCheckRequest, HealthCheckResponse, SERVING};
use portcullis_proxy::ext_authz::{
    HEALTH_PATH, MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST, MAX_MESSAGE,
};
use portcullis_proxy::Server;
use prost::Message;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

const INTERNAL: &str = "13";
const UNIMPLEMENTED: &str = "12";
const RESOURCE_EXHAUSTED: &str = "8";
const INVALID_ARGUMENT: &str = "3";

async fn server() -> Server {
    let yaml = format!(
        "{SERVER_PREAMBLE}ext_authz:\n  grpc_listen: 127.0.0.1:0\nroutes:\n  - name: open\n    match: {{ path_prefix: / }}\n    auth: none\n"
    );
    Server::start(config(&yaml), None).await.unwrap()
}

/// An HTTP/2 connection to the listener (its driver runs in its own task).
async fn connect(addr: SocketAddr) -> (SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (client, driver)
}

/// What came back for one call.
#[derive(Debug)]
struct Answer {
    http: u16,
    headers: HeaderMap,
    message: Vec<u8>,
    /// Trailers, or the headers of a trailers-only answer.
    status: HeaderMap,
}

impl Answer {
    fn grpc_status(&self) -> &str {
        self.status
            .get("grpc-status")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

/// Posts `body` (raw bytes: prefix and message as given) to `path`.
async fn call_with(
    client: &mut SendRequest<Bytes>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://authz{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut ready = client.clone().ready().await.unwrap();
    let (resp, mut send) = ready
        .send_request(req.body(()).unwrap(), body.is_empty())
        .unwrap();
    if !body.is_empty() {
        // Fails if the answer (and the reset of a call answered before its
        // end, RFC 9113 §8.1) came first; the answer is what is checked.
        let _ = send.send_data(Bytes::from(body), true);
    }
    let resp = resp.await.unwrap();
    let (parts, mut recv) = resp.into_parts();
    let mut message = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await.unwrap();
    Answer {
        http: parts.status.as_u16(),
        status: trailers.unwrap_or_else(|| parts.headers.clone()),
        headers: parts.headers,
        message,
    }
}

const GRPC: &[(&str, &str)] = &[("content-type", "application/grpc"), ("te", "trailers")];

async fn call(client: &mut SendRequest<Bytes>, path: &str, body: Vec<u8>) -> Answer {
    call_with(client, "POST", path, GRPC, body).await
}

/// A gRPC frame: the flag, the declared length, the bytes.
fn frame(flag: u8, declared: usize, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![flag];
    v.extend_from_slice(&u32::try_from(declared).unwrap().to_be_bytes());
    v.extend_from_slice(bytes);
    v
}

fn health(service: &str) -> Vec<u8> {
    HealthCheckRequest {
        service: service.into(),
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_formed_call_is_answered_with_message_and_trailers() {
    let server = server().await;
    let (mut client, _driver) = connect(server.ext_authz_addr().unwrap()).await;
    let m = health("");
    let answer = call(&mut client, HEALTH_PATH, frame(0, m.len(), &m)).await;
    assert_eq!(answer.http, 200);
    assert_eq!(answer.headers["content-type"], "application/grpc");
    assert_eq!(answer.grpc_status(), "0");
    assert_eq!(answer.message[0], 0, "not compressed");
    let len = u32::from_be_bytes(answer.message[1..5].try_into().unwrap()) as usize;
    assert_eq!(len, answer.message.len() - 5);
    let health = HealthCheckResponse::decode(&answer.message[5..]).unwrap();
    assert_eq!(health.status, SERVING);
    // The same message in pieces across DATA frames is the same call.
    let (mut pieces, _d) = connect(server.ext_authz_addr().unwrap()).await;
    let mut req = Request::post(format!("http://authz{HEALTH_PATH}"));
    for (k, v) in GRPC {
        req = req.header(*k, *v);
    }
    let (resp, mut send) = pieces.send_request(req.body(()).unwrap(), false).unwrap();
    let whole = frame(0, m.len(), &m);
    send.send_data(Bytes::copy_from_slice(&whole[..3]), false)
        .unwrap();
    send.send_data(Bytes::copy_from_slice(&whole[3..]), true)
        .unwrap();
    let mut body = resp.await.unwrap().into_body();
    while body.data().await.is_some() {}
    let trailers = body.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_internal_errors() {
    let server = server().await;
    let (mut client, _driver) = connect(server.ext_authz_addr().unwrap()).await;
    let m = health("envoy.service.auth.v3.Authorization");
    let cases = [
        ("missing request message", Vec::new()),
        ("truncated request message", vec![0, 0, 0]),
        ("truncated request message", frame(0, m.len() + 10, &m)),
        // Bounded: what follows the one message is not buffered.
        (
            "more than one request message",
            [frame(0, m.len(), &m), vec![0; 64 << 10]].concat(),
        ),
        (
            "request message is not valid protobuf",
            frame(0, 4, &[0xff; 4]),
        ),
        (
            "invalid compressed flag in the message prefix",
            frame(2, m.len(), &m),
        ),
    ];
    for (why, body) in cases {
        let answer = call(&mut client, HEALTH_PATH, body).await;
        // Trailers-only: no message, the status in the one HEADERS frame.
        assert_eq!(
            (answer.http, answer.grpc_status(), answer.message.len()),
            (200, INTERNAL, 0),
            "{why}: {answer:?}"
        );
        assert_eq!(answer.status["grpc-message"], why);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_messages_are_unimplemented() {
    let server = server().await;
    let (mut client, _driver) = connect(server.ext_authz_addr().unwrap()).await;
    let m = health("");
    // The compressed flag: no grpc-encoding was ever advertised.
    let answer = call(&mut client, HEALTH_PATH, frame(1, m.len(), &m)).await;
    assert_eq!(answer.grpc_status(), UNIMPLEMENTED, "{answer:?}");
    assert_eq!(answer.status["grpc-accept-encoding"], "identity");
    // A compression named for the call, even before any message.
    let gzip = [
        ("content-type", "application/grpc"),
        ("grpc-encoding", "gzip"),
    ];
    let answer = call_with(
        &mut client,
        "POST",
        HEALTH_PATH,
        &gzip,
        frame(0, m.len(), &m),
    )
    .await;
    assert_eq!(answer.grpc_status(), UNIMPLEMENTED, "{answer:?}");
    let identity = [
        ("content-type", "application/grpc"),
        ("grpc-encoding", "identity"),
    ];
    let answer = call_with(
        &mut client,
        "POST",
        HEALTH_PATH,
        &identity,
        frame(0, m.len(), &m),
    )
    .await;
    assert_eq!(answer.grpc_status(), "0", "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_limit_are_refused_unread() {
    let server = server().await;
    let (mut client, _driver) = connect(server.ext_authz_addr().unwrap()).await;
    // A valid message (an unknown service: NOT_FOUND if it were read), one
    // byte over the limit.
    let name = "s".repeat(MAX_MESSAGE - 3);
    let m = health(&name);
    assert_eq!(m.len(), MAX_MESSAGE + 1);
    let answer = call(&mut client, HEALTH_PATH, frame(0, m.len(), &m)).await;
    assert_eq!(
        answer.grpc_status(),
        RESOURCE_EXHAUSTED,
        "{:?}",
        answer.status
    );
    // Refused from the prefix alone: the rest need not come.
    let answer = call(&mut client, HEALTH_PATH, frame(0, MAX_MESSAGE + 1, &[])).await;
    assert_eq!(answer.grpc_status(), RESOURCE_EXHAUSTED);
    // At the limit it is read (and the service unknown).
    let m = health(&"s".repeat(MAX_MESSAGE - 4));
    assert_eq!(m.len(), MAX_MESSAGE);
    let answer = call(&mut client, HEALTH_PATH, frame(0, m.len(), &m)).await;
    assert_eq!(answer.grpc_status(), "5", "{:?}", answer.status);
    // The connection is still good.
    let m = health("");
    let answer = call(&mut client, HEALTH_PATH, frame(0, m.len(), &m)).await;
    assert_eq!(answer.grpc_status(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_are_not_grpc_calls_are_refused_as_grpc_servers_do() {
    let server = server().await;
    let (mut client, _driver) = connect(server.ext_authz_addr().unwrap()).await;
    let m = health("");
    let body = || frame(0, m.len(), &m);
    let answer = call(
        &mut client,
        "/envoy.service.auth.v2.Authorization/Check",
        body(),
    )
    .await;
    assert_eq!((answer.http, answer.grpc_status()), (200, UNIMPLEMENTED));
    let answer = call_with(&mut client, "GET", HEALTH_PATH, GRPC, Vec::new()).await;
    assert_eq!((answer.http, answer.grpc_status()), (405, INTERNAL));
    let json = [("content-type", "application/json")];
    let answer = call_with(&mut client, "POST", HEALTH_PATH, &json, body()).await;
    assert_eq!((answer.http, answer.grpc_status()), (415, INVALID_ARGUMENT));
    let answer = call_with(&mut client, "POST", HEALTH_PATH, &[], body()).await;
    assert_eq!((answer.http, answer.grpc_status()), (415, INVALID_ARGUMENT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limits_streams_and_header_lists() {
    let server = server().await;
    let (mut client, _driver) = connect(server.ext_authz_addr().unwrap()).await;
    let m = health("");
    // After one call the server's SETTINGS are in.
    assert_eq!(
        call(&mut client, HEALTH_PATH, frame(0, m.len(), &m))
            .await
            .grpc_status(),
        "0"
    );
    assert_eq!(
        client.current_max_send_streams(),
        MAX_CONCURRENT_STREAMS as usize
    );
    // A header block over the limit is no call: a 431 or a refused stream.
    let big = "v".repeat(MAX_HEADER_LIST as usize);
    let mut req = Request::post(format!("http://authz{HEALTH_PATH}"));
    for (k, v) in GRPC {
        req = req.header(*k, *v);
    }
    let req = req.header("x-big", big).body(()).unwrap();
    let mut ready = client.clone().ready().await.unwrap();
    let outcome = match ready.send_request(req, false) {
        Ok((resp, mut send)) => {
            let _ = send.send_data(Bytes::from(frame(0, m.len(), &m)), true);
            resp.await.map(|r| r.status().as_u16())
        }
        Err(e) => Err(e),
    };
    assert!(
        matches!(outcome, Ok(431) | Err(_)),
        "an oversized header list was answered: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_stop_calls_in_flight_are_answered_then_the_connection_closes() {
    let server = server().await;
    let (client, driver) = connect(server.ext_authz_addr().unwrap()).await;
    let m = health("");
    let whole = frame(0, m.len(), &m);
    let mut req = Request::post(format!("http://authz{HEALTH_PATH}"));
    for (k, v) in GRPC {
        req = req.header(*k, *v);
    }
    let mut ready = client.clone().ready().await.unwrap();
    let (resp, mut send) = ready.send_request(req.body(()).unwrap(), false).unwrap();
    send.send_data(Bytes::copy_from_slice(&whole[..2]), false)
        .unwrap();
    // The call is open when the server stops.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    send.send_data(Bytes::copy_from_slice(&whole[2..]), true)
        .unwrap();
    let mut body = resp.await.unwrap().into_body();
    while body.data().await.is_some() {}
    assert_eq!(body.trailers().await.unwrap().unwrap()["grpc-status"], "0");
    // GOAWAY: no new call, and the connection ends.
    let refused = match client.clone().ready().await {
        Ok(mut ready) => {
            let req = Request::post(format!("http://authz{HEALTH_PATH}"))
                .body(())
                .unwrap();
            match ready.send_request(req, true) {
                Ok((resp, _)) => resp.await.is_err(),
                Err(_) => true,
            }
        }
        Err(_) => true,
    };
    assert!(refused, "a call after GOAWAY was answered");
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the connection closes after its last call")
        .unwrap();
    stopping.await.unwrap();
}
