//! The MCP front end (SPEC §10): what the reverse proxy does on a route with
//! `mcp: {}` between the core's judgment of the HTTP request and forwarding it,
//! and again with the server's answer.
//!
//! - Before: the session the request names must be its caller's
//!   ([`sessions`]); a POST body is read (bounded by `max_message_bytes`) as one
//!   JSON-RPC message ([`jsonrpc`]), and a `tools/call` is judged by the core
//!   for its tool ([`crate::judge::judge_call`]). A denied call is answered here
//!   with a JSON-RPC error and never reaches the server.
//! - After: a session the server issued is bound to the caller, and every
//!   answer (JSON, or SSE through [`sse`]) and the GET event stream are filtered
//!   to the tools the caller may call: a server may send a `tools/list`
//!   answer in reply to another message with the same id.
//!
//! The decision itself is the core's: methods other than `tools/call` were
//! already judged with the policy's `tools` conditions set aside (a caller the
//! policy allows nothing at all gets the ordinary 401/403 before any body is
//! read), and the caller's `Authorization` was already removed by the core.

pub mod jsonrpc;
pub mod metadata;
pub mod sessions;
mod shared_bindings;
pub mod sse;

use crate::audit::AuditMcp;
use crate::body::{full, ProxyBody};
use crate::metrics::McpCallLabels;
use crate::record::Exchange;
use crate::respond::Refusal;
use crate::runtime::Runtime;
use crate::state::Shared;
use crate::sync::lock;
use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    TRANSFER_ENCODING,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use portcullis_core::{Identity, Reason};
use portcullis_policy::NormalizedPath;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The streamable HTTP transport's session header.
pub const SESSION: HeaderName = HeaderName::from_static("mcp-session-id");

/// Distinct `tool` label values of `portcullis_mcp_calls_total` before further
/// tools count as `_other`: a caller may name any tool, and every name would
/// otherwise be a new series. Names the server has not listed (denied, or
/// allowed by a glob but made up: `get_fake1`, `get_fake2`, …) may add at most
/// half of them, so they cannot use up the slots of the tools really served.
const MAX_TOOL_LABELS: usize = 1000;

/// (route, tool): a key of the label and listed-tool sets.
type RouteTool = (String, String);

/// What MCP routes keep across requests and config reloads.
#[derive(Default)]
pub struct McpState {
    pub sessions: sessions::Sessions,
    tool_labels: Mutex<ToolLabels>,
    /// Tools the servers listed (in `tools/list` answers the proxy filtered),
    /// at most [`MAX_TOOL_LABELS`]: only they may take the second half.
    listed: Arc<Mutex<HashSet<RouteTool>>>,
}

#[derive(Default)]
struct ToolLabels {
    seen: HashSet<RouteTool>,
    /// How many of `seen` a tool the server never listed added.
    by_unlisted: usize,
}

impl McpState {
    fn tool_label(&self, route: &str, tool: &str, allowed: bool) -> String {
        let key = (route.to_string(), tool.to_string());
        let listed = allowed && lock(&self.listed).contains(&key);
        let mut labels = lock(&self.tool_labels);
        if labels.seen.contains(&key) {
            return tool.to_string();
        }
        let full = labels.seen.len() >= MAX_TOOL_LABELS
            || (!listed && labels.by_unlisted >= MAX_TOOL_LABELS / 2);
        if full || tool.len() > 128 {
            return "_other".to_string();
        }
        labels.seen.insert(key);
        labels.by_unlisted += usize::from(!listed);
        tool.to_string()
    }
}

/// Notes that the server of `route` listed `tool`.
fn note_listed(listed: &Mutex<HashSet<RouteTool>>, route: &str, tool: &str) {
    let mut listed = lock(listed);
    if listed.len() < MAX_TOOL_LABELS && tool.len() <= 128 {
        listed.insert((route.to_string(), tool.to_string()));
    }
}

/// What the front end does next.
pub enum Step<B> {
    /// Forward this request, then hand the answer to [`after`].
    Forward(Request<B>, Box<After>),
    /// Answer the client with this; nothing is forwarded.
    Answer(Response<ProxyBody>),
}

/// What to do with the server's answer.
pub struct After {
    route: String,
    owner: String,
    /// The session the request named (already checked to be the caller's).
    session: Option<String>,
    deleting: bool,
    filter: Option<ToolFilter>,
    max: usize,
    /// Where bindings are shared, when `shared_state` is set.
    redis: Option<crate::shared_state::Redis>,
}

/// Everything needed to judge, for each tool of a list, whether this caller may
/// call it: owned, because an SSE stream outlives the request's borrows.
struct ToolFilter {
    rt: Arc<Runtime>,
    index: usize,
    /// The route's name, and where the tools its server lists are noted.
    route: String,
    listed: Arc<Mutex<HashSet<RouteTool>>>,
    identity: Arc<Identity>,
    host: String,
    path: NormalizedPath,
    /// Which answer this is, and so what must be read to filter it.
    answer: Answer,
}

/// The answers filtered for tool lists: every one. A POST's answer is filtered
/// whatever its message asked, since the server may send it another's: the
/// SDK routes an answer by its JSON-RPC id alone, so a `tools/call` sent with
/// the id of a `tools/list` in flight received the unfiltered list.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The GET event stream (a resumed stream can replay earlier answers):
    /// only events are read.
    Stream,
    /// The answer to a `tools/list`: it must be readable, JSON or events.
    List,
    /// The answer to any other message: JSON or events are filtered; a body
    /// that is neither carries no list a client could read.
    Other,
}

impl ToolFilter {
    fn permits(self) -> sse::Permits {
        Box::new(move |tool: &str| {
            note_listed(&self.listed, &self.route, tool);
            crate::judge::call_permitted(
                &self.rt,
                self.index,
                &self.identity,
                &self.host,
                &self.path,
                tool,
            )
        })
    }
}

/// The request's side. `host` and `path` are the judged ones; `ex` carries the
/// core's judgment (identity, decision) and receives the message's audit facts.
pub async fn before(
    mut req: Request<Incoming>,
    index: usize,
    rt: &Arc<Runtime>,
    shared: &Shared,
    ex: &mut Exchange,
    host: &str,
    path: &NormalizedPath,
) -> Result<Step<ProxyBody>, Refusal> {
    let max = rt.config.routes[index]
        .mcp
        .as_ref()
        .map_or(usize::MAX, |m| {
            usize::try_from(m.max_message_bytes.0).unwrap_or(usize::MAX)
        });
    let route = ex.route.clone().unwrap_or_default();
    let owner = sessions::owner_of(&ex.identity);
    let session = session_of(&req)?;
    let redis = rt.shared_state.as_ref().map(|s| s.redis.clone());
    if let Some(id) = &session {
        let local = &shared.mcp.sessions;
        if shared_bindings::check(redis.as_ref(), local, &route, id, &owner).await
            != sessions::Check::Owned
        {
            // One answer for "someone else's" and "unknown": no oracle for ids.
            return Err(Refusal::with_message(
                Reason::NoRoute,
                "unknown MCP session (or another caller's): start a new session",
            ));
        }
    }
    let filter = |answer| ToolFilter {
        rt: Arc::clone(rt),
        index,
        route: route.clone(),
        listed: Arc::clone(&shared.mcp.listed),
        identity: ex.identity.clone(),
        host: host.to_string(),
        path: path.clone(),
        answer,
    };
    let mut after = After {
        route: route.clone(),
        owner,
        session,
        deleting: req.method() == Method::DELETE,
        filter: None,
        max,
        redis,
    };
    // What the proxy filters it must be able to read: the server is asked for
    // plain bytes (a gzipped event stream would pass the filter unread).
    req.headers_mut()
        .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    if req.method() == Method::GET {
        after.filter = Some(filter(Answer::Stream));
    }
    if req.method() != Method::POST {
        // The transport's other methods carry no message: one with a body, or a
        // method a lenient server might read a message from, is not judged, so
        // it is not forwarded either.
        if !matches!(
            *req.method(),
            Method::GET | Method::DELETE | Method::HEAD | Method::OPTIONS
        ) {
            let mut r = Refusal::with_message(
                Reason::BadRequest,
                "MCP messages are sent with POST (GET opens the event stream, DELETE ends the session)",
            );
            r.status = Some(StatusCode::METHOD_NOT_ALLOWED);
            return Err(r);
        }
        // Judged by the body itself, not by its head: `Transfer-Encoding` is
        // gone by now (hop-by-hop) and an h2 body has no header at all, so a
        // chunked or h2 DELETE carried a `tools/call` past the judgment.
        if !http_body::Body::is_end_stream(req.body()) {
            return Err(Refusal::with_message(
                Reason::BadRequest,
                "only a POST carries an MCP message",
            ));
        }
        return Ok(Step::Forward(
            req.map(crate::body::without_trailers),
            Box::new(after),
        ));
    }
    if is_encoded(req.headers()) {
        // The server would judge the decoded bytes, the proxy the encoded ones.
        let mut r = Refusal::with_message(
            Reason::BadRequest,
            "a compressed MCP message cannot be judged: send it uncompressed",
        );
        r.status = Some(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        return Err(r);
    }

    let (mut parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Ok(Step::Answer(too_large(max, &ex.request_id)));
    }
    let timeout = rt.config.routes[index]
        .timeout
        .unwrap_or(rt.config.server.request_timeout)
        .get();
    let bytes = match tokio::time::timeout(timeout, read_limited(body, max)).await {
        Err(_) => {
            return Err(Refusal::with_message(
                Reason::BadRequest,
                "the request body did not arrive in time",
            ))
        }
        Ok(Err(Read::TooLarge)) => return Ok(Step::Answer(too_large(max, &ex.request_id))),
        Ok(Err(Read::Failed)) => {
            return Err(Refusal::with_message(
                Reason::BadRequest,
                "cannot read the request body",
            ))
        }
        Ok(Ok(bytes)) => bytes,
    };
    let message = match jsonrpc::parse(&bytes) {
        Ok(m) => m,
        Err(invalid) => {
            ex.refused = Some(Reason::BadRequest);
            let body = jsonrpc::error_answer(
                None,
                invalid.code,
                &invalid.message,
                "bad_request",
                &ex.request_id,
            );
            return Ok(Step::Answer(json_answer(
                StatusCode::BAD_REQUEST,
                body,
                &ex.request_id,
            )));
        }
    };
    ex.mcp = Some(AuditMcp {
        method: message.method.as_deref().map(str::to_string),
        tool: message.tool.as_deref().map(str::to_string),
        id: message.id.map(|id| id.get().to_string()),
    });
    if let Some(tool) = message.tool.as_deref() {
        let facts = portcullis_policy::RequestFacts {
            method: &ex.method,
            host,
            path,
            tool: Some(tool),
        };
        let judged =
            crate::judge::judge_call(rt, index, &ex.identity, &facts, ex.html, &ex.request_id);
        let Some((decision, refusal)) = judged else {
            return Err(Refusal::new(Reason::NoRoute));
        };
        let word = if decision.is_allowed() {
            "allow"
        } else {
            "deny"
        };
        shared
            .metrics
            .mcp_calls
            .get_or_create(&McpCallLabels {
                route: after.route.clone(),
                tool: shared
                    .mcp
                    .tool_label(&after.route, tool, decision.is_allowed()),
                decision: word,
            })
            .inc();
        ex.decision = Some(decision);
        if let Some(refusal) = refusal {
            let Some(id) = message.id.filter(|_| refusal.reason.status() == 403) else {
                // A notification has no id to answer, and a 401 stays a 401.
                return Err(refusal);
            };
            ex.refused = Some(refusal.reason);
            let body = jsonrpc::error_answer(
                Some(id),
                jsonrpc::DENIED,
                &refusal.message,
                refusal.reason.as_str(),
                &ex.request_id,
            );
            return Ok(Step::Answer(json_answer(
                StatusCode::OK,
                body,
                &ex.request_id,
            )));
        }
    }
    after.filter = Some(filter(
        if message.method.as_deref() == Some(jsonrpc::TOOLS_LIST) {
            Answer::List
        } else {
            Answer::Other
        },
    ));
    // The server reads exactly the bytes that were judged.
    parts.headers.remove(TRANSFER_ENCODING);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Ok(Step::Forward(
        Request::from_parts(parts, full(bytes)),
        Box::new(after),
    ))
}

/// The one `Mcp-Session-Id` of a request, if any; several are refused.
fn session_of<B>(req: &Request<B>) -> Result<Option<String>, Refusal> {
    let mut values = req.headers().get_all(SESSION).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refusal::with_message(
            Reason::BadRequest,
            "more than one Mcp-Session-Id",
        ));
    }
    match first.to_str() {
        Ok(id) if !id.is_empty() => Ok(Some(id.to_string())),
        _ => Err(Refusal::with_message(
            Reason::BadRequest,
            "invalid Mcp-Session-Id",
        )),
    }
}

/// The answer's side: bind a new session, forget a deleted one, filter tool
/// lists out of every answer.
pub async fn after(
    after: Box<After>,
    mut resp: Response<ProxyBody>,
    shared: &Shared,
) -> Result<Response<ProxyBody>, Refusal> {
    let ok = resp.status().is_success();
    match (
        &after.session,
        resp.headers().get(SESSION).and_then(|v| v.to_str().ok()),
    ) {
        (None, Some(issued)) if ok => {
            let local = &shared.mcp.sessions;
            shared_bindings::bind(
                after.redis.as_ref(),
                local,
                &after.route,
                issued,
                &after.owner,
            )
            .await;
        }
        (Some(id), _) if ok && after.deleting => {
            let local = &shared.mcp.sessions;
            shared_bindings::end(after.redis.as_ref(), local, &after.route, id, &after.owner).await;
        }
        _ => {}
    }
    let Some(filter) = after.filter.filter(|_| ok) else {
        return Ok(resp);
    };
    // Asked for plain bytes; an answer encoded anyway cannot be read to filter.
    if is_encoded(resp.headers()) {
        return Err(cannot("it is compressed (Content-Encoding)"));
    }
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("text/event-stream") {
        let parser = sse::SseFilter::new(after.max, filter.permits());
        resp.headers_mut().remove(CONTENT_LENGTH);
        return Ok(resp.map(|body| crate::body::boxed(sse::Filtered::new(body, parser))));
    }
    let listing = match filter.answer {
        Answer::Stream => return Ok(resp),
        Answer::List => true,
        Answer::Other => false,
    };
    if listing && !content_type.starts_with("application/json") {
        return Err(cannot("neither JSON nor an event stream"));
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = read_limited(body, after.max)
        .await
        .map_err(|_| cannot("unreadable or larger than max_message_bytes"))?;
    let permits = filter.permits();
    let body = match jsonrpc::filter_tools(&bytes, &*permits) {
        Ok(Some(filtered)) => Bytes::from(filtered),
        Ok(None) => bytes,
        Err(e) if listing => return Err(cannot(&e)),
        // Not JSON (a notification's empty 202): no list a client could read.
        Err(_) => bytes,
    };
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    Ok(Response::from_parts(parts, full(body)))
}

/// Whether a message's body is encoded (any `Content-Encoding` but `identity`):
/// then its bytes are not what its reader decodes.
fn is_encoded(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

enum Read {
    TooLarge,
    Failed,
}

/// A whole body, unless it is larger than `max`: read frame by frame, so that
/// no more than `max` bytes (and one frame) are ever held.
async fn read_limited<B: http_body::Body<Data = Bytes> + Unpin>(
    mut body: B,
    max: usize,
) -> Result<Bytes, Read> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Read::Failed)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(Read::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A `tools/list` answer that cannot be filtered is not passed on.
fn cannot(why: &str) -> Refusal {
    tracing::warn!(
        why,
        "an MCP answer could not be read to filter its tool list: not passed on"
    );
    Refusal::with_message(
        Reason::UpstreamUnavailable,
        "the MCP server's answer could not be read to filter its tool list",
    )
}

fn too_large(max: usize, request_id: &str) -> Response<ProxyBody> {
    let body = jsonrpc::error_answer(
        None,
        jsonrpc::INVALID_REQUEST,
        &format!("the message is larger than this route's limit of {max} bytes"),
        "bad_request",
        request_id,
    );
    json_answer(StatusCode::PAYLOAD_TOO_LARGE, body, request_id)
}

fn json_answer(status: StatusCode, body: Vec<u8>, request_id: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut()
            .insert(crate::forward::headers::names::X_REQUEST_ID, v);
    }
    resp
}

#[cfg(test)]
mod label_tests {
    use super::McpState;

    #[test]
    fn names_the_server_never_listed_take_at_most_half_the_tool_labels() {
        let state = McpState::default();
        for i in 0..1000 {
            state.tool_label("r", &format!("made_up_{i}"), false);
            // Allowed by a glob, but made up all the same.
            state.tool_label("r", &format!("get_fake_{i}"), true);
        }
        assert_eq!(state.tool_label("r", "made_up_0", false), "made_up_0");
        assert_eq!(state.tool_label("r", "get_fake_999", true), "_other");
        // The other half is left for the tools the server lists.
        for i in 0..(super::MAX_TOOL_LABELS / 2) {
            let name = format!("get_{i}");
            super::note_listed(&state.listed, "r", &name);
            assert_eq!(state.tool_label("r", &name, true), name);
        }
        super::note_listed(&state.listed, "r", "get_more");
        assert_eq!(state.tool_label("r", "get_more", true), "_other");
        // Listed but denied to this caller: still an unlisted slot.
        assert_eq!(state.tool_label("r", "get_0", false), "get_0");
    }
}
