//! Talking to the ext_authz listener as Envoy does: the `CheckRequest` it
//! sends, over a plain gRPC client.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use portcullis_proxy::ext_authz::proto::*;
use portcullis_proxy::ext_authz::CHECK_PATH;
use std::collections::HashMap;
use tonic_prost::ProstCodec;

/// A plain gRPC client of `server`'s ext_authz listener.
pub fn grpc_to(server: &portcullis_proxy::Server) -> Grpc {
    let addr = server.ext_authz_addr().expect("ext_authz listening");
    let client: Client<HttpConnector, tonic::body::Body> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let origin: http::Uri = format!("http://{addr}").parse().unwrap();
    tonic::client::Grpc::with_origin(client, origin)
}

/// `req` checked on `server`'s ext_authz listener, over plain HTTP/2.
pub async fn check_on(server: &portcullis_proxy::Server, req: CheckRequest) -> CheckResponse {
    let mut grpc = grpc_to(server);
    grpc.ready().await.unwrap();
    let codec = ProstCodec::<CheckRequest, CheckResponse>::default();
    grpc.unary(tonic::Request::new(req), CHECK_PATH.parse().unwrap(), codec)
        .await
        .unwrap()
        .into_inner()
}

pub type Grpc = tonic::client::Grpc<Client<HttpConnector, tonic::body::Body>>;

/// What Envoy sends for `method host path` with `headers`, from `principal`.
pub fn envoy_check(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    principal: &str,
) -> CheckRequest {
    let mut map: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Envoy includes the pseudo-headers in the map too.
    map.insert(":path".into(), path.into());
    map.insert(":method".into(), method.into());
    map.insert(":authority".into(), "shop.example.com".into());
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    socket_address: Some(SocketAddress {
                        address: "10.1.2.3".into(),
                        port_value: 40000,
                    }),
                }),
                service: String::new(),
                principal: principal.into(),
            }),
            destination: None,
            request: Some(AttributeRequest {
                http: Some(HttpRequest {
                    id: "envoy-request-1".into(),
                    method: method.into(),
                    headers: map,
                    path: path.into(),
                    host: "shop.example.com".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
            }),
            context_extensions: HashMap::new(),
        }),
    }
}
