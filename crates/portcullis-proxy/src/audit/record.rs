//! What one audit line says (SPEC §7): the record the request path fills
//! and moves into the queue, its caller, and its time format.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis_core::{Identity, IdentityKind};
use time::OffsetDateTime;

/// The moment of an audit line, serialized as RFC 3339 in UTC with
/// exactly six fractional digits (microseconds), e.g.
/// `2026-11-22T16:41:30.123456Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditTime(OffsetDateTime);

impl AuditTime {
    /// The current time.
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc())
    }

    /// The wrapped instant (always UTC).
    pub fn as_offset_date_time(&self) -> OffsetDateTime {
        self.0
    }
}

impl From<OffsetDateTime> for AuditTime {
    fn from(t: OffsetDateTime) -> Self {
        // Normalize once so formatting never has to think about offsets.
        Self(t.to_offset(time::UtcOffset::UTC))
    }
}

impl From<SystemTime> for AuditTime {
    fn from(t: SystemTime) -> Self {
        Self(OffsetDateTime::from(t))
    }
}

impl AuditTime {
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`: RFC 3339 in UTC with a fixed µs fraction.
    ///
    /// Written by hand rather than with `time::format_description::Rfc3339`
    /// because that one trims trailing zeros of the fraction; SPEC §7 wants a
    /// fixed µs precision so lines sort and parse uniformly. It also cannot
    /// fail, unlike `OffsetDateTime::format`, and skips the formatting machinery
    /// (seven padded integers per audit line showed in the profile).
    pub fn rfc3339(&self) -> [u8; 27] {
        let t = self.0;
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut n: u32| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        // Years outside 0..=9999 cannot come from the system clock.
        put(0, 4, t.year().clamp(0, 9999) as u32);
        put(5, 2, u32::from(u8::from(t.month())));
        put(8, 2, u32::from(t.day()));
        put(11, 2, u32::from(t.hour()));
        put(14, 2, u32::from(t.minute()));
        put(17, 2, u32::from(t.second()));
        put(20, 6, t.microsecond());
        out
    }
}

impl fmt::Display for AuditTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only ASCII digits and separators are written.
        f.write_str(std::str::from_utf8(&self.rfc3339()).unwrap_or_default())
    }
}

/// Who made the request, as written in the audit line's `identity` object.
///
/// Only the attributes SPEC §7 lists; the verified claims and any raw
/// credential are deliberately not representable here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditIdentity {
    /// `user`, `service`, `workload` or `anonymous` (the JSON key is `type`).
    pub kind: IdentityKind,
    /// The subject; `null` for a pure workload or an anonymous caller.
    pub sub: Option<String>,
    /// The verified email, when known.
    pub email: Option<String>,
    /// The token's original issuer (`iss`).
    pub issuer: Option<String>,
    /// The OAuth client id, when known.
    pub client_id: Option<String>,
    /// The caller's groups (empty when none).
    pub groups: Vec<String>,
    /// The workload's SPIFFE ID, when known.
    pub workload: Option<String>,
}

impl AuditIdentity {
    /// The caller nobody vouched for: `{"type": "anonymous", ...nulls}`.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Copies the auditable attributes of a verified identity.
    pub fn from_identity(id: &Identity) -> Self {
        Self {
            kind: id.kind,
            sub: (!id.subject.is_empty()).then(|| id.subject.clone()),
            email: id.email.clone(),
            issuer: id.issuer.clone(),
            client_id: id.client_id.clone(),
            groups: id.groups.clone(),
            workload: id.workload.clone(),
        }
    }
}

/// The audit view of the identity a request is done with: moved when the
/// request held the only reference, else the listed attributes copied (the
/// verified-token cache shares its identity with every request of the token).
impl From<Arc<Identity>> for AuditIdentity {
    fn from(id: Arc<Identity>) -> Self {
        Arc::try_unwrap(id).map_or_else(|shared| Self::from_identity(&shared), Self::from)
    }
}

/// The audit view of an identity the request is done with: its strings are
/// moved, not copied (the pipeline's way, once per request).
impl From<Identity> for AuditIdentity {
    fn from(id: Identity) -> Self {
        Self {
            kind: id.kind,
            // An empty subject means "none" (workload-only or anonymous
            // caller); `null` says that more plainly than `""`.
            sub: (!id.subject.is_empty()).then_some(id.subject),
            email: id.email,
            issuer: id.issuer,
            client_id: id.client_id,
            groups: id.groups,
            workload: id.workload,
        }
    }
}

/// One audit line. Field names, order and serialization are exactly SPEC §7
/// (plus `enforced`, SPEC §2 `mode: audit`); every key is always present, with
/// `null` for an absent value, so log pipelines see one stable schema.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// When the request was handled (the pipeline picks the instant and
    /// keeps it consistent; [`AuditTime::now`] at completion is typical).
    pub timestamp: AuditTime,
    /// `X-Request-Id` (kept from a trusted proxy, or generated).
    pub request_id: String,
    /// The W3C trace id of the request's `traceparent`.
    pub trace_id: String,
    /// The client address (after `trusted_proxies` processing).
    pub client_ip: String,
    /// The HTTP method.
    pub method: String,
    /// The requested host.
    pub host: String,
    /// The normalized path **without** its query string: queries may carry
    /// tokens (`/cb?access_token=...`). See [`path_without_query`].
    pub path: String,
    /// The matched route's name; `null` when no route matched.
    pub route: Option<String>,
    /// `"allow"` or `"deny"`.
    pub decision: &'static str,
    /// A SPEC §6 code, or `"allowed"` (`portcullis_core::Reason::as_str`).
    pub reason: &'static str,
    /// Name (or index) of the deciding rule, when one decided.
    pub rule: Option<String>,
    /// `false` when the route's policy is in `mode: audit` and would have
    /// denied: the request went through although `decision` says `deny`.
    pub enforced: bool,
    /// Who made the request.
    pub identity: AuditIdentity,
    /// The HTTP status sent to the client.
    pub status: u16,
    /// Total time from receipt to the end of the response, in milliseconds.
    pub duration_ms: f64,
    /// Time spent waiting for the upstream; `null` when none was contacted.
    pub upstream_ms: Option<f64>,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// The route's `upstream_auth` credential: its name, never the token.
    pub credential: Option<String>,
    /// The front end that judged the request: `proxy`, `forward_auth`,
    /// `ext_authz` (SPEC §4).
    pub frontend: &'static str,
    /// On MCP routes, the JSON-RPC message the request carried (SPEC §7, §10).
    pub mcp: Option<AuditMcp>,
}

impl AuditRecord {
    /// The heap memory the record holds (its strings' capacities), as the
    /// queue's byte budget counts it.
    pub fn heap_bytes(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        let id = &self.identity;
        let mcp = self
            .mcp
            .as_ref()
            .map_or(0, |m| opt(&m.method) + opt(&m.tool) + opt(&m.id));
        self.request_id.capacity()
            + self.trace_id.capacity()
            + self.client_ip.capacity()
            + self.method.capacity()
            + self.host.capacity()
            + self.path.capacity()
            + opt(&self.route)
            + opt(&self.rule)
            + opt(&self.credential)
            + opt(&id.sub)
            + opt(&id.email)
            + opt(&id.issuer)
            + opt(&id.client_id)
            + opt(&id.workload)
            + id.groups.iter().map(String::capacity).sum::<usize>()
            + mcp
    }
}

/// The audit line's `mcp` object.
#[derive(Debug, Clone, Default)]
pub struct AuditMcp {
    /// The JSON-RPC method; `null` for a response the client sent the server.
    pub method: Option<String>,
    /// For `tools/call`: the tool.
    pub tool: Option<String>,
    /// The JSON-RPC id as JSON text (a string or a number, at most 256 bytes:
    /// the parser refused anything else); `null` for a notification.
    pub id: Option<String>,
}

/// `decision` for a request that was (or, in audit mode, would be) allowed.
pub const DECISION_ALLOW: &str = "allow";
/// `decision` for a request that was (or, in audit mode, would be) denied.
pub const DECISION_DENY: &str = "deny";

/// The path part of a request target, without query string or fragment:
/// `/cb?access_token=abc` → `/cb`. Use it whenever a path for the audit line
/// comes from anything that may still carry the query.
pub fn path_without_query(uri_path_and_query: &str) -> &str {
    match uri_path_and_query.find(['?', '#']) {
        Some(i) => &uri_path_and_query[..i],
        None => uri_path_and_query,
    }
}

/// A duration as fractional milliseconds rounded to the microsecond, the unit
/// of `duration_ms` and `upstream_ms` (`12.345` rather than `12.345678912`).
pub fn millis(d: Duration) -> f64 {
    // u128 → f64 loses precision only beyond ~285 years of microseconds.
    d.as_micros() as f64 / 1000.0
}
