//! The developer commands of SPEC §1 — `keys generate`, `token mint`, `token
//! inspect`, `explain` — driven through the real binary.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

const ISSUER: &str = "https://idp.invalid/realms/shop";

/// The binary, with no configuration leaking in from the environment.
fn portcullis() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.env_remove("PORTCULLIS_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("PORTCULLIS_LOG")
        .env("RUST_BACKTRACE", "1");
    cmd
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let out: Output = portcullis().args(args).output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    // Whatever happens, never a panic or a backtrace (SPEC §1).
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("stack backtrace"),
        "{args:?}: {}",
        run.stderr
    );
    run
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `keys generate` into `dir/name`; returns (private.pem, jwks.json).
fn keygen(dir: &Path, name: &str, alg: &str) -> (PathBuf, PathBuf) {
    let out = dir.join(name);
    let r = run(&["keys", "generate", "--alg", alg, "--out", s(&out)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    (out.join("private.pem"), out.join("jwks.json"))
}

fn mint(key: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "token",
        "mint",
        "--key",
        s(key),
        "--iss",
        ISSUER,
        "--sub",
        "alice",
        "--aud",
        "orders-api",
    ];
    args.extend_from_slice(extra);
    let r = run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let token = r.stdout.trim().to_string();
    assert_eq!(r.stdout, format!("{token}\n"), "the token alone on stdout");
    assert_eq!(token.split('.').count(), 3);
    token
}

/// The JSON block after `label:\n` in `token inspect` output.
fn inspect_block(stdout: &str, label: &str) -> Value {
    let start = stdout.find(&format!("{label}:\n{{")).unwrap() + label.len() + 2;
    let rest = &stdout[start..];
    let end = rest.find("\n}").unwrap() + 2;
    serde_json::from_str(&rest[..end]).unwrap()
}

#[test]
fn keys_generate_then_mint_then_inspect_for_every_algorithm() {
    let dir = TempDir::new().unwrap();
    for alg in ["ES256", "RS256", "EdDSA"] {
        let (key, jwks) = keygen(dir.path(), alg, alg);
        let pem = std::fs::read_to_string(&key).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "PKCS#8");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{alg} private key mode");
        }
        let set: Value = serde_json::from_str(&std::fs::read_to_string(&jwks).unwrap()).unwrap();
        let jwk = &set["keys"][0];
        assert_eq!(jwk["alg"], alg);
        assert!(jwk["kid"].as_str().is_some_and(|k| !k.is_empty()));
        assert!(jwk.get("d").is_none(), "no private material in the JWKS");

        let token = mint(&key, &["--ttl", "5m"]);
        let r = run(&["token", "inspect", &token]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let header = inspect_block(&r.stdout, "header");
        assert_eq!(header["alg"], alg);
        assert_eq!(header["kid"], jwk["kid"]);
        let claims = inspect_block(&r.stdout, "claims");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["aud"], "orders-api");
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, 300);
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
        assert!(
            r.stdout.contains("expires in 4m") || r.stdout.contains("expires in 5m"),
            "{}",
            r.stdout
        );
        assert!(r.stdout.contains("issued "), "{}", r.stdout);
        assert!(
            !r.stdout.contains("signature:"),
            "no verification without --jwks"
        );

        let r = run(&["token", "inspect", "--jwks", s(&jwks), &token]);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("\nsignature: valid\n"), "{}", r.stdout);
    }
}

#[test]
fn inspect_with_jwks_refuses_another_key_and_a_tampered_payload() {
    let dir = TempDir::new().unwrap();
    let (key, jwks) = keygen(dir.path(), "a", "ES256");
    let (other_key, _) = keygen(dir.path(), "b", "ES256");

    // Signed by another key: its kid is not in the JWKS.
    let foreign = mint(&other_key, &[]);
    let r = run(&["token", "inspect", "--jwks", s(&jwks), &foreign]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("signature: invalid: unknown_key: no key with kid"),
        "{}",
        r.stdout
    );

    // Another key, same kid: the signature itself must fail.
    let kid = serde_json::from_str::<Value>(&std::fs::read_to_string(&jwks).unwrap()).unwrap()
        ["keys"][0]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = mint(&other_key, &["--kid", &kid]);
    let r = run(&["token", "inspect", "--jwks", s(&jwks), &forged]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    assert!(
        r.stdout.contains("signature: invalid: bad_signature"),
        "{}",
        r.stdout
    );

    // A tampered payload: alice's header and signature around mallory's claims.
    let alice = mint(&key, &[]);
    let mallory = mint(&key, &["--claim", "sub=mallory"]);
    let parts: Vec<&str> = alice.split('.').collect();
    let mallory_payload = mallory.split('.').nth(1).unwrap();
    let tampered = format!("{}.{}.{}", parts[0], mallory_payload, parts[2]);
    let r = run(&["token", "inspect", "--jwks", s(&jwks), &tampered]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    assert!(
        r.stdout.contains("signature: invalid: bad_signature"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("\"sub\": \"mallory\""),
        "still decoded: {}",
        r.stdout
    );

    // A valid signature on an expired token: the signature is fine, the token is not.
    let expired = mint(&key, &["--claim", "exp=1000", "--claim", "iat=900"]);
    let r = run(&["token", "inspect", "--jwks", s(&jwks), &expired]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("expired "), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("signature: valid\ntoken: rejected: token_expired"),
        "{}",
        r.stdout
    );
}

#[test]
fn mint_parses_claim_values_as_json_when_they_are_json() {
    let dir = TempDir::new().unwrap();
    let (key, _) = keygen(dir.path(), "k", "EdDSA");
    let token = mint(
        &key,
        &[
            "--claim",
            "level=3",
            "--claim",
            "admin=true",
            "--claim",
            r#"tags=["a",1]"#,
            "--claim",
            r#"realm_access={"roles":["x"]}"#,
            "--claim",
            "tier=gold",
            "--claim",
            r#"quoted="7""#,
            "--claim",
            "eq=a=b",
            "--groups",
            "admins, dev",
            "--scope",
            "orders:read orders:write",
            "--kid",
            "my-key",
        ],
    );
    let r = run(&["token", "inspect", &token]);
    assert_eq!(r.code, 0);
    let claims = inspect_block(&r.stdout, "claims");
    assert_eq!(claims["level"], 3);
    assert_eq!(claims["admin"], true);
    assert_eq!(claims["tags"], serde_json::json!(["a", 1]));
    assert_eq!(claims["realm_access"]["roles"][0], "x");
    assert_eq!(claims["tier"], "gold");
    assert_eq!(claims["quoted"], "7");
    assert_eq!(claims["eq"], "a=b");
    assert_eq!(claims["groups"], serde_json::json!(["admins", "dev"]));
    assert_eq!(claims["scope"], "orders:read orders:write");
    assert_eq!(inspect_block(&r.stdout, "header")["kid"], "my-key");

    let bad = run(&[
        "token",
        "mint",
        "--key",
        s(&key),
        "--iss",
        ISSUER,
        "--sub",
        "a",
        "--claim",
        "novalue",
    ]);
    assert_eq!(bad.code, 1);
    assert_eq!(bad.stderr.lines().count(), 1, "{}", bad.stderr);
}

/// A base64url kid (or a tampered token) may start with `-`; it is a value, not a flag.
#[test]
fn values_starting_with_a_hyphen_are_values() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keygen(dir.path(), "k", "ES256");
    let token = mint(&key, &["--kid", "-Abc_def"]);
    let r = run(&["token", "inspect", &token]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("-Abc_def"), "{}", r.stdout);
    let r = run(&["token", "inspect", "-not.a.token"]);
    assert_ne!(r.code, 0);
    assert!(!r.stderr.contains("unexpected argument"), "{}", r.stderr);
}

#[test]
fn keys_generate_refuses_to_overwrite() {
    let dir = TempDir::new().unwrap();
    let (key, _) = keygen(dir.path(), "k", "ES256");
    let before = std::fs::read_to_string(&key).unwrap();
    let r = run(&[
        "keys",
        "generate",
        "--alg",
        "RS256",
        "--out",
        s(&dir.path().join("k")),
    ]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), before, "untouched");

    // Only jwks.json present still counts: no half-overwritten pair.
    let lone = dir.path().join("lone");
    std::fs::create_dir(&lone).unwrap();
    std::fs::write(lone.join("jwks.json"), "{}").unwrap();
    let r = run(&["keys", "generate", "--out", s(&lone)]);
    assert_eq!(r.code, 1);
    assert!(!lone.join("private.pem").exists());
}

#[test]
fn malformed_input_is_one_line_and_a_nonzero_exit() {
    for args in [
        &["token", "inspect", "not-a-token"][..],
        &["token", "inspect", "a.b.c"],
        &[
            "token",
            "mint",
            "--key",
            "/nonexistent/key.pem",
            "--iss",
            "x",
            "--sub",
            "y",
        ],
        &[
            "token",
            "mint",
            "--key",
            "/dev/null",
            "--iss",
            "x",
            "--sub",
            "y",
            "--ttl",
            "5",
        ],
        &["keys", "generate", "--alg", "HS256", "--out", "/tmp/x"],
        &["explain", "--method", "GET"],
        &["token"],
        &["no-such-command"],
    ] {
        let r = run(args);
        assert_ne!(r.code, 0, "{args:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
        assert!(r.stderr.starts_with("error: "), "{args:?}: {}", r.stderr);
    }
    for args in [
        &["--version"][..],
        &["token", "mint", "--version"],
        &["token", "inspect", "--help"],
        &["keys", "generate", "--help"],
        &["explain", "--version"],
    ] {
        let r = run(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert!(r.stdout.contains("portcullis"), "{args:?}: {}", r.stdout);
    }
}

// ---------------------------------------------------------------------------
// explain

/// A config with one provider whose keys come from discovery (never reachable in
/// tests: `.invalid`), so every token test must go through `--jwks`.
fn explain_config(dir: &Path, provider_keys: &str) -> PathBuf {
    let path = dir.join("portcullis.yaml");
    std::fs::write(
        &path,
        format!(
            r#"providers:
  - name: shop-idp
    issuer: {ISSUER}
    audiences: [orders-api]
{provider_keys}
routes:
  - name: orders
    match: {{ path_prefix: /api/orders }}
    upstream: http://127.0.0.1:9
    policy:
      deny:
        - name: no-interns
          groups: [interns]
      allow:
        - name: admins
          groups: [admins]
        - name: readers
          scopes: [orders:read]
          methods: [GET, HEAD]
  - name: health
    match: {{ path: /healthz }}
    upstream: http://127.0.0.1:9
    auth: none
"#
        ),
    )
    .unwrap();
    path
}

fn explain(config: &Path, args: &[&str]) -> Run {
    let mut all = vec!["explain", "-c", s(config)];
    all.extend_from_slice(args);
    run(&all)
}

#[test]
fn explain_allows_with_claims() {
    let dir = TempDir::new().unwrap();
    let cfg = explain_config(dir.path(), "");
    let r = explain(
        &cfg,
        &[
            "--method",
            "DELETE",
            "--url",
            "https://shop.example/api/orders/7",
            "--claims",
            &format!(r#"{{"iss":"{ISSUER}","sub":"alice","groups":["admins"]}}"#),
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout,
        format!(
            "request: DELETE shop.example /api/orders/7
caller: user alice (provider shop-idp)
  issuer: {ISSUER}
  groups: admins
route: orders (routes[0])
deny[0] no-interns: no match
  ✗ groups: requires any of [interns]; actual [admins]
allow[0] admins: match
  ✓ groups: requires any of [admins]; actual [admins]
decided by rule admins
allow
"
        )
    );
}

#[test]
fn explain_denies_with_reason_and_each_condition() {
    let dir = TempDir::new().unwrap();
    let cfg = explain_config(dir.path(), "");
    let r = explain(
        &cfg,
        &[
            "-X",
            "POST",
            "--url",
            "https://shop.example/api/orders",
            "--claims",
            r#"{"sub":"bob","groups":["users"],"scope":"orders:read"}"#,
        ],
    );
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    for line in [
        "allow[0] admins: no match",
        "  ✗ groups: requires any of [admins]; actual [users]",
        "allow[1] readers: no match",
        "  ✗ methods: requires any of [GET, HEAD]; actual [POST]",
        "  ✓ scopes: requires all of [orders:read]; actual [orders:read]",
        "no allow rule matched",
    ] {
        assert!(
            r.stdout.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            r.stdout
        );
    }
    assert!(r.stdout.ends_with("deny: forbidden\n"), "{}", r.stdout);
    // No provider has that (absent) issuer: said once, on stderr.
    assert!(r.stderr.contains("default claims mapping"), "{}", r.stderr);

    // A deny rule decides before any allow rule.
    let r = explain(
        &cfg,
        &[
            "-X",
            "GET",
            "--url",
            "https://shop.example/api/orders",
            "--claims",
            r#"{"sub":"i","groups":["interns","admins"]}"#,
        ],
    );
    assert_eq!(r.code, 3);
    assert!(
        r.stdout
            .contains("decided by rule no-interns\ndeny: forbidden\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn explain_insufficient_scope_and_no_route() {
    let dir = TempDir::new().unwrap();
    let cfg = explain_config(dir.path(), "");
    let r = explain(
        &cfg,
        &[
            "-X",
            "GET",
            "--url",
            "https://shop.example/api/orders",
            "--claims",
            r#"{"sub":"bob","scope":"profile"}"#,
        ],
    );
    assert_eq!(r.code, 3);
    assert!(
        r.stdout.contains(
            "  ✗ scopes: requires all of [orders:read]; actual [profile]; missing [orders:read]\n"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .ends_with("missing scopes: [orders:read]\ndeny: insufficient_scope\n"),
        "{}",
        r.stdout
    );

    let r = explain(
        &cfg,
        &[
            "-X",
            "GET",
            "--url",
            "https://shop.example/nowhere",
            "--claims",
            r#"{"sub":"bob"}"#,
        ],
    );
    assert_eq!(r.code, 3);
    assert!(r.stdout.contains("route: none matched\n"), "{}", r.stdout);
    assert!(r.stdout.ends_with("deny: no_route\n"), "{}", r.stdout);

    // Paths are judged normalized, exactly as the proxy would.
    let r = explain(
        &cfg,
        &[
            "-X",
            "GET",
            "--url",
            "https://shop.example/public/../api/%6Frders",
            "--claims",
            r#"{"sub":"bob","scope":"orders:read"}"#,
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout
            .starts_with("request: GET shop.example /api/orders\n"),
        "{}",
        r.stdout
    );

    // No credential on an auth: required route: the proxy's 401, not a policy 403.
    let r = explain(
        &cfg,
        &["-X", "GET", "--url", "https://shop.example/api/orders"],
    );
    assert_eq!(r.code, 3);
    assert!(r.stdout.ends_with("deny: missing_token\n"), "{}", r.stdout);

    // auth: none with no policy: everyone passes.
    let r = explain(&cfg, &["-X", "GET", "--url", "http://shop.example/healthz"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn explain_json_is_one_object_with_decision_reason_route_rules() {
    let dir = TempDir::new().unwrap();
    let cfg = explain_config(dir.path(), "");
    // --workload is a verified peer's identity: it counts only where the proxy
    // would accept one (a workload_identity section, its trust domain).
    let plain = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{plain}workload_identity:\n  trust_domain: example.org\n  accept: [mtls]\n"),
    )
    .unwrap();
    let r = explain(
        &cfg,
        &[
            "-X",
            "GET",
            "--url",
            "https://shop.example/api/orders",
            "--claims",
            &format!(
                r#"{{"iss":"{ISSUER}","sub":"bob","scope":"profile","email":"bob@example.com"}}"#
            ),
            "--workload",
            "spiffe://example.org/ns/shop/sa/web",
            "--json",
        ],
    );
    assert_eq!(r.code, 3);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["reason"], "insufficient_scope");
    assert_eq!(v["route"], "orders");
    assert_eq!(v["route_index"], 0);
    assert_eq!(v["missing_scopes"], serde_json::json!(["orders:read"]));
    let rules = v["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[2]["rule"], "readers");
    assert_eq!(rules[2]["matched"], false);
    let scopes = rules[2]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["condition"] == "scopes")
        .unwrap();
    assert_eq!(scopes["passed"], false);
    assert_eq!(scopes["missing"], serde_json::json!(["orders:read"]));
    assert_eq!(v["identity"]["subject"], "bob");
    assert_eq!(v["identity"]["provider"], "shop-idp");
    assert_eq!(v["identity"]["email"], "bob@example.com");
    assert_eq!(
        v["identity"]["workload"],
        "spiffe://example.org/ns/shop/sa/web"
    );
    assert_eq!(v["request"]["path"], "/api/orders");

    // Another trust domain, or no workload_identity at all: not the caller's
    // workload, as the proxy would not take it either, and a note says why.
    let args = |id: &'static str| {
        [
            "-X",
            "GET",
            "--url",
            "https://shop.example/api/orders",
            "--claims",
            r#"{"sub":"bob"}"#,
            "--workload",
            id,
            "--json",
        ]
    };
    let r = explain(&cfg, &args("spiffe://other.org/ns/shop/sa/web"));
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["identity"]["workload"], Value::Null);
    assert!(
        v["notes"].to_string().contains("trust domain example.org"),
        "{v}"
    );
    std::fs::write(&cfg, &plain).unwrap();
    let r = explain(&cfg, &args("spiffe://example.org/ns/shop/sa/web"));
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["identity"]["workload"], Value::Null);
    assert!(
        v["notes"].to_string().contains("no workload_identity"),
        "{v}"
    );
}

#[test]
fn explain_verifies_tokens_against_a_jwks_file() {
    let dir = TempDir::new().unwrap();
    let (key, jwks) = keygen(dir.path(), "k", "ES256");
    let (other, _) = keygen(dir.path(), "o", "ES256");
    // Discovery at an unreachable issuer: only --jwks can supply keys.
    let cfg = explain_config(dir.path(), "");
    let url = "https://shop.example/api/orders/1";

    let good = mint(&key, &["--groups", "admins"]);
    let r = explain(
        &cfg,
        &[
            "-X",
            "DELETE",
            "--url",
            url,
            "--token",
            &good,
            "--jwks",
            s(&jwks),
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("caller: user alice (provider shop-idp)\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("  token: expires in "), "{}", r.stdout);
    assert!(
        r.stdout.ends_with("decided by rule admins\nallow\n"),
        "{}",
        r.stdout
    );

    // The same token as an Authorization header.
    let header = format!("Authorization: Bearer {good}");
    let r = explain(
        &cfg,
        &[
            "-X",
            "DELETE",
            "--url",
            url,
            "-H",
            &header,
            "--jwks",
            s(&jwks),
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    // A valid token the policy refuses: a policy denial, with the conditions.
    let reader = mint(&key, &["--scope", "profile"]);
    let r = explain(
        &cfg,
        &[
            "-X",
            "GET",
            "--url",
            url,
            "--token",
            &reader,
            "--jwks",
            s(&jwks),
        ],
    );
    assert_eq!(r.code, 3);
    assert!(
        r.stdout.ends_with("deny: insufficient_scope\n"),
        "{}",
        r.stdout
    );

    let expired = mint(
        &key,
        &[
            "--groups", "admins", "--claim", "exp=1000", "--claim", "iat=900",
        ],
    );
    let r = explain(
        &cfg,
        &[
            "-X",
            "DELETE",
            "--url",
            url,
            "--token",
            &expired,
            "--jwks",
            s(&jwks),
        ],
    );
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("token rejected"))
        .unwrap();
    assert!(
        line.starts_with("token rejected by provider shop-idp: token_expired: token has expired"),
        "{line}"
    );
    assert!(r.stdout.ends_with("deny: token_expired\n"), "{}", r.stdout);
    let r = explain(
        &cfg,
        &[
            "-X",
            "DELETE",
            "--url",
            url,
            "--token",
            &expired,
            "--jwks",
            s(&jwks),
            "--json",
        ],
    );
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (v["decision"].as_str(), v["reason"].as_str()),
        (Some("deny"), Some("token_expired"))
    );
    assert_eq!(v["token_error"]["reason"], "token_expired");
    assert_eq!(v["token_error"]["provider"], "shop-idp");
    assert_eq!(v["route"], "orders");

    let wrong_aud = mint(&key, &["--claim", "aud=billing-api"]);
    let r = explain(
        &cfg,
        &[
            "-X",
            "GET",
            "--url",
            url,
            "--token",
            &wrong_aud,
            "--jwks",
            s(&jwks),
        ],
    );
    assert_eq!(r.code, 3);
    assert!(r.stdout.ends_with("deny: wrong_audience\n"), "{}", r.stdout);

    let forged = mint(&other, &[]);
    let r = explain(
        &cfg,
        &[
            "-X",
            "GET",
            "--url",
            url,
            "--token",
            &forged,
            "--jwks",
            s(&jwks),
        ],
    );
    assert_eq!(r.code, 3);
    assert!(
        r.stdout.contains(": unknown_key: no key with kid"),
        "{}",
        r.stdout
    );

    // The provider's own jwks_file works without --jwks.
    let cfg = explain_config(
        dir.path(),
        &format!("    discovery: false\n    jwks_file: {}", s(&jwks)),
    );
    let r = explain(&cfg, &["-X", "DELETE", "--url", url, "--token", &good]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

/// A token that cannot even be parsed is a rejected credential, as the proxy would
/// answer it (401): exit 3, with the reason on one line.
#[test]
fn explain_garbage_token_is_a_rejection() {
    let dir = TempDir::new().unwrap();
    let cfg = explain_config(dir.path(), "");
    for garbage in ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
        let r = explain(
            &cfg,
            &[
                "-X",
                "GET",
                "--url",
                "https://shop.example/api/orders",
                "--token",
                garbage,
            ],
        );
        assert_eq!(r.code, 3, "{garbage}: {}{}", r.stdout, r.stderr);
        let rejected: Vec<&str> = r
            .stdout
            .lines()
            .filter(|l| l.starts_with("token rejected"))
            .collect();
        assert_eq!(rejected.len(), 1, "{}", r.stdout);
        assert!(
            rejected[0].contains("invalid_token") || rejected[0].contains("wrong_issuer"),
            "{}",
            rejected[0]
        );
        assert!(r.stdout.ends_with("\n"), "{}", r.stdout);
    }
}

#[test]
fn explain_config_errors_are_file_line_col() {
    let dir = TempDir::new().unwrap();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "routes:\n  - name: x\n    upstream: http://127.0.0.1:9\n    bogus: 1\n",
    )
    .unwrap();
    let r = explain(&cfg, &["-X", "GET", "--url", "https://shop.example/"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty());
    let first = r.stderr.lines().next().unwrap();
    let prefix = format!("{}:4:5: ", s(&cfg));
    assert!(first.starts_with(&prefix), "{first}");
    assert!(first.contains("bogus"), "{first}");

    let missing = dir.path().join("nope.yaml");
    let r = explain(&missing, &["-X", "GET", "--url", "https://shop.example/"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with(&format!("{}:1:1: ", s(&missing))),
        "{}",
        r.stderr
    );

    // Usage errors: one line, exit 1.
    let cfg = explain_config(dir.path(), "");
    for args in [
        &["-X", "GET", "--url", "shop.example/api"][..],
        &["-X", "GET", "--url", "/api/orders"],
        &[
            "-X",
            "GET",
            "--url",
            "https://shop.example/",
            "--claims",
            "not json",
        ],
        &[
            "-X",
            "GET",
            "--url",
            "https://shop.example/",
            "--claims",
            "[1]",
        ],
        &[
            "-X",
            "GET",
            "--url",
            "https://shop.example/",
            "--workload",
            "spiffe://x/../y",
        ],
        &[
            "-X",
            "GET",
            "--url",
            "https://shop.example/",
            "--claims",
            "{}",
            "--token",
            "x",
        ],
        &[
            "-X",
            "GET",
            "--url",
            "https://shop.example/",
            "-H",
            "no colon",
        ],
        &["-X", "G T", "--url", "https://shop.example/"],
    ] {
        let r = explain(&cfg, args);
        assert_eq!(r.code, 1, "{args:?}: {}{}", r.stdout, r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
    }
    // A path alone is fine with a Host header.
    let r = explain(
        &cfg,
        &["-X", "GET", "--url", "/healthz", "-H", "Host: shop.example"],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}
