//! Where a browser may be sent after signing in or out (`rd`). An open
//! redirect on a sign-in page is a phishing kit, so a target is either a path
//! on this site or an http(s) URL on `login.allowed_redirect_hosts` (or the
//! proxy's own `public_url` host). Everything a browser could read as another
//! host is refused: `//evil`, `/\evil`, `https:evil`, `https://ok@evil`,
//! control characters and whitespace (which browsers strip), and each of
//! those percent-encoded.

use portcullis_policy::host_matches;

/// `rd`, when it is a safe target; `None` when it must be refused.
pub fn safe_target(rd: &str, allowed_hosts: &[String], own_host: &str) -> Option<String> {
    if rd.is_empty() || rd.len() > 4096 {
        return None;
    }
    // Browsers drop tabs and newlines inside URLs and turn `\` into `/`, and
    // some decode before they look: judge every variant at once by refusing
    // the characters outright, in the raw text and once decoded.
    let decoded = super::flow::percent_decode(rd)?;
    if rd
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        || decoded.chars().any(|c| c.is_control() || c == '\\')
    {
        return None;
    }
    if rd.starts_with('/') {
        // A path: but `//host` and `/%2Fhost` are another host.
        let second = decoded.as_bytes().get(1).copied();
        if matches!(second, Some(b'/')) || rd.as_bytes().get(1) == Some(&b'/') {
            return None;
        }
        return Some(rd.to_string());
    }
    let rest = rd
        .strip_prefix("https://")
        .or_else(|| rd.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty()
        || authority.contains('@')
        || decoded
            .split(['/', '?', '#'])
            .nth(2)
            .is_some_and(|a| a.contains('@'))
    {
        return None;
    }
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !h.contains(']') || h.ends_with(']') => {
            if !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            h
        }
        _ => authority,
    };
    let host = host.to_ascii_lowercase();
    let ok = host == own_host.to_ascii_lowercase()
        || allowed_hosts
            .iter()
            .any(|pattern| host_matches(pattern, &host));
    ok.then(|| rd.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rd: &str) -> Option<String> {
        safe_target(
            rd,
            &["app.example.com".to_string(), "*.corp.example".to_string()],
            "auth.example.com",
        )
    }

    #[test]
    fn paths_and_allowed_hosts_pass() {
        for ok in [
            "/",
            "/app/page?x=1#top",
            "/a%20b",
            "https://app.example.com/x",
            "http://APP.example.com:8443/x?y",
            "https://wiki.corp.example/",
            "https://auth.example.com/done",
        ] {
            assert_eq!(check(ok).as_deref(), Some(ok), "{ok}");
        }
    }

    #[test]
    fn every_way_to_another_host_is_refused() {
        for bad in [
            "",
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/%2Fevil.example",
            "/%2fevil.example",
            "/%5Cevil.example",
            "%2F%2Fevil.example",
            "https:evil.example",
            "https:/evil.example",
            "https://evil.example/",
            "https://app.example.com@evil.example/",
            "https://app.example.com%40evil.example/",
            "https://evil.example\\@app.example.com/",
            "https://evil.example#@app.example.com",
            "https://app.example.com.evil.example/",
            "https://corp.example/",
            "javascript:alert(1)",
            "data:text/html,x",
            "/\tevil",
            "/%09/evil.example",
            "/\n/evil.example",
            " /x",
            "https://app.example.com:x@evil/",
            "ftp://app.example.com/",
            "/%zz",
            "/%C0%AF",
        ] {
            assert_eq!(check(bad), None, "{bad:?}");
        }
    }
}
