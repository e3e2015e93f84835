//! `server`, `admin`, `ext_authz`, `shared_state`, `audit` and `assertion`.

use super::{checks, nonzero, url, Report};
use crate::model::{AuditSink, ClientAuth, Config};
use crate::path::KeyPath;
use std::net::SocketAddr;

pub(super) fn validate(config: &Config, root: &KeyPath, report: &mut Report<'_>) {
    let listeners = listeners(config, root, report);
    // A listener section that failed to parse holds its default address: comparing
    // it would report a clash the user never wrote.
    if ["server", "admin", "ext_authz"]
        .iter()
        .all(|s| report.scope.parsed(s))
    {
        check_distinct_listeners(&listeners, report);
    }
    server(config, &root.key("server"), report);
    shared_state(config, &root.key("shared_state"), report);
    if let AuditSink::File(path) = &config.audit.sink {
        if let Err(e) = checks::writable_file_location(path) {
            report.error(&root.key("audit").key("sink"), e);
        }
    }
    assertion(config, &root.key("assertion"), report);
    if let Some(t) = &config.telemetry {
        let at = root.key("telemetry");
        if let Err(e) = url::http_url(&t.otlp_endpoint, false) {
            report.error(&at.key("otlp_endpoint"), e);
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            report.error(&at.key("sample_ratio"), "must be between 0 and 1");
        }
    }
}

/// Parses every listen address; returns the valid ones with their paths.
fn listeners(
    config: &Config,
    root: &KeyPath,
    report: &mut Report<'_>,
) -> Vec<(KeyPath, SocketAddr)> {
    let mut all = vec![
        (
            root.key("server").key("listen"),
            config.server.listen.as_str(),
        ),
        (
            root.key("admin").key("listen"),
            config.admin.listen.as_str(),
        ),
    ];
    if let Some(ext) = &config.ext_authz {
        all.push((
            root.key("ext_authz").key("grpc_listen"),
            ext.grpc_listen.as_str(),
        ));
    }
    let mut parsed = Vec::new();
    for (path, text) in all {
        match checks::socket_addr(text) {
            Ok(addr) => parsed.push((path, addr)),
            Err(e) => report.error(&path, e),
        }
    }
    parsed
}

/// Two listeners on one address would fail at bind time; say so now. Port 0 (an
/// ephemeral port, used by tests) never clashes.
fn check_distinct_listeners(listeners: &[(KeyPath, SocketAddr)], report: &mut Report<'_>) {
    for (i, (path, addr)) in listeners.iter().enumerate() {
        if addr.port() == 0 {
            continue;
        }
        if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| overlaps(a, addr)) {
            // Report on an address the user wrote, not on a default they never saw.
            if report.is_written(path) || !report.is_written(other) {
                report.error(
                    path,
                    format!("same address as {other}: give each listener its own port"),
                );
            } else {
                report.error(
                    other,
                    format!(
                        "same address as {path} (default {addr}): give each listener its own port"
                    ),
                );
            }
        }
    }
}

/// Same port, and the same IP or a wildcard (`0.0.0.0`/`[::]`) on either side: the
/// second bind would fail with "address in use".
fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn server(config: &Config, at: &KeyPath, report: &mut Report<'_>) {
    let s = &config.server;
    if let Some(tls) = &s.tls {
        let tls_at = at.key("tls");
        for (key, file) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
            if let Err(e) = checks::readable_file(file) {
                report.error(&tls_at.key(key), e);
            }
        }
        match &tls.client_ca_file {
            Some(ca) => {
                if let Err(e) = checks::readable_file(ca) {
                    report.error(&tls_at.key("client_ca_file"), e);
                }
            }
            None if tls.client_auth != ClientAuth::None => report.error(
                &tls_at.key("client_auth"),
                "client certificates cannot be verified without client_ca_file: add it",
            ),
            None => {}
        }
    }
    for (i, text) in s.trusted_proxies.iter().enumerate() {
        let path = at.key("trusted_proxies").index(i);
        match checks::cidr(text) {
            Ok(net) => {
                if net.prefix_len() == 0 {
                    report.warn(
                        &path,
                        format!(
                            "`{text}` trusts the forwarding headers of every client: \
                             anyone can then claim any IP or workload identity"
                        ),
                    );
                } else if net.trunc() != net {
                    report.warn(
                        &path,
                        format!("`{text}` has host bits set; it means {}", net.trunc()),
                    );
                }
            }
            Err(e) => report.error(&path, e),
        }
    }
    // `public_url` is optional: when absent the proxy derives it from `listen`
    // (`http://LISTEN`, or `https://` with `server.tls`), which is right for a
    // single-host setup and is documented in SPEC §2; behind a load balancer users set it.
    if let Some(public) = &s.public_url {
        if let Err(e) = url::http_url(public, false) {
            report.error(&at.key("public_url"), e);
        }
    }
    nonzero(report, &at.key("request_timeout"), s.request_timeout);
    nonzero(
        report,
        &at.key("header_read_timeout"),
        s.header_read_timeout,
    );
    nonzero(report, &at.key("idle_timeout"), s.idle_timeout);
    nonzero(report, &at.key("write_timeout"), s.write_timeout);
    if s.max_connections == 0 {
        report.error(
            &at.key("max_connections"),
            "must be greater than 0: no connection could ever be served",
        );
    }
    if s.max_header_bytes.0 < 1024 {
        report.error(
            &at.key("max_header_bytes"),
            "must be at least 1KiB: smaller cannot hold a request line and its headers",
        );
    }
}

fn shared_state(config: &Config, at: &KeyPath, report: &mut Report<'_>) {
    let Some(shared) = &config.shared_state else {
        return;
    };
    let path = at.key("redis");
    // The URL may carry a password: every message shows it redacted.
    let shown = shared.redacted_redis_url();
    match url::parse_url(&shared.redis) {
        // parse_url shows the URL redacted already.
        Err(e) => report.error(&path, e),
        Ok(u) if u.scheme != "redis" && u.scheme != "rediss" => report.error(
            &path,
            format!("`{shown}` must be a redis:// or rediss:// (TLS) URL"),
        ),
        Ok(u) => {
            let db = u.path.trim_start_matches('/');
            if !db.is_empty() && (db.parse::<u32>().is_err() || u.path.matches('/').count() > 1) {
                report.error(
                    &path,
                    format!(
                        "`{shown}`: the path must be a database number, like redis://host:6379/0"
                    ),
                );
            }
            if u.fragment.is_some() {
                report.error(&path, format!("`{shown}` must not have a #fragment"));
            }
            if shared.ca_file.is_some() && u.scheme != "rediss" {
                report.error(
                    &at.key("ca_file"),
                    "only used with a rediss:// (TLS) URL: this one is plain redis://",
                );
            }
        }
    }
    nonzero(report, &at.key("timeout"), shared.timeout);
    if let Some(file) = &shared.ca_file {
        if let Err(e) = checks::readable_file(file) {
            report.error(&at.key("ca_file"), e);
        }
    }
}

fn assertion(config: &Config, at: &KeyPath, report: &mut Report<'_>) {
    let a = &config.assertion;
    if let (Some(_), Some(_)) = (&a.signing_key_file, &a.signing_keys_dir) {
        report.error(
            &at.key("signing_keys_dir"),
            "set either signing_key_file (one fixed key) or signing_keys_dir (rotated keys), not both",
        );
    }
    if let Some(file) = &a.signing_key_file {
        if let Err(e) = checks::readable_file(file) {
            report.error(&at.key("signing_key_file"), e);
        }
    }
    if let Some(dir) = &a.signing_keys_dir {
        if let Err(e) = checks::dir_if_exists(dir) {
            report.error(&at.key("signing_keys_dir"), e);
        }
    }
    nonzero(report, &at.key("ttl"), a.ttl);
    nonzero(report, &at.key("rotate_every"), a.rotate_every);
    if !checks::is_token(&a.header) {
        report.error(
            &at.key("header"),
            format!("`{}` is not a valid HTTP header name", a.header),
        );
    } else if [
        "authorization",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
    ]
    .contains(&a.header.to_ascii_lowercase().as_str())
    {
        report.error(
            &at.key("header"),
            format!(
                "`{}` is a standard HTTP header: pick another name",
                a.header
            ),
        );
    }
}
