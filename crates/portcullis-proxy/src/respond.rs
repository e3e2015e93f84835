//! Every error the proxy answers with is built here, so each status code, header and
//! body of SPEC §6 comes from exactly one function.

use crate::body::{full, ProxyBody};
use http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE, WWW_AUTHENTICATE,
};
use http::{Response, StatusCode};
use portcullis_core::Reason;
use portcullis_policy::html_escape;

/// What the proxy must say about a refused or failed request.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reason: Reason,
    /// One sentence for the caller. Never contains a token or secret.
    pub message: String,
    /// For 403: the scopes that were missing (`insufficient_scope`).
    pub needed_scopes: Vec<String>,
    /// For 429 (and 503): seconds until a retry can succeed (`Retry-After`).
    pub retry_after: Option<u64>,
    /// For 429: the limit that refused, as `RateLimit-Policy` and `RateLimit`
    /// (boxed: refusals travel in `Result`s, and most have none).
    pub rate_limit: Option<Box<RateLimitHeaders>>,
    /// A ready HTML page for browsers (403 pages name the caller and what was
    /// missing); when absent a plain page is built from `message`.
    pub html: Option<String>,
    /// Close the connection after answering (refused request heads).
    pub close: bool,
    /// A status other than the reason's own (431 for oversized heads, whose code is
    /// still `bad_request`).
    pub status: Option<StatusCode>,
    /// For a 401 on an MCP route: the RFC 9728 metadata URL its challenge names.
    pub resource_metadata: Option<String>,
    /// The core's word that a browser should be sent to sign in (a `login: true`
    /// route, no live session, a page navigation): each front end decides how
    /// (the proxy redirects to the provider, forward-auth with `?redirect=true`
    /// to `/.portcullis/login`, others answer 401).
    pub sign_in: bool,
    /// Answer with this 302 instead of the error page (boxed: rare, and a
    /// `Refusal` travels in every `Result` of the pipeline).
    pub redirect: Option<Box<Redirect>>,
    /// For a rejected token: the provider it was routed to. Never told to the
    /// caller; `portcullis explain` names it.
    pub provider: Option<String>,
    /// `Set-Cookie`s the answer carries, whatever it is (a redirect too): the
    /// clearing of a session cookie found dead, of surplus sign-in cookies.
    pub set_cookies: Vec<HeaderValue>,
}

/// A 302 and the cookies it sets.
#[derive(Debug, Clone)]
pub struct Redirect {
    pub location: String,
    pub set_cookies: Vec<HeaderValue>,
}

/// A rate limit as draft-ietf-httpapi-ratelimit-headers states it: the policy
/// (`quota` requests per `window` seconds: the burst, and how long it takes to
/// refill) and the caller's state (`remaining` now, `reset` seconds until the
/// full quota is back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitHeaders {
    pub quota: u32,
    pub window: u64,
    pub remaining: u64,
    pub reset: u64,
}

impl RateLimitHeaders {
    /// `RateLimit-Policy: "default";q=Q;w=W` and `RateLimit: "default";r=R;t=T`.
    fn insert(&self, headers: &mut http::HeaderMap) {
        let policy = format!("\"default\";q={};w={}", self.quota, self.window);
        let state = format!("\"default\";r={};t={}", self.remaining, self.reset);
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(http::HeaderName::from_static(name), v);
            }
        }
    }
}

impl Refusal {
    /// A refusal with the default message for its reason.
    pub fn new(reason: Reason) -> Self {
        Refusal::with_message(reason, default_message(reason))
    }

    /// Something the proxy itself needs to decide (Redis for shared rate
    /// limits or sessions) cannot answer now: 503 with `Retry-After: 1`.
    /// SPEC §6 has no code for "a dependency of the proxy is down"; the
    /// closest is the one for an unavailable service, answered 503 (not 502:
    /// no upstream failed).
    pub fn dependency_unavailable(message: impl Into<String>) -> Self {
        let mut r = Refusal::with_message(Reason::UpstreamUnavailable, message);
        r.status = Some(http::StatusCode::SERVICE_UNAVAILABLE);
        r.retry_after = Some(1);
        r
    }

    /// A refusal with a specific message.
    pub fn with_message(reason: Reason, message: impl Into<String>) -> Self {
        Refusal {
            reason,
            message: message.into(),
            needed_scopes: Vec::new(),
            retry_after: None,
            rate_limit: None,
            html: None,
            close: false,
            status: None,
            resource_metadata: None,
            sign_in: false,
            redirect: None,
            provider: None,
            set_cookies: Vec::new(),
        }
    }
}

fn default_message(reason: Reason) -> &'static str {
    match reason {
        Reason::Allowed => "allowed",
        Reason::MissingToken => "authentication required: send a bearer token",
        Reason::InvalidToken => "the token is invalid",
        Reason::TokenExpired => "the token has expired",
        Reason::TokenNotYetValid => "the token is not valid yet",
        Reason::BadSignature => "the token signature is invalid",
        Reason::UnknownKey => "the token was signed with an unknown key",
        Reason::AlgorithmNotAllowed => "the token's signing algorithm is not allowed",
        Reason::WrongIssuer => "the token's issuer is not trusted",
        Reason::WrongAudience => "the token is not meant for this service",
        Reason::Forbidden => "access denied by policy",
        Reason::InsufficientScope => "the token lacks a required scope",
        Reason::RateLimited => "too many requests",
        Reason::NoRoute => "no route matches this request",
        Reason::BadRequest => "bad request",
        Reason::UpstreamUnavailable => "the upstream service is unavailable",
        Reason::UpstreamTimeout => "the upstream service did not answer in time",
        Reason::CredentialUnavailable => {
            "the proxy could not obtain a credential for the upstream service"
        }
        Reason::SessionExpired => "your session has ended: sign in again",
    }
}

/// True when the client prefers an HTML page (a browser).
pub fn wants_html(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// Builds the SPEC §6 response for a refusal.
pub fn error_response(refusal: &Refusal, request_id: &str, html: bool) -> Response<ProxyBody> {
    if let Some(r) = &refusal.redirect {
        let cookies: Vec<HeaderValue> = refusal
            .set_cookies
            .iter()
            .chain(&r.set_cookies)
            .cloned()
            .collect();
        return redirect(&r.location, &cookies, request_id);
    }
    let status = refusal.status.unwrap_or_else(|| {
        StatusCode::from_u16(refusal.reason.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    });
    let (content_type, body) = if html {
        let page = refusal
            .html
            .clone()
            .unwrap_or_else(|| plain_page(status, &refusal.message, request_id));
        ("text/html; charset=utf-8", page)
    } else {
        let json = serde_json::json!({
            "error": refusal.reason.as_str(),
            "message": refusal.message,
            "request_id": request_id,
        });
        ("application/json", json.to_string())
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(value) = www_authenticate(refusal) {
        headers.insert(WWW_AUTHENTICATE, value);
    }
    if let Some(secs) = refusal.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if let Some(limit) = &refusal.rate_limit {
        limit.insert(headers);
    }
    if refusal.close {
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    for cookie in &refusal.set_cookies {
        headers.append(SET_COOKIE, cookie.clone());
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(crate::forward::headers::names::X_REQUEST_ID, v);
    }
    resp
}

/// A 302 to `location` with `cookies` set; never cached.
pub fn redirect(location: &str, cookies: &[HeaderValue], request_id: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::FOUND;
    let headers = resp.headers_mut();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            headers.insert(LOCATION, v);
        }
        // Every location is built from checked parts; should one not be a valid
        // header, the browser lands on the site's root rather than nowhere.
        Err(_) => {
            headers.insert(LOCATION, HeaderValue::from_static("/"));
        }
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        headers.append(SET_COOKIE, cookie.clone());
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(crate::forward::headers::names::X_REQUEST_ID, v);
    }
    resp
}

/// The `WWW-Authenticate` challenge for 401s and scope-related 403s.
fn www_authenticate(refusal: &Refusal) -> Option<HeaderValue> {
    let text = match refusal.reason {
        Reason::MissingToken | Reason::SessionExpired => r#"Bearer realm="portcullis""#.to_string(),
        r if r.is_token_failure() => format!(
            r#"Bearer realm="portcullis", error="invalid_token", error_description="{}""#,
            quote_safe(&refusal.message)
        ),
        Reason::InsufficientScope => format!(
            r#"Bearer error="insufficient_scope", scope="{}""#,
            quote_safe(&refusal.needed_scopes.join(" "))
        ),
        _ => return None,
    };
    let text = match (&refusal.resource_metadata, refusal.reason.status()) {
        (Some(url), 401) => format!(r#"{text}, resource_metadata="{}""#, quote_safe(url)),
        _ => text,
    };
    HeaderValue::from_str(&text).ok()
}

/// Keeps a value safe inside a quoted-string: no quotes, backslashes or controls.
fn quote_safe(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect()
}

fn plain_page(status: StatusCode, message: &str, request_id: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {canon}</title></head>\
         <body><h1>{code} {canon}</h1><p>{msg}</p><p>Request id: <code>{rid}</code></p></body></html>\n",
        code = status.as_u16(),
        canon = status.canonical_reason().unwrap_or(""),
        msg = html_escape(message),
        rid = html_escape(request_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_spec() {
        let r = Refusal::new(Reason::MissingToken);
        assert_eq!(
            www_authenticate(&r).unwrap(),
            r#"Bearer realm="portcullis""#
        );
        let r = Refusal::with_message(Reason::TokenExpired, "token expired \"at\" 5");
        assert_eq!(
            www_authenticate(&r).unwrap(),
            r#"Bearer realm="portcullis", error="invalid_token", error_description="token expired at 5""#
        );
        let mut r = Refusal::new(Reason::InsufficientScope);
        r.needed_scopes = vec!["orders:write".into()];
        assert_eq!(
            www_authenticate(&r).unwrap(),
            r#"Bearer error="insufficient_scope", scope="orders:write""#
        );
        assert!(www_authenticate(&Refusal::new(Reason::Forbidden)).is_none());
    }

    #[test]
    fn json_body_and_status() {
        let resp = error_response(&Refusal::new(Reason::NoRoute), "rid-1", false);
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn rate_limited_answers_say_when_and_how_much() {
        let mut r = Refusal::new(Reason::RateLimited);
        r.retry_after = Some(2);
        r.rate_limit = Some(Box::new(RateLimitHeaders {
            quota: 20,
            window: 2,
            remaining: 0,
            reset: 3,
        }));
        let resp = error_response(&r, "rid", false);
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[RETRY_AFTER], "2");
        assert_eq!(resp.headers()["ratelimit-policy"], "\"default\";q=20;w=2");
        assert_eq!(resp.headers()["ratelimit"], "\"default\";r=0;t=3");
    }

    #[test]
    fn html_is_escaped() {
        let r = Refusal::with_message(Reason::BadRequest, "<script>");
        assert!(plain_page(StatusCode::BAD_REQUEST, &r.message, "<id>").contains("&lt;script&gt;"));
    }
}
