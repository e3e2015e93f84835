//! Helpers shared by the loader tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use portcullis_config::{load_str, ConfigErrors, Loaded};

pub const FILE: &str = "portcullis.yaml";

pub const MINIMAL: &str = "\
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

pub fn env(name: &str) -> Option<String> {
    match name {
        "COOKIE_SECRET" => Some("0123456789abcdef0123456789abcdef".to_string()),
        "RETRIES" => Some("3".to_string()),
        "DOMAIN" => Some("example.com".to_string()),
        "LONG" => Some("a-very-long-host-name.example.com".to_string()),
        "EVIL" => Some("x\"\n  evil: true # ]}".to_string()),
        _ => None,
    }
}

pub fn load(yaml: &str) -> Result<Loaded, ConfigErrors> {
    load_str(yaml, FILE, &env)
}

pub fn errors(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that some error contains `needle` (and shows them all when none does).
pub fn assert_error(yaml: &str, needle: &str) {
    let errors = errors(yaml);
    assert!(
        errors.iter().any(|e| e.contains(needle)),
        "no error contains {needle:?}; got:\n{}",
        errors.join("\n")
    );
}

pub fn assert_ok(yaml: &str) -> Loaded {
    match load(yaml) {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected a valid config, got:\n{e}\nfor:\n{yaml}"),
    }
}
