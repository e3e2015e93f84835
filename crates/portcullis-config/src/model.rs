//! The configuration schema of SPEC §2, as plain serde types.
//!
//! These types are what every other crate reads. They hold already-parsed values
//! (durations, sizes, CIDRs, URLs as strings checked by validation) but no compiled
//! state: regexes, globs and route tables are compiled by the crates that use them,
//! from these values, once per config load.
//!
//! Every struct denies unknown keys, so a typo is an error, never a silent default.

use crate::units::{ByteSize, Duration};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The main listener and request limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// Health, readiness and metrics listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Token issuers.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Which sources of workload (SPIFFE) identity count.
    #[serde(default)]
    pub workload_identity: Option<WorkloadIdentityConfig>,
    /// Browser login; required by routes with `login: true`.
    #[serde(default)]
    pub login: Option<LoginConfig>,
    /// The identity assertion signed for upstreams.
    #[serde(default)]
    pub assertion: AssertionConfig,
    /// Redis shared by replicas for rate limits, sessions and revocations.
    #[serde(default)]
    pub shared_state: Option<SharedStateConfig>,
    /// Where audit lines go.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The Envoy `ext_authz` gRPC server; off when absent.
    #[serde(default)]
    pub ext_authz: Option<ExtAuthzConfig>,
    /// Global policy settings (`explain_to_caller`).
    #[serde(default)]
    pub policy: PolicySettings,
    /// OpenTelemetry trace export; off when absent.
    #[serde(default)]
    pub telemetry: Option<TelemetryConfig>,
    /// Outbound OAuth2 clients for `routes[].upstream_auth` (SPEC §9).
    #[serde(default)]
    pub credentials: Vec<CredentialConfig>,
    /// Routes, evaluated in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// `server`: the main listener and request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, `IP:PORT` (default `127.0.0.1:8080`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// TLS termination; plain HTTP when absent.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// CIDRs whose forwarding headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The proxy's external base URL: issuer of assertions, base of login redirects.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Whole-request deadline (default 30s).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// Deadline for reading request headers (default 10s).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// Largest accepted request header block (default 32KiB).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: ByteSize,
    /// How long SIGTERM waits for in-flight requests (default 15s).
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Duration,
    /// Reload when the config file changes on disk.
    #[serde(default)]
    pub watch: bool,
    /// Let `%2F` (and `\`) through path normalization instead of refusing with 400.
    #[serde(default)]
    pub allow_encoded_slashes: bool,
    /// Match routes and `paths` rules with letter case (default false: case is
    /// ignored, because many upstreams serve `/Admin` as `/admin`).
    #[serde(default)]
    pub case_sensitive_paths: bool,
    /// Keep-alive connections with no request in flight are closed after this
    /// (default 60s).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Most client connections open at once; past it new ones are closed at once
    /// (default 20000).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// A client that accepts no bytes of a response for this long is disconnected
    /// (default 60s).
    #[serde(default = "default_write_timeout")]
    pub write_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls: None,
            trusted_proxies: Vec::new(),
            public_url: None,
            request_timeout: default_request_timeout(),
            header_read_timeout: default_header_read_timeout(),
            max_header_bytes: default_max_header_bytes(),
            shutdown_grace: default_shutdown_grace(),
            watch: false,
            allow_encoded_slashes: false,
            case_sensitive_paths: false,
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            write_timeout: default_write_timeout(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_string()
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_header_bytes() -> ByteSize {
    ByteSize(32 * 1024)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(15)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_connections() -> u32 {
    20_000
}
fn default_write_timeout() -> Duration {
    Duration::from_secs(60)
}

/// `server.tls`: TLS termination on the main listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// Server certificate chain (PEM); re-read when it changes on disk.
    pub cert_file: String,
    /// Server private key (PEM); re-read when it changes on disk.
    pub key_file: String,
    /// CA bundle (PEM) that client certificates must chain to.
    #[serde(default)]
    pub client_ca_file: Option<String>,
    /// Whether client certificates are requested (default `none`).
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// Whether the listener asks for client certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Do not ask for a client certificate.
    #[default]
    None,
    /// Ask; verify one when presented.
    Optional,
    /// Refuse connections without a valid client certificate.
    Required,
}

/// `admin`: health, readiness and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to listen on, `IP:PORT` (default `127.0.0.1:9901`).
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:9901".to_string()
}

/// One entry of `providers`: a token issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name, used in rules (`providers:`), metrics and logs.
    pub name: String,
    /// The exact `iss` to require.
    pub issuer: String,
    /// Fetch `{issuer}/.well-known/openid-configuration` (default when neither
    /// `jwks_uri` nor `jwks_file` is given).
    #[serde(default)]
    pub discovery: Option<bool>,
    /// Where the provider publishes its JWKS (instead of discovery).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// A local JWKS file (instead of discovery).
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// A token's `aud` must contain one of these; required unless `allow_any_audience`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accept any `aud` (only for providers that issue tokens for this proxy alone).
    #[serde(default)]
    pub allow_any_audience: bool,
    /// Allowed `alg` values (default `[RS256, ES256]`); HMAC needs `shared_secret`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Enables HMAC algorithms for this provider; never logged.
    #[serde(default)]
    pub shared_secret: Option<String>,
    /// Allowed `typ` header values; empty means any (but ID tokens are refused).
    #[serde(default)]
    pub token_types: Vec<String>,
    /// Tolerance for `exp`/`nbf`/`iat` (default 30s).
    #[serde(default = "default_clock_skew")]
    pub clock_skew: Duration,
    /// Refuse tokens whose `iat` is older than this.
    #[serde(default)]
    pub max_token_age: Option<Duration>,
    /// How often keys are refetched (default 5m).
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: Duration,
    /// Least time between refetches caused by unknown `kid`s (default 10s).
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh: Duration,
    /// How long the last good keys serve while the provider is unreachable (default 24h).
    #[serde(default = "default_jwks_stale_max")]
    pub jwks_stale_max: Duration,
    /// Where identity attributes live in the claims.
    #[serde(default)]
    pub claims: ClaimsMapping,
    /// RFC 7662 introspection for opaque tokens.
    #[serde(default)]
    pub introspection: Option<IntrospectionConfig>,
    /// OAuth client used by browser login (`login.provider`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// OAuth client secret used by browser login; never logged.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// A private key (PEM, ES256 or RS256) with which browser login
    /// authenticates to the token endpoint by `private_key_jwt` (RFC 7523)
    /// instead of the client secret.
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// A PEM bundle trusted (besides the system roots) for this provider's
    /// discovery, JWKS and introspection fetches.
    #[serde(default)]
    pub ca_file: Option<String>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_string(), "ES256".to_string()]
}
fn default_clock_skew() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_jwks_min_refresh() -> Duration {
    Duration::from_secs(10)
}
fn default_jwks_stale_max() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl ProviderConfig {
    /// True when keys come from OIDC discovery.
    pub fn uses_discovery(&self) -> bool {
        self.discovery
            .unwrap_or(self.jwks_uri.is_none() && self.jwks_file.is_none())
    }
}

/// `providers[].claims`: where identity attributes live in a token. Each is a dotted
/// path (`realm_access.roles`); a key containing dots is bracketed:
/// `["https://example.com/roles"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsMapping {
    /// Claim path of the subject (default `sub`).
    #[serde(default = "default_subject_claim")]
    pub subject: String,
    /// Claim path of the email (default `email`).
    #[serde(default = "default_email_claim")]
    pub email: String,
    /// Claim path of the display name (default `preferred_username`).
    #[serde(default = "default_name_claim")]
    pub name: String,
    /// Claim path of the groups (default `groups`).
    #[serde(default = "default_groups_claim")]
    pub groups: String,
    /// Claim path of the roles, e.g. `realm_access.roles` (none by default).
    #[serde(default)]
    pub roles: Option<String>,
    /// Claim path of the scopes: a space-separated string or an array (default `scope`).
    #[serde(default = "default_scopes_claim")]
    pub scopes: String,
    /// When unset: `client_id`, then `azp`.
    #[serde(default)]
    pub client_id: Option<String>,
}

impl Default for ClaimsMapping {
    fn default() -> Self {
        Self {
            subject: default_subject_claim(),
            email: default_email_claim(),
            name: default_name_claim(),
            groups: default_groups_claim(),
            roles: None,
            scopes: default_scopes_claim(),
            client_id: None,
        }
    }
}

fn default_subject_claim() -> String {
    "sub".to_string()
}
fn default_email_claim() -> String {
    "email".to_string()
}
fn default_name_claim() -> String {
    "preferred_username".to_string()
}
fn default_groups_claim() -> String {
    "groups".to_string()
}
fn default_scopes_claim() -> String {
    "scope".to_string()
}

/// `providers[].introspection`: RFC 7662 for opaque tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The introspection endpoint URL.
    pub endpoint: String,
    /// Client id used to authenticate to the endpoint.
    pub client_id: String,
    /// Client secret used to authenticate to the endpoint; never logged.
    pub client_secret: String,
    /// How long an introspection result is reused (default 60s).
    #[serde(default = "default_introspection_ttl")]
    pub cache_ttl: Duration,
    /// What this provider's opaque tokens begin with (`ghp_`, `pat-`): with
    /// several introspecting providers, each opaque token goes to the one
    /// whose prefix it has, else to the one without a prefix, never to each
    /// in turn (every provider would see the others' tokens).
    #[serde(default)]
    pub token_prefix: Option<String>,
}

fn default_introspection_ttl() -> Duration {
    Duration::from_secs(60)
}

/// `workload_identity`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadIdentityConfig {
    /// The SPIFFE trust domain, e.g. `example.org` (no `spiffe://`).
    pub trust_domain: String,
    /// Sources of workload identity that count.
    #[serde(default)]
    pub accept: Vec<WorkloadSource>,
}

/// A source of workload identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadSource {
    /// The URI SAN of a verified client certificate.
    Mtls,
    /// Linkerd's `l5d-client-id` header, from trusted proxies only.
    Linkerd,
    /// Envoy/Istio `x-forwarded-client-cert`, from trusted proxies only.
    Xfcc,
}

/// `login`: browser sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// Name of the provider to log in with (needs `client_id` and `client_secret`).
    pub provider: String,
    /// Scopes requested at login (default `openid email profile`).
    #[serde(default = "default_login_scopes")]
    pub scopes: Vec<String>,
    /// The session cookie.
    pub cookie: CookieConfig,
    /// Hosts that post-login redirects may point to (names or `*.suffix`).
    #[serde(default)]
    pub allowed_redirect_hosts: Vec<String>,
    /// Origins besides the request's own and `public_url`'s whose pages may
    /// send unsafe requests with the session (`https://host`, `https://*.suffix`).
    #[serde(default)]
    pub trusted_origins: Vec<String>,
    /// Longest life of a session, however active (default 12h).
    #[serde(default = "default_session_ttl")]
    pub session_ttl: Duration,
    /// A session unused for this long ends (default 1h).
    #[serde(default = "default_session_idle")]
    pub idle_timeout: Duration,
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn default_session_idle() -> Duration {
    Duration::from_secs(3600)
}

fn default_login_scopes() -> Vec<String> {
    vec![
        "openid".to_string(),
        "email".to_string(),
        "profile".to_string(),
    ]
}

/// `login.cookie`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieConfig {
    /// Cookie name (default `_portcullis`).
    #[serde(default = "default_cookie_name")]
    pub name: String,
    /// 32+ bytes; never logged.
    pub secret: String,
    /// Cookie `Domain` attribute; host-only when absent.
    #[serde(default)]
    pub domain: Option<String>,
    /// Session lifetime (default 8h).
    #[serde(default = "default_cookie_ttl")]
    pub ttl: Duration,
}

fn default_cookie_name() -> String {
    "_portcullis".to_string()
}
fn default_cookie_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

/// `assertion`: the JWT the proxy signs for upstreams.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionConfig {
    /// Signature algorithm (default ES256).
    #[serde(default)]
    pub algorithm: AssertionAlgorithm,
    /// A fixed signing key (PEM).
    #[serde(default)]
    pub signing_key_file: Option<String>,
    /// A directory of generated, rotated signing keys (created when missing).
    #[serde(default)]
    pub signing_keys_dir: Option<String>,
    /// How often a new signing key is generated (default 24h).
    #[serde(default = "default_rotate_every")]
    pub rotate_every: Duration,
    /// Lifetime of each assertion (default 60s).
    #[serde(default = "default_assertion_ttl")]
    pub ttl: Duration,
    /// Request header that carries the assertion (default `X-Portcullis-Assertion`).
    #[serde(default = "default_assertion_header")]
    pub header: String,
}

impl Default for AssertionConfig {
    fn default() -> Self {
        Self {
            algorithm: AssertionAlgorithm::default(),
            signing_key_file: None,
            signing_keys_dir: None,
            rotate_every: default_rotate_every(),
            ttl: default_assertion_ttl(),
            header: default_assertion_header(),
        }
    }
}

fn default_rotate_every() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_assertion_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_assertion_header() -> String {
    "X-Portcullis-Assertion".to_string()
}

/// Signature algorithm of assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AssertionAlgorithm {
    /// ECDSA P-256 with SHA-256.
    #[default]
    ES256,
    /// Ed25519.
    EdDSA,
}

/// `shared_state`. Its `Debug` shows the URL redacted.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedStateConfig {
    /// `redis://[USER:PASSWORD@]HOST:PORT/DB`, or `rediss://` for TLS. Holds a
    /// secret: never log it (see `redacted_redis_url`).
    pub redis: String,
    /// What rate limiting does when Redis is unreachable (default `local`).
    #[serde(default)]
    pub on_redis_down: OnRedisDown,
    /// Longest wait for one Redis command before Redis counts as down
    /// (default 100ms): a request is never held longer than this by Redis.
    #[serde(default = "default_redis_timeout")]
    pub timeout: Duration,
    /// For `rediss://`: the CA bundle the server's certificate must chain to,
    /// instead of the built-in Mozilla roots.
    #[serde(default)]
    pub ca_file: Option<String>,
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(100)
}

impl std::fmt::Debug for SharedStateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStateConfig")
            .field("redis", &self.redacted_redis_url())
            .field("on_redis_down", &self.on_redis_down)
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl SharedStateConfig {
    /// The `redis` URL with any password replaced by `***`: the form that may
    /// appear in logs and error messages.
    pub fn redacted_redis_url(&self) -> String {
        redact_url_password(&self.redis)
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…` (a lone
/// `scheme://secret@host`, which Redis reads as a password, too). Everything
/// up to the last `@` is taken as the userinfo, so a secret holding `/`, `?`
/// or `#` (base64 passwords often do) is hidden whole, and a query is shown as
/// `?***`, since it may carry a password too. Over-hiding an `@` in a path
/// costs only a less helpful message.
pub fn redact_url_password(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at..]),
        None => (None, rest),
    };
    let mut shown = scheme.map(|s| format!("{s}://")).unwrap_or_default();
    match userinfo.map(|u| u.split_once(':')) {
        Some(Some((user, _))) if scheme.is_some() => shown.push_str(&format!("{user}:***")),
        Some(_) => shown.push_str("***"),
        None => {}
    }
    match after.find('?') {
        Some(q) => {
            shown.push_str(&after[..q]);
            shown.push_str("?***");
        }
        None => shown.push_str(after),
    }
    shown
}

#[cfg(test)]
mod redaction_tests {
    use super::redact_url_password as shown;

    #[test]
    fn no_part_of_a_secret_is_shown() {
        assert_eq!(shown("redis://u:pw@h:6379/0"), "redis://u:***@h:6379/0");
        assert_eq!(shown("redis://pw@h/0"), "redis://***@h/0");
        assert_eq!(
            shown("redis://u:q8Zr/k2X+w==@127.0.0.1:6379/0"),
            "redis://u:***@127.0.0.1:6379/0"
        );
        assert_eq!(shown("redis://u:a?b#c@h/0"), "redis://u:***@h/0");
        assert_eq!(shown("redis://h/0?password=s3cret"), "redis://h/0?***");
        assert_eq!(shown("u:pw@h:6379"), "***@h:6379");
        assert_eq!(shown("redis://h:6379/0"), "redis://h:6379/0");
    }
}

/// What rate limiting does when Redis is unreachable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisDown {
    /// Fall back to each replica's own limiter.
    #[default]
    Local,
    /// Refuse rate-limited requests while Redis is down.
    Deny,
}

/// `audit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Where audit lines go (default `stdout`).
    #[serde(default = "default_audit_sink")]
    pub sink: AuditSink,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            sink: default_audit_sink(),
        }
    }
}

fn default_audit_sink() -> AuditSink {
    AuditSink::Stdout
}

/// Where audit lines go: `stdout`, `file:PATH` or `none`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Standard output.
    Stdout,
    /// Append to this file (reopened on SIGHUP or rotation).
    File(String),
    /// No audit lines.
    None,
}

impl<'de> Deserialize<'de> for AuditSink {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "stdout" => Ok(AuditSink::Stdout),
            "none" => Ok(AuditSink::None),
            other => match other.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(AuditSink::File(path.to_string())),
                _ => Err(serde::de::Error::custom(format!(
                    "audit sink must be `stdout`, `file:PATH` or `none`, not `{other}`"
                ))),
            },
        }
    }
}

/// `ext_authz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthzConfig {
    /// Address of the `Authorization/Check` gRPC server, `IP:PORT`.
    pub grpc_listen: String,
    /// Serve it over TLS (and require Envoy's client certificate with `client_ca_file`).
    #[serde(default)]
    pub tls: Option<ExtAuthzTlsConfig>,
    /// Answer a browser that should sign in (a `login: true` route) with a 302
    /// to `/.portcullis/login` instead of the 401, as forward-auth's
    /// `?redirect=true` does: Envoy hands the denial to the browser as it is.
    #[serde(default)]
    pub login_redirect: bool,
}

impl ExtAuthzConfig {
    /// True when every Envoy must present a certificate from `client_ca_file`
    /// (TLS with a client CA): then each one that is answered is authenticated.
    pub fn requires_client_certificates(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some())
    }
}

/// `ext_authz.tls`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthzTlsConfig {
    /// Server certificate chain (PEM).
    pub cert_file: String,
    /// Private key (PEM) of `cert_file`.
    pub key_file: String,
    /// CA bundle (PEM) that Envoy's client certificate must chain to.
    #[serde(default)]
    pub client_ca_file: Option<String>,
}

/// `telemetry`: OpenTelemetry trace export over OTLP/gRPC.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector, e.g. `http://collector:4317`.
    pub otlp_endpoint: String,
    /// `service.name` of the spans (default `portcullis`).
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces sampled (default 1.0); a sampled incoming
    /// `traceparent` is always honoured.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
}

fn default_service_name() -> String {
    "portcullis".to_string()
}
fn default_sample_ratio() -> f64 {
    1.0
}

/// One entry of `credentials`: an outbound OAuth2 client (SPEC §9). Its `Debug`
/// leaves the secret out.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// Unique name, referenced by `routes[].upstream_auth.credential`.
    pub name: String,
    /// The token endpoint; or `provider` to take it from that provider's discovery.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// A provider name whose discovery document gives the token endpoint.
    #[serde(default)]
    pub provider: Option<String>,
    /// The OAuth client id.
    pub client_id: String,
    /// `client_secret_basic` secret; never logged.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// How the client authenticates: `client_secret_basic` (default with a
    /// secret), `client_secret_post`, or `private_key_jwt` (default with a key).
    #[serde(default)]
    pub auth_method: Option<String>,
    /// `private_key_jwt` (RFC 7523) signing key, ES256 or RS256 (PEM).
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// Scopes requested.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Sent as `audience` and as RFC 8707 `resource`.
    #[serde(default)]
    pub audience: Option<String>,
    /// A PEM bundle trusted (besides the system roots) for the token endpoint.
    #[serde(default)]
    pub ca_file: Option<String>,
}

impl std::fmt::Debug for CredentialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialConfig")
            .field("name", &self.name)
            .field("token_endpoint", &self.token_endpoint)
            .field("provider", &self.provider)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("auth_method", &self.auth_method)
            .field("private_key_file", &self.private_key_file)
            .field("scopes", &self.scopes)
            .field("audience", &self.audience)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Top-level `policy` settings that apply to every route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// How much of a decision a 403 body reveals (default `reason`).
    #[serde(default)]
    pub explain_to_caller: ExplainToCaller,
}

/// How much of a decision a 403 body reveals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExplainToCaller {
    /// Every rule and condition with actual and required values.
    Full,
    /// The deciding reason only.
    #[default]
    Reason,
    /// Nothing beyond the status.
    None,
}

/// One entry of `routes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Used in metrics and audit lines; defaults to `route-INDEX`.
    #[serde(default)]
    pub name: Option<String>,
    /// Which requests this route takes (`match`).
    #[serde(rename = "match", default)]
    pub matcher: RouteMatch,
    /// Absent only for routes served by the proxy itself (forward-auth only setups).
    #[serde(default)]
    pub upstream: Option<Upstreams>,
    /// TLS (and mTLS) settings for `https://` upstreams.
    #[serde(default)]
    pub upstream_tls: Option<UpstreamTlsConfig>,
    /// Whether a caller identity is required (default `required`).
    #[serde(default)]
    pub auth: AuthMode,
    /// Who may do what; absent with `auth: required` means deny all.
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    /// Enforce decisions, or only log them (default `enforce`).
    #[serde(default)]
    pub mode: PolicyMode,
    /// Per-route rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Pass the caller's `Authorization` header upstream (default false: removed).
    #[serde(default)]
    pub forward_token: bool,
    /// Per-route request timeout; defaults to `server.request_timeout`.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Retries of idempotent requests on connect errors and 502/503 (at most 10).
    #[serde(default)]
    pub retries: u32,
    /// The assertion's `aud` for this route; defaults to the upstream origin.
    #[serde(default)]
    pub audience: Option<String>,
    /// Redirect unauthenticated browsers to `login.provider`.
    #[serde(default)]
    pub login: bool,
    /// Protocol upgrades forwarded and tunnelled (default `[websocket]`); `h2c`
    /// is never forwarded.
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<String>,
    /// Outbound credential sent upstream instead of the caller's (SPEC §9).
    #[serde(default)]
    pub upstream_auth: Option<UpstreamAuthConfig>,
    /// The upstream is a Model Context Protocol server (SPEC §10).
    #[serde(default)]
    pub mcp: Option<McpConfig>,
}

/// `routes[].mcp`: the route fronts an MCP server over the streamable HTTP
/// transport; `mcp: {}` takes every default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// The largest JSON-RPC message the proxy reads: a request body, a JSON
    /// `tools/list` answer, one SSE event it filters (default 4MiB). Larger
    /// requests get 413; a larger answer it must filter is not passed on.
    #[serde(default = "default_mcp_max_message")]
    pub max_message_bytes: ByteSize,
}

fn default_mcp_max_message() -> ByteSize {
    ByteSize(4 * 1024 * 1024)
}

fn default_upgrades() -> Vec<String> {
    vec!["websocket".to_string()]
}

/// `routes[].upstream_auth`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAuthConfig {
    /// The name of an entry of `credentials`.
    pub credential: String,
}

/// `routes[].match`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Exact host names or `*.example.com` wildcards; empty means any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Paths starting with this prefix (`/api` matches `/api` and `/api/...`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Exactly this path.
    #[serde(default)]
    pub path: Option<String>,
    /// Paths matching this regex; it must match the whole normalized path.
    #[serde(default)]
    pub path_regex: Option<String>,
    /// Empty means any method.
    #[serde(default)]
    pub methods: Vec<String>,
}

/// `routes[].upstream`: one URL or a round-robin list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Upstreams {
    /// A single upstream URL.
    One(String),
    /// Several upstream URLs, used round-robin.
    Many(Vec<String>),
}

impl Upstreams {
    /// The upstream URLs, in order.
    pub fn urls(&self) -> Vec<&str> {
        match self {
            Upstreams::One(u) => vec![u.as_str()],
            Upstreams::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// `routes[].upstream_tls`: TLS (and mTLS) to the service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// CA bundle (PEM) the upstream's certificate must chain to.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificate (PEM) presented to the upstream.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// Private key (PEM) of `cert_file`.
    #[serde(default)]
    pub key_file: Option<String>,
    /// Name to verify in the upstream's certificate (and send as SNI).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// `routes[].auth`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// A valid identity is required.
    #[default]
    Required,
    /// An identity is attached when present and valid; an invalid one is still a 401.
    Optional,
    /// Public: no identity is looked for.
    None,
}

/// `routes[].mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Deny what the policy denies.
    #[default]
    Enforce,
    /// Evaluate and log, but let denied requests through (`"enforced": false`).
    Audit,
}

/// `routes[].policy`: deny rules first, then allow rules; no allow matched → 403.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Rules checked first: any match denies.
    #[serde(default)]
    pub deny: Vec<RuleConfig>,
    /// Rules checked next: any match allows; none → 403.
    #[serde(default)]
    pub allow: Vec<RuleConfig>,
    /// Overrides the global `policy.explain_to_caller` for this route.
    #[serde(default)]
    pub explain_to_caller: Option<ExplainToCaller>,
}

/// One policy rule: every condition present must hold; a list inside a condition is
/// any-of, except `scopes`, where every listed scope is required.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name used in logs and `explain`; unnamed rules are shown by index.
    #[serde(default)]
    pub name: Option<String>,
    /// Any of these HTTP methods.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Any of these path globs.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// Any of these subjects.
    #[serde(default)]
    pub subjects: Option<Vec<String>>,
    /// Any of these verified emails.
    #[serde(default)]
    pub emails: Option<Vec<String>>,
    /// Any of these email domains (the part after the only `@`).
    #[serde(default)]
    pub email_domains: Option<Vec<String>>,
    /// Any of these groups.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// Any of these roles.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// All of these scopes.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Any of these OAuth client ids.
    #[serde(default)]
    pub clients: Option<Vec<String>>,
    /// Any of these SPIFFE IDs (`*` globs).
    #[serde(default)]
    pub workloads: Option<Vec<String>>,
    /// Any of these providers (by name).
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Dotted claim path → one value or a list of accepted values.
    #[serde(default)]
    pub claims: Option<BTreeMap<String, OneOrMany>>,
    /// `true`: any authenticated caller.
    #[serde(default)]
    pub authenticated: Option<bool>,
    /// Any of these MCP tool names (globs); only on `mcp` routes (SPEC §10): the
    /// rule then matches only `tools/call` of those tools, and other JSON-RPC
    /// methods are judged with this condition set aside.
    #[serde(default)]
    pub tools: Option<Vec<String>>,
}

/// A claim condition value: one string or a list (any-of).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One accepted value.
    One(String),
    /// Any of these values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The accepted values.
    pub fn values(&self) -> &[String] {
        match self {
            OneOrMany::One(v) => std::slice::from_ref(v),
            OneOrMany::Many(v) => v,
        }
    }
}

/// `routes[].rate_limit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate.
    pub requests_per_second: f64,
    /// Largest burst of requests allowed at once.
    #[serde(default)]
    pub burst: Option<u32>,
    /// What is counted separately (default `identity`).
    #[serde(default)]
    pub key: RateLimitKey,
}

/// What a rate limit counts per.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitKey {
    /// Per caller identity.
    #[default]
    Identity,
    /// Per OAuth client id.
    Client,
    /// Per client IP (after trusted proxies).
    Ip,
    /// One budget for the whole route.
    Route,
}

impl RouteConfig {
    /// The route's name for metrics and logs: its `name`, else `route-INDEX`.
    pub fn display_name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("route-{index}"))
    }
}
