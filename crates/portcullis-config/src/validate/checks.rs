//! Small checks on single values: addresses, names, tokens, files.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// A listen address: `IP:PORT`.
pub(crate) fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>().map_err(|_| {
        let hint = if text.starts_with("localhost:") {
            " (use 127.0.0.1 instead of localhost)"
        } else if text.parse::<u16>().is_ok() || text.starts_with(':') {
            " (include the IP, like 0.0.0.0:8080)"
        } else {
            ""
        };
        format!("invalid address `{text}`: write IP:PORT, like 127.0.0.1:8080 or [::]:8443{hint}")
    })
}

/// A CIDR (`10.0.0.0/8`) or a bare IP (meaning /32 or /128): the one parser of
/// `trusted_proxies`, used by validation and by the runtime that trusts them.
pub fn cidr(text: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        return Ok(net);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    Err(format!(
        "invalid CIDR `{text}`: write an IP or a network, like 10.0.0.0/8 or 192.0.2.7"
    ))
}

/// `match.path_regex` compiled exactly as the route table matches it: anchored to
/// the whole normalized path (`^(?:RE)$`), letters matching either case unless
/// `case_sensitive` (request paths are then compared in one case), and bounded in
/// length and compiled size. Validation, `check` and the route table all compile
/// with this, so they cannot disagree about a regex.
pub fn path_regex(re: &str, case_sensitive: bool) -> Result<regex::Regex, String> {
    if re.len() > crate::limits::MAX_REGEX_LEN {
        return Err(format!(
            "is {} bytes; at most {} are allowed",
            re.len(),
            crate::limits::MAX_REGEX_LEN
        ));
    }
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(crate::limits::MAX_REGEX_SIZE)
        .dfa_size_limit(crate::limits::MAX_REGEX_SIZE)
        .case_insensitive(!case_sensitive)
        .build()
        .map_err(|e| format!("invalid regex: {}", regex_error(&e)))
}

/// The useful part of a regex error: the syntax error's `error:` line, or the whole
/// message for size-limit errors.
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(|| text.trim().to_string(), str::to_string)
}

/// A DNS name (letters, digits, `-`, `_` in dot-separated labels) or an IPv4 literal.
pub(crate) fn is_hostname(text: &str) -> bool {
    let name = text.strip_suffix('.').unwrap_or(text);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// A host to match requests on: a name, `*.suffix`, or an IP literal. With
/// `allow_port`, also `host:port` (redirect targets carry ports; route matching
/// ignores the request's port, so a route host must not have one).
pub(crate) fn host_pattern(text: &str, allow_port: bool) -> Result<(), String> {
    let bad = || {
        format!(
            "invalid host `{text}`: write a name like api.example.com or a wildcard like \
             *.example.com"
        )
    };
    let without_port = match text.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && p.chars().all(|c| c.is_ascii_digit()) => {
            if !allow_port {
                return Err(format!(
                    "host `{text}`: leave out the port (the request's port is ignored)"
                ));
            }
            if p.parse::<u16>().is_err() {
                return Err(bad());
            }
            h
        }
        _ => text,
    };
    if let Some(v6) = without_port
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
    {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| bad());
    }
    let name = without_port.strip_prefix("*.").unwrap_or(without_port);
    if is_hostname(name) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A path as routes and rules compare it: the same refusals as request-path
/// normalization (so a configured path can never be one no request could have).
/// `allow_encoded_slashes` mirrors `server.allow_encoded_slashes`.
pub(crate) fn config_path(text: &str, allow_encoded_slashes: bool) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!("`{text}` must start with `/`"));
    }
    if text.contains(['?', '#']) {
        return Err(format!(
            "`{text}` contains `?` or `#`: paths are matched without the query"
        ));
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let (byte, escaped) = if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => {
                    i += 3;
                    (b, true)
                }
                None => {
                    return Err(format!(
                        "`{text}`: `%` must be followed by two hex digits (write %25 for `%`)"
                    ))
                }
            }
        } else {
            i += 1;
            (bytes[i - 1], false)
        };
        if byte.is_ascii_control() {
            return Err(format!("`{text}` contains a control character"));
        }
        if !allow_encoded_slashes && escaped && byte == b'/' {
            return Err(format!(
                "`{text}` contains %2F, which requests may not (unless \
                 server.allow_encoded_slashes is true)"
            ));
        }
        if !allow_encoded_slashes && byte == b'\\' {
            return Err(format!(
                "`{text}` contains a backslash, which requests may not"
            ));
        }
    }
    if text
        .split('/')
        .any(|seg| seg.starts_with(".;") || seg.starts_with("..;"))
    {
        return Err(format!("`{text}` has a dot segment with a `;` parameter"));
    }
    Ok(())
}

/// A glob over `/`-separated segments: `**` must be a whole segment.
pub(crate) fn glob(text: &str) -> Result<(), String> {
    if text.split('/').any(|seg| seg != "**" && seg.contains("**")) {
        return Err(format!(
            "`{text}`: `**` must be a whole segment (write `/**/` or `*`)"
        ));
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// An HTTP token (header or cookie name).
pub(crate) fn is_token(text: &str) -> bool {
    !text.is_empty() && text.chars().all(is_tchar)
}

/// An HTTP method: uppercase letters and `-` (methods are case-sensitive; `get`
/// is not `GET`).
pub(crate) fn method(text: &str) -> Result<(), String> {
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
        return Err(format!("invalid HTTP method `{text}`"));
    }
    if text.chars().any(|c| c.is_ascii_lowercase()) {
        return Err(format!(
            "HTTP methods are case-sensitive: write `{}`, not `{text}`",
            text.to_ascii_uppercase()
        ));
    }
    Ok(())
}

/// A file that exists and can be opened for reading.
pub(crate) fn readable_file(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty file path".to_string());
    }
    match std::fs::metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Err(format!("file `{path}` does not exist")),
        Err(e) => Err(format!("cannot access `{path}`: {e}")),
        Ok(m) if m.is_dir() => Err(format!("`{path}` is a directory, not a file")),
        Ok(_) => std::fs::File::open(path)
            .map(|_| ())
            .map_err(|e| format!("cannot read `{path}`: {e}")),
    }
}

/// A directory that may not exist yet (it will be created) but, if it does, is one.
pub(crate) fn dir_if_exists(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty directory path".to_string());
    }
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => Err(format!("`{path}` exists and is not a directory")),
        _ => Ok(()),
    }
}

/// A file that will be written (appended): its directory must exist.
pub(crate) fn writable_file_location(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if std::fs::metadata(p).is_ok_and(|m| m.is_dir()) {
        return Err(format!("`{path}` is a directory, not a file"));
    }
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => return Ok(()),
    };
    if std::fs::metadata(parent).is_ok_and(|m| m.is_dir()) {
        Ok(())
    } else {
        Err(format!(
            "directory `{}` of `{path}` does not exist",
            parent.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_regex_compiles_as_the_route_table_matches() {
        let re = path_regex("/items/[0-9]+", false).unwrap();
        assert!(
            re.is_match("/ITEMS/7") && !re.is_match("/items/7/x"),
            "anchored"
        );
        assert!(!path_regex("/items/[0-9]+", true)
            .unwrap()
            .is_match("/ITEMS/7"));
        assert!(path_regex("^(a{1000}){1000}", false)
            .unwrap_err()
            .starts_with("invalid regex"));
        assert!(path_regex(&"a".repeat(2000), false)
            .unwrap_err()
            .starts_with("is 2000 bytes"));
        assert_eq!(
            path_regex("(", false).unwrap_err(),
            "invalid regex: unclosed group"
        );
    }

    #[test]
    fn addresses_and_cidrs() {
        assert!(socket_addr("127.0.0.1:8080").is_ok());
        assert!(socket_addr("[::]:8443").is_ok());
        assert!(socket_addr("localhost:8080")
            .unwrap_err()
            .contains("127.0.0.1"));
        assert!(socket_addr("8080").unwrap_err().contains("include the IP"));
        assert_eq!(cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(cidr("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(cidr("::1").unwrap().to_string(), "::1/128");
        assert!(cidr("10.0.0.0/33").is_err());
        assert!(cidr("example.com").is_err());
    }

    #[test]
    fn hosts_methods_tokens() {
        for ok in ["api.example.com", "*.example.com", "10.1.2.3", "[::1]"] {
            assert!(host_pattern(ok, false).is_ok(), "{ok}");
        }
        let port = host_pattern("localhost:8080", false).unwrap_err();
        assert!(port.contains("leave out the port"), "{port}");
        assert!(host_pattern("localhost:8080", true).is_ok());
        assert!(host_pattern("[::1]:80", true).is_ok());
        for bad in [
            "",
            "*",
            "a.*.com",
            "exa mple.com",
            "-a.com",
            "*.",
            "http://x",
            "x:99999",
        ] {
            assert!(host_pattern(bad, true).is_err(), "{bad}");
        }
        assert!(method("GET").is_ok());
        assert!(method("PROPFIND").is_ok());
        assert!(method("get").unwrap_err().contains("`GET`"));
        assert!(method("GE T").is_err());
        assert!(method("M_SEARCH").is_err());
        assert!(is_token("X-Portcullis-Assertion"));
        assert!(!is_token("X Bad"));
    }

    #[test]
    fn paths_like_requests_have_them() {
        assert!(config_path("/api/orders", false).is_ok());
        assert!(config_path("/caf%C3%A9", false).is_ok());
        assert!(config_path("api", false)
            .unwrap_err()
            .contains("start with `/`"));
        assert!(config_path("/a?b", false).unwrap_err().contains("`?`"));
        assert!(config_path("/a%zz", false).unwrap_err().contains("hex"));
        assert!(config_path("/a%2Fb", false).unwrap_err().contains("%2F"));
        assert!(config_path("/a%2Fb", true).is_ok());
        assert!(config_path("/a\\b", false)
            .unwrap_err()
            .contains("backslash"));
        assert!(config_path("/a%00", true).unwrap_err().contains("control"));
        assert!(config_path("/..;x/admin", true)
            .unwrap_err()
            .contains("dot segment"));
        assert!(glob("/api/**/x").is_ok());
        assert!(glob("/api/a**").is_err());
    }

    #[test]
    fn files_and_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.pem");
        std::fs::write(&file, "x").unwrap();
        let file = file.to_str().unwrap();
        let dir_s = dir.path().to_str().unwrap();
        assert!(readable_file(file).is_ok());
        assert!(readable_file(dir_s).unwrap_err().contains("directory"));
        assert!(readable_file("/nonexistent/x.pem")
            .unwrap_err()
            .contains("does not exist"));
        assert!(dir_if_exists(dir_s).is_ok());
        assert!(dir_if_exists("/nonexistent/keys").is_ok());
        assert!(dir_if_exists(file).is_err());
        assert!(writable_file_location(&format!("{dir_s}/audit.log")).is_ok());
        assert!(writable_file_location("/nonexistent/dir/audit.log").is_err());
        assert!(writable_file_location("audit.log").is_ok());
    }
}
