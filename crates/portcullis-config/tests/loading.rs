//! The loader end to end: valid configs load, errors are reported as
//! `FILE:LINE:COL: message` at the offending value, all of them at once, and
//! `${NAME}` and resource limits behave.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use portcullis_config::load_file;
use std::time::{Duration, Instant};

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
          workload_identity, login, assertion, shared_state, audit, ext_authz, policy, telemetry, \
          credentials, routes"
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
