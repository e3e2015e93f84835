//! Semantic validation: each class of mistake is reported at the offending value,
//! and risky-but-valid settings produce warnings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

// ---- semantic error classes --------------------------------------------------------

#[test]
fn server_errors() {
    assert_error(
        "server:\n  listen: nope\n",
        "portcullis.yaml:2:11: server.listen: invalid address `nope`",
    );
    assert_error(
        "server: {listen: 127.0.0.1:8080}\nadmin: {listen: 127.0.0.1:8080}\n",
        "admin.listen: same address as server.listen",
    );
    assert_error(
        "server: {listen: '0.0.0.0:9901'}\n",
        "portcullis.yaml:1:18: server.listen: same address as admin.listen (default 127.0.0.1:9901)",
    );
    assert_ok("server: {listen: '0.0.0.0:0'}\nadmin: {listen: '0.0.0.0:0'}\n");
    let errs = errors("server:\n  trusted_proxies: [10.0.0.0/8, 192.0.2.7, \"::1\", not-a-cidr]\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("2:51: server.trusted_proxies[3]: invalid CIDR `not-a-cidr`"));
    let errs = errors(
        "server:\n  tls: {cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem, client_auth: required}\n",
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(errs[0].contains("server.tls.cert_file: file `/nonexistent/c.pem` does not exist"));
    assert!(errs[1].contains("server.tls.key_file: file"));
    assert!(errs[2].contains("server.tls.client_auth: client certificates cannot be verified"));
    assert_error(
        "server: {public_url: 'ftp://x'}\n",
        "server.public_url: `ftp://x` must be an http:// or https:// URL",
    );
    assert_error(
        "server: {request_timeout: 0s}\n",
        "server.request_timeout: must be greater than 0",
    );
    assert_error(
        "server: {idle_timeout: 0s}\n",
        "server.idle_timeout: must be greater than 0",
    );
    assert_error(
        "server: {write_timeout: 0ms}\n",
        "server.write_timeout: must be greater than 0",
    );
    assert_error(
        "server: {max_connections: 0}\n",
        "server.max_connections: must be greater than 0",
    );
    assert_ok("server: {idle_timeout: 5s, write_timeout: 1s, max_connections: 1}\n");
    assert_error(
        "ext_authz: {grpc_listen: ':9001'}\n",
        "ext_authz.grpc_listen: invalid address",
    );
}

#[test]
fn state_audit_and_assertion_errors() {
    assert_error(
        "shared_state: {redis: 'http://cache:6379'}\n",
        "shared_state.redis: `http://cache:6379` must be a redis:// or rediss://",
    );
    assert_error(
        "shared_state: {redis: 'redis://cache:6379/x'}\n",
        "the path must be a database number",
    );
    assert_error(
        "shared_state: {redis: 'rediss://cache:6379/0', timeout: 0s}\n",
        "shared_state.timeout: must be greater than 0",
    );
    assert_error(
        "shared_state: {redis: 'redis://cache:6379/0', ca_file: /etc/hosts}\n",
        "shared_state.ca_file: only used with a rediss:// (TLS) URL",
    );
    assert_ok(
        "shared_state: {redis: 'rediss://portcullis:s3cret@cache:6380/2', timeout: 50ms, on_redis_down: deny}\n",
    );
    // The password never reaches the error, whichever part of the URL is wrong.
    for (bad, shown) in [
        (
            "redis://portcullis:s3cret@cache:6379/x",
            "redis://portcullis:***@cache:6379/x",
        ),
        ("http://:s3cret@cache:6379", "http://:***@cache:6379"),
        ("redis://s3cret@cache:99999/0", "redis://***@cache:99999/0"),
        (
            "redis://u:s3cret@cache/0#frag",
            "redis://u:***@cache/0#frag",
        ),
        // A base64 password holds `/` (its tail read as host and port), `?`
        // or `#`: hidden whole, and no part of the URL is named alone.
        (
            "redis://u:q8Zr/k2Xs3cret+w==@cache:6379/0",
            "redis://u:***@cache:6379/0",
        ),
        ("redis://u:ab?s3cret@cache/0", "redis://u:***@cache/0"),
    ] {
        let errs = errors(&format!("shared_state: {{redis: '{bad}'}}\n"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains(shown), "{errs:?}");
        assert!(!errs[0].contains("s3cret"), "{errs:?}");
    }
    assert_error(
        "audit: {sink: 'file:/nonexistent/dir/audit.log'}\n",
        "audit.sink: directory `/nonexistent/dir`",
    );
    assert_error(
        "audit: {sink: syslog}\n",
        "audit.sink: audit sink must be `stdout`, `file:PATH` or `none`",
    );
    assert_error(
        "assertion: {signing_key_file: /nonexistent/k.pem}\n",
        "assertion.signing_key_file: file `/nonexistent/k.pem` does not exist",
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    assert_error(
        &format!("assertion: {{signing_keys_dir: {path}}}\n"),
        "exists and is not a directory",
    );
    assert_ok("assertion: {signing_keys_dir: /nonexistent/created-later}\n");
    assert_error(
        &format!("assertion: {{signing_key_file: {path}, signing_keys_dir: /tmp}}\n"),
        "assertion.signing_keys_dir: set either signing_key_file",
    );
    assert_error(
        "assertion: {header: 'X Bad'}\n",
        "assertion.header: `X Bad` is not a valid HTTP header name",
    );
    assert_error(
        "assertion: {algorithm: RS256}\n",
        "assertion.algorithm: unknown value `RS256`",
    );
}

fn provider(extra: &str) -> String {
    format!("providers:\n  - name: idp\n    issuer: https://idp.example.com\n{extra}")
}

#[test]
fn provider_errors() {
    assert_error(&provider("    audiences: [a]\n    jwks_uri: https://idp.example.com/jwks\n    jwks_file: /etc/jwks.json\n"), "providers[0].jwks_file: jwks_uri and jwks_file are mutually exclusive");
    assert_error(
        &provider(
            "    audiences: [a]\n    discovery: true\n    jwks_uri: https://idp.example.com/jwks\n",
        ),
        "providers[0].discovery: discovery: true fetches",
    );
    assert_error(
        &provider("    audiences: [a]\n    discovery: false\n"),
        "with discovery: false this provider has no keys",
    );
    assert_error(
        &provider("    audiences: [a]\n    jwks_file: /nonexistent/jwks.json\n"),
        "providers[0].jwks_file: file `/nonexistent/jwks.json` does not exist",
    );
    assert_error(
        &provider("    audiences: [a]\n    jwks_uri: /jwks\n"),
        "providers[0].jwks_uri: `/jwks` is not an absolute URL",
    );
    assert_error(
        &provider(""),
        "portcullis.yaml:2:5: providers[0].audiences: required",
    );
    assert_ok(&provider("    allow_any_audience: true\n"));
    assert_error(
        &provider("    audiences: [a]\n    algorithms: [none]\n"),
        "providers[0].algorithms[0]: `none` is never allowed",
    );
    assert_error(&provider("    audiences: [a]\n    algorithms: [none]\n    shared_secret: 0123456789abcdef0123456789abcdef\n"), "`none` is never allowed");
    assert_error(
        &provider("    audiences: [a]\n    algorithms: [XS256]\n"),
        "providers[0].algorithms[0]: unknown algorithm `XS256`",
    );
    assert_error(
        &provider("    audiences: [a]\n    algorithms: [HS256]\n"),
        "providers[0].algorithms[0]: `HS256` needs shared_secret",
    );
    assert_error(
        &provider("    audiences: [a]\n    algorithms: [HS512]\n    shared_secret: short\n"),
        "providers[0].shared_secret: is 5 bytes; the allowed HMAC algorithms need at least 64",
    );
    assert_error(
        &provider("    audiences: [a]\n    algorithms: []\n"),
        "providers[0].algorithms: must not be empty",
    );
    assert_error(
        "providers:\n  - name: idp\n    issuer: idp.example.com\n    audiences: [a]\n",
        "providers[0].issuer: `idp.example.com` is not an absolute URL",
    );
    assert_error(
        &provider("    audiences: [a]\n    claims: { roles: a..b }\n"),
        "providers[0].claims.roles: invalid claim path `a..b`",
    );
    assert_error(
        &provider("    audiences: [a]\n    claims: { email: 'a[b]' }\n"),
        "providers[0].claims.email: invalid claim path",
    );
    assert_error(&provider("    audiences: [a]\n    introspection: {endpoint: nope, client_id: a, client_secret: b}\n"), "providers[0].introspection.endpoint");
    // Each opaque token goes to one introspecting provider.
    let introspecting = |prefixes: [&str; 2]| {
        let mut yaml = String::from("server:\n  listen: 127.0.0.1:8080\nroutes:\n  - name: r\n    match: { path_prefix: / }\n    upstream: http://127.0.0.1:8000\n    auth: none\nproviders:\n");
        for (i, prefix) in prefixes.iter().enumerate() {
            yaml += &format!(
                "  - name: p{i}\n    issuer: https://p{i}.example.com\n    audiences: [a]\n\
                 \x20   introspection: {{endpoint: https://p{i}.example.com/i, client_id: a, client_secret: b{prefix}}}\n"
            );
        }
        yaml
    };
    assert_error(
        &introspecting(["", ""]),
        "providers[1].introspection: provider `p0` also introspects opaque tokens without a `token_prefix`",
    );
    assert_error(
        &introspecting([", token_prefix: pat_", ", token_prefix: pat_x"]),
        "providers[1].introspection.token_prefix: `pat_x` overlaps provider `p0`'s token_prefix",
    );
    assert_error(
        &introspecting(["", ", token_prefix: ''"]),
        "providers[1].introspection.token_prefix: must not be empty",
    );
    assert_ok(&introspecting(["", ", token_prefix: pat_"]));
    assert_error(
        &provider("    audiences: [a]\n    jwks_min_refresh: 0s\n"),
        "providers[0].jwks_min_refresh: must be greater than 0",
    );
    let two = "providers:\n  - name: idp\n    issuer: https://a.example.com\n    audiences: [a]\n  - name: idp\n    issuer: https://b.example.com\n    audiences: [a]\n";
    assert_error(two, "portcullis.yaml:5:11: providers[1].name: duplicate provider name `idp` (already used by providers[0])");
    assert_error(
        "providers:\n  - name: ''\n    issuer: https://a.example.com\n    audiences: [a]\n",
        "providers[0].name: must not be empty",
    );
}

#[test]
fn login_errors() {
    let base = "providers:\n  - name: idp\n    issuer: https://idp.example.com\n    audiences: [a]\n    client_id: portcullis\n";
    assert_error(
        &format!("{base}login:\n  provider: nope\n  cookie: {{secret: \"${{COOKIE_SECRET}}\"}}\n"),
        "login.provider: unknown provider `nope`: expected one of idp",
    );
    assert_error(
        &format!("{base}login:\n  provider: idp\n  cookie: {{secret: \"${{COOKIE_SECRET}}\"}}\n"),
        "login.provider: provider `idp` has no client_secret",
    );
    assert_error(
        &format!(
            "{base}    client_secret: s\nlogin:\n  provider: idp\n  cookie: {{secret: short}}\n"
        ),
        "login.cookie.secret: is 5 bytes: use at least 32 random bytes",
    );
    assert_error(
        &format!(
            "{base}    client_secret: s\nlogin:\n  provider: idp\n  cookie: {{secret: \"${{COOKIE_SECRET}}\", name: {}}}\n",
            "n".repeat(65)
        ),
        "login.cookie.name: is 65 bytes: at most 64",
    );
    let trusted = |origin: &str| {
        format!(
            "{base}    client_secret: s\nlogin:\n  provider: idp\n  cookie: {{secret: \"${{COOKIE_SECRET}}\"}}\n  trusted_origins: [\"{origin}\"]\n"
        )
    };
    assert_error(
        &trusted("portal.example.com"),
        "login.trusted_origins[0]: `portal.example.com` is not an origin",
    );
    assert_error(
        &trusted("https://portal.example.com:8443"),
        "login.trusted_origins[0]: host `portal.example.com:8443`: leave out the port",
    );
    assert_error(
        "login:\n  provider: idp\n",
        "login: missing required key `cookie`",
    );
    assert_error(
        "routes:\n  - name: a\n    login: true\n    policy: {allow: [{authenticated: true}]}\n",
        "routes[0].login: login: true needs a top-level `login` section",
    );
}

fn route(extra: &str) -> String {
    format!("routes:\n  - name: r\n    auth: none\n{extra}")
}

#[test]
fn route_errors() {
    assert_error(
        &route("    match: { path_prefix: api }\n"),
        "routes[0].match.path_prefix: `api` must start with `/`",
    );
    assert_error(
        &route("    match: { path: /a?b }\n"),
        "routes[0].match.path: `/a?b` contains `?`",
    );
    assert_error(
        &route("    match: { path_prefix: /a%2Fb }\n"),
        "contains %2F",
    );
    assert_ok(&format!(
        "server: {{allow_encoded_slashes: true}}\n{}",
        route("    match: { path_prefix: /a%2Fb }\n")
    ));
    assert_error(
        &route("    match: { hosts: ['api.example.com:8443'] }\n"),
        "leave out the port",
    );
    assert_error(
        &route("    match: { methods: [get] }\n"),
        "routes[0].match.methods[0]: HTTP methods are case-sensitive: write `GET`",
    );
    assert_error(
        &route("    match: { hosts: ['exa mple.com'] }\n"),
        "routes[0].match.hosts[0]: invalid host",
    );
    assert_error(
        &route(&format!(
            "    match: {{ path_regex: '^{}' }}\n",
            "a".repeat(2000)
        )),
        "routes[0].match.path_regex: is 2001 bytes; at most 1024",
    );
    assert_error(
        &route("    match: { path_regex: '^(a{1000}){1000}' }\n"),
        "routes[0].match.path_regex: invalid regex",
    );
    assert_error(
        &route("    upstream: 127.0.0.1:8000\n"),
        "routes[0].upstream: `127.0.0.1:8000` is not an absolute URL",
    );
    assert_error(
        &route("    upstream: [http://a:1, 'http://b:2?x=1']\n"),
        "routes[0].upstream[1]: `http://b:2?***` must not have a ?query",
    );
    assert_error(
        &route("    upstream: []\n"),
        "routes[0].upstream: empty list",
    );
    assert_error(&route("    upstream: https://a\n    upstream_tls: {ca_file: /nonexistent/ca.pem, cert_file: /nonexistent/c.pem}\n"), "routes[0].upstream_tls.ca_file: file `/nonexistent/ca.pem` does not exist");
    assert_error(&route("    upstream: https://a\n    upstream_tls: {ca_file: /nonexistent/ca.pem, cert_file: /nonexistent/c.pem}\n"), "routes[0].upstream_tls.cert_file: needs key_file as well");
    assert_error(
        &route("    rate_limit: {requests_per_second: 0}\n"),
        "routes[0].rate_limit.requests_per_second: must be a number greater than 0",
    );
    assert_error(
        &route("    rate_limit: {requests_per_second: .nan}\n"),
        "must be a number greater than 0",
    );
    assert_error(
        &route("    retries: 11\n"),
        "routes[0].retries: 11 is too many: at most 10",
    );
    assert_ok(&route("    retries: 10\n"));
    assert_error(
        &route("    timeout: 0ms\n"),
        "routes[0].timeout: must be greater than 0",
    );
    assert_error(
        &route("    mode: shadow\n"),
        "routes[0].mode: unknown value `shadow`",
    );
    let two = "routes:\n  - name: a\n    auth: none\n  - name: a\n    auth: none\n";
    assert_error(two, "portcullis.yaml:4:11: routes[1].name: duplicate route name `a` (already used by routes[0])");
    let implicit = "routes:\n  - auth: none\n  - name: route-0\n    auth: none\n";
    assert_error(implicit, "routes[1].name: duplicate route name `route-0`");
}

fn rule(rule: &str) -> String {
    format!(
        "providers:\n  - name: idp\n    issuer: https://idp.example.com\n    audiences: [a]\n\
         workload_identity: {{trust_domain: example.org, accept: [mtls]}}\n\
         server: {{tls: null}}\n\
         routes:\n  - name: r\n    policy:\n      allow:\n        - {rule}\n"
    )
}

#[test]
fn rule_errors() {
    assert_error(
        &rule("providers: [nope]"),
        "routes[0].policy.allow[0].providers[0]: unknown provider `nope`: expected one of idp",
    );
    assert_error(
        &rule("workloads: [api]"),
        "routes[0].policy.allow[0].workloads[0]: `api` is not a SPIFFE ID pattern",
    );
    assert_error(&rule("workloads: ['spiffe:///x']"), "has no trust domain");
    assert_error(
        &rule("groups: []"),
        "routes[0].policy.allow[0].groups: an empty list never matches",
    );
    assert_error(
        &rule("methods: [Get]"),
        "routes[0].policy.allow[0].methods[0]: HTTP methods are case-sensitive",
    );
    assert_error(
        &rule("paths: [api/*]"),
        "routes[0].policy.allow[0].paths[0]: `api/*` must start with `/`",
    );
    assert_ok(&rule("email_domains: ['@example.com']"));
    assert_error(
        &rule("email_domains: ['a@example.com']"),
        "`a@example.com` is not a domain name",
    );
    assert_error(
        &rule("scopes: ['orders:read orders:write']"),
        "is not one scope: list each scope separately",
    );
    assert_error(&rule("paths: ['/a**']"), "`**` must be a whole segment");
    assert_error(&rule("paths: ['*']"), "`*` must start with `/`");
    assert_error(
        &rule("workloads: ['spiffe://example.org/a**']"),
        "`**` must be a whole segment",
    );
    assert_error(&rule("emails: [a@b@c]"), "`a@b@c` is not an email address");
    assert_error(
        &rule("claims: {'a..b': x}"),
        "routes[0].policy.allow[0].claims[\"a..b\"]: invalid claim path `a..b`",
    );
    assert_error(
        &rule("claims: {roles: []}"),
        "routes[0].policy.allow[0].claims.roles: an empty list never matches",
    );
    assert_error(
        &rule("colour: blue"),
        "routes[0].policy.allow[0]: unknown key `colour`",
    );
    assert_error(
        "workload_identity: {trust_domain: 'spiffe://example.org'}\n",
        "workload_identity.trust_domain: write the trust domain without spiffe://, like `example.org`",
    );
}

#[test]
fn warnings_point_at_risky_settings() {
    // The route table anchors path_regex itself, so an unanchored one is fine.
    let loaded = assert_ok(&route("    match: { path_regex: 'admin' }\n"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);

    let loaded = assert_ok("server:\n  trusted_proxies: [0.0.0.0/0]\n");
    assert!(loaded.warnings[0]
        .to_string()
        .contains("trusts the forwarding headers of every client"));

    let loaded = assert_ok(&rule("{}"));
    assert!(loaded.warnings.iter().any(|w| w
        .message
        .contains("has no conditions, so it allows every request")));
}
