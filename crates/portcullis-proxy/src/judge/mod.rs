//! The decision core: every front end (the reverse proxy, forward-auth, Envoy
//! ext_authz) asks it the same question — given these request facts, who is
//! calling, may they, and what must the service be told — and gets one
//! [`Judgment`] back. It holds every step that decides:
//!
//! method → path normalization → reserved endpoints → route → workload identity →
//! credential → token verification → policy → 401 vs 403 → rate limit → the
//! headers to set and to remove.
//!
//! A front end only translates its protocol into [`RequestFacts`] and the
//! judgment back into its protocol (forward the request, answer 200 with
//! headers, answer a gRPC `CheckResponse`), so a request gets the same answer
//! whichever front end asked (SPEC §4). Nothing here does network I/O except
//! what authentication itself needs (JWKS, introspection), through the
//! authenticator.

pub mod credentials;
pub mod workload;

use crate::authority::JudgedHost;
use crate::forward::headers;
use crate::login::{ActiveSession, SessionLookup};
use crate::propagate::{self, Propagated};
use crate::respond::Refusal;
use crate::runtime::Runtime;
use credentials::Credential;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use portcullis_config::{AuthMode, RateLimitKey};
use portcullis_core::{Identity, Reason};
use portcullis_policy::{Decision, NormalizedPath};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;
pub use workload::PeerIdentity;

/// Which front end asked (the audit line's `frontend`, SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    Proxy,
    ForwardAuth,
    ExtAuthz,
}

impl Frontend {
    pub fn as_str(self) -> &'static str {
        match self {
            Frontend::Proxy => "proxy",
            Frontend::ForwardAuth => "forward_auth",
            Frontend::ExtAuthz => "ext_authz",
        }
    }
}

/// The facts of one request, as its front end read them. Plain data: no hyper
/// types, so every front end can fill it.
pub struct RequestFacts<'a> {
    pub frontend: Frontend,
    /// As sent (methods are case-sensitive).
    pub method: &'a str,
    /// The one host the request is judged by (see [`crate::authority`]).
    pub host: &'a JudgedHost,
    /// `http` or `https`, as the client reached the front door.
    pub scheme: &'a str,
    /// The raw path, without the query.
    pub raw_path: &'a str,
    /// The request headers: credentials (`authorization`) and, from trusted
    /// peers, sidecar identity headers.
    pub headers: &'a HeaderMap,
    /// The request asks to switch protocols (HTTP/1.1 `Upgrade`, which the
    /// proxy strips from `headers` as hop-by-hop before judging).
    pub upgrade: bool,
    /// Whether the peer is one of `server.trusted_proxies` (its sidecar and
    /// forwarding headers count).
    pub peer_trusted: bool,
    /// A workload identity the front end verified itself (mTLS, Envoy's peer).
    pub peer_identity: Option<&'a PeerIdentity>,
    /// The client's address (after `trusted_proxies`): the rate-limit key for
    /// anonymous callers.
    pub client_ip: &'a str,
    /// The caller asked for HTML (403 pages are built for browsers).
    pub html: bool,
    /// For the 403 page.
    pub request_id: &'a str,
    /// Set only by `portcullis explain`, which asks offline (see [`Offline`]).
    pub offline: Option<&'a Offline>,
}

/// What `portcullis explain` brings besides a request's facts. Explain asks
/// this core its question rather than keeping a copy of the steps, so what it
/// needs beyond a request is a fact here, not a second pipeline: claims it takes
/// as verified go where a token's verified claims would, and the policy always
/// explains itself. (A verified workload, `--workload`, is already a fact:
/// [`RequestFacts::peer_identity`].)
#[derive(Debug, Default)]
pub struct Offline {
    /// Claims taken as verified (`--claims`): they stand in for a bearer token,
    /// under the same `auth` rules, mapped by the authenticator as the issuer's
    /// provider maps a verified token's claims.
    pub claims: Option<serde_json::Value>,
    /// `--mcp-tool`: judge the request as an MCP `tools/call` of this tool (SPEC §10).
    pub mcp_tool: Option<String>,
}

/// What the core decided about one request. Every front end records the audit
/// line and metrics from it (see [`crate::record::Exchange`]).
pub struct Judgment {
    /// The path as judged, once normalization succeeded.
    pub path: Option<NormalizedPath>,
    /// The path is one of the proxy's own endpoints (SPEC §4): not routed here.
    pub reserved: bool,
    /// The matched route's index in the config.
    pub route: Option<usize>,
    /// The route's name.
    pub route_name: Option<String>,
    /// Who is calling (anonymous until proven otherwise). Shared with the
    /// verified-token cache: changed only through `Arc::make_mut`, which copies.
    pub identity: Arc<Identity>,
    /// The policy's word, when it spoke.
    pub decision: Option<Decision>,
    /// Why the request is refused; `None` when it may go on.
    pub refusal: Option<Refusal>,
    /// For an allowed request: the identity headers and assertion to set
    /// (overwriting).
    pub set: Option<Propagated>,
    /// For an allowed request: headers present in the request that must not
    /// reach the service (spoofable ones the proxy does not set, and
    /// `authorization` unless the route forwards it).
    pub remove: Vec<HeaderName>,
    /// The browser session the caller came with, when one did.
    pub session: Option<ActiveSession>,
    /// For an allowed request carrying the proxy's own cookies: the `Cookie`
    /// header the service gets instead (`None`: none at all), so no session
    /// cookie ever reaches a service that could replay it.
    pub cookie: Option<Option<http::HeaderValue>>,
    /// `Set-Cookie`s the answer must carry, whatever it is: the clearing of a
    /// session cookie that named no live session (counted as no session, see
    /// [`identify_caller`]). A refusal already carries them; a front end that
    /// answers an allowed request adds them to its answer.
    pub set_cookies: Vec<HeaderValue>,
    /// When the caller was identified, for the trace's `authenticate` span;
    /// measured only when `telemetry` is configured.
    pub auth_timing: Option<AuthTiming>,
}

/// How long identifying the caller took, and why it refused, if it did.
#[derive(Debug, Clone, Copy)]
pub struct AuthTiming {
    pub started: Instant,
    pub ended: Instant,
    pub refused: Option<Reason>,
}

impl Default for Judgment {
    fn default() -> Self {
        Judgment {
            path: None,
            reserved: false,
            route: None,
            route_name: None,
            identity: Identity::anonymous_shared(),
            decision: None,
            refusal: None,
            set: None,
            remove: Vec::new(),
            session: None,
            cookie: None,
            set_cookies: Vec::new(),
            auth_timing: None,
        }
    }
}

/// Judges one request. Never fails: a refusal is part of the judgment.
pub async fn judge(rt: &Runtime, facts: &RequestFacts<'_>) -> Judgment {
    let mut j = Judgment::default();
    if !rt.routes.method_allowed(facts.method) {
        j.refusal = Some(Refusal::with_message(
            Reason::BadRequest,
            "this method is not accepted here",
        ));
        return j;
    }
    // Normalize once; the proxy's own endpoints are recognised on the result,
    // then routes are matched on it, and the upstream receives exactly this path.
    let path = match rt.routes.normalize(facts.raw_path) {
        Ok(p) => p,
        Err(e) => {
            j.refusal = Some(Refusal::with_message(
                Reason::BadRequest,
                format!("invalid path: {e}"),
            ));
            return j;
        }
    };
    // A front end that only asks (forward-auth, ext_authz) forwards the path as
    // it was written, and a service that does not resolve `..` itself
    // (FastAPI's `{rest:path}`, most routers) would serve `/orders/%2e%2e/public`
    // from its `/orders` handler after it was judged as `/public`. So what is
    // judged there must already be the path that is served.
    if facts.frontend != Frontend::Proxy && !same_path(facts.raw_path, path.as_str()) {
        j.refusal = Some(Refusal::with_message(
            Reason::BadRequest,
            "the described path is not in normal form (dot segments, repeated or \
             encoded characters); the front proxy passes it on as written, so it \
             cannot be judged as another path",
        ));
        return j;
    }
    if let Err(mut refusal) = decide(rt, facts, &path, &mut j).await {
        refusal.sign_in = wants_sign_in(rt, facts, &j, &refusal);
        refusal.set_cookies.extend(j.set_cookies.iter().cloned());
        // The proxy starts this sign-in itself, from this request: what it
        // sets must keep the browser's sign-in cookies few (see
        // `login::cookie`). The other front ends send the browser to
        // `/.portcullis/login`, which does the same.
        if let (true, Frontend::Proxy, Some(login)) = (refusal.sign_in, facts.frontend, &rt.login) {
            refusal
                .set_cookies
                .extend(login.cookies.surplus_sign_ins(facts.headers));
        }
        // MCP clients find the authorization server from the 401 (SPEC §10).
        if refusal.reason.status() == 401 {
            refusal.resource_metadata = j.route.and_then(|i| crate::mcp::metadata::url_for(rt, i));
        }
        j.refusal = Some(refusal);
    }
    j.path = Some(path);
    j
}

/// The path and query of a request a front end that only asks describes
/// (forward-auth's `X-Forwarded-Uri`, ext_authz's `path`). A `#` is refused
/// (400): no client sends a fragment, and the front proxy passes the target on
/// as written, so `/public#/../admin` judged as `/public` would reach a
/// server that reads the whole target as its path (uvicorn) as `/admin`.
pub fn described_target(target: &str) -> Result<(&str, Option<&str>), Refusal> {
    if target.contains('#') {
        return Err(Refusal::with_message(
            Reason::BadRequest,
            "the described request target holds a fragment (#)",
        ));
    }
    Ok(portcullis_policy::split_query(target))
}

/// `raw` is the canonical path `canonical`, but for the case of the hex digits
/// in its escapes (`%c3%a9` is `%C3%A9`), which no server reads differently.
fn same_path(raw: &str, canonical: &str) -> bool {
    let (raw, canonical) = (raw.as_bytes(), canonical.as_bytes());
    if raw.len() != canonical.len() {
        return false;
    }
    let mut in_escape = 0;
    raw.iter().zip(canonical).all(|(&r, &c)| {
        let same = if in_escape > 0 {
            in_escape -= 1;
            r.eq_ignore_ascii_case(&c)
        } else {
            r == c
        };
        if r == b'%' {
            in_escape = 2;
        }
        same
    })
}

/// Whether a refused request should be sent to sign in: it asked for a page
/// (`Accept: text/html`, not an `X-Requested-With` script call), on a route
/// with `login: true`, and what it lacks is a session (none, or an ended one).
/// API clients always get the 401.
fn wants_sign_in(rt: &Runtime, facts: &RequestFacts<'_>, j: &Judgment, refusal: &Refusal) -> bool {
    rt.login.is_some()
        && matches!(
            refusal.reason,
            Reason::MissingToken | Reason::SessionExpired
        )
        && facts.html
        && !facts.headers.contains_key("x-requested-with")
        && j.route.is_some_and(|i| rt.config.routes[i].login)
}

/// Every step after normalization, filling `j` as it learns; the first refusal
/// ends it.
async fn decide(
    rt: &Runtime,
    facts: &RequestFacts<'_>,
    path: &NormalizedPath,
    j: &mut Judgment,
) -> Result<(), Refusal> {
    if crate::endpoints::is_reserved(path.matching())
        || crate::mcp::metadata::lookup(rt, path.matching()).is_some()
    {
        j.reserved = true;
        return Ok(());
    }
    let (index, route) = rt
        .routes
        .find(&facts.host.name, facts.method, path)
        .ok_or_else(|| Refusal::new(Reason::NoRoute))?;
    let route_cfg = &rt.config.routes[index];
    j.route = Some(index);
    j.route_name = Some(route.name().to_string());
    // An MCP route's tool rules and session ownership are judged on the
    // JSON-RPC body (SPEC §10), which forward-auth never sees and ext_authz
    // only may: judged here without it, every tool would pass the rules that
    // name tools. Refused rather than judged by half its policy.
    if route_cfg.mcp.is_some() && facts.frontend != Frontend::Proxy {
        return Err(Refusal::with_message(
            Reason::Forbidden,
            "an MCP route is judged only by the reverse proxy: its tool rules and \
             sessions need the JSON-RPC body",
        ));
    }

    // Timed only for traces: the clock is not read otherwise.
    let auth_started = rt.config.telemetry.is_some().then(Instant::now);
    let identified = identify_caller(rt, facts, route_cfg.auth).await;
    j.auth_timing = auth_started.map(|started| AuthTiming {
        started,
        ended: Instant::now(),
        refused: identified.as_ref().err().map(|r| r.reason),
    });
    let caller = identified?;
    let token_verified = caller.token_verified;
    j.identity = caller.identity;
    j.session = caller.session;
    j.set_cookies.extend(caller.clear_cookie);
    // Refused with the caller known, so the audit line names whose session
    // another page tried to use.
    if let Some(why) = caller.forged {
        return Err(Refusal::with_message(
            Reason::Forbidden,
            format!(
                "{why}, and only the session cookie authenticates it: refused as a \
                 possible cross-site request forgery (a trusted page's origin belongs on \
                 login.trusted_origins)"
            ),
        ));
    }

    // Authorize: one Decision drives the response, the audit line and the metrics.
    // (On an MCP route this is the judgment of every JSON-RPC method but
    // `tools/call`, whose tool `judge_call` judges.)
    let policy_facts = portcullis_policy::RequestFacts {
        method: facts.method,
        host: &facts.host.name,
        path,
        // `portcullis explain --mcp-tool` asks about a tools/call; a request
        // itself never carries one (the MCP front end asks `judge_call`).
        tool: facts.offline.and_then(|o| o.mcp_tool.as_deref()),
    };
    let (decision, denial) = authorize(
        route,
        &j.identity,
        &policy_facts,
        j.session.as_ref(),
        facts.html,
        facts.request_id,
        facts.offline.is_some(),
    );
    j.decision = Some(decision);
    if let Some(refusal) = denial {
        return Err(refusal);
    }

    // Rate-limit per caller. The kind prefixes the key, so a subject that reads
    // like an IP address never shares an anonymous caller's budget.
    if let Some(limiter) = &rt.limiters[index] {
        let provider = j.identity.provider.as_deref().unwrap_or("");
        let key = match limiter.key {
            // Qualified by the provider: the same `sub` or `client_id` at
            // another issuer is another caller, and must not spend this one's
            // budget. The provider's length goes first, so no provider name
            // and subject can be spliced into another pair.
            RateLimitKey::Identity if j.identity.is_authenticated() => {
                format!("sub:{}:{provider}:{}", provider.len(), j.identity.subject)
            }
            RateLimitKey::Client => match &j.identity.client_id {
                Some(client) => format!("client:{}:{provider}:{client}", provider.len()),
                None => format!("ip:{}", facts.client_ip),
            },
            RateLimitKey::Route => String::new(),
            RateLimitKey::Identity | RateLimitKey::Ip => format!("ip:{}", facts.client_ip),
        };
        limiter.check(rt.shared_state.as_ref(), &key).await?;
    }

    // What the service is told: exactly the proxy's view of the caller. Borrowed
    // from the config in the common cases: this runs for every allowed request.
    let audience: Cow<'_, str> = match (&route_cfg.audience, facts.frontend) {
        (Some(aud), _) => Cow::Borrowed(aud),
        // The service behind the reverse proxy is the upstream itself.
        (None, Frontend::Proxy) => Cow::Borrowed(
            rt.pools
                .get(index)
                .and_then(Option::as_ref)
                .and_then(|p| p.endpoints.first())
                .map_or("", |e| e.origin.as_str()),
        ),
        // Behind another front door, the service is what the request named.
        (None, _) => match facts.host.authority.as_ref().and_then(|a| a.to_str().ok()) {
            Some(authority) => Cow::Owned(format!("{}://{}", facts.scheme, authority)),
            None => Cow::Borrowed(""),
        },
    };
    let set = propagate::identity_set(&j.identity, rt, &audience).map_err(|e| {
        tracing::error!(error = %e, "cannot sign assertion");
        Refusal::with_message(
            Reason::UpstreamUnavailable,
            "cannot sign identity assertion",
        )
    })?;
    j.set = Some(set);
    // The caller's token stays with the proxy unless the route forwards it (and
    // never when the proxy sends its own credential instead).
    // An MCP server never gets it, whatever the config says (MCP authorization
    // forbids token passthrough; `check` refuses `forward_token` there too).
    // Where the proxy authenticates, only the token it verified goes on: an
    // `Authorization` it read as no bearer token (another scheme, a bare
    // JWT), beside a session or workload that spoke instead, would reach a
    // service that takes whatever the proxy forwards as checked.
    let keep_token = route_cfg.forward_token
        && route_cfg.upstream_auth.is_none()
        && route_cfg.mcp.is_none()
        && (route_cfg.auth == AuthMode::None || token_verified);
    j.remove = headers::spoofable_present(
        facts.headers,
        facts.peer_trusted,
        rt.assertion_header.as_str(),
        keep_token,
    );
    if !keep_token && facts.headers.contains_key(http::header::AUTHORIZATION) {
        j.remove.push(http::header::AUTHORIZATION);
    }
    if let Some(login) = &rt.login {
        j.cookie = login.cookies.without_ours(facts.headers);
    }
    Ok(())
}

/// Who is calling: the workload identity from the sources
/// `workload_identity.accept` allows, and the bearer token (exactly one), verified
/// unless `auth` is `none`. With `auth: required`, neither is a 401
/// `missing_token`; an invalid token is a 401 whatever `auth` says (but `none`).
pub async fn identify(
    rt: &Runtime,
    facts: &RequestFacts<'_>,
    auth: AuthMode,
) -> Result<Arc<Identity>, Refusal> {
    identify_caller(rt, facts, auth).await.map(|c| c.identity)
}

/// The caller and, when a browser session vouched for them, that session.
pub struct Caller {
    pub identity: Arc<Identity>,
    pub session: Option<ActiveSession>,
    /// The request carried a session cookie of ours that named no live
    /// session, and it counted as none: the `Set-Cookie` that clears it.
    pub clear_cookie: Option<HeaderValue>,
    /// Only the session authenticates this request, which can change
    /// something, and an untrusted page sent it (why, in words): the caller
    /// is named, but the request must be refused (403).
    pub forged: Option<String>,
    /// The request's bearer token was verified and names this caller: the
    /// only `Authorization` a `forward_token` route passes on.
    pub token_verified: bool,
}

/// [`identify`], with the browser session (`login`): a live session counts as
/// a credential like a bearer token, and a session and a token naming
/// different callers are a 400 (SPEC §5), never resolved by choosing one.
///
/// A session cookie that names no live session (ended, unknown, or failing
/// its MAC: [`SessionLookup::Dead`]) counts as no session when a token is
/// present (the token alone decides) or when the route does not require a
/// caller (`optional`: anonymous); only where a caller is required and
/// nothing else speaks for them is it a 401 `session_expired` (a browser on a
/// `login: true` route is then sent to sign in). Either way the answer clears
/// the cookie: left in place, a cookie that outlived its session (the idle
/// timeout is far shorter than the cookie's life) would stand in the way of
/// every later request.
///
/// A live session that is the request's only credential counts only when a
/// page the proxy trusts sent the request, if it can change something (see
/// `login::origin`): a browser attaches the cookie by itself, whichever page
/// started the request. Where a caller is required that is
/// [`Caller::forged`], a 403; on an `optional` route the session counts as
/// absent, as if the browser had not sent the cookie, and the request is
/// judged as anonymous.
pub async fn identify_caller(
    rt: &Runtime,
    facts: &RequestFacts<'_>,
    auth: AuthMode,
) -> Result<Caller, Refusal> {
    // Forward-auth's trusted peer is the edge proxy, which copies the client's
    // own headers into the authz request (nginx `auth_request`, Caddy): an
    // `l5d-client-id` or `x-forwarded-client-cert` there may be the client's.
    // Its credentials are the authz request's token and session (SPEC §4).
    let sidecar_headers_trusted = facts.peer_trusted && facts.frontend != Frontend::ForwardAuth;
    let workload = workload::resolve(
        rt.config.workload_identity.as_ref(),
        facts.headers,
        facts.peer_identity,
        sidecar_headers_trusted,
    )?;
    let credential = match facts.offline.and_then(|o| o.claims.as_ref()) {
        Some(claims) => Credential::Claims(claims),
        None => credentials::credential(facts.headers)?,
    };
    let (session, clear_cookie) = match (&rt.login, auth) {
        (Some(login), AuthMode::Required | AuthMode::Optional) => {
            match login.session(facts.headers, &rt.auth).await? {
                SessionLookup::Live(active) => (Some(active), None),
                SessionLookup::Dead => (None, Some(login.cookies.clear_session())),
                SessionLookup::None => (None, None),
            }
        }
        _ => (None, None),
    };
    let forgery = match (&session, &rt.login) {
        (Some(_), Some(login)) if matches!(credential, Credential::None) => login.origins.forgery(
            facts.method,
            facts.upgrade,
            facts.headers,
            facts.scheme,
            facts.host,
        ),
        _ => None,
    };
    let (session, forged) = match forgery {
        Some(_) if auth == AuthMode::Optional => (None, None),
        forged => (session, forged),
    };
    if let Some(clear) = &clear_cookie {
        if auth == AuthMode::Required && matches!(credential, Credential::None) {
            let mut refusal = Refusal::new(Reason::SessionExpired);
            refusal.set_cookies.push(clear.clone());
            return Err(refusal);
        }
    }
    match identify_with(rt, credential, session, workload, auth).await {
        Ok(mut caller) => {
            caller.clear_cookie = clear_cookie;
            caller.forged = forged.map(str::to_string);
            Ok(caller)
        }
        Err(mut refusal) => {
            refusal.set_cookies.extend(clear_cookie);
            Err(refusal)
        }
    }
}

/// The caller from their credential, live session (if any) and workload.
async fn identify_with(
    rt: &Runtime,
    credential: Credential<'_>,
    session: Option<ActiveSession>,
    workload: Option<String>,
    auth: AuthMode,
) -> Result<Caller, Refusal> {
    let rejected = |e: portcullis_identity::AuthError| {
        let mut r = Refusal::with_message(e.reason, e.description);
        r.provider = e.provider;
        r
    };
    let mut identity = Identity::anonymous_shared();
    let token_verified = matches!(credential, Credential::Bearer(_)) && auth != AuthMode::None;
    match credential {
        Credential::None
            if session.is_none() && auth == AuthMode::Required && workload.is_none() =>
        {
            return Err(Refusal::new(Reason::MissingToken));
        }
        Credential::Bearer(token) if auth != AuthMode::None => {
            identity = rt.auth.verify_bearer(token).await.map_err(rejected)?;
            if let Some(s) = &session {
                let same = s.session.identity.subject == identity.subject
                    && s.session.identity.issuer == identity.issuer;
                if !same {
                    return Err(Refusal::with_message(
                        Reason::BadRequest,
                        "the bearer token and the session name different callers",
                    ));
                }
            }
        }
        Credential::Claims(claims) if auth != AuthMode::None => {
            identity = Arc::new(
                rt.auth
                    .identity_from_claims(claims.clone())
                    .map_err(rejected)?,
            );
        }
        Credential::None | Credential::Bearer(_) | Credential::Claims(_) => {}
    }
    if let (Some(s), false) = (&session, identity.is_authenticated()) {
        // The session vouches for its caller until it ends, whatever the ID
        // token it began with said: that token's `exp` (often an hour, and
        // never renewed without a refresh token) would otherwise become every
        // assertion's, expired before it is issued.
        let mut caller = s.session.identity.clone();
        caller.expires_at = Some(s.session.expires_at);
        identity = Arc::new(caller);
    }
    if let Some(spiffe) = workload {
        // A copy when shared: the cached identity is the token's alone.
        workload::attach(Arc::make_mut(&mut identity), spiffe);
    }
    Ok(Caller {
        identity,
        session,
        clear_cookie: None,
        forged: None,
        token_verified,
    })
}

/// The policy's word on one request, and the refusal when it does not permit
/// it. A caller who brought no credential at all is asked for one (401), not
/// told that someone unknown is forbidden (SPEC §6).
fn authorize(
    route: &portcullis_policy::CompiledRoute,
    identity: &Identity,
    facts: &portcullis_policy::RequestFacts<'_>,
    session: Option<&ActiveSession>,
    html: bool,
    request_id: &str,
    explain: bool,
) -> (Decision, Option<Refusal>) {
    let decision = route.evaluate_with(identity, facts, explain);
    let denial = (!decision.permits()).then(|| {
        if identity.is_authenticated() {
            authz_refusal(&decision, identity, session, html, request_id)
        } else {
            Refusal::new(Reason::MissingToken)
        }
    });
    (decision, denial)
}

/// Judges one MCP `tools/call` (`facts.tool`) of a request the core already
/// judged on route `index` (SPEC §10): the same policy, for the same caller.
/// Only the policy runs again: the caller was authenticated and rate-limited
/// once, by [`judge`]. `None` when there is no such route.
pub fn judge_call(
    rt: &Runtime,
    index: usize,
    identity: &Identity,
    facts: &portcullis_policy::RequestFacts<'_>,
    html: bool,
    request_id: &str,
) -> Option<(Decision, Option<Refusal>)> {
    let route = rt.routes.routes().get(index)?;
    Some(authorize(
        route, identity, facts, None, html, request_id, false,
    ))
}

/// Whether `identity` may call `tool` on route `index`, by the policy's boolean
/// pass alone: for showing each caller only its own tools in a `tools/list`
/// answer (SPEC §10), where hundreds of tools are judged at once.
pub fn call_permitted(
    rt: &Runtime,
    index: usize,
    identity: &Identity,
    host: &str,
    path: &NormalizedPath,
    tool: &str,
) -> bool {
    let Some(route) = rt.routes.routes().get(index) else {
        return false;
    };
    let facts = portcullis_policy::RequestFacts {
        method: "POST",
        host,
        path,
        tool: Some(tool),
    };
    route.permits(identity, &facts)
}

/// The 403 for a policy denial, with as much explanation as the route allows.
fn authz_refusal(
    decision: &Decision,
    identity: &Identity,
    session: Option<&ActiveSession>,
    html: bool,
    request_id: &str,
) -> Refusal {
    let level = decision.explain_to_caller;
    let mut r = Refusal::with_message(decision.reason, decision.caller_message(level));
    r.needed_scopes = decision.missing_scopes.clone();
    if html {
        let mut page = decision.html_page(identity, request_id, level);
        // A signed-in person may want to try as someone else.
        if let Some(s) = session {
            let form = crate::login::flow::signout_form(&s.session.csrf);
            match page.rfind("</body>") {
                Some(at) => page.insert_str(at, &form),
                None => page.push_str(&form),
            }
        }
        r.html = Some(page);
    }
    r
}
