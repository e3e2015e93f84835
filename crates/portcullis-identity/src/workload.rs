//! Workload identity: SPIFFE IDs from a verified client certificate, from Linkerd's
//! `l5d-client-id` header, and from Envoy/Istio's `x-forwarded-client-cert`.
//!
//! Pure functions. Whether a header may be believed at all (it came from one of
//! `server.trusted_proxies`) and whether the certificate chain verified are the
//! proxy's decisions; these only extract and validate the ID.

use x509_parser::extensions::GeneralName;

/// Why no workload identity could be extracted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    #[error("client certificate could not be parsed")]
    Certificate,
    #[error("client certificate has no URI SAN")]
    NoUriSan,
    #[error("client certificate has {0} URI SANs; exactly one is required")]
    MultipleUriSans(usize),
    #[error("invalid SPIFFE ID: {0}")]
    InvalidSpiffeId(&'static str),
    #[error("invalid l5d-client-id: {0}")]
    Linkerd(&'static str),
    #[error("invalid x-forwarded-client-cert: {0}")]
    Xfcc(&'static str),
}

const MAX_SPIFFE_ID_LEN: usize = 2048;

/// Checks a SPIFFE ID as the SPIFFE spec defines it: `spiffe://` (lowercase), a
/// trust domain of `[a-z0-9._-]`, and a non-empty path of segments of
/// `[A-Za-z0-9._-]` that are neither empty, `.` nor `..` (so no percent-encoding,
/// query, fragment, port or user info can hide in it).
pub fn validate_spiffe_id(id: &str) -> Result<(), WorkloadError> {
    use WorkloadError::InvalidSpiffeId as E;
    if id.len() > MAX_SPIFFE_ID_LEN {
        return Err(E("longer than 2048 bytes"));
    }
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or(E("scheme must be spiffe://"))?;
    let (domain, path) = rest.split_once('/').ok_or(E("no path"))?;
    validate_trust_domain(domain).map_err(|_| E("invalid trust domain"))?;
    for segment in path.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(E("empty, `.` or `..` path segment"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(E("path has characters outside [A-Za-z0-9._-]"));
        }
    }
    Ok(())
}

/// A trust domain: 1–255 characters of `[a-z0-9._-]`.
pub fn validate_trust_domain(domain: &str) -> Result<(), WorkloadError> {
    let ok = !domain.is_empty()
        && domain.len() <= 255
        && domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(WorkloadError::InvalidSpiffeId("invalid trust domain"))
    }
}

/// The SPIFFE ID of a (verified) DER client certificate: its one URI SAN, which
/// must be a valid `spiffe://` ID. Several URI SANs are refused (X.509-SVID §2):
/// picking one would be a guess.
pub fn spiffe_id_from_cert_der(der: &[u8]) -> Result<String, WorkloadError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| WorkloadError::Certificate)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| WorkloadError::Certificate)?
        .ok_or(WorkloadError::NoUriSan)?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(WorkloadError::NoUriSan),
        [one] => {
            validate_spiffe_id(one)?;
            Ok((*one).to_string())
        }
        many => Err(WorkloadError::MultipleUriSans(many.len())),
    }
}

const LINKERD_SUFFIX: &str = ".serviceaccount.identity.linkerd.cluster.local";

/// Maps Linkerd's `l5d-client-id` (`SA.NS.serviceaccount.identity.linkerd.cluster.local`)
/// to `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`. Anything else is refused, including
/// service-account names with dots (the split would be ambiguous).
pub fn spiffe_id_from_linkerd(header: &str, trust_domain: &str) -> Result<String, WorkloadError> {
    use WorkloadError::Linkerd as E;
    validate_trust_domain(trust_domain)?;
    let prefix = header.strip_suffix(LINKERD_SUFFIX).ok_or(E(
        "expected SA.NS.serviceaccount.identity.linkerd.cluster.local",
    ))?;
    let (sa, ns) = prefix
        .split_once('.')
        .ok_or(E("expected SA.NS before the suffix"))?;
    if !is_dns_label(sa) || !is_dns_label(ns) {
        return Err(E("service account and namespace must be DNS labels"));
    }
    Ok(format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}"))
}

/// An RFC 1123 label as Kubernetes uses it: `[a-z0-9-]{1,63}`, alphanumeric at both ends.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Parses an `x-forwarded-client-cert` header into its elements (one per hop,
/// separated by `,`), each a list of `Key=Value` pairs (separated by `;`). Values
/// may be double-quoted, and then may contain `,`, `;`, `=` and `\"`.
pub fn parse_xfcc(header: &str) -> Result<Vec<Vec<(String, String)>>, WorkloadError> {
    use WorkloadError::Xfcc as E;
    let mut elements = Vec::new();
    let mut pairs = Vec::new();
    let mut chars = header.chars().peekable();
    loop {
        // key
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            if matches!(c, ',' | ';' | '"') {
                return Err(E("expected Key=Value"));
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(E("expected `=` after a key"));
        }
        let key = key.trim().to_string();
        if key.is_empty() {
            return Err(E("empty key"));
        }
        // value
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(E("unterminated quoted value")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(E("unterminated quoted value")),
                    },
                    Some(c) => value.push(c),
                }
            }
            if !matches!(chars.peek(), None | Some(',') | Some(';')) {
                return Err(E("text after a quoted value"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if matches!(c, ',' | ';') {
                    break;
                }
                if c == '"' {
                    return Err(E("quote inside an unquoted value"));
                }
                value.push(c);
                chars.next();
            }
        }
        pairs.push((key, value));
        match chars.next() {
            None => {
                elements.push(pairs);
                return Ok(elements);
            }
            Some(';') => {}
            Some(_) => elements.push(std::mem::take(&mut pairs)), // ','
        }
    }
}

/// The SPIFFE ID in the `URI=` field of the last XFCC element — the one the
/// nearest (trusted) hop appended. `Ok(None)` when that element has no `URI`;
/// an error when the header is malformed, has several `URI`s in that element, or
/// the URI is not a valid SPIFFE ID.
pub fn spiffe_id_from_xfcc(header: &str) -> Result<Option<String>, WorkloadError> {
    spiffe_id_from_xfcc_lines(std::iter::once(header))
}

/// Like [`spiffe_id_from_xfcc`] for a header sent on several lines: they read as
/// one list in order (RFC 9110 §5.3), so the last element of the last line — the
/// one the nearest hop added — decides, never a client-written first line. Each
/// line is parsed on its own, so a quote left open in one line cannot swallow the
/// next.
pub fn spiffe_id_from_xfcc_lines<'a>(
    lines: impl IntoIterator<Item = &'a str>,
) -> Result<Option<String>, WorkloadError> {
    let mut last_line = None;
    for line in lines {
        last_line = Some(parse_xfcc(line)?);
    }
    let elements = last_line.ok_or(WorkloadError::Xfcc("empty"))?;
    let last = elements.last().ok_or(WorkloadError::Xfcc("empty"))?;
    let mut uris = last.iter().filter(|(k, _)| k.eq_ignore_ascii_case("URI"));
    match (uris.next(), uris.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(WorkloadError::Xfcc("several URI fields in one element")),
        (Some((_, uri)), None) => {
            validate_spiffe_id(uri)?;
            Ok(Some(uri.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_sans(sans: &[rcgen::SanType]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans.to_vec();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(s: &str) -> rcgen::SanType {
        rcgen::SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn certificate_uri_san() {
        let der = cert_with_sans(&[
            uri("spiffe://example.org/ns/shop/sa/orders"),
            rcgen::SanType::DnsName("orders.shop".try_into().unwrap()),
        ]);
        assert_eq!(
            spiffe_id_from_cert_der(&der).unwrap(),
            "spiffe://example.org/ns/shop/sa/orders"
        );
        let two = cert_with_sans(&[uri("spiffe://example.org/a"), uri("spiffe://example.org/b")]);
        assert_eq!(
            spiffe_id_from_cert_der(&two).unwrap_err(),
            WorkloadError::MultipleUriSans(2)
        );
        let https = cert_with_sans(&[uri("https://example.org/a")]);
        assert!(matches!(
            spiffe_id_from_cert_der(&https),
            Err(WorkloadError::InvalidSpiffeId(_))
        ));
        let none = cert_with_sans(&[rcgen::SanType::DnsName("a.example".try_into().unwrap())]);
        assert_eq!(
            spiffe_id_from_cert_der(&none).unwrap_err(),
            WorkloadError::NoUriSan
        );
        assert_eq!(
            spiffe_id_from_cert_der(b"junk").unwrap_err(),
            WorkloadError::Certificate
        );
    }

    #[test]
    fn spiffe_id_syntax() {
        for ok in [
            "spiffe://example.org/a",
            "spiffe://td/ns/x/sa/y",
            "spiffe://a-b_c.d/A.b-c_d",
        ] {
            assert!(validate_spiffe_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "spiffe://example.org",
            "spiffe://example.org/",
            "SPIFFE://example.org/a",
            "spiffe://Example.org/a",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/a//b",
            "spiffe://example.org/a/",
            "spiffe://example.org/a%2Fb",
            "spiffe://example.org/a?x=1",
            "spiffe://example.org:443/a",
            "spiffe://user@example.org/a",
            "spiffe:///a",
        ] {
            assert!(validate_spiffe_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn linkerd_identity() {
        assert_eq!(
            spiffe_id_from_linkerd(
                "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
                "cluster.local"
            )
            .unwrap(),
            "spiffe://cluster.local/ns/emojivoto/sa/web"
        );
        for bad in [
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local.evil.com",
            "a.b.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            "emojivoto.serviceaccount.identity.linkerd.cluster.local",
            ".emojivoto.serviceaccount.identity.linkerd.cluster.local",
            "Web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            "w/b.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            "web.emojivoto.serviceaccount.identity.linkerd.other.local",
            "spiffe://cluster.local/ns/x/sa/y",
            "",
        ] {
            assert!(
                spiffe_id_from_linkerd(bad, "cluster.local").is_err(),
                "{bad}"
            );
        }
        assert!(spiffe_id_from_linkerd(
            "web.ns.serviceaccount.identity.linkerd.cluster.local",
            "Bad/TD"
        )
        .is_err());
    }

    #[test]
    fn xfcc_last_element_uri() {
        let h = r#"By=spiffe://td/ns/a/sa/gw;Hash=abc;URI=spiffe://td/ns/a/sa/first,By=spiffe://td/ns/b/sa/api;Hash=def;Subject="CN=x,OU=y;z=\"q\"";URI=spiffe://td/ns/b/sa/caller"#;
        assert_eq!(
            spiffe_id_from_xfcc(h).unwrap().as_deref(),
            Some("spiffe://td/ns/b/sa/caller")
        );
        let parsed = parse_xfcc(h).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            parsed[1][2],
            ("Subject".to_string(), r#"CN=x,OU=y;z="q""#.to_string())
        );
        assert_eq!(
            spiffe_id_from_xfcc(r#"Hash=abc;URI="spiffe://td/x""#)
                .unwrap()
                .as_deref(),
            Some("spiffe://td/x")
        );
        assert_eq!(
            spiffe_id_from_xfcc("URI=spiffe://td/x,Hash=abc").unwrap(),
            None,
            "last element has no URI"
        );
        for bad in [
            "",
            "URI=spiffe://td/x;URI=spiffe://td/y",
            r#"Subject="unterminated;URI=spiffe://td/x"#,
            r#"Subject="a"b;URI=spiffe://td/x"#,
            "URI=https://td/x",
            "URI=spiffe://td/x,",
            "=x",
            "noequals",
        ] {
            assert!(spiffe_id_from_xfcc(bad).is_err(), "{bad}");
        }
    }
}
