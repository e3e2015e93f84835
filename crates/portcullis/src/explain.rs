//! `portcullis explain` (SPEC §1): offline policy evaluation.
//!
//! It asks the question the proxy asks, in the proxy's order (see
//! `portcullis-proxy`'s pipeline): normalize the path, find the route, authenticate
//! (unless the route has `auth: none`), attach a workload identity, then evaluate
//! the route's policy with the per-condition explanation. Tokens are verified by
//! the same [`Authenticator`] the proxy uses; `--claims` skips verification and
//! maps the claims as the matching provider would.
//!
//! Exit codes: 0 allow; 3 deny — by policy, no route, a path the proxy would refuse
//! with 400, a missing credential, or a token that is rejected (including one that
//! cannot even be parsed: the proxy would answer 401, which is a denial, not a
//! usage error); 1 for a usage or config error. Under `mode: audit` the exit code
//! still follows the evaluated outcome (the text says it would not be enforced):
//! explain answers "what does this policy decide", which is the point of a shadow
//! rollout.

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use portcullis_config::{AuthMode, ClaimsMapping, Config, ProviderConfig};
use portcullis_core::{Identity, IdentityKind, Reason};
use portcullis_identity::jose::compact;
use portcullis_identity::{workload, AuthError, Authenticator, HttpFetch, IdentityMetrics};
use portcullis_policy::clean;
use portcullis_policy::{split_query, Decision, NormalizedPath, RequestFacts, RouteTable};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `portcullis explain`.
#[derive(Args)]
pub struct ExplainArgs {
    /// Config file (default: $PORTCULLIS_CONFIG, then ./portcullis.yaml).
    #[arg(short, long, env = "PORTCULLIS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Request method.
    #[arg(short = 'X', long, value_name = "M")]
    method: String,
    /// Request URL (`https://host/path?query`), or an absolute path with a `Host` header.
    #[arg(long, value_name = "URL")]
    url: String,
    /// A bearer token, verified against the configured providers' keys.
    #[arg(long, value_name = "JWT", conflicts_with = "claims")]
    token: Option<String>,
    /// Claims as a JSON object, taken as already verified (`@FILE` reads a file).
    #[arg(long, value_name = "JSON")]
    claims: Option<String>,
    /// The caller's workload identity (a SPIFFE ID), as mTLS would establish it.
    #[arg(long, value_name = "SPIFFE_ID")]
    workload: Option<String>,
    /// A request header; `Host`, `Authorization: Bearer …`, `l5d-client-id` and
    /// `x-forwarded-client-cert` are understood (the last two as from a trusted proxy).
    #[arg(short = 'H', long = "header", value_name = "K: V")]
    headers: Vec<String>,
    /// Verify `--token` against this JWKS instead of fetching the provider's keys.
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// How long each key or introspection fetch may take: explain is interactive.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The request being explained, after parsing the arguments.
struct Request {
    method: String,
    host: String,
    /// The path as given (before normalization), for messages.
    raw_path: String,
    credential: Credential,
    workload: Option<String>,
}

enum Credential {
    None,
    Token(String),
    Claims(Map<String, Value>),
}

/// Why a request is refused before policy is consulted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Basis {
    /// The path is one the proxy answers with 400.
    BadRequest,
    /// `auth: required` and no credential (401 `missing_token`).
    MissingCredentials,
    /// The token (or the `--claims`) could not be turned into an identity (401).
    TokenRejected,
}

impl Basis {
    /// The `basis` value of the JSON report (the policy's own bases are snake_case too).
    fn as_str(self) -> &'static str {
        match self {
            Basis::BadRequest => "bad_request",
            Basis::MissingCredentials => "missing_credentials",
            Basis::TokenRejected => "token_rejected",
        }
    }
}

/// A refusal that happens before policy: the proxy answers it without a Decision.
struct Refusal {
    reason: Reason,
    basis: Basis,
    message: String,
    provider: Option<String>,
}

/// What explain concluded.
enum Verdict {
    Decided(Decision),
    Refused {
        route: Option<(usize, String)>,
        refusal: Refusal,
    },
}

/// Runs `explain` with the config at `path`.
pub fn run(path: &Path, args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let config = match portcullis_config::load_file(path) {
        Ok(loaded) => loaded.config,
        Err(errors) => {
            for error in errors.diagnostics() {
                eprintln!("{error}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let table = match RouteTable::compile(&config) {
        Ok(table) => table,
        Err(errors) => {
            // The loader validates routes, so this is a last line of defence.
            for error in errors {
                eprintln!("{}: {error}", path.display());
            }
            return Ok(ExitCode::from(1));
        }
    };
    let mut notes = Vec::new();
    let request = parse_request(&args, &config, &mut notes)?;
    let (verdict, identity, path_shown) = judge(&config, &table, &request, &args, &mut notes)?;
    let allowed = matches!(&verdict, Verdict::Decided(d) if d.is_allowed());
    if args.json {
        let object = json_report(&verdict, &identity, &request, &path_shown, &notes);
        let text = serde_json::to_string_pretty(&object).context("cannot encode JSON")?;
        crate::cli::out(&format!("{text}\n"));
    } else {
        for note in &notes {
            eprintln!("note: {note}");
        }
        crate::cli::out(&text_report(&verdict, &identity, &request, &path_shown));
    }
    Ok(if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// Routes, authenticates and evaluates. Returns the verdict, the identity policy
/// saw, and the path as judged (normalized, or as given when it was refused).
fn judge(
    config: &Config,
    table: &RouteTable,
    request: &Request,
    args: &ExplainArgs,
    notes: &mut Vec<String>,
) -> anyhow::Result<(Verdict, Identity, String)> {
    let path: NormalizedPath = match table.normalize(&request.raw_path) {
        Ok(p) => p,
        Err(e) => {
            let refusal = Refusal {
                reason: Reason::BadRequest,
                basis: Basis::BadRequest,
                message: format!("invalid path: {e}"),
                provider: None,
            };
            let verdict = Verdict::Refused {
                route: None,
                refusal,
            };
            return Ok((verdict, Identity::anonymous(), request.raw_path.clone()));
        }
    };
    let facts = RequestFacts {
        method: &request.method,
        host: &request.host,
        path: &path,
    };
    let route = table.find(&request.host, &request.method, &path);
    let auth_mode = route.map_or(AuthMode::Required, |(_, r)| r.auth());

    // Authenticate, as the proxy does: not at all on `auth: none` routes.
    let mut identity = Identity::anonymous();
    let mut token_failure = None;
    match &request.credential {
        Credential::None => {}
        Credential::Token(_) | Credential::Claims(_) if auth_mode == AuthMode::None => {
            notes.push(
                "the route has auth: none, so the proxy does not check credentials on it".into(),
            );
        }
        Credential::Token(token) => match verify_token(config, token, args.jwks.as_deref(), notes)?
        {
            Ok(id) => identity = id,
            Err(refusal) => token_failure = Some(refusal),
        },
        Credential::Claims(claims) => match identity_from_claims(config, claims, notes) {
            Ok(id) => identity = id,
            Err(e) => {
                token_failure = Some(Refusal {
                    reason: e.reason,
                    basis: Basis::TokenRejected,
                    message: e.description,
                    provider: e.provider,
                })
            }
        },
    }
    if let Some(spiffe) = &request.workload {
        portcullis_proxy::judge::workload::attach(&mut identity, spiffe.clone());
    }
    let path_shown = path.as_str().to_string();

    let Some((index, route)) = route else {
        // The proxy answers 404 before looking at credentials; say what it would
        // have found anyway, so one run tells the whole story.
        if let Some(failure) = token_failure {
            notes.push(format!(
                "the token would also be rejected: {}: {}",
                failure.reason, failure.message
            ));
        }
        return Ok((Verdict::Decided(Decision::no_route()), identity, path_shown));
    };
    let route_id = Some((index, route.name().to_string()));
    if let Some(refusal) = token_failure {
        let verdict = Verdict::Refused {
            route: route_id,
            refusal,
        };
        return Ok((verdict, Identity::anonymous(), path_shown));
    }
    if auth_mode == AuthMode::Required && !identity.is_authenticated() {
        let refusal = Refusal {
            reason: Reason::MissingToken,
            basis: Basis::MissingCredentials,
            message: "the route has auth: required and the request carries no credential".into(),
            provider: None,
        };
        let verdict = Verdict::Refused {
            route: route_id,
            refusal,
        };
        return Ok((verdict, identity, path_shown));
    }
    let decision = route.evaluate_explained(&identity, &facts);
    if !decision.permits() && !identity.is_authenticated() {
        // As the proxy: a caller who brought no credential is asked for one (401),
        // not told that someone unknown is forbidden.
        let refusal = Refusal {
            reason: Reason::MissingToken,
            basis: Basis::MissingCredentials,
            message: format!(
                "the policy does not allow anonymous callers ({}), so a credential is asked for",
                decision.reason
            ),
            provider: None,
        };
        let verdict = Verdict::Refused {
            route: route_id,
            refusal,
        };
        return Ok((verdict, identity, path_shown));
    }
    Ok((Verdict::Decided(decision), identity, path_shown))
}

// ---------------------------------------------------------------------------
// Arguments → request

fn parse_request(
    args: &ExplainArgs,
    config: &Config,
    notes: &mut Vec<String>,
) -> anyhow::Result<Request> {
    let method = args.method.trim();
    if method.is_empty() || !method.bytes().all(is_tchar) {
        bail!("--method {:?} is not an HTTP method", args.method);
    }
    let (url_host, raw_path) = split_url(&args.url)?;
    let mut host = url_host;
    let mut bearer = None;
    let mut workload_headers = Vec::new();
    for header in &args.headers {
        let (name, value) = parse_header(header)?;
        match name.to_ascii_lowercase().as_str() {
            "host" => host = Some(value.to_string()),
            "authorization" => {
                let Some((scheme, token)) = value.split_once(' ') else {
                    bail!("--header Authorization must be `Authorization: Bearer TOKEN`");
                };
                if !scheme.eq_ignore_ascii_case("bearer") {
                    bail!("--header Authorization: only the Bearer scheme is understood");
                }
                if bearer.replace(token.trim().to_string()).is_some() {
                    bail!("more than one Authorization header (the proxy refuses such requests with 400)");
                }
            }
            "l5d-client-id" | "x-forwarded-client-cert" => {
                workload_headers.push((name.to_ascii_lowercase(), value.to_string()));
            }
            _ => notes.push(format!(
                "header {name} is not used by routing or policy; ignored"
            )),
        }
    }
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        bail!(
            "--url {:?} has no host: give a full URL or a `Host:` header",
            args.url
        );
    };
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        bail!("host {host:?} is not a valid host");
    }
    let credential = match (&args.token, bearer, &args.claims) {
        (Some(_), Some(_), _) => {
            bail!("give the token once: --token or an Authorization header, not both")
        }
        (_, Some(_), Some(_)) => bail!("--claims cannot be combined with an Authorization header"),
        (Some(t), None, _) => Credential::Token(t.trim().to_string()),
        (None, Some(t), _) => Credential::Token(t),
        (None, None, Some(c)) => Credential::Claims(parse_claims(c)?),
        (None, None, None) => Credential::None,
    };
    if args.jwks.is_some() && !matches!(credential, Credential::Token(_)) {
        bail!("--jwks only applies to a token (--token or an Authorization header)");
    }
    let workload = match &args.workload {
        Some(id) => {
            workload::validate_spiffe_id(id).map_err(|e| anyhow!("--workload: {e}"))?;
            if config.workload_identity.is_none() {
                notes.push("the config has no workload_identity section: the proxy itself would not accept a workload identity".into());
            }
            Some(id.clone())
        }
        None => workload_from_headers(config, &workload_headers, notes)?,
    };
    Ok(Request {
        method: method.to_string(),
        host,
        raw_path,
        credential,
        workload,
    })
}

/// RFC 9110 `tchar`: what a method (and a header name) may be made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits `http(s)://[user@]host[:port]/path?query` into host and path (without
/// query or fragment). An absolute path alone gives no host.
fn split_url(url: &str) -> anyhow::Result<(Option<String>, String)> {
    let url = url.trim();
    if url.starts_with('/') {
        return Ok((None, split_query(url).0.to_string()));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("--url {url:?} is not a URL: write it like https://api.example.com/path");
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        bail!("--url {url:?}: only http:// and https:// URLs are proxied");
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    // User info never reaches the proxy as part of Host.
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = split_query(target).0;
    let path = if path.is_empty() { "/" } else { path };
    Ok((Some(host.to_string()), path.to_string()))
}

/// `Name: value` → (name, trimmed value).
fn parse_header(text: &str) -> anyhow::Result<(&str, &str)> {
    let Some((name, value)) = text.split_once(':') else {
        bail!("--header {text:?} is not `Name: value`");
    };
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(is_tchar) {
        bail!("--header {text:?} has an invalid header name");
    }
    Ok((name, value.trim()))
}

/// `--claims`: a JSON object, inline or `@FILE`.
fn parse_claims(text: &str) -> anyhow::Result<Map<String, Value>> {
    let json = match text.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("--claims: cannot read {file}"))?,
        None => text.to_string(),
    };
    match serde_json::from_str(&json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => bail!("--claims must be a JSON object, like '{{\"sub\":\"alice\"}}'"),
        Err(e) => bail!("--claims is not valid JSON: {e}"),
    }
}

/// The SPIFFE ID a trusted sidecar's header would establish, when the config
/// accepts that source.
fn workload_from_headers(
    config: &Config,
    headers: &[(String, String)],
    notes: &mut Vec<String>,
) -> anyhow::Result<Option<String>> {
    if headers.is_empty() {
        return Ok(None);
    }
    let Some(wi) = &config.workload_identity else {
        notes.push(
            "the config has no workload_identity section: sidecar identity headers are ignored"
                .into(),
        );
        return Ok(None);
    };
    notes.push("sidecar identity headers are taken as coming from a trusted proxy".into());
    // The proxy's own resolution (trust domain, every line, `accept` order).
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| anyhow!("--header {name}: not a header name"))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| anyhow!("--header {name}: not a header value"))?;
        map.append(name, value);
    }
    match portcullis_proxy::judge::workload::resolve(Some(wi), &map, None, true) {
        Ok(Some(id)) => Ok(Some(id)),
        Ok(None) => {
            notes.push(format!(
                "no accepted workload_identity source yields an identity of trust domain {} from the sidecar headers",
                wi.trust_domain
            ));
            Ok(None)
        }
        Err(refusal) => bail!("the proxy would refuse this request: {}", refusal.message),
    }
}

// ---------------------------------------------------------------------------
// Credentials → identity

/// Verifies `token` with the proxy's [`Authenticator`], built from the providers
/// the token can route to (so no other provider's keys are fetched). With
/// `--jwks`, that provider's keys come from the file instead.
fn verify_token(
    config: &Config,
    token: &str,
    jwks: Option<&Path>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Result<Identity, Refusal>> {
    let mut providers: Vec<ProviderConfig> = if compact::looks_like_jwt(token) {
        // The unverified `iss` only chooses whose keys to load; the verifier routes
        // by it again and checks it after the signature.
        let iss = compact::decode_unverified(token)
            .ok()
            .and_then(|(_, claims)| {
                claims
                    .get("iss")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        config
            .providers
            .iter()
            .filter(|p| iss.as_deref() == Some(p.issuer.as_str()))
            .cloned()
            .collect()
    } else {
        config
            .providers
            .iter()
            .filter(|p| p.introspection.is_some())
            .cloned()
            .collect()
    };
    if let Some(file) = jwks {
        let file = file
            .to_str()
            .ok_or_else(|| anyhow!("--jwks path {} is not UTF-8", file.display()))?;
        for p in &mut providers {
            p.jwks_file = Some(file.to_string());
            p.jwks_uri = None;
            p.discovery = Some(false);
        }
        if providers.is_empty() {
            notes.push("--jwks unused: no configured provider would handle this token".into());
        }
    }
    let fetch = HttpFetch::new(FETCH_TIMEOUT).map_err(|e| anyhow!("cannot set up HTTP: {e}"))?;
    crate::cli::current_thread_runtime()?.block_on(async {
        let auth = Authenticator::new(&providers, Arc::new(fetch), IdentityMetrics::new())
            .map_err(|e| anyhow!("{e}"))?;
        auth.start().await;
        let not_ready: Vec<String> = auth
            .readiness()
            .into_iter()
            .filter(|p| !p.ready)
            .map(|p| {
                format!(
                    "keys of provider {} could not be loaded: {}",
                    p.name, p.detail
                )
            })
            .collect();
        Ok(match auth.verify_bearer(token).await {
            Ok(identity) => Ok(identity),
            Err(e) => {
                let mut message = e.description.clone();
                if e.reason == Reason::TokenExpired {
                    message.push_str(&expiry_hint(token));
                }
                if e.reason == Reason::UnknownKey && !not_ready.is_empty() {
                    // The verifier keeps fetch details out of caller-facing messages;
                    // the person running explain is the operator and needs them.
                    message = format!("{message} ({})", not_ready.join("; "));
                }
                Err(Refusal {
                    reason: e.reason,
                    basis: Basis::TokenRejected,
                    message,
                    provider: e.provider,
                })
            }
        })
    })
}

/// ` (exp 2024-05-01T12:00:00Z, 3h ago)`: when the expiry was, read from the
/// (already rejected, so merely informative) claims.
fn expiry_hint(token: &str) -> String {
    let exp = compact::decode_unverified(token)
        .ok()
        .and_then(|(_, claims)| claims.get("exp").and_then(Value::as_u64));
    let now = crate::token::now_unix();
    match exp {
        Some(exp) if exp < now => format!(
            " (exp {}, {} ago)",
            crate::token::rfc3339(exp),
            crate::token::human_duration(now - exp)
        ),
        _ => String::new(),
    }
}

/// Maps claims to an [`Identity`] with the claims mapping of the provider whose
/// `issuer` equals the claims' `iss` (else the default mapping), through the same
/// function the proxy's verifier uses.
fn identity_from_claims(
    config: &Config,
    claims: &Map<String, Value>,
    notes: &mut Vec<String>,
) -> Result<Identity, AuthError> {
    let iss = claims.get("iss").and_then(Value::as_str);
    let provider = config
        .providers
        .iter()
        .find(|p| Some(p.issuer.as_str()) == iss);
    let default_mapping = ClaimsMapping::default();
    let (mapping, name, issuer) = match provider {
        Some(p) => (&p.claims, p.name.as_str(), p.issuer.as_str()),
        None => {
            notes.push(match iss {
                Some(iss) => format!(
                    "no configured provider has issuer {iss:?}: the default claims mapping is used"
                ),
                None => "the claims have no `iss`: the default claims mapping is used".into(),
            });
            (&default_mapping, "", iss.unwrap_or(""))
        }
    };
    let mut identity = portcullis_identity::identity_from_claims(
        mapping,
        Value::Object(claims.clone()),
        name,
        issuer,
    )
    .map_err(|mut e| {
        e.provider = provider.map(|p| p.name.clone());
        e
    })?;
    if provider.is_none() {
        identity.provider = None;
    }
    Ok(identity)
}

// ---------------------------------------------------------------------------
// Output

fn caller_text(identity: &Identity) -> String {
    if !identity.is_authenticated() {
        return "caller: anonymous\n".to_string();
    }
    let kind = match identity.kind {
        IdentityKind::User => "user",
        IdentityKind::Service => "service",
        IdentityKind::Workload => "workload",
        IdentityKind::Anonymous => "anonymous",
    };
    let mut text = format!("caller: {kind} {}", clean(&identity.subject));
    if let Some(p) = &identity.provider {
        text.push_str(&format!(" (provider {})", clean(p)));
    }
    text.push('\n');
    let mut field = |name: &str, value: String| text.push_str(&format!("  {name}: {value}\n"));
    let join = |v: &[String]| v.iter().map(|s| clean(s)).collect::<Vec<_>>().join(", ");
    if let Some(v) = &identity.issuer {
        field("issuer", clean(v));
    }
    if let Some(v) = &identity.email {
        field("email", clean(v));
    }
    if let Some(v) = &identity.name {
        field("name", clean(v));
    }
    for (name, values) in [
        ("groups", &identity.groups),
        ("roles", &identity.roles),
        ("scopes", &identity.scopes),
    ] {
        if !values.is_empty() {
            field(name, join(values));
        }
    }
    if let Some(v) = &identity.client_id {
        field("client", clean(v));
    }
    if let Some(v) = &identity.workload {
        field("workload", clean(v));
    }
    if let Some(exp) = identity.expires_at {
        let now = crate::token::now_unix();
        let words = if exp >= now {
            format!("expires in {}", crate::token::human_duration(exp - now))
        } else {
            format!("expired {} ago", crate::token::human_duration(now - exp))
        };
        field("token", words);
    }
    text
}

fn text_report(verdict: &Verdict, identity: &Identity, request: &Request, path: &str) -> String {
    let mut text = format!(
        "request: {} {} {}\n",
        clean(&request.method),
        clean(&request.host),
        clean(path)
    );
    match verdict {
        Verdict::Decided(decision) => {
            text.push_str(&caller_text(identity));
            text.push_str(&decision.explain_text());
        }
        Verdict::Refused { route, refusal } => {
            match route {
                Some((i, name)) => {
                    text.push_str(&format!("route: {} (routes[{i}])\n", clean(name)))
                }
                None if refusal.reason == Reason::BadRequest => {}
                None => text.push_str("route: none matched\n"),
            }
            let what = match refusal.basis {
                Basis::TokenRejected => match &refusal.provider {
                    Some(p) => format!("token rejected by provider {}", clean(p)),
                    None => "token rejected".to_string(),
                },
                Basis::BadRequest => "request refused".to_string(),
                Basis::MissingCredentials => "no credentials".to_string(),
            };
            text.push_str(&format!(
                "{what}: {}: {}\n",
                refusal.reason,
                clean(&refusal.message)
            ));
            text.push_str(&format!("deny: {}\n", refusal.reason));
        }
    }
    text
}

fn json_report(
    verdict: &Verdict,
    identity: &Identity,
    request: &Request,
    path: &str,
    notes: &[String],
) -> Value {
    let mut object = match verdict {
        Verdict::Decided(decision) => match serde_json::to_value(decision) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        },
        Verdict::Refused { route, refusal } => {
            let mut map = Map::new();
            map.insert("decision".into(), "deny".into());
            map.insert("reason".into(), json!(refusal.reason));
            map.insert("basis".into(), refusal.basis.as_str().into());
            map.insert("route".into(), json!(route.as_ref().map(|(_, n)| n)));
            map.insert("route_index".into(), json!(route.as_ref().map(|(i, _)| i)));
            map.insert("rule".into(), Value::Null);
            map.insert("enforced".into(), true.into());
            map.insert("rules".into(), json!([]));
            map.insert("message".into(), refusal.message.clone().into());
            if refusal.basis == Basis::TokenRejected {
                map.insert(
                    "token_error".into(),
                    json!({
                        "reason": refusal.reason,
                        "description": refusal.message,
                        "provider": refusal.provider,
                    }),
                );
            }
            map
        }
    };
    object.insert(
        "request".into(),
        json!({"method": request.method, "host": request.host, "path": path}),
    );
    object.insert(
        "identity".into(),
        serde_json::to_value(identity).unwrap_or(Value::Null),
    );
    object.insert("notes".into(), json!(notes));
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_and_path() {
        let (h, p) = split_url("https://u:p@API.example.com:8443/a/b?x=1#f").unwrap();
        assert_eq!(h.as_deref(), Some("API.example.com:8443"));
        assert_eq!(p, "/a/b");
        assert_eq!(split_url("http://h").unwrap().1, "/");
        assert_eq!(split_url("http://h?q").unwrap().1, "/");
        assert_eq!(
            split_url("/only/path?q").unwrap(),
            (None, "/only/path".into())
        );
        assert!(split_url("ftp://h/x").is_err());
        assert!(split_url("example.com/x").is_err());
    }

    #[test]
    fn headers_parse_strictly() {
        assert_eq!(parse_header("Host:  a.b ").unwrap(), ("Host", "a.b"));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }

    #[test]
    fn claims_map_with_the_provider_mapping() {
        let config: Config = serde_json::from_value(json!({
            "providers": [{
                "name": "kc", "issuer": "https://kc", "allow_any_audience": true,
                "claims": {"groups": "realm_access.roles", "scopes": "scp"}
            }]
        }))
        .unwrap();
        let claims = json!({"iss": "https://kc", "sub": "u", "realm_access": {"roles": ["admin"]}, "scp": ["a", "b"], "email": "x@y", "email_verified": false});
        let mut notes = Vec::new();
        let id = identity_from_claims(&config, claims.as_object().unwrap(), &mut notes).unwrap();
        assert_eq!(id.provider.as_deref(), Some("kc"));
        assert_eq!(id.groups, ["admin"]);
        assert_eq!(id.scopes, ["a", "b"]);
        assert_eq!(id.email, None, "unverified email is dropped");
        assert!(notes.is_empty());

        let claims = json!({"sub": "u", "groups": 5});
        let e = identity_from_claims(&config, claims.as_object().unwrap(), &mut notes).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidToken);
        assert!(e.description.contains("groups"));
        assert_eq!(notes.len(), 1);

        let claims = json!({"sub": "svc", "client_id": "svc"});
        let id = identity_from_claims(&config, claims.as_object().unwrap(), &mut notes).unwrap();
        assert_eq!(id.kind, IdentityKind::Service);
    }
}
