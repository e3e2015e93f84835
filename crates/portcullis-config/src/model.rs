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
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub workload_identity: Option<WorkloadIdentityConfig>,
    #[serde(default)]
    pub login: Option<LoginConfig>,
    #[serde(default)]
    pub assertion: AssertionConfig,
    #[serde(default)]
    pub shared_state: Option<SharedStateConfig>,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub ext_authz: Option<ExtAuthzConfig>,
    /// Global policy settings (`explain_to_caller`).
    #[serde(default)]
    pub policy: PolicySettings,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// `server`: the main listener and request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// CIDRs whose forwarding headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The proxy's external base URL: issuer of assertions, base of login redirects.
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Duration,
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: ByteSize,
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Duration,
    /// Reload when the config file changes on disk.
    #[serde(default)]
    pub watch: bool,
    /// Let `%2F` (and `\`) through path normalization instead of refusing with 400.
    #[serde(default)]
    pub allow_encoded_slashes: bool,
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

/// `server.tls`: TLS termination on the main listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    pub cert_file: String,
    pub key_file: String,
    #[serde(default)]
    pub client_ca_file: Option<String>,
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// Whether the listener asks for client certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    None,
    Optional,
    Required,
}

/// `admin`: health, readiness and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
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
    pub name: String,
    /// The exact `iss` to require.
    pub issuer: String,
    /// Fetch `{issuer}/.well-known/openid-configuration` (default when neither
    /// `jwks_uri` nor `jwks_file` is given).
    #[serde(default)]
    pub discovery: Option<bool>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub allow_any_audience: bool,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Enables HMAC algorithms for this provider; never logged.
    #[serde(default)]
    pub shared_secret: Option<String>,
    /// Allowed `typ` header values; empty means any (but ID tokens are refused).
    #[serde(default)]
    pub token_types: Vec<String>,
    #[serde(default = "default_clock_skew")]
    pub clock_skew: Duration,
    #[serde(default)]
    pub max_token_age: Option<Duration>,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: Duration,
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh: Duration,
    #[serde(default = "default_jwks_stale_max")]
    pub jwks_stale_max: Duration,
    #[serde(default)]
    pub claims: ClaimsMapping,
    #[serde(default)]
    pub introspection: Option<IntrospectionConfig>,
    /// OAuth client used by browser login (`login.provider`).
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
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
    #[serde(default = "default_subject_claim")]
    pub subject: String,
    #[serde(default = "default_email_claim")]
    pub email: String,
    #[serde(default = "default_name_claim")]
    pub name: String,
    #[serde(default = "default_groups_claim")]
    pub groups: String,
    #[serde(default)]
    pub roles: Option<String>,
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
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: String,
    #[serde(default = "default_introspection_ttl")]
    pub cache_ttl: Duration,
}

fn default_introspection_ttl() -> Duration {
    Duration::from_secs(60)
}

/// `workload_identity`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadIdentityConfig {
    pub trust_domain: String,
    #[serde(default)]
    pub accept: Vec<WorkloadSource>,
}

/// A source of workload identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadSource {
    Mtls,
    Linkerd,
    Xfcc,
}

/// `login`: browser sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    pub provider: String,
    #[serde(default = "default_login_scopes")]
    pub scopes: Vec<String>,
    pub cookie: CookieConfig,
    #[serde(default)]
    pub allowed_redirect_hosts: Vec<String>,
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
    #[serde(default = "default_cookie_name")]
    pub name: String,
    /// 32+ bytes; never logged.
    pub secret: String,
    #[serde(default)]
    pub domain: Option<String>,
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
    #[serde(default)]
    pub algorithm: AssertionAlgorithm,
    #[serde(default)]
    pub signing_key_file: Option<String>,
    #[serde(default)]
    pub signing_keys_dir: Option<String>,
    #[serde(default = "default_rotate_every")]
    pub rotate_every: Duration,
    #[serde(default = "default_assertion_ttl")]
    pub ttl: Duration,
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
    #[default]
    ES256,
    EdDSA,
}

/// `shared_state`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedStateConfig {
    pub redis: String,
    #[serde(default)]
    pub on_redis_down: OnRedisDown,
}

/// What rate limiting does when Redis is unreachable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisDown {
    #[default]
    Local,
    Deny,
}

/// `audit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
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
    Stdout,
    File(String),
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
    pub grpc_listen: String,
}

/// Top-level `policy` settings that apply to every route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    #[serde(default)]
    pub explain_to_caller: ExplainToCaller,
}

/// How much of a decision a 403 body reveals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExplainToCaller {
    Full,
    #[default]
    Reason,
    None,
}

/// One entry of `routes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Used in metrics and audit lines; defaults to `route-INDEX`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: RouteMatch,
    /// Absent only for routes served by the proxy itself (forward-auth only setups).
    #[serde(default)]
    pub upstream: Option<Upstreams>,
    #[serde(default)]
    pub upstream_tls: Option<UpstreamTlsConfig>,
    #[serde(default)]
    pub auth: AuthMode,
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    #[serde(default)]
    pub mode: PolicyMode,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    pub forward_token: bool,
    /// Per-route request timeout; defaults to `server.request_timeout`.
    #[serde(default)]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub retries: u32,
    /// The assertion's `aud` for this route; defaults to the upstream origin.
    #[serde(default)]
    pub audience: Option<String>,
    /// Redirect unauthenticated browsers to `login.provider`.
    #[serde(default)]
    pub login: bool,
}

/// `routes[].match`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Exact host names or `*.example.com` wildcards; empty means any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
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
    One(String),
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
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    #[serde(default)]
    pub server_name: Option<String>,
}

/// `routes[].auth`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Required,
    Optional,
    None,
}

/// `routes[].mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    #[default]
    Enforce,
    Audit,
}

/// `routes[].policy`: deny rules first, then allow rules; no allow matched → 403.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub deny: Vec<RuleConfig>,
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
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    #[serde(default)]
    pub subjects: Option<Vec<String>>,
    #[serde(default)]
    pub emails: Option<Vec<String>>,
    #[serde(default)]
    pub email_domains: Option<Vec<String>>,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub clients: Option<Vec<String>>,
    #[serde(default)]
    pub workloads: Option<Vec<String>>,
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Dotted claim path → one value or a list of accepted values.
    #[serde(default)]
    pub claims: Option<BTreeMap<String, OneOrMany>>,
    #[serde(default)]
    pub authenticated: Option<bool>,
}

/// A claim condition value: one string or a list (any-of).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
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
    pub requests_per_second: f64,
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default)]
    pub key: RateLimitKey,
}

/// What a rate limit counts per.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitKey {
    #[default]
    Identity,
    Client,
    Ip,
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
