//! Two front ends on the listener's reserved prefix (SPEC §4):
//!
//! - `/.portcullis/authz`, forward-auth for the data plane a team already runs
//!   (nginx `auth_request`, Traefik `ForwardAuth`, Caddy `forward_auth`). The
//!   front proxy describes the request it holds in `X-Forwarded-*` /
//!   `X-Original-*` headers; that request is judged by the same core, routes and
//!   policy as a proxied one, and the answer is 200 with the identity headers to
//!   copy, or the SPEC §6 refusal.
//! - `/.portcullis/whoami`, the caller's verified identity as JSON.
//!
//! Both only translate: every decision is [`crate::judge`]'s.

use crate::authority::{self, JudgedHost};
use crate::body::{full, ProxyBody};
use crate::conn::ConnInfo;
use crate::endpoints::WHOAMI_PATH;
use crate::forward::headers::names;
use crate::judge::{self, Frontend, RequestFacts};
use crate::record::Exchange;
use crate::respond::Refusal;
use crate::runtime::Runtime;
use http::header::{HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Response};
use portcullis_config::AuthMode;
use portcullis_core::Reason;

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

/// Judges the request the front proxy describes. Only peers in
/// `trusted_proxies` are answered: anyone else could describe any request it
/// likes and learn the answer (or obtain a signed assertion), so it gets 403
/// and nothing is judged.
pub async fn authz(
    headers: &HeaderMap,
    query: Option<&str>,
    rt: &Runtime,
    ex: &mut Exchange,
    peer_trusted: bool,
) -> Result<Response<ProxyBody>, Refusal> {
    ex.frontend = Frontend::ForwardAuth;
    if !peer_trusted {
        return Err(Refusal::with_message(
            Reason::Forbidden,
            "forward-auth answers only trusted proxies",
        ));
    }
    let one = |a: &HeaderName, b: &HeaderName| -> Result<Option<&str>, Refusal> {
        let mut lines = headers.get_all(a).iter().chain(headers.get_all(b).iter());
        let first = lines.next();
        if lines.next().is_some() {
            return Err(Refusal::with_message(
                Reason::BadRequest,
                format!("the request is described twice ({a} / {b})"),
            ));
        }
        first
            .map(|v| {
                v.to_str().map_err(|_| {
                    Refusal::with_message(Reason::BadRequest, format!("{a} is not text"))
                })
            })
            .transpose()
    };
    let method = one(&X_FORWARDED_METHOD, &X_ORIGINAL_METHOD)?.unwrap_or("GET");
    let uri = one(&X_FORWARDED_URI, &X_ORIGINAL_URI)?.unwrap_or("/");
    let scheme = match headers
        .get(names::X_FORWARDED_PROTO)
        .map(HeaderValue::to_str)
    {
        None => "http",
        Some(Ok(p)) if p.eq_ignore_ascii_case("https") => "https",
        Some(Ok(p)) if p.eq_ignore_ascii_case("http") => "http",
        Some(_) => {
            return Err(Refusal::with_message(
                Reason::BadRequest,
                "X-Forwarded-Proto must be http or https",
            ))
        }
    };
    let host = described_host(headers)?;
    // The described target is a path with an optional query; an absolute URL
    // or anything else is what the proxy would refuse too.
    ex.method = method.to_string();
    ex.host.clone_from(&host.name);
    let (raw_path, _query) = judge::described_target(uri)?;
    ex.path = raw_path.to_string();
    let facts = RequestFacts {
        frontend: Frontend::ForwardAuth,
        method,
        host: &host,
        scheme,
        raw_path,
        headers,
        upgrade: headers.contains_key(http::header::UPGRADE),
        peer_trusted,
        peer_identity: None,
        client_ip: &ex.client_ip,
        html: ex.html,
        request_id: &ex.request_id,
        offline: None,
    };
    let mut judgment = judge::judge(rt, &facts).await;
    let cookie = service_cookie(judgment.cookie.take(), headers);
    if judgment.reserved {
        ex.absorb(judgment)?;
        return Err(Refusal::new(Reason::NoRoute));
    }
    let (_path, set, _remove) = match ex.absorb(judgment) {
        Ok(told) => told,
        // Traefik and Caddy pass the answer to the browser: with `?redirect=true`
        // a browser that should sign in is sent to the proxy's login, which
        // brings it back to the URL it asked for. nginx asks without it and
        // turns the 401 into its own redirect (`error_page 401`).
        Err(mut refusal) => {
            let wants_redirect = query.and_then(|q| crate::login::flow::form_value(q, "redirect"));
            if wants_redirect.as_deref() == Some("true") {
                let authority = host
                    .authority
                    .as_ref()
                    .and_then(|a| a.to_str().ok())
                    .unwrap_or("");
                let original = format!("{scheme}://{authority}{uri}");
                crate::login::flow::send_to_login(&mut refusal, &rt.public_url, &original);
            }
            return Err(refusal);
        }
    };
    let mut resp = Response::new(full(""));
    for (name, value) in set.iter() {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    for (name, value) in ex.correlation_headers() {
        resp.headers_mut().insert(name, value);
    }
    resp.headers_mut()
        .insert(names::X_PORTCULLIS_COOKIE, cookie);
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The `Cookie` the service should get: the client's without the proxy's own
/// cookies, as the reverse proxy forwards it; empty when nothing is left or
/// there was none. The front proxy cannot be told to remove one cookie, only
/// to put a whole header in place (nginx `proxy_set_header Cookie
/// $pc_cookie`), so every allowed answer carries it, changed or not: else a
/// session cookie, which the service could replay, reaches it. Always, since
/// Caddy 2.6's `copy_headers` writes its placeholder's name into a header
/// the answer leaves out.
fn service_cookie(without_ours: Option<Option<HeaderValue>>, headers: &HeaderMap) -> HeaderValue {
    let empty = || HeaderValue::from_static("");
    match without_ours {
        Some(rest) => rest,
        None => crate::forward::headers::joined_cookie(headers),
    }
    .unwrap_or_else(empty)
}

/// The described host: `X-Forwarded-Host`, else the authz request's own `Host`.
fn described_host(headers: &HeaderMap) -> Result<JudgedHost, Refusal> {
    let bad = |why: &'static str| Refusal::with_message(Reason::BadRequest, why);
    let mut forwarded = headers.get_all(names::X_FORWARDED_HOST).iter();
    let value = match (forwarded.next(), forwarded.next()) {
        (Some(_), Some(_)) => return Err(bad("more than one X-Forwarded-Host")),
        (Some(v), None) => v.clone(),
        (None, _) => {
            return authority::judge_host(&http::Uri::from_static("/"), headers).map_err(bad)
        }
    };
    let mut only = HeaderMap::new();
    only.insert(http::header::HOST, value);
    authority::judge_host(&http::Uri::from_static("/"), &only).map_err(bad)
}

/// `GET /.portcullis/whoami`: who the proxy takes the caller to be, from the same
/// credential and workload sources as any request (no route, no policy).
pub async fn whoami(
    method: &Method,
    headers: &HeaderMap,
    rt: &Runtime,
    ex: &mut Exchange,
    conn: &ConnInfo,
    peer_trusted: bool,
) -> Result<Response<ProxyBody>, Refusal> {
    if method != Method::GET && method != Method::HEAD {
        return Err(Refusal::with_message(
            Reason::BadRequest,
            "only GET is supported here",
        ));
    }
    // No route is judged: only who the caller is.
    let nowhere = JudgedHost {
        name: String::new(),
        authority: None,
    };
    let facts = RequestFacts {
        frontend: Frontend::Proxy,
        method: method.as_str(),
        host: &nowhere,
        scheme: "http",
        raw_path: WHOAMI_PATH,
        headers,
        upgrade: headers.contains_key(http::header::UPGRADE),
        peer_trusted,
        peer_identity: conn.peer_identity.as_ref(),
        client_ip: &ex.client_ip,
        html: ex.html,
        request_id: &ex.request_id,
        offline: None,
    };
    let caller = judge::identify_caller(rt, &facts, AuthMode::Required).await?;
    ex.identity = caller.identity;
    if !ex.identity.is_authenticated() {
        return Err(Refusal::new(Reason::MissingToken));
    }
    let id = &ex.identity;
    let mut body = serde_json::json!({
        "type": id.kind.as_str(),
        "sub": id.subject,
        "email": id.email,
        "name": id.name,
        "groups": id.groups,
        "roles": id.roles,
        "scopes": id.scopes,
        "client_id": id.client_id,
        "workload": id.workload,
        "issuer": id.issuer,
        "expires_at": id.expires_at,
    });
    // A signed-in browser learns its session's end and the CSRF token its
    // sign-out form must carry (SPEC §4 logout).
    if let Some(active) = &caller.session {
        body["session"] = serde_json::json!({
            "expires_at": active.session.expires_at,
            "csrf_token": active.session.csrf,
        });
    }
    let mut resp = Response::new(full(body.to_string()));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
