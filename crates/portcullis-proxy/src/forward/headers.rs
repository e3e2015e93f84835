//! Header hygiene for forwarded requests and returned responses: hop-by-hop headers
//! (RFC 9110 §7.6.1), forwarding headers, and the headers a client may use to make
//! the upstream believe something the proxy did not judge (SPEC §3, §5): identity
//! headers, rewrite and method-override headers, and origin headers.
//!
//! Names are compared ASCII-case-insensitively with `_` equal to `-`, because CGI,
//! WSGI, PHP and many frameworks read `X_Original_URL` as `X-Original-URL`.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION,
    SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use std::net::IpAddr;

/// Header names the proxy reads or writes on every request. Lookups by `&str` parse
/// and classify the name each time (a tenth of the plain-proxying profile); these
/// constants are parsed once, at compile time.
pub mod names {
    use http::header::HeaderName;
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
    pub const L5D_CLIENT_ID: HeaderName = HeaderName::from_static("l5d-client-id");
    pub const X_FORWARDED_CLIENT_CERT: HeaderName =
        HeaderName::from_static("x-forwarded-client-cert");
    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    pub const X_AUTH_REQUEST_USER: HeaderName = HeaderName::from_static("x-auth-request-user");
    pub const X_AUTH_REQUEST_EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
    pub const X_AUTH_REQUEST_GROUPS: HeaderName = HeaderName::from_static("x-auth-request-groups");
    pub const X_AUTH_REQUEST_CLIENT_ID: HeaderName =
        HeaderName::from_static("x-auth-request-client-id");
    pub const X_PORTCULLIS_WORKLOAD: HeaderName = HeaderName::from_static("x-portcullis-workload");
    pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
    /// Forward-auth's answer: the `Cookie` the service gets, for the front
    /// proxy to put in place of the client's.
    pub const X_PORTCULLIS_COOKIE: HeaderName = HeaderName::from_static("x-portcullis-cookie");
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
/// Returns the `Upgrade` value when the message asked for a protocol upgrade, so the
/// caller can re-add it for a WebSocket-style tunnel.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // One look at each name finds the few present (usually none in a request,
    // `Connection` in a response), as a bit set: nothing is allocated.
    let mut present: u16 = 0;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name.as_str()) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return None;
    }
    // The names `Connection` lists. The fixed ones (an upstream's `keep-alive`)
    // join the set; only another name is parsed into a `HeaderName`, which
    // allocates (`keep-alive` is not one of http's standard names).
    let mut wants_upgrade = false;
    let mut named_others: Vec<HeaderName> = Vec::new();
    let tokens = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for token in tokens {
        match hop_by_hop_index_any_case(token) {
            Some(i) => {
                wants_upgrade |= HOP_BY_HOP[i] == UPGRADE;
                present |= 1 << i;
            }
            None => named_others.extend(HeaderName::from_bytes(token.as_bytes()).ok()),
        }
    }
    let upgrade = if wants_upgrade {
        headers.get(UPGRADE).cloned()
    } else {
        None
    };
    // A client must not be able to make the proxy drop the headers it sets itself
    // (or that carry identity) by naming them in `Connection`; those are removed
    // and re-set after this anyway, so removing here is harmless and complete.
    for name in &named_others {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    upgrade
}

/// Whether every protocol in an `Upgrade` value is one the route allows
/// (`routes[].upgrades`, compared by name without version, any case). `h2c` never
/// is: inside an h2c tunnel every request would reach the upstream unjudged.
pub fn upgrade_allowed(upgrade: &HeaderValue, allowed: &[String]) -> bool {
    let Ok(text) = upgrade.to_str() else {
        return false;
    };
    let mut any = false;
    for proto in text.split(',') {
        let name = proto.split('/').next().unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        any = true;
        if name.eq_ignore_ascii_case("h2c") || !allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
        {
            return false;
        }
    }
    any
}

/// The hop-by-hop headers of RFC 9110 §7.6.1 and their common relatives, in
/// the order of [`hop_by_hop_index`]. A `static`: a `const` array would be
/// built and dropped at every use.
static HOP_BY_HOP: [HeaderName; 10] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    // Only meaningful with `Upgrade: h2c`, which is never forwarded.
    HeaderName::from_static("http2-settings"),
];

/// The position of a lowercase name in [`HOP_BY_HOP`]: a `match` on the
/// text, which compiles to a switch on its length and one compare, where
/// comparing `HeaderName`s one by one costs ten.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        "http2-settings" => 9,
        _ => return None,
    })
}

/// [`hop_by_hop_index`] for a name in any case, as `Connection` may list it.
fn hop_by_hop_index_any_case(name: &str) -> Option<usize> {
    if let Some(i) = hop_by_hop_index(name) {
        return Some(i);
    }
    // No hop-by-hop name is longer than 19 bytes.
    let mut lower = [0u8; 19];
    let lower = lower.get_mut(..name.len())?;
    lower.copy_from_slice(name.as_bytes());
    lower.make_ascii_lowercase();
    hop_by_hop_index(std::str::from_utf8(lower).ok()?)
}

/// An h2 client may send each cookie as its own `cookie` field (RFC 9113
/// §8.2.3, for compression); HTTP/1.1 allows one `Cookie` line, and a server
/// that reads only the first would lose the session cookie in the second.
/// Joined with `; ` into one, as RFC 9113 asks of an intermediary; the order
/// is kept.
pub fn join_cookies(headers: &mut HeaderMap) {
    if headers
        .get_all(http::header::COOKIE)
        .iter()
        .nth(1)
        .is_none()
    {
        return;
    }
    if let Some(v) = joined_cookie(headers) {
        headers.insert(http::header::COOKIE, v);
    }
}

/// Every `cookie` field as one value, joined with `; ` in order; `None` when
/// there is none.
pub fn joined_cookie(headers: &HeaderMap) -> Option<HeaderValue> {
    let fields = headers.get_all(http::header::COOKIE);
    let mut iter = fields.iter();
    let first = iter.next()?;
    if iter.next().is_none() {
        return Some(first.clone());
    }
    let parts: Vec<&[u8]> = fields.iter().map(HeaderValue::as_bytes).collect();
    // Each part was a valid value, and `; ` is too: this cannot fail.
    HeaderValue::from_bytes(&parts.join(&b"; "[..])).ok()
}

/// Removes from an upstream's answer every `Set-Cookie` that would set one of
/// the proxy's own cookies (`session_name`, the login session cookie, and its
/// sign-in cookies: [`crate::login::cookie::is_ours`]). A service, or a header
/// injected into its answer, could otherwise plant its own session in the
/// browser (a sign-in as someone else), or one with a narrower `Path` that the
/// browser then sends beside the real one. Other cookies pass untouched, in order.
pub fn drop_our_set_cookies(headers: &mut HeaderMap, session_name: &str) {
    use crate::login::cookie::{is_ours, set_cookie_name};
    let ours = |v: &HeaderValue| is_ours(set_cookie_name(v.as_bytes()), session_name);
    if !headers.get_all(SET_COOKIE).iter().any(ours) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter(|v| !ours(v))
        .cloned()
        .collect();
    headers.remove(SET_COOKIE);
    for v in kept {
        headers.append(SET_COOKIE, v);
    }
}

/// True for identity headers that only the proxy may set (SPEC §3), in any case and
/// with `_` or `-`: `X-Auth-Request-*`, `X-Forwarded-User`, `X-Forwarded-Email`,
/// `X-Forwarded-Groups`, `X-Portcullis-*`, the configured assertion header, and
/// other proxies' (see [`X_IDENTITY_PREFIXES`]). Looked up by the first letter:
/// this runs for every header of every request.
pub fn is_identity_header(name: &str, assertion_header: &str) -> bool {
    let n = name.as_bytes();
    let elsewhere = match n.first().map(u8::to_ascii_lowercase) {
        Some(b'x') => {
            X_IDENTITY_PREFIXES.iter().any(|p| starts(n, p.as_bytes()))
                || X_IDENTITY_NAMES.iter().any(|h| same(n, h.as_bytes()))
        }
        Some(b'r') => starts(n, b"remote-"),
        _ => false,
    };
    elsewhere || same(n, assertion_header.as_bytes())
}

/// Who-is-calling headers that only the proxy or another authenticating proxy
/// sets, and that services are commonly configured to trust: the proxy never
/// sets the others' (oauth2-proxy `X-Forwarded-Preferred-Username`, Grafana's
/// auth proxy `X-WEBAUTH-USER`/`-ROLE`/`-GROUPS`, Kubernetes' request-header
/// `X-Remote-User`/`-Group`/`-Extra-*`, Authelia's and Apache's `Remote-User`,
/// `Remote-Groups`, `Remote-Email`, Pomerium, authentik), so one arriving from
/// a client is a claim no one checked. Whole families by prefix: a service that
/// reads the user from one header reads its groups and role from the next.
/// (The cloud edges' own, which a trusted load balancer in front sets, are
/// [`EDGE_IDENTITY_PREFIXES`].)
const X_IDENTITY_PREFIXES: [&str; 7] = [
    "x-auth-request-",
    "x-portcullis-",
    "x-forwarded-preferred-",
    "x-remote-",
    "x-webauth-",
    "x-pomerium-",
    "x-authentik-",
];

const X_IDENTITY_NAMES: [&str; 4] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-access-token",
];

/// Who-is-calling headers of the cloud edges that sit in front of a proxy:
/// Google IAP (`X-Goog-Authenticated-User-*`, `X-Goog-IAP-JWT-Assertion`),
/// AWS ALB (`X-Amzn-Oidc-*`), Azure App Service (`X-MS-Client-Principal*`),
/// Cloudflare Access (`Cf-Access-*`). Their services verify the signed ones:
/// passed on from `trusted_proxies` (the edge itself), removed from anyone
/// else.
const EDGE_IDENTITY_PREFIXES: [&str; 5] = [
    "x-goog-authenticated-",
    "x-goog-iap-",
    "x-amzn-oidc-",
    "x-ms-client-principal",
    "cf-access-",
];

/// Kubernetes impersonation (`Impersonate-User`, `-Group`, `-Uid`,
/// `-Extra-*`): a request to act as someone else, granted on the rights of the
/// credential it comes with. Passed on only beside the caller's own token
/// (`forward_token`); beside the proxy's credential, or the identity headers
/// alone, it would borrow rights that are not the caller's.
fn is_impersonation(name: &[u8]) -> bool {
    starts(name, b"impersonate-")
}

/// `a` and `b` are the same header name: ASCII case-insensitive, `_` equal to `-`.
/// Compared in place: this runs for every header of every request.
fn same(a: &[u8], b: &[u8]) -> bool {
    let canon = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| canon(x) == canon(y))
}

fn starts(name: &[u8], prefix: &[u8]) -> bool {
    name.get(..prefix.len())
        .is_some_and(|head| same(head, prefix))
}

/// Removed from every request, whoever sent it: a method-override upstream
/// (Laravel, Symfony, Express `method-override`, ASP.NET) would otherwise perform
/// a DELETE that the proxy judged as a POST.
const ALWAYS_STRIPPED: [&str; 3] = [
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
];

/// Believed only from a trusted proxy (SPEC §2 `trusted_proxies`, §5); from anyone
/// else removed before the request goes further. The first five of both lists
/// are read by the proxy itself; the rest are rewrite, origin and client-address
/// headers that frameworks believe (Spring's `ForwardedHeaderFilter`, IIS URL
/// Rewrite and ARR, Symfony trusted headers, Rack's `X-Forwarded-Ssl`, the
/// client-address lookups of Express and Django middleware), which would let a
/// client pick the path, host, scheme, method or address the upstream sees.
/// Split by the first letter: every header of every request is looked up.
const TRUSTED_ONLY_X: [&str; 22] = [
    "x-request-id",
    "x-forwarded-client-cert",
    "x-original-url",
    "x-rewrite-url",
    "x-envoy-original-path",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-original-method",
    "x-forwarded-method",
    "x-original-host",
    "x-host",
    "x-forwarded-server",
    "x-forwarded-port",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-forwarded",
    "x-real-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-original-forwarded-for",
];

/// [`TRUSTED_ONLY_X`]'s fellows that do not begin with `x`.
const TRUSTED_ONLY_OTHER: [&str; 9] = [
    "traceparent",
    "tracestate",
    "l5d-client-id",
    "forwarded",
    "front-end-https",
    "forwarded-for",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
];

/// Headers the proxy sets itself; a `_` spelling from anyone is removed, since an
/// upstream that folds `_` into `-` would see two values and may pick the forged one.
const SET_BY_PROXY: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// Whether a request header may pass on, given who sent it (SPEC §3, §5).
pub fn is_spoofable(name: &HeaderName, peer_trusted: bool, assertion_header: &str) -> bool {
    let n = name.as_str().as_bytes();
    if is_identity_header(name.as_str(), assertion_header) {
        return true;
    }
    let x = n.first().is_some_and(|b| b.eq_ignore_ascii_case(&b'x'));
    if x && ALWAYS_STRIPPED.iter().any(|s| same(n, s.as_bytes())) {
        return true;
    }
    // A `_` spelling is never the one the proxy reads or sets, so it is only ever
    // a way to smuggle a second value past it.
    let underscored = n.contains(&b'_');
    let trusted_only: &[&str] = if x {
        &TRUSTED_ONLY_X
    } else {
        &TRUSTED_ONLY_OTHER
    };
    let edge = || {
        EDGE_IDENTITY_PREFIXES
            .iter()
            .any(|p| starts(n, p.as_bytes()))
    };
    ((!peer_trusted || underscored)
        && (trusted_only.iter().any(|s| same(n, s.as_bytes())) || edge()))
        || (underscored && x && SET_BY_PROXY.iter().any(|s| same(n, s.as_bytes())))
}

/// The names of the headers in `headers` that a client may not set (see
/// [`is_spoofable`]), each once, however spelled and however often repeated:
/// what a front end must remove before the request reaches the service (the
/// proxy removes them, ext_authz sends them as `headers_to_remove`).
///
/// `forwards_token`: the caller's own token goes on to the service, so a
/// Kubernetes impersonation request beside it is the caller's to make.
pub fn spoofable_present(
    headers: &HeaderMap,
    peer_trusted: bool,
    assertion_header: &str,
    forwards_token: bool,
) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|k| {
            is_spoofable(k, peer_trusted, assertion_header)
                || (!forwards_token && is_impersonation(k.as_str().as_bytes()))
        })
        .cloned()
        .collect()
}

/// Sets `Host`, `X-Forwarded-For/Proto/Host` and `Forwarded`. From a trusted peer
/// the existing chains are extended; from anyone else they are replaced, so a client
/// cannot forge its origin. `Host` and `X-Forwarded-Host` are always exactly the
/// host that was judged (SPEC §5). `peer` is the connection's address as text
/// (made once per connection).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    peer_trusted: bool,
    scheme: &str,
    host: Option<HeaderValue>,
) {
    set_forwarded_element(headers, peer, peer_trusted, scheme, host.as_ref());
    match &host {
        Some(h) => {
            headers.insert(http::header::HOST, h.clone());
        }
        None => {
            headers.remove(http::header::HOST);
        }
    }
    let xff = names::X_FORWARDED_FOR;
    let chain = if peer_trusted {
        let prior: Vec<&str> = headers
            .get_all(&xff)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if prior.is_empty() {
            None
        } else {
            let peer = peer.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{}, {peer}", prior.join(", "))).ok()
        }
    } else {
        None
    };
    headers.insert(xff, chain.unwrap_or_else(|| peer.clone()));
    let keep = |headers: &HeaderMap, name: &HeaderName| peer_trusted && headers.contains_key(name);
    if !keep(headers, &names::X_FORWARDED_PROTO) {
        headers.insert(
            names::X_FORWARDED_PROTO,
            HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }),
        );
    }
    headers.remove(names::X_FORWARDED_HOST);
    if let Some(v) = host {
        headers.insert(names::X_FORWARDED_HOST, v);
    }
}

/// RFC 7239 `Forwarded`, from the proxy's own view: `for`, `proto` and `host` as
/// it judged them, appended to a trusted peer's chain, replacing anyone else's
/// (which the core's [`spoofable_present`] list has the front end remove).
fn set_forwarded_element(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    peer_trusted: bool,
    scheme: &str,
    host: Option<&HeaderValue>,
) {
    let peer = peer.to_str().unwrap_or_default();
    let host = host.and_then(|h| h.to_str().ok());
    // Pushed piece by piece, not format!ted: this runs on every forwarded request
    // and the formatting machinery cost more than the rest of the function.
    let mut element = String::with_capacity(32 + peer.len() + host.map_or(0, str::len));
    element.push_str("for=");
    if peer.contains(':') {
        // An IPv6 node is bracketed and quoted (RFC 7239 §6).
        element.push_str("\"[");
        element.push_str(peer);
        element.push_str("]\"");
    } else {
        element.push_str(peer);
    }
    element.push_str(";proto=");
    element.push_str(scheme);
    if let Some(host) = host {
        // A quoted-string: a host with a port has a `:`, which a token may not.
        element.push_str(";host=\"");
        element.push_str(host);
        element.push('"');
    }
    let prior: Vec<&str> = if peer_trusted {
        headers
            .get_all(names::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    } else {
        Vec::new()
    };
    let value = if prior.is_empty() {
        element
    } else {
        format!("{}, {element}", prior.join(", "))
    };
    match HeaderValue::from_str(&value) {
        Ok(v) => {
            headers.insert(names::FORWARDED, v);
        }
        Err(_) => {
            headers.remove(names::FORWARDED);
        }
    }
}

/// The client's address for logs and rate limits: from a trusted peer, the
/// `X-Forwarded-For` chain (every line, in order) is walked from the right past
/// trusted proxies; the first address that is not one is the client. The walk
/// stops at the first entry that is not an address: what lies left of it was
/// written by someone no trusted hop vouches for, so the last address the walk
/// did reach (at worst the peer itself) is the client. A garbage entry can
/// therefore never hide the client behind the proxy's own address.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, is_trusted: impl Fn(IpAddr) -> bool) -> IpAddr {
    if !is_trusted(peer) {
        return peer;
    }
    let lines: Vec<&HeaderValue> = headers.get_all(names::X_FORWARDED_FOR).iter().collect();
    let mut client = peer;
    for line in lines.iter().rev() {
        let Ok(text) = line.to_str() else {
            return client;
        };
        for part in text.rsplit(',') {
            let Some(ip) = parse_forwarded_address(part) else {
                return client;
            };
            client = ip;
            if !is_trusted(ip) {
                return ip;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, optionally `[v6]`, `v4:port` or
/// `[v6]:port` as some proxies write them.
fn parse_forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|sa| sa.ip())
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret, upgrade"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let up = strip_hop_by_hop(&mut h);
        assert_eq!(up.unwrap(), "websocket");
        assert!(h.get("x-secret").is_none() && h.get("te").is_none() && h.get("upgrade").is_none());
        assert!(h.get("x-kept").is_some());
    }

    #[test]
    fn connection_names_match_in_any_case() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("Keep-Alive , UPGRADE,X-Custom"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        assert_eq!(strip_hop_by_hop(&mut h).unwrap(), "websocket");
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
        // Without `upgrade` in `Connection`, an `Upgrade` header is dropped, not kept.
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(strip_hop_by_hop(&mut h).is_none());
        assert!(h.is_empty());
    }

    #[test]
    fn the_index_table_matches_the_names() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(i));
            let upper = name.as_str().to_ascii_uppercase();
            assert_eq!(hop_by_hop_index_any_case(&upper), Some(i));
        }
        assert_eq!(hop_by_hop_index_any_case("proxy-authorization-x"), None);
        assert_eq!(hop_by_hop_index_any_case(""), None);
    }

    #[test]
    fn only_allowed_upgrades_and_never_h2c() {
        let ws = vec!["websocket".to_string()];
        let ok = |v: &'static str, allowed: &[String]| {
            upgrade_allowed(&HeaderValue::from_static(v), allowed)
        };
        assert!(ok("websocket", &ws));
        assert!(ok("WebSocket", &ws));
        assert!(!ok("h2c", &ws));
        assert!(!ok("h2c", &["h2c".to_string()]));
        assert!(!ok("websocket, h2c", &ws));
        assert!(!ok("TLS/1.2", &ws));
        assert!(!ok("", &ws));
        assert!(!ok("websocket", &[]));
    }

    #[test]
    fn http2_settings_is_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            "http2-settings",
            HeaderValue::from_static("AAMAAABkAARAAAAAAAIAAAAA"),
        );
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn cookie_fields_are_joined_in_order() {
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.append("cookie", HeaderValue::from_static("session=s3cr3t"));
        h.append("cookie", HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(all, ["a=1; session=s3cr3t; b=2"]);
        let mut one = HeaderMap::new();
        one.append("cookie", HeaderValue::from_static("a=1"));
        join_cookies(&mut one);
        assert_eq!(one["cookie"], "a=1");
        let mut none = HeaderMap::new();
        join_cookies(&mut none);
        assert!(none.is_empty());
    }

    /// An upstream must not set the proxy's own login cookies (a planted
    /// session signs the browser in as someone else): however the name is
    /// spaced, whatever attributes follow. Names are case-sensitive, so another
    /// spelling is another cookie, and stays, as do all other cookies, in order.
    #[test]
    fn an_upstream_cannot_set_our_cookies() {
        let mut h = HeaderMap::new();
        for v in [
            "a=1; Path=/",
            "_portcullis=attackers-session.mac; Path=/; HttpOnly",
            " \t_portcullis =x; Path=/app",
            "_portcullis",
            "_portcullis=; Max-Age=0",
            "_portcullis_s0a0b0c0d=forged; Path=/.portcullis/callback",
            "_portcullis_sm0a0b0c0d=1",
            // Nameless cookies, sent back as `_portcullis=planted`.
            "=_portcullis=planted; Path=/",
            "= _portcullis_s1=planted",
            "=kept-nameless",
            "_Portcullis=other-case",
            "_portcullisX=longer-name",
            "b=2",
        ] {
            h.append(SET_COOKIE, HeaderValue::from_str(v).unwrap());
        }
        h.append("x-other", HeaderValue::from_static("_portcullis=kept"));
        drop_our_set_cookies(&mut h, "_portcullis");
        let left: Vec<_> = h.get_all(SET_COOKIE).iter().collect();
        assert_eq!(
            left,
            [
                "a=1; Path=/",
                "=kept-nameless",
                "_Portcullis=other-case",
                "_portcullisX=longer-name",
                "b=2"
            ]
        );
        assert_eq!(h["x-other"], "_portcullis=kept");
        // Nothing of ours: nothing moves.
        let mut none = HeaderMap::new();
        none.append(SET_COOKIE, HeaderValue::from_static("a=1"));
        drop_our_set_cookies(&mut none, "_portcullis");
        assert_eq!(none[SET_COOKIE], "a=1");
    }

    #[test]
    fn identity_headers_in_every_spelling() {
        for n in [
            "X-Auth-Request-User",
            "x_auth_request_email",
            "X-PORTCULLIS-WORKLOAD",
            "x-forwarded_user",
            "X-Forwarded-Groups",
            "x-portcullis-assertion",
            "My-Assertion",
            // Other proxies' identity headers, which services are set to trust.
            "Remote-User",
            "remote_user",
            "X-Remote-User",
            "X-WEBAUTH-USER",
            "X-Forwarded-Preferred-Username",
            "x-forwarded-access-token",
            "X-Remote-Group",
            // ... and the rest of each family: groups, roles, emails.
            "Remote-Groups",
            "Remote-Email",
            "remote_name",
            "X-WEBAUTH-ROLE",
            "X-WEBAUTH-GROUPS",
            "X-Remote-Extra-Scopes",
            "X-Forwarded-Preferred-Email",
            "X-Pomerium-Claim-Groups",
            "X-Authentik-Groups",
        ] {
            assert!(is_identity_header(n, "my_assertion"), "{n}");
        }
        for n in [
            "x-forwarded-for",
            "remote",
            "x-remote",
            "content-type",
            "cf-ray",
            "x-goog-api-key",
        ] {
            assert!(!is_identity_header(n, "X-Portcullis-Assertion"), "{n}");
        }
    }

    #[test]
    fn forwarded_chain_only_from_trusted_peers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
        let peer = HeaderValue::from_static("10.0.0.1");
        set_forwarded(
            &mut h,
            &peer,
            false,
            "http",
            Some(HeaderValue::from_static("api.example.com")),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-host"], "api.example.com");

        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        set_forwarded(&mut h, &peer, true, "https", None);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn client_ip_walks_the_trusted_chain() {
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 5.5.5.5, 10.0.0.2"),
        );
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(client_ip(&h, peer, trusted).to_string(), "5.5.5.5");
        let outsider: IpAddr = "7.7.7.7".parse().unwrap();
        assert_eq!(client_ip(&h, outsider, trusted), outsider);
    }

    #[test]
    fn garbage_in_the_chain_cannot_hide_the_client() {
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let ip = |chain: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", HeaderValue::from_static(chain));
            client_ip(&h, peer, trusted).to_string()
        };
        assert_eq!(ip("not-an-ip, 203.0.113.7"), "203.0.113.7");
        assert_eq!(ip("6.6.6.6, not-an-ip, 10.0.0.9"), "10.0.0.9");
        assert_eq!(ip("203.0.113.7, garbage"), "10.0.0.1");
        assert_eq!(ip("203.0.113.7:4711"), "203.0.113.7");
        assert_eq!(ip("[2001:db8::1]:80"), "2001:db8::1");
        // Several lines read as one list.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("5.5.5.5, 10.0.0.3"),
        );
        assert_eq!(client_ip(&h, peer, trusted).to_string(), "5.5.5.5");
    }

    #[test]
    fn rewrite_override_and_origin_headers() {
        let spoof = |n: &'static str, trusted: bool| {
            is_spoofable(
                &HeaderName::from_static(n),
                trusted,
                "x-portcullis-assertion",
            )
        };
        for n in [
            "x-http-method-override",
            "x-method-override",
            "x-http-method",
            "x_http_method_override",
        ] {
            assert!(spoof(n, false) && spoof(n, true), "{n}");
        }
        for n in [
            "x-original-url",
            "x_original_url",
            "x-rewrite-url",
            "x-envoy-original-path",
            "forwarded",
            "x-real-ip",
            "x-client-ip",
            "true-client-ip",
            "x-forwarded-prefix",
            "x-forwarded-port",
            "x-forwarded-scheme",
            "x-forwarded-server",
            "l5d-client-id",
            "x-forwarded-client-cert",
            "x-original-uri",
            "x-forwarded-uri",
            "x-forwarded-path",
            "x-original-method",
            "x-forwarded-method",
            "x-original-host",
            "x-host",
            "x-forwarded-ssl",
            "front-end-https",
            "cf-connecting-ip",
            "x-cluster-client-ip",
            // The cloud edges' identity headers.
            "cf-access-authenticated-user-email",
            "cf-access-jwt-assertion",
            "x-goog-authenticated-user-email",
            "x-goog-iap-jwt-assertion",
            "x-amzn-oidc-data",
            "x-ms-client-principal-name",
        ] {
            assert!(spoof(n, false), "{n} from an untrusted peer");
        }
        // The edge in front of the proxy sets its own; its services verify them.
        assert!(!spoof("x-goog-iap-jwt-assertion", true));
        assert!(!spoof("cf-access-jwt-assertion", true));
        assert!(spoof("cf_access_jwt_assertion", true));
        assert!(!spoof("x-original-url", true));
        assert!(!spoof("forwarded", true));
        // A `_` spelling is no spelling the proxy reads, from anyone.
        assert!(spoof("x_forwarded_client_cert", true));
        assert!(spoof("x_forwarded_for", true));
        assert!(!spoof("x-forwarded-for", false));
        assert!(!spoof("accept", false));
    }

    #[test]
    fn impersonation_only_beside_the_callers_own_token() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("impersonate-user", "system:admin"),
            ("Impersonate-Group", "system:masters"),
            ("impersonate-extra-scopes", "x"),
            ("accept", "*/*"),
        ] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        let removed = |forwards_token| {
            spoofable_present(&h, true, "x-portcullis-assertion", forwards_token)
                .iter()
                .map(|n| n.as_str().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            removed(false),
            [
                "impersonate-user",
                "impersonate-group",
                "impersonate-extra-scopes"
            ]
        );
        assert!(removed(true).is_empty());
    }

    #[test]
    fn forwarded_is_the_proxys_own_view() {
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            HeaderValue::from_static("for=1.2.3.4;host=evil"),
        );
        let host = Some(HeaderValue::from_static("api.example.com:8443"));
        set_forwarded(
            &mut h,
            &HeaderValue::from_static("::1"),
            true,
            "https",
            host.clone(),
        );
        assert_eq!(
            h["forwarded"],
            "for=1.2.3.4;host=evil, for=\"[::1]\";proto=https;host=\"api.example.com:8443\""
        );
        assert_eq!(h["host"], "api.example.com:8443");
        assert_eq!(h["x-forwarded-host"], "api.example.com:8443");
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("admin.example"),
        );
        set_forwarded(
            &mut h,
            &HeaderValue::from_static("10.0.0.1"),
            true,
            "http",
            host,
        );
        // Even a trusted peer's X-Forwarded-Host gives way to the judged host.
        assert_eq!(h["x-forwarded-host"], "api.example.com:8443");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.1;proto=http;host=\"api.example.com:8443\""
        );
    }
}
