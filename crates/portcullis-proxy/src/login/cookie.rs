//! The two cookies of browser login, both signed with a key derived from
//! `login.cookie.secret` and neither holding a token (SPEC §2):
//!
//! * the session cookie (`login.cookie.name`): a random 256-bit session id and
//!   its MAC. The store is keyed by a hash of the id, so whoever reads the store
//!   (a Redis dump) cannot make a working cookie from it.
//! * one sign-in cookie per sign-in in progress (`NAME_s` + 8 hex digits of the
//!   state's hash, so several tabs can sign in at once), scoped to the callback
//!   path and living ten minutes: the `state`, `nonce`, PKCE verifier and where
//!   to go afterwards. It binds the state to this browser: a callback with a
//!   state whose cookie is not in the browser is refused (login CSRF).
//!   Beside it, a marker (`NAME_sm` + the same 8 digits, value `1`, path `/`)
//!   that every request carries: a sign-in cookie reaches only the callback,
//!   and the marker lets the request that starts the next sign-in see how
//!   many are in progress. Past [`KEPT_SIGN_INS`] the oldest are cleared
//!   ([`Cookies::surplus_sign_ins`]): otherwise every page load without a
//!   session (an attacker's page can cause many) adds a ~250-byte cookie until
//!   the callback's head is too large to be read, or the browser evicts the
//!   session cookie to make room.
//!
//! MACs are HMAC-SHA256 with a different label per cookie kind, so one kind can
//! never be passed off as the other, and are compared in constant time.

use aws_lc_rs::{digest, hmac};
use http::header::{HeaderMap, HeaderValue, COOKIE};
use portcullis_identity::jose::{b64_decode, b64_encode};

/// Random bytes in a session id, a state, a nonce and a PKCE verifier.
const RANDOM_BYTES: usize = 32;
/// Bytes of MAC kept in a cookie (128 bits).
const MAC_BYTES: usize = 16;
/// Sign-ins in progress a browser keeps when it starts another (which makes
/// one more): enough for several tabs signing in at once.
pub const KEPT_SIGN_INS: usize = 4;

/// How cookies are written: name, signing key and attributes.
pub struct Cookies {
    pub name: String,
    key: hmac::Key,
    domain: Option<String>,
    secure: bool,
    max_age: u64,
}

/// Where the sign-in cookie is sent: only to the callback.
pub const CALLBACK_PATH: &str = "/.portcullis/callback";

impl Cookies {
    pub fn new(name: &str, secret: &str, domain: Option<&str>, secure: bool, max_age: u64) -> Self {
        let derived = derive_key(secret, b"portcullis login cookie key v1");
        Cookies {
            name: name.to_string(),
            key: hmac::Key::new(hmac::HMAC_SHA256, &derived),
            domain: domain.map(str::to_string),
            secure,
            max_age,
        }
    }

    fn mac(&self, label: &str, data: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(label.as_bytes());
        ctx.update(b"|");
        ctx.update(data);
        b64_encode(&ctx.sign().as_ref()[..MAC_BYTES])
    }

    fn verify(&self, label: &str, data: &[u8], mac: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(
            self.mac(label, data).as_bytes(),
            mac.as_bytes(),
        )
        .is_ok()
    }

    /// The session cookie's MAC label names the cookie: renamed, its old
    /// cookies (which browsers keep, and which are no longer recognized as
    /// ours, so they reach the services) cannot be replayed under the new name.
    fn session_label(&self) -> String {
        format!("session:{}:{}", self.name.len(), self.name)
    }

    /// A new session id and its cookie value.
    pub fn new_session(&self) -> Option<(SessionId, String)> {
        let id = random_token()?;
        let value = format!("{id}.{}", self.mac(&self.session_label(), id.as_bytes()));
        Some((SessionId(id), value))
    }

    /// The session ids of every session cookie of ours that verifies (a browser
    /// may send several: one per domain or path they were set for).
    pub fn sessions(&self, headers: &HeaderMap) -> Vec<SessionId> {
        cookie_values(headers, &self.name)
            .filter_map(|value| {
                let (id, mac) = value.split_once('.')?;
                self.verify(&self.session_label(), id.as_bytes(), mac)
                    .then(|| SessionId(id.to_string()))
            })
            .collect()
    }

    /// Whether the request carries a session cookie of ours at all (valid or not).
    pub fn has_session_cookie(&self, headers: &HeaderMap) -> bool {
        cookie_values(headers, &self.name).next().is_some()
    }

    /// `Set-Cookie` for a new session.
    pub fn session_cookie(&self, value: &str) -> HeaderValue {
        self.set_cookie(&self.name, value, "/", self.max_age)
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear_session(&self) -> HeaderValue {
        self.set_cookie(&self.name, "", "/", 0)
    }

    /// The sign-in cookie's name for `state`.
    fn pending_name(&self, state: &str) -> String {
        self.sign_in_name(&pending_tag(state))
    }

    /// The name of the sign-in cookie whose tag is `tag`.
    fn sign_in_name(&self, tag: &str) -> String {
        format!("{}_s{tag}", self.name)
    }

    /// The name of the marker of the sign-in whose tag is `tag`.
    fn marker_name(&self, tag: &str) -> String {
        format!("{}_sm{tag}", self.name)
    }

    /// `Set-Cookie`s for a sign-in in progress carrying `payload` (already
    /// serialized), valid `ttl` seconds: the sign-in cookie, then its marker.
    pub fn pending_cookie(&self, state: &str, payload: &[u8], ttl: u64) -> [HeaderValue; 2] {
        let data = b64_encode(payload);
        let value = format!(
            "{data}.{}",
            self.mac(&format!("pending {state}"), data.as_bytes())
        );
        [
            self.set_cookie(&self.pending_name(state), &value, CALLBACK_PATH, ttl),
            self.set_cookie(&self.marker_name(&pending_tag(state)), "1", "/", ttl),
        ]
    }

    /// `Set-Cookie`s that remove the sign-in cookie of `state` and its marker.
    pub fn clear_pending(&self, state: &str) -> [HeaderValue; 2] {
        self.clear_tag(&pending_tag(state))
    }

    /// Both cookies of the sign-in tagged `tag`, cleared, each on the path it
    /// was set for (a cookie is only replaced by one of the same path).
    fn clear_tag(&self, tag: &str) -> [HeaderValue; 2] {
        [
            self.set_cookie(&self.sign_in_name(tag), "", CALLBACK_PATH, 0),
            self.set_cookie(&self.marker_name(tag), "", "/", 0),
        ]
    }

    /// For a request that starts a sign-in: the `Set-Cookie`s that clear the
    /// oldest sign-ins in progress it shows (by their markers), so that
    /// [`KEPT_SIGN_INS`] remain beside the one it starts. Browsers list
    /// cookies of one path oldest first (RFC 6265 §5.4), and every marker has
    /// path `/`.
    pub fn surplus_sign_ins(&self, headers: &HeaderMap) -> Vec<HeaderValue> {
        let prefix = format!("{}_sm", self.name);
        let mut tags: Vec<&str> = Vec::new();
        for pair in cookie_pairs(headers) {
            let (Some(tag), Some(_)) = (pair.name.strip_prefix(prefix.as_bytes()), pair.value)
            else {
                continue;
            };
            // Only a tag this proxy makes: it becomes part of a header.
            let tag = match std::str::from_utf8(tag) {
                Ok(t) if is_tag(t) => t,
                _ => continue,
            };
            // Host-only and `Domain` cookies of one sign-in are one sign-in.
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        let surplus = tags.len().saturating_sub(KEPT_SIGN_INS);
        tags[..surplus]
            .iter()
            .flat_map(|tag| self.clear_tag(tag))
            .collect()
    }

    /// The payload of the sign-in cookie for `state`, when this browser has one
    /// whose MAC (which covers the state) verifies.
    pub fn pending(&self, headers: &HeaderMap, state: &str) -> Option<Vec<u8>> {
        let name = self.pending_name(state);
        let label = format!("pending {state}");
        let found = cookie_values(headers, &name).find_map(|value| {
            let (data, mac) = value.split_once('.')?;
            if !self.verify(&label, data.as_bytes(), mac) {
                return None;
            }
            b64_decode(data)
        });
        found
    }

    /// The `Cookie` header without our cookies, so the service never sees
    /// (and can never replay) a session cookie. `None` when nothing is left.
    ///
    /// A line that is not ASCII text must not carry a session cookie past
    /// this (see [`cookie_pairs`]).
    pub fn without_ours(&self, headers: &HeaderMap) -> Option<Option<HeaderValue>> {
        let mut found = false;
        let mut kept: Vec<&[u8]> = Vec::new();
        for pair in cookie_pairs(headers) {
            if is_ours(pair.name, &self.name) {
                found = true;
            } else if !pair.whole.is_empty() {
                kept.push(pair.whole);
            }
        }
        if !found {
            return None;
        }
        Some(if kept.is_empty() {
            None
        } else {
            // The kept parts came from valid header values, and `; ` is valid:
            // this cannot fail, and failing would drop the line, never keep ours.
            HeaderValue::from_bytes(&kept.join(&b"; "[..])).ok()
        })
    }

    fn set_cookie(&self, name: &str, value: &str, path: &str, max_age: u64) -> HeaderValue {
        let mut text =
            format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax");
        if let Some(d) = &self.domain {
            text.push_str("; Domain=");
            text.push_str(d);
        }
        if self.secure {
            text.push_str("; Secure");
        }
        // Every part was validated (`check`: cookie name, domain) or generated
        // here (base64url), so this cannot fail; an empty value is the safe fallback.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The 8 hex digits that name the cookies of the sign-in with `state`.
fn pending_tag(state: &str) -> String {
    let hash = digest::digest(&digest::SHA256, state.as_bytes());
    hash.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `tag` has the shape of [`pending_tag`]'s.
fn is_tag(tag: &str) -> bool {
    tag.len() == 8
        && tag
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `cookie` (a cookie's name, exactly: names are case-sensitive) is
/// one of the proxy's own when the session cookie is called `session_name`:
/// the session cookie itself, or any name that starts `{session_name}_s` (the
/// sign-in cookies). The one definition of "ours": what the service never
/// sees in `Cookie`, and may never set with `Set-Cookie`.
pub fn is_ours(cookie: &[u8], session_name: &str) -> bool {
    let ours = session_name.as_bytes();
    cookie
        .strip_prefix(ours)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"_s"))
}

/// The name a `Set-Cookie` value sets, as the server later reads it in
/// `Cookie` (RFC 6265 §5.2): what comes before the first `;`, up to its first
/// `=`, without the whitespace around it. A cookie with an empty name is sent
/// back as its value alone (RFC 6265bis §5.7), which reads as `name=value`
/// again: so a pair without `=` is a name whole (`Cookie: NAME`), and in
/// `=NAME=VALUE` the name is the value's (`Cookie: NAME=VALUE`, a session
/// planted under an empty name).
pub fn set_cookie_name(value: &[u8]) -> &[u8] {
    fn split(text: &[u8]) -> (&[u8], Option<&[u8]>) {
        match text.iter().position(|&b| b == b'=') {
            Some(eq) => (&text[..eq], text.get(eq + 1..)),
            None => (text, None),
        }
    }
    let pair = value.split(|&b| b == b';').next().unwrap_or_default();
    match split(pair) {
        (name, Some(value)) if name.trim_ascii().is_empty() => split(value).0.trim_ascii(),
        (name, _) => name.trim_ascii(),
    }
}

/// A session id (the random part of the cookie).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    /// The store key: a hash of the id, never the id itself.
    pub fn key(&self) -> String {
        let hash = digest::digest(&digest::SHA256, self.0.as_bytes());
        b64_encode(hash.as_ref())
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(..)")
    }
}

/// 256 random bits, base64url: session ids, states, nonces, PKCE verifiers
/// (43 characters, within RFC 7636's 43–128), CSRF tokens.
pub fn random_token() -> Option<String> {
    let mut bytes = [0u8; RANDOM_BYTES];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(b64_encode(&bytes))
}

/// A 256-bit key for one purpose (`label`) from `login.cookie.secret`, a
/// passphrase of 32+ bytes: one HMAC under a fixed label, so that the cookie
/// MAC key and the session store's sealing key never coincide.
pub fn derive_key(secret: &str, label: &[u8]) -> [u8; 32] {
    let root = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(hmac::sign(&root, label).as_ref());
    key
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    b64_encode(digest::digest(&digest::SHA256, verifier.as_bytes()).as_ref())
}

/// One `name=value` pair of a `Cookie` line, trimmed.
struct CookiePair<'a> {
    whole: &'a [u8],
    name: &'a [u8],
    /// `None` for a pair without `=`.
    value: Option<&'a [u8]>,
}

/// Every pair of the request's `Cookie` lines. Read as bytes: another cookie's
/// value may hold UTF-8 (`lang=français`, which browsers send as it was set),
/// and such a line must still yield ours, and lose it (see [`Cookies::without_ours`]).
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = CookiePair<'_>> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b';'))
        .map(|pair| {
            let whole = pair.trim_ascii();
            match whole.iter().position(|&b| b == b'=') {
                Some(eq) => CookiePair {
                    whole,
                    name: whole[..eq].trim_ascii(),
                    value: Some(whole[eq + 1..].trim_ascii()),
                },
                None => CookiePair {
                    whole,
                    name: whole,
                    value: None,
                },
            }
        })
}

/// Every value of cookie `name` in the request's `Cookie` headers (ours are
/// base64url, so a value that is not UTF-8 is not ours).
fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    cookie_pairs(headers).filter_map(move |pair| {
        if pair.name != name.as_bytes() {
            return None;
        }
        std::str::from_utf8(pair.value?).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jar() -> Cookies {
        Cookies::new("_p", &"k".repeat(32), None, true, 3600)
    }

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn session_cookies_verify_and_forgeries_do_not() {
        let c = jar();
        let (id, value) = c.new_session().unwrap();
        let got = c.sessions(&with_cookie(&format!("a=b; _p={value}")));
        assert_eq!(got, vec![id.clone()]);
        // A changed id, a changed MAC, another secret's cookie: none verifies.
        let (raw, mac) = value.split_once('.').unwrap();
        let mut other = raw.to_string();
        other.replace_range(0..1, if raw.starts_with('A') { "B" } else { "A" });
        assert!(c
            .sessions(&with_cookie(&format!("_p={other}.{mac}")))
            .is_empty());
        assert!(c
            .sessions(&with_cookie(&format!("_p={raw}.{raw}")))
            .is_empty());
        assert!(c.sessions(&with_cookie(&format!("_p={raw}"))).is_empty());
        let stranger = Cookies::new("_p", &"x".repeat(32), None, true, 3600);
        assert!(stranger
            .sessions(&with_cookie(&format!("_p={value}")))
            .is_empty());
        // Nor under another name, with the same secret (a renamed cookie's
        // old value, which no longer counts as ours and reaches services).
        let renamed = Cookies::new("_q", &"k".repeat(32), None, true, 3600);
        assert!(renamed
            .sessions(&with_cookie(&format!("_q={value}")))
            .is_empty());
        // The store key is not the id.
        assert_ne!(id.key(), raw);
    }

    #[test]
    fn a_sign_in_cookie_is_bound_to_its_state() {
        let c = jar();
        let [set, marker] = c.pending_cookie("state-1", b"payload", 600);
        let marker = marker.to_str().unwrap();
        assert!(
            marker.starts_with("_p_sm") && marker.contains("=1; Path=/;"),
            "{marker}"
        );
        let text = set.to_str().unwrap();
        assert!(text.contains("Path=/.portcullis/callback"), "{text}");
        assert!(
            text.contains("HttpOnly") && text.contains("SameSite=Lax") && text.contains("Secure")
        );
        let pair = text.split(';').next().unwrap();
        let h = with_cookie(pair);
        assert_eq!(c.pending(&h, "state-1").as_deref(), Some(&b"payload"[..]));
        // Another state (even if the attacker renames the cookie) does not verify.
        assert!(c.pending(&h, "state-2").is_none());
        let (_, value) = pair.split_once('=').unwrap();
        let renamed = format!("{}={value}", c.pending_name("state-2"));
        assert!(c.pending(&with_cookie(&renamed), "state-2").is_none());
    }

    /// Each sign-in started adds a cookie; the request that starts the next
    /// one shows, by their markers, how many are in progress, and the oldest
    /// beyond [`KEPT_SIGN_INS`] are cleared on the paths they were set for.
    #[test]
    fn sign_ins_in_progress_stay_few() {
        let c = jar();
        let markers: Vec<String> = (0..7)
            .map(|i| {
                let [_, marker] = c.pending_cookie(&format!("state-{i}"), b"p", 600);
                let text = marker.to_str().unwrap().to_string();
                text.split(';').next().unwrap().to_string()
            })
            .collect();
        let tag = |m: &str| m["_p_sm".len()..m.find('=').unwrap()].to_string();
        // Four (and noise: others' cookies, forged or malformed markers, one
        // sign-in seen twice) are kept as they are.
        let mut line = format!(
            "a=1; {}; _p_smZZZZZZZZ=1; _p_sm0a0b=1",
            markers[..4].join("; ")
        );
        line.push_str(&format!("; {}; _p_sm0a0b0c0d; Path=/", markers[0]));
        assert!(c.surplus_sign_ins(&with_cookie(&line)).is_empty());
        // Seven: the three oldest go, both of their cookies, each on its path.
        let line = format!("{}; b=2", markers.join("; "));
        let cleared: Vec<String> = c
            .surplus_sign_ins(&with_cookie(&line))
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(cleared.len(), 6, "{cleared:?}");
        for (i, pair) in cleared.chunks(2).enumerate() {
            let t = tag(&markers[i]);
            assert!(
                pair[0].starts_with(&format!("_p_s{t}=; Path=/.portcullis/callback; Max-Age=0;")),
                "{pair:?}"
            );
            assert!(
                pair[1].starts_with(&format!("_p_sm{t}=; Path=/; Max-Age=0;")),
                "{pair:?}"
            );
        }
        // The callback clears its own sign-in's two cookies.
        let [payload, marker] = c.clear_pending("state-6");
        let t = tag(&markers[6]);
        assert!(payload
            .to_str()
            .unwrap()
            .starts_with(&format!("_p_s{t}=; Path=/.portcullis/callback; Max-Age=0")));
        assert!(marker
            .to_str()
            .unwrap()
            .starts_with(&format!("_p_sm{t}=; Path=/; Max-Age=0")));
    }

    /// Browsers send a cookie's UTF-8 value as it was set (a public upstream
    /// can set one): the line is then not ASCII text, and must still lose our
    /// cookie, and ours must still be found in it.
    #[test]
    fn a_line_with_another_cookies_utf8_value_still_loses_ours() {
        let c = jar();
        let (id, value) = c.new_session().unwrap();
        let mut h = HeaderMap::new();
        let line = format!("lang=fran\u{e7}ais; _p={value}; b=2");
        h.insert(COOKIE, HeaderValue::from_bytes(line.as_bytes()).unwrap());
        assert!(h[COOKIE].to_str().is_err(), "the case under test");
        let kept = c.without_ours(&h).unwrap().unwrap();
        assert_eq!(kept.as_bytes(), "lang=fran\u{e7}ais; b=2".as_bytes());
        assert_eq!(c.sessions(&h), vec![id]);
        // Over h2, one field per cookie: the UTF-8 one beside ours.
        let mut h2 = HeaderMap::new();
        h2.append(
            COOKIE,
            HeaderValue::from_bytes("pref=caf\u{e9}".as_bytes()).unwrap(),
        );
        h2.append(
            COOKIE,
            HeaderValue::from_str(&format!("_p={value}")).unwrap(),
        );
        let kept = c.without_ours(&h2).unwrap().unwrap();
        assert_eq!(kept.as_bytes(), "pref=caf\u{e9}".as_bytes());
    }

    #[test]
    fn our_cookies_are_taken_out_of_what_the_service_sees() {
        let c = jar();
        let h = with_cookie("a=1; _p=xyz; _p_s0a0b0c0d=q; b=2");
        assert_eq!(
            c.without_ours(&h).unwrap().unwrap().to_str().unwrap(),
            "a=1; b=2"
        );
        assert!(c.without_ours(&with_cookie("_p=xyz")).unwrap().is_none());
        assert!(c.without_ours(&with_cookie("a=1")).is_none());
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
