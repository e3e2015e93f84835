//! `Authorization/Check`: Envoy's description of a request in, the core's
//! judgment out as a `CheckResponse` (SPEC §4). Only translation lives here;
//! every decision is [`crate::judge`]'s, and every refusal's status, headers and
//! body come from [`crate::respond::error_response`].

use super::proto::{
    BoolValue, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValue as PbHeader,
    HeaderValueOption, HttpRequest, HttpResponse, HttpStatus, OkHttpResponse, RpcStatus,
    APPEND_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS_OR_ADD,
};
use crate::audit::AuditTime;
use crate::authority::{self, JudgedHost};
use crate::body::full;
use crate::forward::headers::names;
use crate::judge::{self, Frontend, PeerIdentity, RequestFacts};
use crate::record::{self, Exchange};
use crate::request_meta::request_id;
use crate::respond::{error_response, wants_html, Refusal};
use crate::runtime::Runtime;
use crate::state::Shared;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use portcullis_config::WorkloadSource;
use portcullis_core::{Identity, Reason};
use portcullis_policy::split_query;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// gRPC status codes used in `CheckResponse.status` (google.rpc.Code).
mod code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Answers one check from the Envoy at `peer` (`certified`: it presented a
/// certificate from `ext_authz.tls.client_ca_file`), and records its audit line and
/// metrics (frontend `ext_authz`).
pub async fn check(
    req: CheckRequest,
    peer: SocketAddr,
    certified: bool,
    shared: &Shared,
) -> CheckResponse {
    let rt = shared.runtime.load_full();
    // The peer is Envoy. Only a trusted one may vouch for the client's address,
    // request id, trace and sidecar identity headers, and for the principal it
    // verified over mTLS (the core applies `workload_identity`): trusted by
    // address, or by the client certificate the listener required (as it was
    // started: a reload does not change the listener). Anyone else reaching
    // `grpc_listen` could name any workload and be handed an assertion for it.
    let peer_trusted = rt.is_trusted(peer.ip());
    let principal_believed = peer_trusted || certified;
    let attributes = req.attributes.unwrap_or_default();
    let source = attributes.source.unwrap_or_default();
    let http = attributes.request.and_then(|r| r.http).unwrap_or_default();
    let headers = request_headers(&http);
    let trusted = |value: Option<&'_ str>| -> Option<String> {
        value
            .filter(|v| peer_trusted && !v.is_empty())
            .map(str::to_string)
    };
    let client_ip = source
        .address
        .and_then(|a| a.socket_address)
        .and_then(|s| s.address.parse::<IpAddr>().ok())
        .filter(|_| peer_trusted)
        .unwrap_or(peer.ip());
    let traceparent = headers
        .as_ref()
        .ok()
        .and_then(|h| h.get(names::TRACEPARENT))
        .and_then(|v| v.to_str().ok());
    let (trace, span) =
        crate::telemetry::begin(shared.telemetry.as_ref(), trusted(traceparent).as_deref());
    let mut ex = Exchange {
        started: Instant::now(),
        arrived: AuditTime::now(),
        request_id: request_id(trusted(Some(http.id.as_str())).as_deref()),
        trace,
        client_ip: client_ip.to_string(),
        method: http.method.clone(),
        host: String::new(),
        path: split_query(&http.path).0.to_string(),
        route: None,
        route_index: None,
        decision: None,
        identity: Identity::anonymous_shared(),
        upstream_ms: None,
        html: headers.as_ref().is_ok_and(wants_html),
        refused: None,
        frontend: Frontend::ExtAuthz,
        span,
        mcp: None,
    };
    let principal = PeerIdentity {
        source: WorkloadSource::Xfcc,
        spiffe_id: source.principal,
    };
    let peer_identity =
        (principal_believed && !principal.spiffe_id.is_empty()).then_some(&principal);
    let result = match headers {
        Ok(headers) => {
            judge_check(&rt, &http, &headers, peer_trusted, peer_identity, &mut ex).await
        }
        Err(refusal) => Err(refusal),
    };
    let (answer, status) = match result {
        Ok(ok) => (allowed(ok), StatusCode::OK),
        Err(mut refusal) => {
            // Envoy hands a denial to the browser as it is: with
            // `ext_authz.login_redirect`, one that should sign in is sent to
            // the proxy's login and back (else the 401 of SPEC §4).
            if rt
                .config
                .ext_authz
                .as_ref()
                .is_some_and(|e| e.login_redirect)
            {
                let original = format!("{}://{}{}", scheme_of(&http), http.host, http.path);
                crate::login::flow::send_to_login(&mut refusal, &rt.public_url, &original);
            }
            ex.refused = Some(refusal.reason);
            denied(&refusal, &ex).await
        }
    };
    // One audit line per check, written as the (bodiless) answer is dropped.
    let mut record = Response::new(full(""));
    *record.status_mut() = status;
    drop(record::finish(ex, record, shared, &rt));
    answer
}

/// The scheme Envoy saw: `https` when it says so, else `http`.
fn scheme_of(http: &HttpRequest) -> &'static str {
    if http.scheme.eq_ignore_ascii_case("https") {
        "https"
    } else {
        "http"
    }
}

/// Judges the described request; the headers to set and to remove when allowed.
async fn judge_check(
    rt: &Runtime,
    http: &HttpRequest,
    headers: &HeaderMap,
    peer_trusted: bool,
    peer_identity: Option<&PeerIdentity>,
    ex: &mut Exchange,
) -> Result<OkHttpResponse, Refusal> {
    let host = judged_host(http, headers)?;
    ex.host.clone_from(&host.name);
    let (raw_path, _query) = judge::described_target(&http.path)?;
    let forwarded_host_sent = headers.contains_key(names::X_FORWARDED_HOST);
    let facts = RequestFacts {
        frontend: Frontend::ExtAuthz,
        method: &http.method,
        host: &host,
        scheme: scheme_of(http),
        raw_path,
        headers,
        upgrade: headers.contains_key(http::header::UPGRADE),
        peer_trusted,
        peer_identity,
        client_ip: &ex.client_ip,
        html: ex.html,
        request_id: &ex.request_id,
        offline: None,
    };
    let mut judgment = judge::judge(rt, &facts).await;
    // A dead session cookie the core looked past is cleared in the answer to
    // the browser, as the reverse proxy does: added beside the service's own
    // `Set-Cookie`s, never in their place.
    let clear_cookies: Vec<_> = std::mem::take(&mut judgment.set_cookies)
        .iter()
        .map(|cookie| header_option(&http::header::SET_COOKIE, cookie, true))
        .collect();
    // The proxy's own endpoints are not served behind Envoy.
    let reserved = judgment.reserved;
    // The `Cookie` header without the session cookie, as the reverse proxy
    // forwards it: the service must never hold a session it could replay.
    let cookie = judgment.cookie.clone();
    let (_path, set, remove) = ex.absorb(judgment)?;
    if reserved {
        return Err(Refusal::new(Reason::NoRoute));
    }
    // The service hears the request id and trace the audit line has, and the
    // judged host as `X-Forwarded-Host`, as from the reverse proxy (SPEC §3,
    // §5): Envoy passes on the client's own, which may name another host.
    let mut correlation: Vec<_> = ex.correlation_headers().collect();
    if let Some(authority) = &host.authority {
        correlation.push((names::X_FORWARDED_HOST, authority.clone()));
    }
    let mut headers: Vec<_> = set
        .iter()
        .chain(correlation.iter())
        .map(|(name, value)| overwrite(name, value))
        .collect();
    // Envoy removes after it sets: a header that is overwritten must not also
    // be named here, or the identity just set would go with the spoofed one.
    let mut headers_to_remove: Vec<String> = remove
        .iter()
        .filter(|name| {
            !set.iter()
                .chain(correlation.iter())
                .any(|(set_name, _)| set_name == *name)
        })
        .map(|name| name.as_str().to_string())
        .collect();
    if host.authority.is_none() && forwarded_host_sent {
        headers_to_remove.push(names::X_FORWARDED_HOST.as_str().to_string());
    }
    match cookie {
        Some(Some(rest)) => headers.push(overwrite(&http::header::COOKIE, &rest)),
        Some(None) => headers_to_remove.push(http::header::COOKIE.as_str().to_string()),
        None => {}
    }
    Ok(OkHttpResponse {
        headers,
        headers_to_remove,
        response_headers_to_add: clear_cookies,
    })
}

/// The host Envoy saw (`:authority` or `Host`), judged like a request's own: a
/// `host` header in the checked request that names another authority is a 400
/// (SPEC §5), as it would be on the listener.
fn judged_host(http: &HttpRequest, headers: &HeaderMap) -> Result<JudgedHost, Refusal> {
    let bad = |why: &'static str| Refusal::with_message(Reason::BadRequest, why);
    let target = if http.host.is_empty() {
        http::Uri::from_static("/")
    } else {
        format!("{}://{}/", scheme_of(http), http.host)
            .parse::<http::Uri>()
            .map_err(|_| bad("invalid host"))?
    };
    authority::judge_host(&target, headers).map_err(bad)
}

/// The checked request's headers as a header map. Pseudo-headers (`:path`,
/// `:authority`…), which Envoy includes, are already in the request's own
/// fields and are left out; any other unusable name or value is a 400, never
/// silently dropped (it could be a credential).
fn request_headers(http: &HttpRequest) -> Result<HeaderMap, Refusal> {
    let bad =
        |what: &str| Refusal::with_message(Reason::BadRequest, format!("invalid header {what}"));
    let mut map = HeaderMap::new();
    let mut add = |key: &str, value: &[u8]| -> Result<(), Refusal> {
        if key.starts_with(':') {
            return Ok(());
        }
        let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| bad("name"))?;
        let value = HeaderValue::from_bytes(value).map_err(|_| bad(name.as_str()))?;
        map.append(name, value);
        Ok(())
    };
    for (key, value) in &http.headers {
        add(key, value.as_bytes())?;
    }
    // With `encode_raw_headers`, Envoy sends the lines unmerged here instead.
    for header in http.header_map.iter().flat_map(|m| &m.headers) {
        let value = if header.raw_value.is_empty() {
            header.value.as_bytes()
        } else {
            &header.raw_value
        };
        add(&header.key, value)?;
    }
    Ok(map)
}

/// A header Envoy sets, replacing any value the request had.
fn overwrite(name: &HeaderName, value: &HeaderValue) -> HeaderValueOption {
    header_option(name, value, false)
}

/// An answer's headers for Envoy: the first line of each name replaces, the
/// lines after it are added (several `Set-Cookie`s must all reach the browser).
fn answer_headers(headers: &HeaderMap) -> Vec<HeaderValueOption> {
    let mut previous: Option<&HeaderName> = None;
    headers
        .iter()
        // Connection management is Envoy's own business.
        .filter(|(name, _)| *name != http::header::CONNECTION)
        .map(|(name, value)| {
            // A header map yields every line of one name in a row.
            let again = previous == Some(name);
            previous = Some(name);
            header_option(name, value, again)
        })
        .collect()
}

fn header_option(name: &HeaderName, value: &HeaderValue, append: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeader {
            key: name.as_str().to_string(),
            // UTF-8 nearly always: checked whole, without the lossy walk.
            value: std::str::from_utf8(value.as_bytes()).map_or_else(
                |_| String::from_utf8_lossy(value.as_bytes()).into_owned(),
                str::to_owned,
            ),
            raw_value: Vec::new(),
        }),
        // Both spellings, for Envoys that read only the deprecated one.
        append: Some(BoolValue { value: append }),
        append_action: if append {
            APPEND_IF_EXISTS_OR_ADD
        } else {
            OVERWRITE_IF_EXISTS_OR_ADD
        },
    }
}

fn allowed(ok: OkHttpResponse) -> CheckResponse {
    CheckResponse {
        status: Some(RpcStatus {
            code: code::OK,
            message: String::new(),
        }),
        http_response: Some(HttpResponse::OkResponse(ok)),
    }
}

/// The §6 answer Envoy sends to the client: the same status, headers and body
/// the reverse proxy would answer with.
async fn denied(refusal: &Refusal, ex: &Exchange) -> (CheckResponse, StatusCode) {
    let (parts, body) = error_response(refusal, &ex.request_id, ex.html).into_parts();
    let body = match body.collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let headers = answer_headers(&parts.headers);
    let grpc_code = match parts.status.as_u16() {
        // 302: a browser sent to sign in.
        401 | 302 => code::UNAUTHENTICATED,
        400 => code::INVALID_ARGUMENT,
        404 => code::NOT_FOUND,
        500..=599 => code::UNAVAILABLE,
        // 403, and 429 (SPEC §4: rate limiting is a refusal to this caller).
        _ => code::PERMISSION_DENIED,
    };
    let answer = CheckResponse {
        status: Some(RpcStatus {
            code: grpc_code,
            message: refusal.reason.as_str().to_string(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(parts.status.as_u16()),
            }),
            headers,
            body,
        })),
    };
    (answer, parts.status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext_authz::proto::{HeaderMap as PbHeaderMap, HeaderValue as PbValue};

    fn http(host: &str, headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            host: host.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn pseudo_headers_are_left_out_and_bad_headers_refused() {
        let h = request_headers(&http(
            "a",
            &[(":path", "/x"), ("authorization", "Bearer t")],
        ))
        .unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h["authorization"], "Bearer t");
        let err = request_headers(&http("a", &[("bad name", "x")])).unwrap_err();
        assert_eq!(err.reason, Reason::BadRequest);
        let err = request_headers(&http("a", &[("x-a", "line\nbreak")])).unwrap_err();
        assert_eq!(err.reason, Reason::BadRequest);
    }

    #[test]
    fn raw_header_map_lines_all_count() {
        let mut req = http("a", &[]);
        req.header_map = Some(PbHeaderMap {
            headers: vec![
                PbValue {
                    key: "x-forwarded-client-cert".into(),
                    value: String::new(),
                    raw_value: b"URI=spiffe://a/1".to_vec(),
                },
                PbValue {
                    key: "x-forwarded-client-cert".into(),
                    value: "URI=spiffe://a/2".into(),
                    raw_value: Vec::new(),
                },
            ],
        });
        let h = request_headers(&req).unwrap();
        let lines: Vec<_> = h.get_all("x-forwarded-client-cert").iter().collect();
        assert_eq!(lines, ["URI=spiffe://a/1", "URI=spiffe://a/2"]);
    }

    #[test]
    fn every_set_cookie_of_an_answer_reaches_envoy() {
        let mut h = HeaderMap::new();
        h.append("set-cookie", HeaderValue::from_static("a=; Max-Age=0"));
        h.append("set-cookie", HeaderValue::from_static("b=; Max-Age=0"));
        h.append("content-type", HeaderValue::from_static("application/json"));
        h.append("connection", HeaderValue::from_static("close"));
        let options = answer_headers(&h);
        let seen: Vec<_> = options
            .iter()
            .map(|o| {
                let header = o.header.as_ref().unwrap();
                (header.key.as_str(), header.value.as_str(), o.append_action)
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("set-cookie", "a=; Max-Age=0", OVERWRITE_IF_EXISTS_OR_ADD),
                ("set-cookie", "b=; Max-Age=0", APPEND_IF_EXISTS_OR_ADD),
                (
                    "content-type",
                    "application/json",
                    OVERWRITE_IF_EXISTS_OR_ADD
                ),
            ]
        );
        assert_eq!(options[1].append, Some(BoolValue { value: true }));
    }

    #[test]
    fn a_host_header_naming_another_authority_is_refused() {
        let judged = |host: &str, header: Option<&'static str>| {
            let mut h = HeaderMap::new();
            if let Some(v) = header {
                h.insert(http::header::HOST, HeaderValue::from_static(v));
            }
            judged_host(&http(host, &[]), &h).map(|j| j.name)
        };
        assert_eq!(
            judged("Shop.Example.com:8443", None).unwrap(),
            "shop.example.com"
        );
        assert_eq!(
            judged("shop.example.com", Some("shop.example.com:80")).unwrap(),
            "shop.example.com"
        );
        assert!(judged("shop.example.com", Some("admin.example.com")).is_err());
        assert!(judged("bad host", None).is_err());
        assert_eq!(judged("", None).unwrap(), "");
    }
}
