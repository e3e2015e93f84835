//! The one host a request is judged by (SPEC §5).
//!
//! A request can name its host twice: in the target (the h2 `:authority`, or the
//! authority of an HTTP/1.1 absolute-form target such as `GET http://a/x`) and in
//! `Host`. If routes were chosen by one and the upstream were handed the other, a
//! request judged by a public route could reach a private one behind the same
//! upstream. So the target's authority wins when present (RFC 9112 §3.2.2), a
//! `Host` that names anything else is refused, and the upstream receives exactly
//! the judged authority as `Host` and `X-Forwarded-Host`.

use http::header::{HeaderMap, HeaderValue, HOST};
use http::Uri;

/// The host a request is judged by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgedHost {
    /// Lowercase, without port or trailing dot: what routes match and the audit
    /// line records. Empty when the request named no host (HTTP/1.0).
    pub name: String,
    /// `host[:port]` as the client wrote it (without userinfo): what the upstream
    /// receives as `Host` and `X-Forwarded-Host`.
    pub authority: Option<HeaderValue>,
}

/// Finds the judged host, or says why the request names two (a 400).
pub fn judge_host(uri: &Uri, headers: &HeaderMap) -> Result<JudgedHost, &'static str> {
    let mut host_lines = headers.get_all(HOST).iter();
    let host_value = host_lines.next();
    if host_lines.next().is_some() {
        return Err("more than one Host header");
    }
    let host_header = match host_value {
        Some(v) => Some(v.to_str().map_err(|_| "Host header is not text")?),
        None => None,
    };
    // Userinfo (`user@`) is not part of the host and never goes upstream.
    let target = uri.authority().map(|a| {
        a.as_str()
            .rsplit_once('@')
            .map_or(a.as_str(), |(_, host)| host)
    });
    let written = match (&target, host_header) {
        (Some(target), Some(host)) => {
            if !same_authority(target, host, uri.scheme_str()) {
                return Err("Host header differs from the request target's authority");
            }
            target
        }
        (Some(target), None) => target,
        (None, Some(host)) => host,
        (None, None) => {
            return Ok(JudgedHost {
                name: String::new(),
                authority: None,
            })
        }
    };
    let name = host_name(written)?;
    // The `Host` header itself when that is what was written (a reference
    // count, not a copy: this runs for every request).
    let authority = match host_value {
        Some(v) if target.is_none() => v.clone(),
        _ => HeaderValue::from_str(written).map_err(|_| "invalid Host header")?,
    };
    Ok(JudgedHost {
        name: name.trim_end_matches('.').to_ascii_lowercase(),
        authority: Some(authority),
    })
}

/// The host name of a `Host` value a refused HTTP/1 head carried, for its audit
/// line only: lowercase, without port, or `None` when it is not one.
pub fn name_for_audit(written: &str) -> Option<String> {
    let name = host_name(written).ok()?;
    Some(name.trim_end_matches('.').to_ascii_lowercase())
}

/// The host part of `host[:port]`, or why it is not a host name with an
/// optional numeric port.
fn host_name(written: &str) -> Result<&str, &'static str> {
    let (name, port) = split_port(written);
    if name.is_empty() && !written.is_empty() {
        return Err("Host header has no host name");
    }
    // Only a name and digits: upstreams cut a host at its first `:`, `@`, `?`
    // or `#` (nginx, Go, Python's urlsplit), so `admin.example:abc` or
    // `x@admin.example`, matched as written by no `hosts:` route, would reach
    // the `admin.example` behind a public catch-all. And the host is quoted
    // into `Forwarded`: a `"` could close the quote and append parameters.
    if !is_host_name(name)
        || !port.is_none_or(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("Host header is not a host name with an optional numeric port");
    }
    Ok(name)
}

/// A DNS name (letters, digits, `-`, `_`, `.`), an IPv4 address (the same
/// characters) or a bracketed IPv6 literal; no userinfo, no percent-escapes,
/// no RFC 3986 sub-delimiters (`,`, `;`, `!`, …), which no real host name holds.
fn is_host_name(name: &str) -> bool {
    match name.strip_prefix('[').and_then(|v6| v6.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')),
    }
}

/// `host[:port]` → (`host`, `port`), minding `[v6]:port`.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    // An IPv6 literal keeps its brackets, as `Uri::host` writes it.
    if authority.starts_with('[') {
        return match authority.rfind("]:") {
            Some(end) => (
                authority.get(..=end).unwrap_or(authority),
                authority.get(end + 2..),
            ),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => (host, Some(port)),
        _ => (authority, None),
    }
}

/// Whether two authorities name the same host and port (a missing port is the
/// scheme's default).
fn same_authority(a: &str, b: &str, scheme: Option<&str>) -> bool {
    let default = match scheme {
        Some("https") => "443",
        _ => "80",
    };
    let (ha, pa) = split_port(a);
    let (hb, pb) = split_port(b);
    let canon = |h: &str| h.trim_end_matches('.').to_ascii_lowercase();
    canon(ha) == canon(hb) && pa.unwrap_or(default) == pb.unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(uri: &str, hosts: &[&'static str]) -> Result<(String, Option<String>), &'static str> {
        let uri: Uri = uri.parse().unwrap();
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(HOST, HeaderValue::from_static(v));
        }
        judge_host(&uri, &h).map(|j| {
            let a = j.authority.map(|a| a.to_str().unwrap().to_string());
            (j.name, a)
        })
    }

    #[test]
    fn the_target_authority_wins_and_a_different_host_is_refused() {
        let ok = |n: &str, a: &str| Ok((n.to_string(), Some(a.to_string())));
        assert_eq!(
            judge("/x", &["Api.Example.com:8080"]),
            ok("api.example.com", "Api.Example.com:8080")
        );
        assert_eq!(
            judge("http://public.example/x", &[]),
            ok("public.example", "public.example")
        );
        assert_eq!(
            judge("http://public.example/x", &["PUBLIC.example:80"]),
            ok("public.example", "public.example")
        );
        assert!(judge("http://public.example/x", &["admin.example"]).is_err());
        assert!(judge("http://public.example:8080/x", &["public.example"]).is_err());
        assert!(judge("/x", &["a.example", "b.example"]).is_err());
        assert_eq!(
            judge("http://user@public.example/x", &[]),
            ok("public.example", "public.example")
        );
        assert_eq!(judge("/x", &["[::1]:8080"]), ok("[::1]", "[::1]:8080"));
        assert_eq!(judge("/x", &[]), Ok((String::new(), None)));
        assert!(judge("/x", &[":80"]).is_err());
    }

    /// What an upstream would read as `admin.example` (nginx and Go cut at the
    /// first `:`, URL parsers drop userinfo, query and fragment), and text
    /// that would break out of `Forwarded`'s quoted host.
    #[test]
    fn a_host_that_is_not_a_name_and_a_numeric_port_is_refused() {
        for host in [
            "admin.example:abc",
            "admin.example:+80",
            "admin.example:-1",
            "admin.example:0x50",
            "admin.example:123456",
            "admin.example:80:80",
            "x@admin.example",
            "admin.example?x",
            "admin.example#x",
            "admin.example/x",
            "admin.example,other",
            "admin.example;x",
            "adm%69n.example",
            "x\", for=6.6.6.6;proto=https;host=\"admin.example",
            "[::1]x",
            "[not-v6]",
            "[::1]:abc",
        ] {
            assert!(judge("/x", &[host]).is_err(), "{host} was accepted");
        }
        let uri: Uri = "http://admin.example:abc/x".parse().unwrap();
        assert!(
            judge_host(&uri, &HeaderMap::new()).is_err(),
            "as the target"
        );
        for host in [
            "api.example.com",
            "API.example.com.",
            "svc_internal:8080",
            "10.0.0.1:80",
            "[2001:db8::1]:443",
            "localhost:",
        ] {
            assert!(judge("/x", &[host]).is_ok(), "{host} was refused");
        }
    }
}
