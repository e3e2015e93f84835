//! Cross-site request forgery against the routes a browser session opens.
//!
//! The session cookie is `SameSite=Lax`, so a page on another *site* cannot
//! make a browser send it with a POST or a WebSocket handshake. But every
//! subdomain of a registrable domain is the same site — a compromised
//! `blog.example.com`, a host serving user content — and its pages can. The
//! service behind the proxy sees only identity headers: it cannot tell a form
//! its user submitted from one a sibling's page submitted in their name, nor
//! a WebSocket its own page opened from one another page opened (cross-site
//! WebSocket hijacking). So a request that only the session cookie
//! authenticates, and that can change something — an unsafe method, or a
//! protocol upgrade — must come from a trusted origin: the request's own,
//! `server.public_url`'s, or one on `login.trusted_origins`.
//!
//! The browser says where a request comes from in `Sec-Fetch-Site`,
//! `Origin` and `Referer`, which pages cannot set (only suppress, which
//! makes `Origin` `null`). A request with none of them is not a browser's
//! cross-origin request (a script, a very old browser): it passes, as it
//! would without the proxy.

use crate::authority::JudgedHost;
use http::header::{HeaderMap, ORIGIN};
use portcullis_policy::host_matches;

/// An origin: scheme, lowercase host and port (`None`: the scheme's
/// default). Trust is judged by scheme and host, not by port: cookies are not
/// separated by port (RFC 6265 §8.5), so a page on another port of a trusted
/// host already holds the session cookie, and a front proxy that names the
/// host without its port (nginx `$host`) would otherwise make every page a
/// stranger. Only [`TrustedOrigins::is_same_origin`] compares ports.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    https: bool,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// `scheme://host[:port]`, nothing more (an `Origin` header never has a
    /// path); `None` for anything else, `null` included.
    fn parse(text: &str) -> Option<Origin> {
        let (https, authority) = split_scheme(text)?;
        Self::from_authority(https, authority)
    }

    fn from_authority(https: bool, authority: &str) -> Option<Origin> {
        if authority.is_empty()
            || authority
                .bytes()
                .any(|b| matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\') || b <= b' ')
        {
            return None;
        }
        let (host, port) = match authority.rsplit_once(':') {
            // `[::1]:8443`, `host:8443`; but `[::1]` alone has colons inside.
            Some((host, port)) if !port.contains(']') => {
                if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (host, Some(port.parse::<u16>().ok()?))
            }
            _ => (authority, None),
        };
        let default = if https { 443 } else { 80 };
        Some(Origin {
            https,
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port: port.filter(|p| *p != default),
        })
    }

    /// Whether a page of this origin may act on a host reached by `https`:
    /// an https page may reach its host over http (TLS ended at a front
    /// proxy that is not trusted to say so), an http page never reaches an
    /// https one (a network attacker writes into http pages).
    fn may_reach(&self, https: bool) -> bool {
        self.https || !https
    }
}

/// The origins a session-only request with side effects may come from,
/// besides the request's own.
pub struct TrustedOrigins {
    public: Option<Origin>,
    /// `login.trusted_origins`: (https, host pattern). Their own list, not
    /// `allowed_redirect_hosts`, which is often `*.example.com` — every
    /// sibling, the very pages this guard is about.
    trusted: Vec<(bool, String)>,
}

impl TrustedOrigins {
    /// From `server.public_url`'s scheme and authority and
    /// `login.trusted_origins` (`https://host`, `https://*.suffix`; checked
    /// by `check`, anything else trusts nothing).
    pub fn new(public_https: bool, public_authority: &str, trusted: &[String]) -> Self {
        TrustedOrigins {
            public: Origin::from_authority(public_https, public_authority),
            trusted: trusted
                .iter()
                .filter_map(|origin| split_scheme(origin))
                .map(|(https, host)| (https, host.to_string()))
                .collect(),
        }
    }

    /// Whether `origin` (an `Origin` header's text) is the origin of the
    /// request it came with or `public_url`'s: scheme, host and port all
    /// (same-origin logout, SPEC §4). The request's own is `https` and the
    /// authority it named; an https page counts for a request that reached
    /// the proxy over http (TLS ended in front of it), never the reverse.
    pub fn is_same_origin(&self, origin: &str, https: bool, own: &JudgedHost) -> bool {
        let Some(o) = Origin::parse(origin) else {
            return false;
        };
        let own = own
            .authority
            .as_ref()
            .and_then(|a| a.to_str().ok())
            .and_then(|a| Origin::from_authority(https, a));
        let same_place = |p: &Origin| p.host == o.host && p.port == o.port;
        self.public.as_ref() == Some(&o)
            || own.is_some_and(|own| same_place(&own) && o.may_reach(own.https))
    }

    fn public(&self, o: &Origin) -> bool {
        self.public
            .as_ref()
            .is_some_and(|p| p.host == o.host && o.may_reach(p.https))
    }

    /// Why a request that only the session cookie authenticates must be
    /// refused as a possible forgery; `None` when it may go on. `scheme` and
    /// `host` are the request's as judged; `upgrade`, whether it asks to
    /// switch protocols.
    pub fn forgery(
        &self,
        method: &str,
        upgrade: bool,
        headers: &HeaderMap,
        scheme: &str,
        host: &JudgedHost,
    ) -> Option<&'static str> {
        let safe = matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE");
        // A front proxy may keep `Upgrade` to itself (nginx does not pass it
        // to `auth_request`); a WebSocket handshake's key it passes on.
        let opens_channel = upgrade || headers.contains_key(http::header::SEC_WEBSOCKET_KEY);
        if safe && !opens_channel {
            return None;
        }
        // The browser's own word that the page is this origin, or that no
        // page asked (the user typed it, a bookmark).
        let fetch_site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
        if matches!(fetch_site, Some(b"same-origin" | b"none")) {
            return None;
        }
        let mut origins = headers.get_all(ORIGIN).iter();
        let (origin, more) = (origins.next(), origins.next());
        let origin = match origin {
            Some(origin) => origin.to_str().ok().filter(|_| more.is_none()),
            // Browsers that send no `Origin` with a form (Firefox before 70)
            // still say which page it came from.
            None if headers.contains_key(http::header::REFERER) => referer_origin(headers),
            None => {
                return fetch_site.is_some().then_some(
                    "the browser says the request comes from another page but not which",
                )
            }
        };
        let Some(origin) = origin.and_then(Origin::parse) else {
            return Some("the request's Origin (or Referer) is opaque (null) or not one origin");
        };
        let same = !host.name.is_empty()
            && origin.host == host.name
            && origin.may_reach(scheme == "https");
        let trusted = self
            .trusted
            .iter()
            .any(|(https, pattern)| *https == origin.https && host_matches(pattern, &origin.host));
        (!(same || self.public(&origin) || trusted))
            .then_some("the request comes from a page on another origin")
    }
}

/// `https://rest` or `http://rest`: whether it is https, and the rest.
fn split_scheme(text: &str) -> Option<(bool, &str)> {
    match text.split_once("://")? {
        ("https", rest) => Some((true, rest)),
        ("http", rest) => Some((false, rest)),
        _ => None,
    }
}

/// The origin part (`scheme://authority`) of one `Referer`, if it has one.
fn referer_origin(headers: &HeaderMap) -> Option<&str> {
    let mut referers = headers.get_all(http::header::REFERER).iter();
    let (referer, more) = (referers.next()?, referers.next());
    let text = referer.to_str().ok().filter(|_| more.is_none())?;
    let (scheme, rest) = text.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    text.get(..scheme.len() + 3 + end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn host(authority: &str) -> JudgedHost {
        JudgedHost {
            name: authority.split(':').next().unwrap_or("").to_string(),
            authority: HeaderValue::from_str(authority).ok(),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn trusted() -> TrustedOrigins {
        TrustedOrigins::new(
            true,
            "auth.example.com",
            &["https://*.apps.example.com".to_string()],
        )
    }

    fn judged(method: &str, pairs: &[(&'static str, &'static str)]) -> Option<&'static str> {
        let h = headers(pairs);
        let upgrade = h.contains_key(http::header::UPGRADE);
        trusted().forgery(method, upgrade, &h, "https", &host("app.example.com"))
    }

    #[test]
    fn trusted_origins_pass() {
        for origin in [
            "https://app.example.com",
            "https://APP.example.com:443",
            "https://app.example.com:8443",
            "https://auth.example.com",
            "https://portal.apps.example.com",
        ] {
            let h = HeaderMap::from_iter([(ORIGIN, HeaderValue::from_static(origin))]);
            let verdict = trusted().forgery("POST", false, &h, "https", &host("app.example.com"));
            assert_eq!(verdict, None, "{origin}");
        }
        // The browser's word for it.
        assert_eq!(judged("DELETE", &[("sec-fetch-site", "same-origin")]), None);
        assert_eq!(judged("POST", &[("sec-fetch-site", "none")]), None);
        // Not a browser's cross-origin request.
        assert_eq!(judged("POST", &[]), None);
        // Safe methods are the service's to keep safe; a plain navigation passes.
        assert_eq!(
            judged("GET", &[("origin", "https://evil.example.com")]),
            None
        );
    }

    #[test]
    fn other_origins_are_refused() {
        for origin in [
            "https://evil.example.com",
            "http://app.example.com",
            "http://portal.apps.example.com",
            "https://app.example.com.evil.test",
            "null",
            "https://app.example.com/",
            "https://user@app.example.com",
            "app.example.com",
        ] {
            let h = HeaderMap::from_iter([(ORIGIN, HeaderValue::from_static(origin))]);
            let verdict = trusted().forgery("POST", false, &h, "https", &host("app.example.com"));
            assert!(verdict.is_some(), "{origin}");
        }
        // Two Origin lines are not one origin.
        assert!(judged(
            "POST",
            &[
                ("origin", "https://app.example.com"),
                ("origin", "https://evil.example.com")
            ]
        )
        .is_some());
        // A sibling's page, by the browser's word, without an Origin.
        assert!(judged("PUT", &[("sec-fetch-site", "same-site")]).is_some());
        // Without an Origin, the Referer says where the form was.
        assert!(judged("POST", &[("referer", "https://evil.example.com/x?y")]).is_some());
        assert!(judged("POST", &[("referer", "https://evil.example.com")]).is_some());
        assert_eq!(
            judged("POST", &[("referer", "https://app.example.com/form#top")]),
            None
        );
        assert!(judged("POST", &[("referer", "about:blank")]).is_some());
        // Cross-site WebSocket hijacking: the handshake is a GET.
        assert!(judged(
            "GET",
            &[
                ("upgrade", "websocket"),
                ("origin", "https://evil.example.com")
            ]
        )
        .is_some());
        assert!(judged(
            "GET",
            &[
                ("sec-websocket-key", "a2V5"),
                ("origin", "https://evil.example.com")
            ]
        )
        .is_some());
        assert_eq!(
            judged(
                "GET",
                &[
                    ("upgrade", "websocket"),
                    ("origin", "https://app.example.com")
                ]
            ),
            None
        );
    }

    /// TLS ended at an untrusted front proxy: the request is http, the page https.
    #[test]
    fn an_https_page_may_reach_its_origin_over_plain_http() {
        let h =
            HeaderMap::from_iter([(ORIGIN, HeaderValue::from_static("https://app.example.com"))]);
        assert_eq!(
            trusted().forgery("POST", false, &h, "http", &host("app.example.com")),
            None
        );
        let h =
            HeaderMap::from_iter([(ORIGIN, HeaderValue::from_static("http://app.example.com"))]);
        assert!(trusted()
            .forgery("POST", false, &h, "https", &host("app.example.com"))
            .is_some());
    }

    #[test]
    fn same_origin_logout_compares_scheme_host_and_port() {
        let t = TrustedOrigins::new(false, "127.0.0.1:8080", &[]);
        let nowhere = JudgedHost {
            name: String::new(),
            authority: None,
        };
        let public = |o| t.is_same_origin(o, false, &nowhere);
        assert!(public("http://127.0.0.1:8080"));
        assert!(!public("https://127.0.0.1:8080"));
        assert!(!public("http://127.0.0.1:8081"));
        assert!(!public("http://127.0.0.1"));
        assert!(!public("http://127.0.0.2:8080"));
        assert!(!public("null"));
        let t = TrustedOrigins::new(true, "Auth.example.com:443", &[]);
        assert!(t.is_same_origin("https://auth.example.com", false, &nowhere));
        assert!(!t.is_same_origin("http://auth.example.com", false, &nowhere));
        // The host the form was posted to, besides `public_url`'s.
        let own = |https, authority| (https, host(authority));
        for (origin, (https, to), same) in [
            (
                "https://app.example.com",
                own(true, "app.example.com"),
                true,
            ),
            (
                "https://app.example.com",
                own(true, "App.example.com:443"),
                true,
            ),
            // TLS ended in front of the proxy.
            (
                "https://app.example.com",
                own(false, "app.example.com"),
                true,
            ),
            (
                "https://app.example.com:8443",
                own(false, "app.example.com:8443"),
                true,
            ),
            (
                "http://app.example.com",
                own(true, "app.example.com"),
                false,
            ),
            (
                "https://app.example.com",
                own(true, "app.example.com:8443"),
                false,
            ),
            (
                "https://blog.example.com",
                own(true, "app.example.com"),
                false,
            ),
        ] {
            assert_eq!(
                t.is_same_origin(origin, https, &to),
                same,
                "{origin} to {to:?}"
            );
        }
    }
}
