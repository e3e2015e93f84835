//! The request pipeline, readable top to bottom:
//!
//! sanitize → route → authenticate → authorize → rate-limit → propagate → forward →
//! respond → record.
//!
//! This is the reverse-proxy front end: it translates an HTTP request into the
//! core's facts ([`crate::judge`]), applies the judgment, forwards, and records
//! through [`crate::record`] however the request ends.

use crate::audit::{millis, AuditTime};
use crate::authority;
use crate::body::{without_trailers, Counted, ProxyBody};
use crate::endpoints;
use crate::forward;
use crate::forward::headers::{self, names};
use crate::judge::{self, Frontend, RequestFacts};
use crate::listener::h1_guard::{Refusal as GuardRefusal, REJECTED_PATH};
use crate::mcp;
use crate::request_meta::request_id;
use crate::respond::{error_response, wants_html, Refusal};
use crate::runtime::Runtime;
use crate::state::Shared;
use http::{HeaderName, HeaderValue, Request, Response};
use hyper::body::Incoming;
use portcullis_core::{Identity, Reason};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

// Where they lived before the front ends were split out; kept for the listener.
pub use crate::conn::ConnInfo;
pub use crate::record::{finish, Exchange};

/// hyper's entry point for every request on the main listener.
pub async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
) -> Result<Response<Counted>, Infallible> {
    let rt = shared.runtime.load_full();
    let peer_trusted = rt.is_trusted(conn.peer.ip());
    let trusted_header = |name: &HeaderName| {
        peer_trusted
            .then(|| req.headers().get(name).and_then(|v| v.to_str().ok()))
            .flatten()
    };
    let client_ip = headers::client_ip(req.headers(), conn.peer.ip(), |ip| rt.is_trusted(ip));
    // Usually the peer itself, whose text was made when the connection opened.
    let client_ip = match conn.peer_ip.to_str() {
        Ok(text) if client_ip == conn.peer.ip() => text.to_string(),
        _ => client_ip.to_string(),
    };
    let (trace, span) = crate::telemetry::begin(
        shared.telemetry.as_ref(),
        trusted_header(&names::TRACEPARENT),
    );
    let mut ex = Exchange {
        started: Instant::now(),
        arrived: AuditTime::now(),
        request_id: request_id(trusted_header(&names::X_REQUEST_ID)),
        trace,
        client_ip,
        method: req.method().as_str().to_string(),
        host: String::new(),
        path: req.uri().path().to_string(),
        route: None,
        route_index: None,
        decision: None,
        identity: Identity::anonymous_shared(),
        upstream_ms: None,
        html: wants_html(req.headers()),
        refused: None,
        frontend: Frontend::Proxy,
        span,
        mcp: None,
    };
    // The HTTP/1 guard stops inspecting a connection once a request asks for an
    // upgrade; if no upgrade happens, the connection must not carry more requests.
    let asked_upgrade = req.version() <= http::Version::HTTP_11
        && req.headers().contains_key(http::header::UPGRADE);
    // Boxed: hyper keeps room for this future in every connection for its whole
    // life, idle or not; the pipeline's state lives in the heap only while a
    // request is in flight.
    let result = Box::pin(run(req, &conn, &rt, &shared, peer_trusted, &mut ex)).await;
    let mut response = match result {
        Ok(resp) => resp,
        Err(refusal) => {
            ex.refused = Some(refusal.reason);
            error_response(&refusal, &ex.request_id, ex.html)
        }
    };
    if asked_upgrade && response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(finish(ex, response, &shared, &rt))
}

async fn run(
    mut req: Request<Incoming>,
    conn: &ConnInfo,
    rt: &Arc<Runtime>,
    shared: &Shared,
    peer_trusted: bool,
    ex: &mut Exchange,
) -> Result<Response<ProxyBody>, Refusal> {
    // A head the guard refused arrives as a synthetic request: answer and close.
    if req.uri().path() == REJECTED_PATH {
        if let Some(refused) = conn.verdict.take() {
            ex.path = "-".to_string();
            ex.method = refused
                .method
                .map_or_else(|| "-".to_string(), |m| m.to_string());
            ex.host = refused.host.unwrap_or_default();
            let mut r = match refused.refusal {
                GuardRefusal::BadRequest(why) => {
                    Refusal::with_message(Reason::BadRequest, format!("malformed request: {why}"))
                }
                GuardRefusal::HeadersTooLarge => headers_too_large(),
            };
            r.close = true;
            return Err(r);
        }
    }

    // HTTP/2 heads are not seen by the HTTP/1 guard: measured here, so an
    // oversized one gets the same 431, JSON body and audit line (h2 itself only
    // refuses heads past twice the limit, see `listener::h2_header_list_limit`).
    if req.version() == http::Version::HTTP_2
        && h2_header_list_size(&req)
            > usize::try_from(rt.config.server.max_header_bytes.0).unwrap_or(usize::MAX)
    {
        return Err(headers_too_large());
    }

    // One host is judged, and it is the one the upstream receives.
    let judged = authority::judge_host(req.uri(), req.headers())
        .map_err(|why| Refusal::with_message(Reason::BadRequest, why))?;
    // Only HTTP/1.0 may leave the host out, or send an empty `Host:` (RFC
    // 9112 §3.2 makes the rest a 400). Judged by the host-less routes, such a
    // request would reach the upstream under the upstream's own name, which
    // may be a protected virtual host the request never named.
    if judged.name.is_empty() && req.version() != http::Version::HTTP_10 {
        return Err(Refusal::with_message(
            Reason::BadRequest,
            "the request names no host (Host or :authority)",
        ));
    }
    ex.host.clone_from(&judged.name);

    // Hop-by-hop headers go before anything is judged, so a header named in
    // `Connection` can never take the proxy's own headers with it later.
    // Only HTTP/1.1 upgrades (RFC 9110 §7.8): an HTTP/1.0 client would not
    // read a 101, while the upstream, asked in HTTP/1.1, would switch.
    let http11 = req.version() == http::Version::HTTP_11;
    let upgrade = headers::strip_hop_by_hop(req.headers_mut()).filter(|_| http11);

    // Everything that decides happens in the core.
    let scheme = if conn.tls { "https" } else { "http" };
    let facts = RequestFacts {
        frontend: Frontend::Proxy,
        method: req.method().as_str(),
        host: &judged,
        scheme,
        raw_path: req.uri().path(),
        headers: req.headers(),
        upgrade: upgrade.is_some(),
        peer_trusted,
        peer_identity: conn.peer_identity.as_ref(),
        client_ip: &ex.client_ip,
        html: ex.html,
        request_id: &ex.request_id,
        offline: None,
    };
    let mut judgment = judge::judge(rt, &facts).await;
    let cookie = judgment.cookie.take();
    // A dead session cookie the core looked past (beside a bearer token, on an
    // optional route) is cleared in the answer, whichever it is.
    let clear_cookies = std::mem::take(&mut judgment.set_cookies);
    let (path, set, remove) = match ex.absorb(judgment) {
        Ok(told) => told,
        // Boxed, as are the other branches a plain proxied request never takes:
        // their futures would otherwise widen this one, which is moved whole
        // into its box for every request.
        Err(refusal) => {
            return Err(Box::pin(sign_in(refusal, rt, scheme, &judged, req.uri())).await)
        }
    };
    let Some(index) = ex.route_index else {
        // Reserved: the proxy's own endpoints.
        return match Box::pin(endpoints::serve(
            req,
            &path,
            &judged,
            rt,
            ex,
            conn,
            peer_trusted,
        ))
        .await
        {
            Some(resp) => resp,
            None => Err(Refusal::new(Reason::NoRoute)),
        };
    };
    let route_cfg = &rt.config.routes[index];

    // Only the upgrades this route allows are tunnelled (never h2c); any other is
    // forwarded as a plain request, and the connection closes after it.
    // None on MCP routes: inside a tunnel, messages would pass unjudged.
    let upgrade = upgrade.filter(|proto| {
        route_cfg.mcp.is_none() && headers::upgrade_allowed(proto, &route_cfg.upgrades)
    });

    let Some(pool) = rt.pools[index].clone() else {
        return Err(Refusal::with_message(
            Reason::NoRoute,
            "this route has no upstream",
        ));
    };
    // Apply the core's word: remove what the client may not say, set the
    // forwarding headers and the verified identity.
    for name in &remove {
        req.headers_mut().remove(name);
    }
    match cookie {
        Some(Some(rest)) => {
            req.headers_mut().insert(http::header::COOKIE, rest);
        }
        Some(None) => {
            req.headers_mut().remove(http::header::COOKIE);
        }
        None => {}
    }
    headers::set_forwarded(
        req.headers_mut(),
        &conn.peer_ip,
        peer_trusted,
        scheme,
        judged.authority,
    );
    // Validated once, sent both ways.
    let request_id = HeaderValue::from_str(&ex.request_id).ok();
    if let Some(id) = &request_id {
        req.headers_mut().insert(names::X_REQUEST_ID, id.clone());
    }
    for (name, value) in set.iter() {
        req.headers_mut().insert(name.clone(), value.clone());
    }
    // Traced, the upstream call is a span of its own: the parent the service sees.
    if let Some(span) = ex.span.as_mut() {
        span.upstream_started(&mut ex.trace);
    }
    set_header(req.headers_mut(), names::TRACEPARENT, &ex.trace.header());

    let timeout = route_cfg
        .timeout
        .unwrap_or(rt.config.server.request_timeout)
        .get();
    // MCP routes: each JSON-RPC message is judged, and answers filtered (SPEC §10).
    let (mut req, mcp_after) = match route_cfg.mcp {
        None => (req.map(without_trailers), None),
        Some(_) => {
            match Box::pin(mcp::before(req, index, rt, shared, ex, &judged.name, &path)).await? {
                mcp::Step::Forward(req, after) => (req, Some(after)),
                mcp::Step::Answer(resp) => return Ok(resp),
            }
        }
    };
    // Last, once everything that can refuse has judged: a refused caller (an MCP
    // call included) never makes the proxy fetch an outbound token.
    crate::upstream_auth::attach(req.headers_mut(), route_cfg, rt).await?;
    let upstream_started = Instant::now();
    let result = forward::forward(req, upgrade, &pool, &path, timeout, route_cfg.retries).await;
    let upstream_elapsed = upstream_started.elapsed();
    if let Some(span) = ex.span.as_mut() {
        span.upstream_done(
            result
                .as_ref()
                .map(|r| r.status().as_u16())
                .map_err(|r| r.reason),
        );
    }
    ex.upstream_ms = Some(millis(upstream_elapsed));
    rt.route_metrics[index]
        .upstream_duration
        .observe(upstream_elapsed.as_secs_f64());
    let mut resp = result?;
    if let Some(after) = mcp_after {
        resp = Box::pin(mcp::after(after, resp, shared)).await?;
    }
    if let Some(id) = request_id {
        resp.headers_mut().insert(names::X_REQUEST_ID, id);
    }
    for c in clear_cookies {
        resp.headers_mut().append(http::header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// A browser the core says should sign in is sent to the provider, to come
/// back to the URL it asked for; any other refusal is answered as it is.
async fn sign_in(
    refusal: Refusal,
    rt: &Runtime,
    scheme: &str,
    judged: &authority::JudgedHost,
    uri: &http::Uri,
) -> Refusal {
    let Some(login) = rt.login.as_ref().filter(|_| refusal.sign_in) else {
        return refusal;
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let original = match judged.authority.as_ref().and_then(|a| a.to_str().ok()) {
        Some(a) => format!("{scheme}://{a}{path}"),
        None => path.to_string(),
    };
    login.send_to_provider(refusal, &original, path).await
}

fn set_header(headers: &mut http::HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The 431 for a request head over `max_header_bytes`, HTTP/1 or HTTP/2.
fn headers_too_large() -> Refusal {
    let mut r = Refusal::with_message(Reason::BadRequest, "request headers too large");
    r.status = Some(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    r
}

/// An HTTP/2 request head's size as SETTINGS_MAX_HEADER_LIST_SIZE counts it
/// (RFC 9113 §6.5.2: name, value and 32 octets per field, pseudo-fields too).
fn h2_header_list_size<B>(req: &Request<B>) -> usize {
    const PER_FIELD: usize = 32;
    let uri = req.uri();
    let pseudo = [
        (":method".len(), req.method().as_str().len()),
        (":scheme".len(), uri.scheme_str().map_or(0, str::len)),
        (
            ":authority".len(),
            uri.authority().map_or(0, |a| a.as_str().len()),
        ),
        (
            ":path".len(),
            uri.path_and_query().map_or(0, |p| p.as_str().len()),
        ),
    ];
    let pseudo: usize = pseudo.iter().map(|(n, v)| n + v + PER_FIELD).sum();
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + PER_FIELD)
        .sum::<usize>()
        + pseudo
}
