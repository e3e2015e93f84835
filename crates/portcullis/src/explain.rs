//! `portcullis explain` (SPEC §1): one request judged offline by the proxy's own
//! decision core.
//!
//! It builds the runtime `portcullis check` builds (the compilation `serve`
//! runs; nothing written, no background task), turns the arguments into the
//! core's request facts and asks [`judge::judge`], the function the reverse
//! proxy, forward-auth and ext_authz call, so the answer cannot drift from
//! theirs. What only explain has enters as facts, not as a copy of a step:
//! `--claims` as [`Offline::claims`] (mapped by the authenticator as the
//! issuer's provider maps a verified token), `--workload` as a verified peer
//! identity (filtered by `workload_identity` like an mTLS certificate's), and
//! sidecar headers as from a trusted proxy. Nothing is fetched unless a token
//! needs its provider's keys (only that provider's), or `--jwks` supplies them.
//!
//! Exit codes: 0 allow; 3 deny — by policy, no route, a path the proxy would refuse
//! with 400, a missing credential, or a token that is rejected (including one that
//! cannot even be parsed: the proxy would answer 401, which is a denial, not a
//! usage error); 1 for a usage or config error. Under `mode: audit` the exit code
//! still follows the evaluated outcome (the text says it would not be enforced):
//! explain answers "what does this policy decide", which is the point of a shadow
//! rollout.

mod report;
mod request;

use anyhow::{anyhow, Context as _};
use clap::Args;
use portcullis_config::{AuthMode, Config};
use portcullis_core::{Identity, Reason};
use portcullis_identity::jose::compact;
use portcullis_policy::Decision;
use portcullis_proxy::judge::{self, Frontend, Judgment, Offline, RequestFacts};
use portcullis_proxy::respond::Refusal;
use portcullis_proxy::runtime::Runtime;
use report::{Basis, Refused, Verdict};
use request::Request;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
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
    /// The caller's workload identity (a SPIFFE ID), as a verified peer would
    /// establish it (an mTLS certificate, or Envoy's principal with `accept: [xfcc]`).
    #[arg(long, value_name = "SPIFFE_ID")]
    workload: Option<String>,
    /// A request header, as the proxy would receive it from a trusted proxy
    /// (`Host`, `Authorization: Bearer …`, `l5d-client-id`, `x-forwarded-client-cert`…).
    #[arg(short = 'H', long = "header", value_name = "K: V")]
    headers: Vec<String>,
    /// Verify `--token` against this JWKS instead of fetching the provider's keys.
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Explain an MCP `tools/call` of this tool (SPEC §10): the policy's `tools`
    /// conditions judge it. Without it, they are set aside as for every other method.
    #[arg(long, value_name = "NAME")]
    mcp_tool: Option<String>,
}

/// How long each key or introspection fetch may take: explain is interactive.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `explain` with the config at `path`.
pub fn run(path: &Path, args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let mut config = match portcullis_config::load_file(path) {
        Ok(loaded) => loaded.config,
        Err(errors) => {
            for error in errors.diagnostics() {
                eprintln!("{error}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let mut notes = Vec::new();
    let request = request::parse(&args, &config, &mut notes)?;
    if let (Some(file), Some(token)) = (&args.jwks, &request.token) {
        use_jwks(&mut config, token, file, &mut notes)?;
    }
    let rt = match Runtime::offline(config, FETCH_TIMEOUT) {
        Ok(rt) => rt,
        Err(errors) => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for error in errors {
                eprintln!(
                    "{}",
                    crate::check::place(&text, &path.display().to_string(), &error)
                );
            }
            return Ok(ExitCode::from(1));
        }
    };
    let (verdict, identity, path_shown) =
        crate::cli::current_thread_runtime()?.block_on(explain(&rt, &request, &mut notes));
    if args.json {
        let object = report::json(&verdict, &identity, &request, &path_shown, &notes);
        let text = serde_json::to_string_pretty(&object).context("cannot encode JSON")?;
        crate::cli::out(&format!("{text}\n"));
    } else {
        for note in &notes {
            eprintln!("note: {note}");
        }
        crate::cli::out(&report::text(&verdict, &identity, &request, &path_shown));
    }
    Ok(if verdict.allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// Asks the core. Returns the verdict, the identity shown, and the path as
/// judged (normalized, or as given when it was refused).
async fn explain(
    rt: &Runtime,
    request: &Request,
    notes: &mut Vec<String>,
) -> (Verdict, Identity, String) {
    let offline = Offline {
        claims: request.claims.clone(),
        mcp_tool: request.mcp_tool.clone(),
    };
    let facts = RequestFacts {
        frontend: Frontend::Proxy,
        method: &request.method,
        host: &request.host,
        scheme: request.scheme,
        raw_path: &request.raw_path,
        headers: &request.headers,
        upgrade: request.headers.contains_key(http::header::UPGRADE),
        peer_trusted: true,
        peer_identity: request.workload.as_ref(),
        client_ip: "127.0.0.1",
        html: false,
        request_id: "explain",
        offline: Some(&offline),
    };
    let j = judge::judge(rt, &facts).await;
    let path = j
        .path
        .as_ref()
        .map_or_else(|| request.raw_path.clone(), |p| p.as_str().to_string());
    let mut identity = j.identity.clone();
    let no_route = j.reserved
        || j.refusal
            .as_ref()
            .is_some_and(|r| r.reason == Reason::NoRoute);
    if no_route {
        // The proxy answers 404 before it looks at credentials; say who the caller
        // would have been anyway, so one run tells the whole story.
        match judge::identify(rt, &facts, AuthMode::Optional).await {
            Ok(id) => identity = id,
            Err(r) => notes.push(format!(
                "the token would also be rejected: {}: {}",
                r.reason, r.message
            )),
        }
    }
    add_notes(rt, request, &j, &identity, notes);
    (verdict(rt, request, j), Identity::clone(&identity), path)
}

/// The core's judgment as explain reports it.
fn verdict(rt: &Runtime, request: &Request, j: Judgment) -> Verdict {
    let route = j.route.zip(j.route_name);
    let refused = match (j.decision, j.refusal) {
        (Some(d), None) => return Verdict::Decided(d),
        (Some(d), Some(r)) if r.reason == d.reason => return Verdict::Decided(d),
        (None, None) => return Verdict::Decided(Decision::no_route()), // reserved
        (_, Some(r)) if r.reason == Reason::NoRoute => {
            return Verdict::Decided(Decision::no_route())
        }
        (Some(d), Some(r)) if r.reason == Reason::MissingToken => Refused {
            reason: r.reason,
            basis: Basis::MissingCredentials,
            message: format!(
                "the policy does not allow anonymous callers ({}), so a credential is asked for",
                d.reason
            ),
            provider: None,
        },
        (_, Some(r)) => refused(rt, request, r),
    };
    Verdict::Refused { route, refused }
}

fn refused(rt: &Runtime, request: &Request, r: Refusal) -> Refused {
    let (basis, mut message) = match r.reason {
        Reason::BadRequest => (Basis::BadRequest, r.message),
        Reason::MissingToken => (
            Basis::MissingCredentials,
            "the route has auth: required and the request carries no credential".to_string(),
        ),
        Reason::RateLimited => (Basis::RateLimited, r.message),
        reason if reason.is_token_failure() => (Basis::TokenRejected, r.message),
        _ => (Basis::Unavailable, r.message),
    };
    if r.reason == Reason::TokenExpired {
        message.push_str(&expiry_hint(request.token.as_deref().unwrap_or_default()));
    }
    if r.reason == Reason::UnknownKey {
        // The verifier keeps fetch details out of caller-facing messages; the
        // person running explain is the operator and needs them.
        let why: Vec<String> = rt
            .auth
            .readiness()
            .into_iter()
            .filter(|p| !p.ready && Some(&p.name) == r.provider.as_ref())
            .map(|p| {
                format!(
                    "keys of provider {} could not be loaded: {}",
                    p.name, p.detail
                )
            })
            .collect();
        if !why.is_empty() {
            message = format!("{message} ({})", why.join("; "));
        }
    }
    Refused {
        reason: r.reason,
        basis,
        message,
        provider: r.provider,
    }
}

/// What the operator should know that the verdict does not say.
fn add_notes(
    rt: &Runtime,
    request: &Request,
    j: &Judgment,
    identity: &Identity,
    notes: &mut Vec<String>,
) {
    if j.reserved {
        notes.push("the path is one of the proxy's own endpoints (/.portcullis/…): it is answered there, not routed".into());
    }
    let Some(index) = j.route else { return };
    let credential = request.token.is_some() || request.claims.is_some();
    if credential && rt.config.routes[index].auth == AuthMode::None {
        notes
            .push("the route has auth: none, so the proxy does not check credentials on it".into());
    }
    let Some(wi) = &rt.config.workload_identity else {
        return;
    };
    let bad_request = j
        .refusal
        .as_ref()
        .is_some_and(|r| r.reason == Reason::BadRequest);
    if identity.workload.is_some() || bad_request {
        return;
    }
    if let Some(peer) = &request.workload {
        notes.push(format!(
            "workload {} is not accepted: workload_identity takes {:?} identities of trust domain {} only",
            peer.spiffe_id, peer.source, wi.trust_domain
        ));
    } else if request.sidecar_headers {
        notes.push(format!(
            "no accepted workload_identity source yields an identity of trust domain {} from the sidecar headers",
            wi.trust_domain
        ));
    }
}

/// `--jwks`: the keys of the provider the token's (unverified) `iss` names come
/// from the file instead of the provider's own source.
fn use_jwks(
    config: &mut Config,
    token: &str,
    file: &Path,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let file = file
        .to_str()
        .ok_or_else(|| anyhow!("--jwks path {} is not UTF-8", file.display()))?;
    let iss = compact::decode_unverified(token)
        .ok()
        .and_then(|(_, claims)| {
            claims
                .get("iss")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    match config
        .providers
        .iter_mut()
        .find(|p| iss.as_deref() == Some(p.issuer.as_str()))
    {
        Some(p) => {
            p.jwks_file = Some(file.to_string());
            p.jwks_uri = None;
            p.discovery = Some(false);
        }
        None => notes.push("--jwks unused: no configured provider would handle this token".into()),
    }
    Ok(())
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
