//! The gRPC methods, wired the way tonic's generated code wires them
//! (`tonic::server::Grpc` with prost's codec), by hand so no protoc is needed.

use super::check::check;
use super::proto::{CheckRequest, CheckResponse, HealthCheckRequest, HealthCheckResponse, SERVING};
use crate::state::Shared;
use http::{Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tonic::server::{Grpc, UnaryService};
use tonic_prost::ProstCodec;

pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
pub const HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";
const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// A check request carries headers, not bodies (unless Envoy is told to send
/// them): far below tonic's 4 MiB default.
const MAX_MESSAGE: usize = 1 << 20;

type Answer<T> = Pin<Box<dyn Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send>>;

/// Routes one HTTP/2 request to its gRPC method.
pub async fn dispatch(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Result<Response<tonic::body::Body>, Infallible> {
    let answer = match req.uri().path() {
        CHECK_PATH => {
            let mut grpc = Grpc::new(ProstCodec::<CheckResponse, CheckRequest>::default())
                .max_decoding_message_size(MAX_MESSAGE);
            grpc.unary(Check { peer, shared }, req).await
        }
        HEALTH_PATH => {
            let mut grpc =
                Grpc::new(ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default())
                    .max_decoding_message_size(MAX_MESSAGE);
            grpc.unary(Health, req).await
        }
        _ => tonic::Status::unimplemented("no such method").into_http(),
    };
    Ok(answer)
}

struct Check {
    peer: SocketAddr,
    shared: Arc<Shared>,
}

impl UnaryService<CheckRequest> for Check {
    type Response = CheckResponse;
    type Future = Answer<CheckResponse>;

    fn call(&mut self, request: tonic::Request<CheckRequest>) -> Self::Future {
        let (peer, shared) = (self.peer, self.shared.clone());
        Box::pin(async move {
            let answer = check(request.into_inner(), peer, &shared).await;
            Ok(tonic::Response::new(answer))
        })
    }
}

/// `grpc.health.v1.Health/Check`: serving whenever the listener is up; the
/// empty name is the server as a whole.
struct Health;

impl UnaryService<HealthCheckRequest> for Health {
    type Response = HealthCheckResponse;
    type Future = Answer<HealthCheckResponse>;

    fn call(&mut self, request: tonic::Request<HealthCheckRequest>) -> Self::Future {
        let service = request.into_inner().service;
        Box::pin(async move {
            if service.is_empty() || service == AUTHORIZATION_SERVICE {
                Ok(tonic::Response::new(HealthCheckResponse {
                    status: SERVING,
                }))
            } else {
                Err(tonic::Status::not_found("unknown service"))
            }
        })
    }
}
