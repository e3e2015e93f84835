//! `credentials` and `routes[].upstream_auth` validation (SPEC §9).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_error, assert_ok, errors};
use portcullis_config::load_str;

const PROVIDERS: &str = "\
providers:
  - name: idp
    issuer: https://idp.example.com
    audiences: [orders-api]
  - name: local
    issuer: https://local.example.com
    jwks_file: /nonexistent-but-reported-elsewhere.json
    audiences: [orders-api]
";

fn config(credentials: &str, credential_ref: &str) -> String {
    format!(
        "{PROVIDERS}credentials:\n{credentials}routes:\n  - name: partner\n    match: {{ path_prefix: /p }}\n    upstream: http://127.0.0.1:9000\n    upstream_auth: {{ credential: {credential_ref} }}\n    policy:\n      allow:\n        - workloads: [spiffe://cluster.local/ns/billing/**]\n"
    )
}

fn basic(name: &str) -> String {
    format!("  - name: {name}\n    token_endpoint: https://idp.example.com/oauth2/token\n    client_id: billing\n    client_secret: s3cret-value\n")
}

#[test]
fn a_client_secret_credential_is_accepted_and_its_secret_stays_out_of_debug() {
    let text = config(&basic("partner-api"), "partner-api");
    // Other errors come from the `local` provider's missing JWKS file only.
    let errs = errors(&text);
    assert!(
        errs.iter().all(|e| e.contains("providers[1].jwks_file")),
        "{errs:?}"
    );
    let ok = format!(
        "providers:\n  - name: idp\n    issuer: https://idp.example.com\n    audiences: [a]\ncredentials:\n{}",
        basic("partner-api")
    );
    let loaded = assert_ok(&ok);
    let debug = format!("{:?}", loaded.config.credentials);
    assert!(!debug.contains("s3cret-value"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}

#[test]
fn unknown_credential_names_are_reported_at_the_reference() {
    let errs = errors(&config(&basic("partner-api"), "partner"));
    let hit = errs
        .iter()
        .find(|e| e.contains("unknown credential `partner`"))
        .unwrap_or_else(|| panic!("{errs:?}"));
    // FILE:LINE:COL of the value in `upstream_auth: { credential: partner }`.
    assert!(
        hit.starts_with("portcullis.yaml:18:34: routes[0].upstream_auth.credential:"),
        "{hit}"
    );
    assert!(hit.contains("known: partner-api"), "{hit}");
}

#[test]
fn names_and_endpoints() {
    let two = format!("{}{}", basic("a"), basic("a"));
    assert_error(
        &config(&two, "a"),
        "credentials[1].name: duplicate credential name `a`",
    );
    assert_error(
        &config("  - name: a\n    client_id: c\n    client_secret: s\n", "a"),
        "credentials[0]: needs token_endpoint",
    );
    assert_error(
        &config("  - name: a\n    token_endpoint: https://x/t\n    provider: idp\n    client_id: c\n    client_secret: s\n", "a"),
        "credentials[0].provider: set either token_endpoint or provider",
    );
    assert_error(
        &config("  - name: a\n    token_endpoint: /oauth2/token\n    client_id: c\n    client_secret: s\n", "a"),
        "credentials[0].token_endpoint: `/oauth2/token` is not an absolute URL",
    );
    assert_error(
        &config("  - name: a\n    token_endpoint: https://u:p@x/t\n    client_id: c\n    client_secret: s\n", "a"),
        "contains credentials",
    );
    assert_error(
        &config(
            "  - name: a\n    provider: nope\n    client_id: c\n    client_secret: s\n",
            "a",
        ),
        "credentials[0].provider: unknown provider `nope`",
    );
    assert_error(
        &config(
            "  - name: a\n    provider: local\n    client_id: c\n    client_secret: s\n",
            "a",
        ),
        "provider `local` does not use discovery",
    );
    let via_discovery = config(
        "  - name: a\n    provider: idp\n    client_id: c\n    client_secret: s\n",
        "a",
    );
    assert!(errors(&via_discovery)
        .iter()
        .all(|e| !e.contains("credentials")));
}

#[test]
fn auth_methods_need_their_material() {
    assert_error(
        &config(
            "  - name: a\n    token_endpoint: https://x/t\n    client_id: c\n",
            "a",
        ),
        "credentials[0]: client_secret_basic needs client_secret",
    );
    assert_error(
        &config("  - name: a\n    token_endpoint: https://x/t\n    client_id: c\n    auth_method: client_secret_post\n", "a"),
        "client_secret_post needs client_secret",
    );
    assert_error(
        &config("  - name: a\n    token_endpoint: https://x/t\n    client_id: c\n    auth_method: private_key_jwt\n", "a"),
        "private_key_jwt needs private_key_file",
    );
    assert_error(
        &config("  - name: a\n    token_endpoint: https://x/t\n    client_id: c\n    client_secret: s\n    auth_method: tls_client_auth\n", "a"),
        "credentials[0].auth_method: unknown auth_method `tls_client_auth`",
    );
    assert_error(
        &config("  - name: a\n    token_endpoint: https://x/t\n    client_id: ''\n    client_secret: s\n", "a"),
        "credentials[0].client_id: must not be empty",
    );
    assert_error(
        &config("  - name: a\n    token_endpoint: https://x/t\n    client_id: c\n    client_secret: s\n    scopes: ['a b']\n", "a"),
        "credentials[0].scopes[0]: `a b` is not a scope",
    );
}

#[test]
fn private_key_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let encrypted = dir.path().join("enc.pem");
    std::fs::write(&encrypted, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nx\n").unwrap();
    let entry = |file: &std::path::Path| {
        format!(
            "  - name: a\n    token_endpoint: https://x/t\n    client_id: c\n    private_key_file: {}\n",
            file.display()
        )
    };
    let ok = config(&entry(&key), "a");
    assert!(errors(&ok).iter().all(|e| !e.contains("credentials")));
    assert_error(&config(&entry(&junk), "a"), "holds no PEM private key");
    assert_error(&config(&entry(&encrypted), "a"), "holds an encrypted key");
    assert_error(
        &config(&entry(std::path::Path::new("/nonexistent/k.pem")), "a"),
        "credentials[0].private_key_file: file `/nonexistent/k.pem` does not exist",
    );
    assert_error(
        &config(&format!("{}    client_secret: s\n", entry(&key)), "a"),
        "private_key_jwt signs with private_key_file; remove client_secret",
    );
}

#[test]
fn ca_files_must_hold_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("ca.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let text = format!(
        "providers:\n  - name: idp\n    issuer: https://idp.example.com\n    audiences: [a]\n    ca_file: {0}\ncredentials:\n  - name: a\n    token_endpoint: https://x/t\n    client_id: c\n    client_secret: s\n    ca_file: {0}\n",
        junk.display()
    );
    let errs = errors(&text);
    for at in ["providers[0].ca_file", "credentials[0].ca_file"] {
        assert!(
            errs.iter()
                .any(|e| e.contains(at) && e.contains("holds no PEM certificate")),
            "{at}: {errs:?}"
        );
    }
}

#[test]
fn secrets_come_from_the_environment() {
    let text = "providers:\n  - name: idp\n    issuer: https://idp.example.com\n    audiences: [a]\ncredentials:\n  - name: a\n    token_endpoint: https://x/t\n    client_id: c\n    client_secret: ${PARTNER_SECRET}\n";
    let env = |name: &str| (name == "PARTNER_SECRET").then(|| "from-env".to_string());
    let loaded = load_str(text, "portcullis.yaml", &env).unwrap();
    assert_eq!(
        loaded.config.credentials[0].client_secret.as_deref(),
        Some("from-env")
    );
    let unset = load_str(text, "portcullis.yaml", &|_: &str| None).unwrap_err();
    assert!(unset.to_string().contains("PARTNER_SECRET"), "{unset}");
}

#[test]
fn a_broken_credentials_section_does_not_make_references_unknown() {
    let errs = errors(&config("  - name: a\n    bogus_key: 1\n", "a"));
    assert!(errs.iter().any(|e| e.contains("bogus_key")), "{errs:?}");
    assert!(
        errs.iter().all(|e| !e.contains("unknown credential")),
        "{errs:?}"
    );
}
