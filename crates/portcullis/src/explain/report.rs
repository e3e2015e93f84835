//! What `portcullis explain` prints: the request, the caller, and either the
//! policy's per-rule, per-condition explanation or the refusal that came before
//! policy, as text or as one JSON object.

use super::request::Request;
use portcullis_core::{Identity, IdentityKind, Reason};
use portcullis_policy::{clean, Decision};
use serde_json::{json, Map, Value};

/// Why a request is refused before (or after) policy spoke.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The proxy answers it with 400.
    BadRequest,
    /// No credential where one is needed (401 `missing_token`).
    MissingCredentials,
    /// The token (or the `--claims`) could not be turned into an identity (401).
    TokenRejected,
    /// Allowed, but over the route's rate limit (429).
    RateLimited,
    /// The proxy could not finish the answer (signing the assertion failed).
    Unavailable,
}

impl Basis {
    /// The `basis` value of the JSON report (the policy's own bases are snake_case too).
    fn as_str(self) -> &'static str {
        match self {
            Basis::BadRequest => "bad_request",
            Basis::MissingCredentials => "missing_credentials",
            Basis::TokenRejected => "token_rejected",
            Basis::RateLimited => "rate_limited",
            Basis::Unavailable => "unavailable",
        }
    }
}

/// A refusal the proxy answers without a policy decision of that reason.
pub struct Refused {
    pub reason: Reason,
    pub basis: Basis,
    pub message: String,
    pub provider: Option<String>,
}

/// What explain concluded.
pub enum Verdict {
    Decided(Decision),
    Refused {
        route: Option<(usize, String)>,
        refused: Refused,
    },
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        matches!(self, Verdict::Decided(d) if d.is_allowed())
    }
}

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

pub fn text(verdict: &Verdict, identity: &Identity, request: &Request, path: &str) -> String {
    let mut text = format!(
        "request: {} {} {}\n",
        clean(&request.method),
        clean(&request.host.name),
        clean(path)
    );
    match verdict {
        Verdict::Decided(decision) => {
            text.push_str(&caller_text(identity));
            text.push_str(&decision.explain_text());
        }
        Verdict::Refused { route, refused } => {
            if refused.basis == Basis::RateLimited {
                text.push_str(&caller_text(identity));
            }
            match route {
                Some((i, name)) => {
                    text.push_str(&format!("route: {} (routes[{i}])\n", clean(name)))
                }
                None if refused.reason == Reason::BadRequest => {}
                None => text.push_str("route: none matched\n"),
            }
            let what = match refused.basis {
                Basis::TokenRejected => match &refused.provider {
                    Some(p) => format!("token rejected by provider {}", clean(p)),
                    None => "token rejected".to_string(),
                },
                Basis::BadRequest | Basis::RateLimited | Basis::Unavailable => {
                    "request refused".to_string()
                }
                Basis::MissingCredentials => "no credentials".to_string(),
            };
            text.push_str(&format!(
                "{what}: {}: {}\n",
                refused.reason,
                clean(&refused.message)
            ));
            text.push_str(&format!("deny: {}\n", refused.reason));
        }
    }
    text
}

pub fn json(
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
        Verdict::Refused { route, refused } => {
            let mut map = Map::new();
            map.insert("decision".into(), "deny".into());
            map.insert("reason".into(), json!(refused.reason));
            map.insert("basis".into(), refused.basis.as_str().into());
            map.insert("route".into(), json!(route.as_ref().map(|(_, n)| n)));
            map.insert("route_index".into(), json!(route.as_ref().map(|(i, _)| i)));
            map.insert("rule".into(), Value::Null);
            map.insert("enforced".into(), true.into());
            map.insert("rules".into(), json!([]));
            map.insert("message".into(), refused.message.clone().into());
            if refused.basis == Basis::TokenRejected {
                map.insert(
                    "token_error".into(),
                    json!({
                        "reason": refused.reason,
                        "description": refused.message,
                        "provider": refused.provider,
                    }),
                );
            }
            map
        }
    };
    object.insert(
        "request".into(),
        json!({"method": request.method, "host": request.host.name, "path": path}),
    );
    object.insert(
        "identity".into(),
        serde_json::to_value(identity).unwrap_or(Value::Null),
    );
    object.insert("notes".into(), json!(notes));
    Value::Object(object)
}
