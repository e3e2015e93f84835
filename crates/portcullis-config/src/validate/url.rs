//! Just enough URL parsing to check the shape of configured URLs without a URL
//! crate: `scheme://[userinfo@]host[:port][/path][?query][#fragment]`.

use super::checks::is_hostname;
use crate::model::redact_url_password;
use std::net::Ipv6Addr;

/// The parts of an absolute URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlShape<'a> {
    /// Lowercased.
    pub(crate) scheme: String,
    pub(crate) has_userinfo: bool,
    /// Without brackets for IPv6.
    pub(crate) host: &'a str,
    pub(crate) port: Option<u16>,
    /// Empty or starting with `/`.
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) fragment: Option<&'a str>,
}

impl UrlShape<'_> {
    /// True for `localhost` and loopback IP literals.
    pub(crate) fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Parses `text` as an absolute URL with a host. The error says what is
/// malformed, never showing a secret: the URL is shown with its userinfo and
/// query hidden ([`redact_url_password`]), and a part of it (host, port,
/// scheme) only when the URL has no `@`, since a secret with `/` in it makes
/// its tail read as the host and port.
pub(crate) fn parse_url(text: &str) -> Result<UrlShape<'_>, String> {
    if text.is_empty() {
        return Err("empty URL".to_string());
    }
    // Only an error shows the URL: redacted then, not on every parse.
    let shown = || redact_url_password(text);
    let secretive = text.contains('@');
    let part = |p: &str| {
        if secretive {
            String::new()
        } else {
            format!(" `{p}`")
        }
    };
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{}` contains whitespace: that is not a URL",
            shown()
        ));
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!(
            "`{}` is not an absolute URL: write it with a scheme, like https://host/path",
            shown()
        ));
    };
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(format!(
            "`{}` has an invalid scheme{}",
            shown(),
            part(scheme)
        ));
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (has_userinfo, host_port) = match authority.rsplit_once('@') {
        Some((_, hp)) => (true, hp),
        None => (false, authority),
    };
    let (host, port_text) = if let Some(after) = host_port.strip_prefix('[') {
        let Some((v6, tail)) = after.split_once(']') else {
            return Err(format!("`{}` has an unclosed `[` in its host", shown()));
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "`{}` has an invalid IPv6 address{}",
                shown(),
                part(v6)
            ));
        }
        match tail {
            "" => (v6, None),
            t => match t.strip_prefix(':') {
                Some(p) => (v6, Some(p)),
                None => return Err(format!("`{}` has junk after its IPv6 host", shown())),
            },
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{}` has no host", shown()));
    }
    if !host_port.starts_with('[') && !is_hostname(host) {
        return Err(format!("`{}` has an invalid host{}", shown(), part(host)));
    }
    let port = match port_text {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.chars().all(|c| c.is_ascii_digit()) => Some(n),
            _ => return Err(format!("`{}` has an invalid port{}", shown(), part(p))),
        },
    };
    Ok(UrlShape {
        scheme: scheme.to_ascii_lowercase(),
        has_userinfo,
        host,
        port,
        path,
        query,
        fragment,
    })
}

/// An `http://` or `https://` URL with a host and no credentials or fragment.
/// `allow_query` is false where a query would be ambiguous (issuers, upstreams).
pub(crate) fn http_url(text: &str, allow_query: bool) -> Result<UrlShape<'_>, String> {
    let url = parse_url(text)?;
    let shown = || redact_url_password(text);
    if url.scheme != "http" && url.scheme != "https" {
        return Err(format!(
            "`{}` must be an http:// or https:// URL, not {}://",
            shown(),
            url.scheme
        ));
    }
    if url.has_userinfo {
        return Err(format!(
            "`{}` contains credentials (user@): they would end up in logs; \
             configure them as secrets instead",
            shown()
        ));
    }
    if url.fragment.is_some() {
        return Err(format!("`{}` must not have a #fragment", shown()));
    }
    if !allow_query && url.query.is_some() {
        return Err(format!("`{}` must not have a ?query", shown()));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_shapes() {
        let u = parse_url("https://idp.example.com:8443/realms/x?a=b#f").unwrap();
        assert_eq!(u.scheme, "https");
        assert_eq!(u.host, "idp.example.com");
        assert_eq!(u.port, Some(8443));
        assert_eq!(u.path, "/realms/x");
        assert_eq!(u.query, Some("a=b"));
        assert_eq!(u.fragment, Some("f"));
        let v6 = parse_url("http://[::1]:8000").unwrap();
        assert_eq!((v6.host, v6.port, v6.path), ("::1", Some(8000), ""));
        assert!(v6.is_loopback());
        assert!(
            parse_url("redis://user:pw@cache:6379/0")
                .unwrap()
                .has_userinfo
        );
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "",
            "127.0.0.1:8000",
            "http:/x",
            "http://",
            "http://:80",
            "http://host:99999",
            "http://host:",
            "http://ho st",
            "http://[::1",
            "http://exa_mple..com",
            "1http://x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert!(http_url("ftp://x", true).is_err());
        assert!(http_url("http://u:p@x", true).is_err());
        assert!(http_url("http://x/?q", false).is_err());
        assert!(http_url("http://x/#f", true).is_err());
    }
}
