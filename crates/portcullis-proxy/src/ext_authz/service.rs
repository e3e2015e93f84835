//! The two unary methods, one `h2` stream each: the request is checked as a
//! gRPC call, its message read and decoded, the method called, and the whole
//! answer queued at once ([`grpc::send_message`]).

use super::check::check;
use super::grpc::{self, Code, Failure, Unread};
use super::proto::{CheckRequest, HealthCheckRequest, HealthCheckResponse, SERVING};
use crate::state::Shared;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::Request;
use prost::Message;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;

pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
pub const HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";
const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

const NO_SUCH_METHOD: Failure = Failure::grpc(Code::Unimplemented, "no such method");
const UNDECODABLE: Failure = Failure::grpc(Code::Internal, "request message is not valid protobuf");

/// Answers one stream; gives up without an answer if the client resets it
/// first (Envoy timed the check out), as hyper did for tonic.
pub async fn serve_stream(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: SocketAddr,
    certified: bool,
    shared: Arc<Shared>,
) {
    let answer = tokio::select! {
        // A check that needs no I/O is answered in this first poll.
        biased;
        answer = call(req, peer, certified, &shared) => answer,
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    let sent = match answer {
        Ok(message) => grpc::send_message(&mut respond, message),
        Err(Unread::Refused(failure)) => grpc::send_failure(&mut respond, &failure),
        Err(Unread::Gone) => return,
    };
    if let Err(e) = sent {
        tracing::debug!(%peer, error = %e, "ext_authz answer not sent");
    }
}

/// The encoded response message of the method the request names.
async fn call(
    req: Request<RecvStream>,
    peer: SocketAddr,
    certified: bool,
    shared: &Shared,
) -> Result<Bytes, Unread> {
    let (parts, mut body) = req.into_parts();
    if let Some(failure) = grpc::refuse_request(&parts) {
        return Err(failure.into());
    }
    match parts.uri.path() {
        CHECK_PATH => {
            let message = grpc::read_message(&mut body).await?;
            let request = CheckRequest::decode(message).map_err(|_| UNDECODABLE)?;
            // Boxed: the judgment's future is several KiB, and the stream's
            // task would otherwise be copied whole as tokio spawns it.
            let answer = Box::pin(check(request, peer, certified, shared)).await;
            Ok(grpc::encode(&answer)?)
        }
        HEALTH_PATH => {
            let message = grpc::read_message(&mut body).await?;
            let request = HealthCheckRequest::decode(message).map_err(|_| UNDECODABLE)?;
            Ok(grpc::encode(&health(&request)?)?)
        }
        _ => Err(NO_SUCH_METHOD.into()),
    }
}

/// `grpc.health.v1.Health/Check`: serving whenever the listener is up; the
/// empty name is the server as a whole.
fn health(request: &HealthCheckRequest) -> Result<HealthCheckResponse, Failure> {
    if request.service.is_empty() || request.service == AUTHORIZATION_SERVICE {
        Ok(HealthCheckResponse { status: SERVING })
    } else {
        Err(Failure::grpc(Code::NotFound, "unknown service"))
    }
}
