//! `routes`: names, matchers, upstreams and per-route settings.

use super::{checks, nonzero, rules, url, Report};
use crate::model::{AuthMode, Config, RouteConfig, RouteMatch, ServerConfig};
use crate::path::KeyPath;
use std::collections::HashMap;

pub(super) fn validate(config: &Config, root: &KeyPath, report: &mut Report<'_>) {
    let routes = root.key("routes");
    let mut names: HashMap<String, usize> = HashMap::new();
    let indices = report.scope.route_index.clone();
    for (r, &i) in config.routes.iter().zip(&indices) {
        let at = routes.index(i);
        if r.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            report.error(
                &at.key("name"),
                "must not be empty (or leave it out for route-INDEX)",
            );
        }
        // Compare display names: an explicit `route-3` would clash with an unnamed route.
        let name = r.display_name(i);
        if let Some(first) = names.get(&name) {
            report.error(
                &at.key("name"),
                format!("duplicate route name `{name}` (already used by routes[{first}])"),
            );
        } else {
            names.insert(name, i);
        }
        matcher(&r.matcher, &config.server, &at.key("match"), report);
        upstream(r, &at, report);
        settings(config, r, &at, report);
        mcp(r, &at, report);
        if let Some(policy) = &r.policy {
            rules::validate(config, policy, &at.key("policy"), report);
        }
        let allows_nobody = r.policy.as_ref().is_none_or(|p| p.allow.is_empty());
        if r.auth == AuthMode::Required && allows_nobody {
            report.warn(
                &at,
                "auth is required and no allow rule exists, so this route denies every request: \
                 add a policy",
            );
        }
    }
}

fn matcher(m: &RouteMatch, server: &ServerConfig, at: &KeyPath, report: &mut Report<'_>) {
    let set: Vec<&str> = [
        ("path", m.path.is_some()),
        ("path_prefix", m.path_prefix.is_some()),
        ("path_regex", m.path_regex.is_some()),
    ]
    .into_iter()
    .filter(|(_, present)| *present)
    .map(|(k, _)| k)
    .collect();
    if let [first, rest @ ..] = set.as_slice() {
        for key in rest {
            report.error_at_key(
                &at.key(key),
                format!(
                    "only one of path, path_prefix and path_regex may be set (already {first})"
                ),
            );
        }
    }
    for (key, value) in [("path", &m.path), ("path_prefix", &m.path_prefix)] {
        if let Some(value) = value {
            if let Err(e) = checks::config_path(value, server.allow_encoded_slashes) {
                report.error(&at.key(key), e);
            }
        }
    }
    if let Some(re) = &m.path_regex {
        if let Err(e) = checks::path_regex(re, server.case_sensitive_paths) {
            report.error(&at.key("path_regex"), e);
        }
    }
    for (i, method) in m.methods.iter().enumerate() {
        if let Err(e) = checks::method(method) {
            report.error(&at.key("methods").index(i), e);
        }
    }
    for (i, host) in m.hosts.iter().enumerate() {
        if let Err(e) = checks::host_pattern(host, false) {
            report.error(&at.key("hosts").index(i), e);
        }
    }
}

fn upstream(r: &RouteConfig, at: &KeyPath, report: &mut Report<'_>) {
    let mut any_https = false;
    if let Some(upstreams) = &r.upstream {
        let urls = upstreams.urls();
        if urls.is_empty() {
            report.error(
                &at.key("upstream"),
                "empty list: give at least one upstream URL",
            );
        }
        let many = matches!(upstreams, crate::model::Upstreams::Many(_));
        for (i, u) in urls.iter().enumerate() {
            let path = if many {
                at.key("upstream").index(i)
            } else {
                at.key("upstream")
            };
            match url::http_url(u, false) {
                Ok(shape) => any_https |= shape.scheme == "https",
                Err(e) => report.error(&path, e),
            }
        }
    }
    let Some(tls) = &r.upstream_tls else {
        return;
    };
    let tls_at = at.key("upstream_tls");
    for (key, file) in [
        ("ca_file", &tls.ca_file),
        ("cert_file", &tls.cert_file),
        ("key_file", &tls.key_file),
    ] {
        if let Some(file) = file {
            if let Err(e) = checks::readable_file(file) {
                report.error(&tls_at.key(key), e);
            }
        }
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => report.error(&tls_at.key("cert_file"), "needs key_file as well"),
        (None, Some(_)) => report.error(&tls_at.key("key_file"), "needs cert_file as well"),
        _ => {}
    }
    if let Some(name) = &tls.server_name {
        if !checks::is_hostname(name) {
            report.error(
                &tls_at.key("server_name"),
                format!("`{name}` is not a host name"),
            );
        }
    }
    if r.upstream.is_some() && !any_https {
        report.warn(&tls_at, "has no effect: every upstream is http://");
    }
}

fn settings(config: &Config, r: &RouteConfig, at: &KeyPath, report: &mut Report<'_>) {
    if let Some(rl) = &r.rate_limit {
        let rl_at = at.key("rate_limit");
        if !(rl.requests_per_second.is_finite() && rl.requests_per_second > 0.0) {
            report.error(
                &rl_at.key("requests_per_second"),
                "must be a number greater than 0",
            );
        }
        if rl.burst == Some(0) {
            report.error(&rl_at.key("burst"), "must be at least 1");
        }
    }
    if let Some(timeout) = r.timeout {
        nonzero(report, &at.key("timeout"), timeout);
    }
    if r.retries > 10 {
        report.error(
            &at.key("retries"),
            format!("{} is too many: at most 10", r.retries),
        );
    }
    for (i, proto) in r.upgrades.iter().enumerate() {
        let path = at.key("upgrades").index(i);
        if proto.eq_ignore_ascii_case("h2c") {
            report.error(
                &path,
                "h2c is never forwarded: inside an h2c tunnel requests would reach the upstream unjudged",
            );
        } else if !checks::is_token(proto) {
            report.error(&path, format!("`{proto}` is not a protocol name"));
        }
    }
    if r.audience.as_deref().is_some_and(|a| a.trim().is_empty()) {
        report.error(&at.key("audience"), "must not be empty");
    }
    // Judged only for forward-auth and ext_authz, such a route's assertion is
    // for the origin the request names (SPEC §4): with no `hosts` that is any
    // host a client writes, so a service would be handed assertions minted
    // for another audience, and could replay them there.
    if r.upstream.is_none()
        && r.audience.is_none()
        && r.matcher.hosts.is_empty()
        && r.auth != AuthMode::None
        && r.mcp.is_none()
    {
        report.warn(
            &at.key("upstream"),
            "a route without upstream (judged by forward-auth and ext_authz) and without \
             `audience` or `match.hosts` signs its assertion for whatever host the request \
             names, which the client chooses: set `audience` to the service's name",
        );
    }
    if r.login {
        if config.login.is_none() && report.scope.parsed("login") {
            report.error(
                &at.key("login"),
                "login: true needs a top-level `login` section (provider and cookie)",
            );
        }
        if r.auth == AuthMode::None {
            report.warn(&at.key("login"), "has no effect with auth: none");
        }
        sign_in_hosts(config, r, at, report);
    }
}

/// Without `login.cookie.domain` the sign-in cookie is set host-only on the
/// host the browser asked for, and the callback is on `server.public_url`'s
/// host: on any other host of a `login: true` route the callback never gets
/// the sign-in cookie (and the route never gets the session cookie the
/// callback sets), so sign-in cannot complete there.
fn sign_in_hosts(config: &Config, r: &RouteConfig, at: &KeyPath, report: &mut Report<'_>) {
    let (Some(login), Some(public_url)) = (&config.login, &config.server.public_url) else {
        return;
    };
    if login.cookie.domain.is_some() {
        return;
    }
    // A malformed public_url is reported where it is.
    let Ok(public) = url::parse_url(public_url) else {
        return;
    };
    for (i, host) in r.matcher.hosts.iter().enumerate() {
        let name = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if !name.eq_ignore_ascii_case(public.host) {
            report.warn(
                &at.key("match").key("hosts").index(i),
                format!(
                    "sign-in cannot complete on `{host}`: without login.cookie.domain the \
                     sign-in cookie is set for that host alone, and the callback is on `{}` \
                     (server.public_url), which never receives it; set login.cookie.domain to \
                     a domain both are in, or serve this route on `{}`",
                    public.host, public.host
                ),
            );
        }
    }
}

/// `mcp` routes (SPEC §10), and `tools` conditions, which only they can use.
fn mcp(r: &RouteConfig, at: &KeyPath, report: &mut Report<'_>) {
    let Some(mcp) = &r.mcp else {
        let Some(policy) = &r.policy else { return };
        for (list, rules) in [("deny", &policy.deny), ("allow", &policy.allow)] {
            for (i, rule) in rules.iter().enumerate() {
                if rule.tools.is_some() {
                    report.error(
                        &at.key("policy").key(list).index(i).key("tools"),
                        "`tools` names MCP tools: it only applies on a route with `mcp: {}`",
                    );
                }
            }
        }
        return;
    };
    let mcp_at = at.key("mcp");
    if r.forward_token {
        // MCP's authorization spec forbids token passthrough: a token the server
        // accepted as sent could be replayed by it against any other service that
        // trusts the same issuer (the confused-deputy problem).
        report.error(
            &at.key("forward_token"),
            "an MCP server must never receive the caller's token (MCP authorization forbids \
             token passthrough: the server could replay it elsewhere); use upstream_auth \
             for the server's own credentials",
        );
    }
    if r.upstream.is_none() {
        report.error(&mcp_at, "an MCP route needs an `upstream`: the MCP server");
    }
    let max = mcp.max_message_bytes.0;
    if max == 0 || max > MAX_MCP_MESSAGE {
        report.error(
            &mcp_at.key("max_message_bytes"),
            "must be between 1 byte and 64MiB",
        );
    }
    if r.matcher.path_regex.is_some() {
        report.warn(
            &mcp_at,
            "with path_regex the route has no one path, so no protected resource metadata \
             (/.well-known/oauth-protected-resource/...) is served for it: use path or path_prefix",
        );
    }
}

/// Every message of an MCP route may be held in memory once: keep that bounded.
const MAX_MCP_MESSAGE: u64 = 64 * 1024 * 1024;

#[cfg(test)]
mod tests {
    fn warnings(yaml: &str) -> Vec<String> {
        match crate::load_str(yaml, "test.yaml", &|_| None) {
            Ok(loaded) => loaded.warnings.iter().map(ToString::to_string).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    fn config(public_url: &str, domain: &str, hosts: &str) -> String {
        format!(
            "server:\n  listen: 127.0.0.1:8080\n  public_url: {public_url}\n\
             providers:\n  - name: idp\n    issuer: https://idp.example.com\n    audiences: [app]\n\
             \x20   client_id: app\n    client_secret: s\n\
             login:\n  provider: idp\n  cookie:\n    secret: a-cookie-secret-of-at-least-32-bytes!!\n{domain}\
             routes:\n  - name: app\n    match: {{ path_prefix: /, {hosts} }}\n    login: true\n\
             \x20   upstream: http://127.0.0.1:9000\n    policy: {{ allow: [{{ authenticated: true }}] }}\n"
        )
    }

    fn about_sign_in(w: &[String]) -> Vec<&String> {
        w.iter()
            .filter(|w| w.contains("sign-in cannot complete"))
            .collect()
    }

    #[test]
    fn an_assertion_whose_audience_the_client_chooses_is_warned_about() {
        let yaml = |matcher: &str, extra: &str| {
            format!(
                "server:\n  listen: 127.0.0.1:8080\nproviders:\n  - name: p\n    issuer: https://i.example\n    audiences: [a]\nroutes:\n  - name: r\n    match: {{ path_prefix: /x{matcher} }}\n{extra}"
            )
        };
        let w = warnings(&yaml("", ""));
        assert!(w.iter().any(|w| w.contains("whatever host")), "{w:?}");
        for (matcher, extra) in [
            (", hosts: [app.example]", ""),
            ("", "    audience: orders\n"),
            ("", "    upstream: http://127.0.0.1:9\n"),
            ("", "    auth: none\n"),
        ] {
            let w = warnings(&yaml(matcher, extra));
            assert!(
                !w.iter().any(|w| w.contains("whatever host")),
                "{matcher}{extra}: {w:?}"
            );
        }
    }

    #[test]
    fn a_login_route_on_a_host_the_callback_never_sees_is_warned_about() {
        let public = "https://auth.example.com";
        let w = warnings(&config(public, "", "hosts: [app.example.com]"));
        let found = about_sign_in(&w);
        assert_eq!(found.len(), 1, "{w:?}");
        assert!(
            found[0].starts_with("test.yaml:16:38: routes[0].match.hosts[0]: "),
            "{w:?}"
        );
        assert!(found[0].contains("`app.example.com`") && found[0].contains("`auth.example.com`"));
        // Only the hosts that are not public_url's.
        let w = warnings(&config(
            public,
            "",
            "hosts: [AUTH.example.com, app.example.com]",
        ));
        assert_eq!(about_sign_in(&w).len(), 1, "{w:?}");
        // The public host itself (with a port in public_url), any host, or a
        // cookie domain that covers them: nothing to say.
        let w = warnings(&config(
            "https://auth.example.com:8443/base",
            "",
            "hosts: [auth.example.com]",
        ));
        assert!(about_sign_in(&w).is_empty(), "{w:?}");
        let w = warnings(&config(public, "", "methods: [GET]"));
        assert!(about_sign_in(&w).is_empty(), "{w:?}");
        let domain = "    domain: example.com\n";
        let w = warnings(&config(public, domain, "hosts: [app.example.com]"));
        assert!(about_sign_in(&w).is_empty(), "{w:?}");
    }
}
