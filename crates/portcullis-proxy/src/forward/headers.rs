//! Header hygiene for forwarded requests and returned responses: hop-by-hop headers
//! (RFC 9110 §7.6.1), forwarding headers, and identity headers a client may try to
//! spoof (SPEC §3).

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, UPGRADE};
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
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
/// Returns the `Upgrade` value when the message asked for a protocol upgrade, so the
/// caller can re-add it for a WebSocket-style tunnel.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // One look at each name finds the few present (usually none in a request,
    // `Connection` in a response), instead of nine blind removes.
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_hop_by_hop(k))
        .cloned()
        .collect();
    if present.is_empty() {
        return None;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let wants_upgrade = named.contains(&UPGRADE);
    let upgrade = if wants_upgrade {
        headers.get(UPGRADE).cloned()
    } else {
        None
    };
    // A client must not be able to make the proxy drop the headers it sets itself
    // (or that carry identity) by naming them in `Connection`; those are removed
    // and re-set after this anyway, so removing here is harmless and complete.
    for name in named.iter().chain(&present) {
        headers.remove(name);
    }
    upgrade
}

/// The hop-by-hop headers of RFC 9110 §7.6.1 and their common relatives.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// True for identity headers that only the proxy may set (SPEC §3), in any case and
/// with `_` or `-`: `X-Auth-Request-*`, `X-Forwarded-User`, `X-Forwarded-Email`,
/// `X-Forwarded-Groups`, `X-Portcullis-*`, and the configured assertion header.
pub fn is_identity_header(name: &str, assertion_header: &str) -> bool {
    // Compared in place (ASCII case-insensitive, `_` equal to `-`): this runs for
    // every header of every request.
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
        name.len() >= prefix.len() && same(&name[..prefix.len()], prefix)
    }
    let n = name.as_bytes();
    starts(n, b"x-auth-request-")
        || starts(n, b"x-portcullis-")
        || same(n, b"x-forwarded-user")
        || same(n, b"x-forwarded-email")
        || same(n, b"x-forwarded-groups")
        || same(n, assertion_header.as_bytes())
}

/// Removes every spoofable identity header, however spelled and however often repeated.
pub fn strip_identity_headers(headers: &mut HeaderMap, assertion_header: &str) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_identity_header(k.as_str(), assertion_header))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Headers only believed from a trusted proxy (SPEC §2 `trusted_proxies`); from anyone
/// else they are removed before the request goes further.
pub const TRUSTED_ONLY: [HeaderName; 5] = [
    names::X_REQUEST_ID,
    names::TRACEPARENT,
    names::TRACESTATE,
    names::L5D_CLIENT_ID,
    names::X_FORWARDED_CLIENT_CERT,
];

/// Sets `X-Forwarded-For/Proto/Host`. From a trusted peer the existing chain is
/// extended; from anyone else it is replaced, so a client cannot forge its origin.
/// `peer` is the connection's address as text (made once per connection).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    peer_trusted: bool,
    scheme: &str,
    host: Option<HeaderValue>,
) {
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
    if !keep(headers, &names::X_FORWARDED_HOST) {
        headers.remove(names::X_FORWARDED_HOST);
        if let Some(v) = host {
            headers.insert(names::X_FORWARDED_HOST, v);
        }
    }
}

/// The client's address for logs and rate limits: from a trusted peer, the right-most
/// address in `X-Forwarded-For` that is not itself a trusted proxy; else the peer.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, is_trusted: impl Fn(IpAddr) -> bool) -> IpAddr {
    if !is_trusted(peer) {
        return peer;
    }
    let mut addrs: Vec<IpAddr> = Vec::new();
    for v in headers.get_all(names::X_FORWARDED_FOR).iter() {
        let Ok(text) = v.to_str() else { return peer };
        for part in text.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => addrs.push(ip),
                // A garbled chain cannot be trusted past this hop.
                Err(_) => return peer,
            }
        }
    }
    addrs
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip))
        .unwrap_or(peer)
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
    fn identity_headers_in_every_spelling() {
        for n in [
            "X-Auth-Request-User",
            "x_auth_request_email",
            "X-PORTCULLIS-WORKLOAD",
            "x-forwarded_user",
            "X-Forwarded-Groups",
            "x-portcullis-assertion",
            "My-Assertion",
        ] {
            assert!(is_identity_header(n, "my_assertion"), "{n}");
        }
        assert!(!is_identity_header(
            "x-forwarded-for",
            "X-Portcullis-Assertion"
        ));
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
}
