//! `portcullis token mint` and `portcullis token inspect` (SPEC §1): development
//! tokens signed with a local key, and a decoder that shows what a token says and,
//! with `--jwks`, whether Portcullis's own verifier accepts its signature.

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use portcullis_config::{Duration, ProviderConfig};
use portcullis_core::Reason;
use portcullis_identity::jose::compact;
use portcullis_identity::{keys, AuthError, Authenticator, IdentityMetrics};
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Arguments of `portcullis token mint`.
#[derive(Args)]
pub struct MintArgs {
    /// Private key (PEM: PKCS#8, SEC1 or PKCS#1); the algorithm follows the key type.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Header `kid` (default: the key's RFC 7638 thumbprint, as `keys generate` writes).
    #[arg(allow_hyphen_values = true, long, value_name = "K")]
    kid: Option<String>,
    /// Issuer (`iss`).
    #[arg(long, value_name = "URL")]
    iss: String,
    /// Subject (`sub`).
    #[arg(long, value_name = "S")]
    sub: String,
    /// Audience (`aud`); repeat for several.
    #[arg(long, value_name = "A")]
    aud: Vec<String>,
    /// Lifetime: exp = now + TTL (250ms, 30s, 5m, 24h).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_ttl)]
    ttl: Duration,
    /// Extra claim; VALUE is JSON when it parses as JSON (numbers, booleans, arrays,
    /// objects, "quoted strings"), else a plain string. Wins over every other claim.
    #[arg(long = "claim", value_name = "KEY=VALUE", value_parser = parse_claim)]
    claims: Vec<(String, Value)>,
    /// Groups (`groups` claim), comma-separated.
    #[arg(long, value_name = "a,b")]
    groups: Option<String>,
    /// Scopes (`scope` claim), space-separated.
    #[arg(long, value_name = "\"x y\"")]
    scope: Option<String>,
}

/// Arguments of `portcullis token inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// The token (a leading `Bearer ` is ignored); `-` reads it from stdin.
    // A (tampered) token or a base64url thumbprint may start with `-`.
    #[arg(value_name = "JWT", allow_hyphen_values = true)]
    token: String,
    /// Also verify the signature against this JWKS file, with Portcullis's verifier.
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    Duration::parse(text)
}

/// `k=v`: v as JSON when it is valid JSON, else as a string (so `--claim tier=gold`
/// needs no quoting but `--claim level=3` is the number 3).
fn parse_claim(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    if key.is_empty() {
        return Err(format!("`{text}` has an empty claim name"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random `jti`: 128 bits from the system CSPRNG, hex.
fn random_jti() -> anyhow::Result<String> {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow!("the system random number generator failed"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The claims `mint` signs: registered claims first, then the conveniences, then
/// every `--claim` (last, so a test can override even `exp` or `iss`).
fn mint_claims(args: &MintArgs, now: u64, jti: String) -> Value {
    let mut claims = Map::new();
    claims.insert("iss".into(), args.iss.clone().into());
    claims.insert("sub".into(), args.sub.clone().into());
    match args.aud.as_slice() {
        [] => {}
        [one] => {
            claims.insert("aud".into(), one.clone().into());
        }
        many => {
            claims.insert("aud".into(), many.to_vec().into());
        }
    }
    claims.insert("iat".into(), now.into());
    // Sub-second TTLs round up: a token minted with `--ttl 500ms` must not be born expired.
    let ttl = args.ttl.get();
    let ttl_secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    claims.insert("exp".into(), now.saturating_add(ttl_secs).into());
    claims.insert("jti".into(), jti.into());
    if let Some(groups) = &args.groups {
        let list: Vec<&str> = groups
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .collect();
        claims.insert("groups".into(), list.into());
    }
    if let Some(scope) = &args.scope {
        claims.insert("scope".into(), scope.clone().into());
    }
    for (key, value) in &args.claims {
        claims.insert(key.clone(), value.clone());
    }
    Value::Object(claims)
}

/// `token mint`: prints the token alone, so `TOKEN=$(portcullis token mint …)` works.
pub fn mint(args: MintArgs) -> anyhow::Result<ExitCode> {
    let pem = std::fs::read_to_string(&args.key)
        .with_context(|| format!("cannot read key {}", args.key.display()))?;
    let key = keys::SigningKey::from_pem(&pem)
        .with_context(|| format!("cannot use key {}", args.key.display()))?;
    let claims = mint_claims(&args, now_unix(), random_jti()?);
    let token = keys::mint_with(&key, args.kid.as_deref(), &claims).context("cannot sign")?;
    crate::cli::out(&format!("{token}\n"));
    Ok(ExitCode::SUCCESS)
}

/// `4m 12s`, `3h`, `2d 5h`: the two most significant units, a zero second unit dropped.
pub fn human_duration(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    if secs == 0 {
        return "0s".to_string();
    }
    let Some(i) = UNITS.iter().position(|(size, _)| secs >= *size) else {
        return "0s".to_string();
    };
    let (size, unit) = UNITS[i];
    let mut text = format!("{}{unit}", secs / size);
    if let Some((next, next_unit)) = UNITS.get(i + 1) {
        let rest = (secs % size) / next;
        if rest > 0 {
            text.push_str(&format!(" {rest}{next_unit}"));
        }
    }
    text
}

/// A Unix time as RFC 3339 UTC (`2024-05-01T12:00:00Z`), by the civil-from-days
/// algorithm (Howard Hinnant), to avoid a date crate for one line of output.
pub fn rfc3339(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap_or(i64::MAX / 2);
    let rem = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One line about a time claim, e.g. `exp: 1714564800 (2024-05-01T12:00:00Z) — expires in 4m 12s`.
fn time_line(claims: &Value, name: &str, now: u64) -> String {
    let Some(value) = claims.get(name) else {
        return match name {
            "exp" => "exp: absent — Portcullis refuses tokens without an expiry".to_string(),
            _ => format!("{name}: absent"),
        };
    };
    // NumericDate: a non-negative number, fractions floored (as the verifier reads it).
    let Some(t) = value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.floor() as u64)
    }) else {
        return format!("{name}: {value} is not a valid date — Portcullis refuses this token");
    };
    // "now" counts as the past: a token minted this second was issued 0s ago.
    let (future, delta) = if t > now {
        (true, human_duration(t - now))
    } else {
        (false, human_duration(now - t))
    };
    let words = match (name, future) {
        ("exp", true) => format!("expires in {delta}"),
        ("exp", false) => format!("expired {delta} ago"),
        ("nbf", true) => format!("not valid yet: valid in {delta}"),
        ("nbf", false) => format!("valid since {delta} ago"),
        (_, true) => format!("issued in the future: {delta} from now"),
        (_, false) => format!("issued {delta} ago"),
    };
    format!("{name}: {t} ({}) — {words}", rfc3339(t))
}

/// The inspection text: header, claims and the times in words.
fn describe(header: &Value, claims: &Value, now: u64) -> String {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    let mut text = format!("header:\n{}\nclaims:\n{}\n", pretty(header), pretty(claims));
    for name in ["iat", "nbf", "exp"] {
        if name == "exp" || claims.get(name).is_some() {
            text.push_str(&time_line(claims, name, now));
            text.push('\n');
        }
    }
    text
}

/// Reads the token argument: `-` is stdin; whitespace and a `Bearer ` prefix are
/// dropped because pasted tokens usually carry them.
fn token_argument(arg: &str) -> anyhow::Result<String> {
    use std::io::Read as _;
    let raw = if arg == "-" {
        let mut s = String::new();
        // Bounded: a token is a few KiB, and stdin could be anything.
        std::io::stdin()
            .lock()
            .take(1024 * 1024)
            .read_to_string(&mut s)
            .context("cannot read the token from stdin")?;
        s
    } else {
        arg.to_string()
    };
    let trimmed = raw.trim();
    let token = trimmed
        .strip_prefix("Bearer ")
        .or_else(|| trimmed.strip_prefix("bearer "))
        .unwrap_or(trimmed)
        .trim();
    Ok(token.to_string())
}

/// `token inspect`: exit 0 when the token decodes (and, with `--jwks`, its signature
/// verifies); 3 when `--jwks` was given and the signature is refused; 1 when the
/// token cannot be decoded at all.
pub fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let token = token_argument(&args.token)?;
    let (header, claims) =
        compact::decode_unverified(&token).map_err(|e| anyhow!("malformed token: {e}"))?;
    let mut text = describe(&header, &claims, now_unix());
    let mut code = ExitCode::SUCCESS;
    if let Some(jwks) = &args.jwks {
        let verdict = verify_with_jwks(&token, &claims, jwks)?;
        text.push_str(&verdict.text);
        if !verdict.signature_valid {
            code = ExitCode::from(3);
        }
    }
    crate::cli::out(&text);
    Ok(code)
}

/// What `--jwks` concluded.
struct Verdict {
    signature_valid: bool,
    text: String,
}

/// Verifies `token` with the identity crate's full verifier against one JWKS file:
/// an ad-hoc provider whose issuer is the token's own `iss`, any audience, every
/// asymmetric algorithm, and the token's own `typ` allowed — so the only things
/// left to judge are the signature and the claims' types and times.
///
/// The verifier checks the signature before any claim, so a failure for a claim
/// (expiry, a claim of the wrong type) means the signature did verify; the failures
/// that come before it (malformed header, `iss` missing) are checked here first.
fn verify_with_jwks(
    token: &str,
    claims: &Value,
    jwks: &std::path::Path,
) -> anyhow::Result<Verdict> {
    let refused = |why: String| Verdict {
        signature_valid: false,
        text: format!("signature: invalid: {why}\n"),
    };
    let typ = match compact::parse(token) {
        Ok(parsed) => parsed.header.typ,
        Err(e) => return Ok(refused(e.to_string())),
    };
    let iss = match claims.get("iss") {
        Some(Value::String(iss)) => iss.clone(),
        Some(_) => return Ok(refused("invalid_token: claim `iss` is not a string".into())),
        None => return Ok(refused("invalid_token: token has no `iss` claim".into())),
    };
    let jwks_path = jwks
        .to_str()
        .ok_or_else(|| anyhow!("JWKS path {} is not UTF-8", jwks.display()))?;
    let provider = adhoc_provider(&iss, jwks_path, typ.into_iter().collect())?;
    let result = crate::cli::current_thread_runtime()?.block_on(async {
        let auth = Authenticator::new(
            std::slice::from_ref(&provider),
            Arc::new(NoNetwork),
            IdentityMetrics::new(),
        )
        .map_err(|e| anyhow!("{e}"))?;
        auth.start().await;
        if let Some(p) = auth.readiness().into_iter().find(|p| !p.ready) {
            bail!("cannot use JWKS {}: {}", jwks.display(), p.detail);
        }
        Ok(auth.verify_bearer(token).await)
    })?;
    Ok(match result {
        Ok(_) => Verdict {
            signature_valid: true,
            text: "signature: valid\n".to_string(),
        },
        Err(e) if signature_failure(&e) => refused(e.to_string()),
        Err(e) => Verdict {
            signature_valid: true,
            text: format!("signature: valid\ntoken: rejected: {e}\n"),
        },
    })
}

/// The failures the verifier reports before or at the signature check.
fn signature_failure(e: &AuthError) -> bool {
    matches!(
        e.reason,
        Reason::BadSignature | Reason::UnknownKey | Reason::AlgorithmNotAllowed
    )
}

/// A provider trusting exactly the keys in `jwks_file` for tokens issued by `iss`.
fn adhoc_provider(
    iss: &str,
    jwks_file: &str,
    token_types: Vec<String>,
) -> anyhow::Result<ProviderConfig> {
    // Through serde so every other setting keeps the schema's default.
    serde_json::from_value(json!({
        "name": "jwks-file",
        "issuer": iss,
        "jwks_file": jwks_file,
        "allow_any_audience": true,
        "algorithms": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"],
        "token_types": token_types,
    }))
    .context("cannot build the verifier")
}

/// A [`Fetch`](portcullis_identity::Fetch) that refuses every request: `--jwks` means
/// "these keys", never the network.
struct NoNetwork;

impl portcullis_identity::Fetch for NoNetwork {
    fn get<'a>(
        &'a self,
        _url: &'a str,
        _max_body: usize,
    ) -> portcullis_identity::fetch::BoxFuture<
        'a,
        Result<portcullis_identity::FetchResponse, portcullis_identity::FetchError>,
    > {
        Box::pin(async { Err(portcullis_identity::FetchError::Other("offline".into())) })
    }

    fn post_form<'a>(
        &'a self,
        _url: &'a str,
        _authorization: Option<&'a str>,
        _body: String,
        _max_body: usize,
    ) -> portcullis_identity::fetch::BoxFuture<
        'a,
        Result<portcullis_identity::FetchResponse, portcullis_identity::FetchError>,
    > {
        Box::pin(async { Err(portcullis_identity::FetchError::Other("offline".into())) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(252), "4m 12s");
        assert_eq!(human_duration(3 * 3600), "3h");
        assert_eq!(human_duration(3 * 3600 + 59), "3h");
        assert_eq!(human_duration(2 * 86_400 + 5 * 3600 + 7), "2d 5h");
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_714_564_800), "2024-05-01T12:00:00Z");
    }

    #[test]
    fn claim_values_are_json_when_they_parse() {
        assert_eq!(parse_claim("n=3").unwrap(), ("n".into(), json!(3)));
        assert_eq!(parse_claim("b=true").unwrap(), ("b".into(), json!(true)));
        assert_eq!(
            parse_claim("l=[1,\"a\"]").unwrap(),
            ("l".into(), json!([1, "a"]))
        );
        assert_eq!(parse_claim("s=gold").unwrap(), ("s".into(), json!("gold")));
        assert_eq!(parse_claim("e=a=b").unwrap(), ("e".into(), json!("a=b")));
        assert_eq!(parse_claim("q=\"3\"").unwrap(), ("q".into(), json!("3")));
        assert!(parse_claim("novalue").is_err());
        assert!(parse_claim("=x").is_err());
    }

    #[test]
    fn times_are_described_in_words() {
        let claims = json!({"exp": 1_000, "nbf": 1_100, "iat": 400, "bad": "soon"});
        assert!(time_line(&claims, "exp", 748).ends_with("expires in 4m 12s"));
        assert!(time_line(&claims, "exp", 1_000 + 3 * 3600).ends_with("expired 3h ago"));
        assert!(time_line(&claims, "nbf", 1_000).ends_with("valid in 1m 40s"));
        assert!(time_line(&claims, "iat", 1_000).ends_with("issued 10m ago"));
        assert!(time_line(&claims, "bad", 1_000).contains("not a valid date"));
        assert!(time_line(&json!({}), "exp", 1).contains("absent"));
    }
}
