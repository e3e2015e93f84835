//! The loader end to end: valid configs load, every error class is reported as
//! `FILE:LINE:COL: message` at the offending value, all errors at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use portcullis_config::{load_file, load_str, ConfigErrors, Loaded};
use std::time::{Duration, Instant};

const FILE: &str = "portcullis.yaml";

const MINIMAL: &str = "\
server:
  listen: 127.0.0.1:8080
providers:
  - name: idp
    issuer: https://idp.example.com          # OIDC discovery at /.well-known/openid-configuration
    audiences: [orders-api]
routes:
  - name: orders
    match: { path_prefix: /api/orders }
    upstream: http://127.0.0.1:8000
    policy:
      allow:
        - groups: [admins]
        - scopes: [orders:read]
          methods: [GET, HEAD]
";

fn env(name: &str) -> Option<String> {
    match name {
        "COOKIE_SECRET" => Some("0123456789abcdef0123456789abcdef".to_string()),
        "RETRIES" => Some("3".to_string()),
        "DOMAIN" => Some("example.com".to_string()),
        "LONG" => Some("a-very-long-host-name.example.com".to_string()),
        "EVIL" => Some("x\"\n  evil: true # ]}".to_string()),
        _ => None,
    }
}

fn load(yaml: &str) -> Result<Loaded, ConfigErrors> {
    load_str(yaml, FILE, &env)
}

fn errors(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that some error contains `needle` (and shows them all when none does).
fn assert_error(yaml: &str, needle: &str) {
    let errors = errors(yaml);
    assert!(
        errors.iter().any(|e| e.contains(needle)),
        "no error contains {needle:?}; got:\n{}",
        errors.join("\n")
    );
}

fn assert_ok(yaml: &str) -> Loaded {
    match load(yaml) {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected a valid config, got:\n{e}\nfor:\n{yaml}"),
    }
}

#[test]
fn the_minimal_spec_config_loads_without_warnings() {
    let loaded = assert_ok(MINIMAL);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let config = loaded.config;
    assert_eq!(config.server.listen, "127.0.0.1:8080");
    assert_eq!(config.providers[0].name, "idp");
    assert!(config.providers[0].uses_discovery());
    let route = &config.routes[0];
    assert_eq!(route.matcher.path_prefix.as_deref(), Some("/api/orders"));
    let policy = route.policy.as_ref().unwrap();
    assert_eq!(policy.allow.len(), 2);
    assert_eq!(
        policy.allow[1].methods.as_deref(),
        Some(&["GET".to_string(), "HEAD".to_string()][..])
    );
}

#[test]
fn a_full_config_with_real_files_has_no_false_positives() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, "placeholder").unwrap();
        p.to_str().unwrap().to_string()
    };
    let (cert, key, ca, jwks) = (
        file("c.pem"),
        file("k.pem"),
        file("ca.pem"),
        file("jwks.json"),
    );
    let keys_dir = dir.path().join("keys").display().to_string();
    let audit = dir.path().join("audit.log").display().to_string();
    let yaml = format!(
        r#"
server:
  listen: 0.0.0.0:8443
  tls: {{ cert_file: {cert}, key_file: {key}, client_ca_file: {ca}, client_auth: optional }}
  trusted_proxies: [10.0.0.0/8, 192.0.2.7, "::1"]
  public_url: https://auth.example.com
  request_timeout: 30s
  max_header_bytes: 64KiB
  watch: true
admin: {{ listen: 127.0.0.1:9901 }}
ext_authz: {{ grpc_listen: 127.0.0.1:9001 }}
providers:
  - name: idp
    issuer: https://idp.example.com/realms/main
    audiences: [orders-api]
    algorithms: [RS256, ES256, EdDSA]
    token_types: [at+jwt]
    clock_skew: 30s
    claims:
      roles: realm_access.roles
      groups: resource_access.my-client.roles
      email: '["https://example.com/email"]'
    client_id: portcullis
    client_secret: ${{COOKIE_SECRET}}
  - name: files
    issuer: http://127.0.0.1:9000
    jwks_file: {jwks}
    allow_any_audience: true
  - name: hmac
    issuer: https://hmac.example.com
    discovery: false
    audiences: [x]
    algorithms: [HS256]
    shared_secret: ${{COOKIE_SECRET}}
    introspection: {{ endpoint: "https://hmac.example.com/introspect", client_id: a, client_secret: b }}
workload_identity:
  trust_domain: example.org
  accept: [mtls, linkerd, xfcc]
login:
  provider: idp
  cookie: {{ secret: "${{COOKIE_SECRET}}", domain: .example.com, ttl: 8h }}
  allowed_redirect_hosts: ["*.${{DOMAIN}}"]
assertion:
  algorithm: EdDSA
  signing_keys_dir: {keys_dir}
  ttl: 60s
shared_state: {{ redis: "rediss://cache:6379/0", on_redis_down: deny }}
audit: {{ sink: "file:{audit}" }}
policy: {{ explain_to_caller: full }}
routes:
  - name: orders
    match:
      hosts: [api.example.com, "*.${{DOMAIN}}"]
      path_regex: ^/api/orders/[0-9]+$
      methods: [GET, POST]
    upstream: [https://10.0.0.1:8443, https://10.0.0.2:8443]
    upstream_tls: {{ ca_file: {ca}, cert_file: {cert}, key_file: {key}, server_name: orders.internal }}
    login: true
    retries: ${{RETRIES}}
    timeout: 5s
    rate_limit: {{ requests_per_second: 50, burst: 100, key: client }}
    mode: audit
    policy:
      deny:
        - name: no-guests
          groups: [guests]
      allow:
        - workloads: ["spiffe://example.org/ns/*/sa/billing"]
        - providers: [idp, files]
          claims:
            '["https://example.com/tier"]': gold
            realm_access.roles: [a, b]
          email_domains: [example.com]
          emails: [a@example.com]
          paths: [/api/orders/*]
        - authenticated: true
  - name: public
    match: {{ path: /healthz }}
    upstream: http://127.0.0.1:8000
    auth: none
"#
    );
    let loaded = assert_ok(&yaml);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.routes[0].retries, 3);
    assert_eq!(c.routes[0].matcher.hosts[1], "*.example.com");
    assert_eq!(
        c.login.unwrap().cookie.secret,
        env("COOKIE_SECRET").unwrap()
    );
    assert_eq!(c.providers[1].jwks_file.as_deref(), Some(jwks.as_str()));
}

// ---- exact FILE:LINE:COL: message --------------------------------------------------

#[test]
fn unknown_key_at_a_nested_position() {
    let yaml = "\
server:
  listen: 127.0.0.1:8080
routes:
  - name: a
    auth: none
    match:
      path_prefix: /x
      methodz: [GET]
";
    assert_eq!(
        errors(yaml),
        [
            "portcullis.yaml:8:7: routes[0].match: unknown key `methodz`: expected one of hosts, \
          path_prefix, path, path_regex, methods"
        ]
    );
}

#[test]
fn unknown_top_level_key() {
    assert_eq!(
        errors("server: {}\nroutez: []\n"),
        [
            "portcullis.yaml:2:1: unknown key `routez`: expected one of server, admin, providers, \
          workload_identity, login, assertion, shared_state, audit, ext_authz, policy, routes"
        ]
    );
}

#[test]
fn invalid_regex_at_its_value() {
    let yaml = "\
routes:
  - name: a
    auth: none
    match: { path_regex: \"^/(a\" }
";
    assert_eq!(
        errors(yaml),
        ["portcullis.yaml:4:26: routes[0].match.path_regex: invalid regex: unclosed group"]
    );
}

#[test]
fn unset_environment_variable() {
    let yaml = "\
server:
  listen: 127.0.0.1:8080
  public_url: https://${NOPE}/
";
    assert_eq!(
        errors(yaml),
        [
            "portcullis.yaml:3:15: server.public_url: environment variable `NOPE` is not set: \
          export it or remove ${NOPE}"
        ]
    );
}

#[test]
fn every_unset_variable_is_reported() {
    let yaml =
        "server:\n  public_url: ${A}\nlogin:\n  provider: ${B}\n  cookie: {secret: \"${C}\"}\n";
    let errors = errors(yaml);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[2]
        .starts_with("portcullis.yaml:5:20: login.cookie.secret: environment variable `C`"));
}

#[test]
fn an_unset_variable_does_not_hide_other_errors_nor_cause_spurious_ones() {
    let yaml = "\
server:
  listen: ${NOPE}
  public_url: nope
providers:
  - name: ${PROVIDER}
    issuer: https://idp.example.com
    audiences: [a]
routes:
  - name: a
    retries: ${RETRIES_UNSET}
    policy: { allow: [ { providers: [idp] } ] }
";
    assert_eq!(
        errors(yaml),
        [
            "portcullis.yaml:2:11: server.listen: environment variable `NOPE` is not set: \
             export it or remove ${NOPE}",
            "portcullis.yaml:3:15: server.public_url: `nope` is not an absolute URL: write it \
             with a scheme, like https://host/path",
            "portcullis.yaml:5:11: providers[0].name: environment variable `PROVIDER` is not \
             set: export it or remove ${PROVIDER}",
            "portcullis.yaml:10:14: routes[0].retries: environment variable `RETRIES_UNSET` is \
             not set: export it or remove ${RETRIES_UNSET}",
        ]
    );
}

#[test]
fn duplicate_key() {
    let yaml = "\
server:
  listen: 127.0.0.1:8080
  listen: 127.0.0.1:8081
";
    assert_eq!(
        errors(yaml),
        ["portcullis.yaml:3:3: server: duplicate key `listen`: a key may appear only once in a mapping"]
    );
}

#[test]
fn yes_and_on_are_not_booleans() {
    assert_eq!(
        errors("server:\n  watch: yes\n"),
        ["portcullis.yaml:2:10: server.watch: expected `true` or `false` (yes/no/on/off are not booleans here)"]
    );
    assert_error(
        "routes:\n  - name: a\n    auth: none\n    forward_token: on\n",
        "routes[0].forward_token: expected `true` or `false`",
    );
    assert!(assert_ok("server:\n  watch: true\n").config.server.watch);
}

#[test]
fn auth_required_without_policy_is_a_located_warning() {
    let yaml = "\
routes:
  - name: a
    upstream: http://127.0.0.1:8000
";
    let loaded = assert_ok(yaml);
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "portcullis.yaml:2:5: routes[0]: auth is required and no allow rule exists, so this \
          route denies every request: add a policy"
        ]
    );
}

#[test]
fn unreadable_file_is_one_diagnostic() {
    let err = load_file(std::path::Path::new("/nonexistent/portcullis.yaml")).unwrap_err();
    assert_eq!(err.0.len(), 1);
    let line = err.to_string();
    assert!(
        line.starts_with("/nonexistent/portcullis.yaml:1:1: cannot read: "),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

#[test]
fn load_file_reads_and_interpolates_from_the_process_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.yaml");
    // PATH is set in every test environment; its value is not a valid listen address.
    std::fs::write(&path, "server:\n  listen: ${PATH}\n").unwrap();
    let err = load_file(&path).unwrap_err().to_string();
    assert!(
        err.contains(":2:11: server.listen: invalid address"),
        "{err}"
    );
    std::fs::write(&path, MINIMAL).unwrap();
    assert!(load_file(&path).is_ok());
}

// ---- several errors at once ---------------------------------------------------------

#[test]
fn several_errors_in_one_file_are_all_reported_in_file_order() {
    let yaml = "\
server:
  listen: localhost:8080
providers:
  - name: idp
    issuer: https://idp.example.com
    audiences: [api]
    algorithms: [RS256, HS256]
  - name: other
    issuer: https://other.example.com
    audience: [api]
routes:
  - name: a
    match: { path: /a, path_prefix: /b }
    upstream: http://127.0.0.1:8000
    policy: { allow: [ { groups: [x] } ] }
  - name: b
    retries: lots
  - name: c
    upstream: ftp://x
    auth: none
";
    let errors = errors(yaml);
    let expected_prefixes = [
        "portcullis.yaml:2:11: server.listen: invalid address `localhost:8080`",
        "portcullis.yaml:7:25: providers[0].algorithms[1]: `HS256` needs shared_secret",
        "portcullis.yaml:10:5: providers[1]: unknown key `audience`",
        "portcullis.yaml:13:24: routes[0].match.path_prefix: only one of path, path_prefix and path_regex",
        "portcullis.yaml:17:14: routes[1].retries: expected a whole number",
        "portcullis.yaml:19:15: routes[2].upstream: `ftp://x` must be an http:// or https:// URL",
    ];
    assert_eq!(
        errors.len(),
        expected_prefixes.len(),
        "{}",
        errors.join("\n")
    );
    for (error, prefix) in errors.iter().zip(expected_prefixes) {
        assert!(
            error.starts_with(prefix),
            "{error}\n  should start with\n{prefix}"
        );
    }
}

#[test]
fn one_bad_route_does_not_hide_another() {
    let yaml = "\
routes:
  - name: a
    auth: maybe
  - name: b
    match: { pat: /x }
  - name: c
    upstream: {}
";
    let errors = errors(yaml);
    assert_eq!(errors.len(), 3, "{}", errors.join("\n"));
    assert!(errors[0].starts_with("portcullis.yaml:3:11: routes[0].auth: unknown value `maybe`"));
    assert!(errors[1].starts_with("portcullis.yaml:5:14: routes[1].match: unknown key `pat`"));
    assert!(errors[2]
        .starts_with("portcullis.yaml:7:15: routes[2].upstream: expected a URL or a list of URLs"));
}

#[test]
fn errors_in_many_routes_are_found_without_one_parse_per_route() {
    let mut yaml = String::from("routes:\n");
    for i in 0..300 {
        let retries = if i == 50 || i == 250 { "lots" } else { "1" };
        yaml.push_str(&format!(
            "  - name: r{i}\n    auth: none\n    retries: {retries}\n    match: {{ path_prefix: /r{i} }}\n"
        ));
    }
    let started = Instant::now();
    let errors = errors(&yaml);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0]
        .starts_with("portcullis.yaml:204:14: routes[50].retries: expected a whole number"));
    assert!(errors[1].starts_with("portcullis.yaml:1004:14: routes[250].retries"));
}

// ---- interpolation -----------------------------------------------------------------

#[test]
fn environment_values_cannot_inject_yaml() {
    let yaml = "\
routes:
  - name: ${EVIL}
    auth: none
";
    let loaded = assert_ok(yaml);
    assert_eq!(
        loaded.config.routes[0].name.as_deref(),
        Some("x\"\n  evil: true # ]}")
    );
    // And in flow context, quoted, with more after it on the line.
    let yaml = "routes: [{name: \"${EVIL}\", auth: none}]\n";
    let loaded = assert_ok(yaml);
    assert_eq!(
        loaded.config.routes[0].name.as_deref(),
        Some("x\"\n  evil: true # ]}")
    );
}

#[test]
fn interpolated_values_feed_typed_settings() {
    let yaml = "\
routes:
  - name: a
    auth: none
    retries: ${RETRIES}
    match: { hosts: [\"*.${DOMAIN}\"] }
";
    let route = &assert_ok(yaml).config.routes[0];
    assert_eq!(route.retries, 3);
    assert_eq!(route.matcher.hosts, ["*.example.com"]);
}

#[test]
fn positions_after_an_expanded_value_point_at_the_original_text() {
    // `${LONG}` expands to a much longer string; the error after it on the same line
    // must still carry the column the user sees.
    let yaml = "\
routes:
  - name: a
    auth: none
    match: { hosts: [\"${LONG}\"], methodz: [GET] }
";
    assert_eq!(
        errors(yaml),
        [
            "portcullis.yaml:4:34: routes[0].match: unknown key `methodz`: expected one of hosts, \
          path_prefix, path, path_regex, methods"
        ]
    );
    let yaml = "\
routes:
  - name: a
    auth: none
    match: { hosts: [\"${LONG}\", \"bad host\"] }
";
    let errors = errors(yaml);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .starts_with("portcullis.yaml:4:33: routes[0].match.hosts[1]: invalid host `bad host`"),
        "{}",
        errors[0]
    );
}

#[test]
fn unquoted_references_in_flow_collections_get_a_hint() {
    assert_error(
        "login:\n  provider: idp\n  cookie: {secret: ${COOKIE_SECRET}}\n",
        "quote values that use ${NAME}",
    );
}

#[test]
fn dollar_dollar_is_a_literal_and_other_dollars_are_left_alone() {
    let yaml = "routes:\n  - name: \"$${X} $Y ^a$\"\n    auth: none\n";
    assert_eq!(
        assert_ok(yaml).config.routes[0].name.as_deref(),
        Some("${X} $Y ^a$")
    );
}

// ---- resource limits ---------------------------------------------------------------

#[test]
fn billion_laughs_is_refused_quickly() {
    let mut yaml = String::from("lol:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let (prev, name) = (pair[0], pair[1]);
        let refs = vec![format!("*{prev}"); 9].join(", ");
        yaml.push_str(&format!("  {name}: &{name} [{refs}]\n"));
    }
    // Claim values are buffered by serde (untagged enum), which would expand *i fully.
    yaml.push_str("routes:\n  - name: r\n    policy: { allow: [ { claims: { x: *i } } ] }\n");
    let started = Instant::now();
    let errors = errors(&yaml);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        errors.iter().any(|e| e.contains("refused")),
        "{}",
        errors.join("\n")
    );
}

#[test]
fn deep_nesting_and_second_documents_are_refused() {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let errors = errors(&format!("routes: {deep}\n"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("portcullis.yaml:1:"));
    assert_error(
        "server: {}\n---\nserver: {}\n",
        "portcullis.yaml:2:1: only one YAML document",
    );
}

#[test]
fn empty_files_and_syntax_errors() {
    assert_error("", "portcullis.yaml:1:1: the config is empty");
    assert_error("# nothing\n", "the config is empty");
    let errors = errors("server:\n  listen: [127.0.0.1\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("portcullis.yaml:"));
}

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
        "routes[0].upstream[1]: `http://b:2?x=1` must not have a ?query",
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
    assert_error(
        &rule("email_domains: ['@example.com']"),
        "write the domain without `@`: `example.com`",
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
    let loaded = assert_ok(&route("    match: { path_regex: 'admin' }\n"));
    let w: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0]
        .starts_with("portcullis.yaml:4:26: routes[0].match.path_regex: `admin` is not anchored"));

    let loaded = assert_ok("server:\n  trusted_proxies: [0.0.0.0/0]\n");
    assert!(loaded.warnings[0]
        .to_string()
        .contains("trusts the forwarding headers of every client"));

    let loaded = assert_ok(&rule("{}"));
    assert!(loaded.warnings.iter().any(|w| w
        .message
        .contains("has no conditions, so it allows every request")));
}
