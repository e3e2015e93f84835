//! The sign-in endpoints (SPEC §4): `login`, `callback`, `logout` and
//! `backchannel-logout`. Each answers one step of the flow; what a session
//! is and whether it lives is [`super::Login`]'s.

use super::Login;
use crate::authority::JudgedHost;
use crate::body::{full, ProxyBody};
use crate::record::Exchange;
use crate::respond::{redirect, Refusal};
use crate::runtime::Runtime;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ORIGIN};
use http::{Method, Response, StatusCode};
use portcullis_core::Reason;
use portcullis_policy::html_escape;
use std::sync::Arc;

pub const LOGIN_PATH: &str = "/.portcullis/login";
pub const CALLBACK_PATH: &str = super::cookie::CALLBACK_PATH;
pub const LOGOUT_PATH: &str = "/.portcullis/logout";
pub const BACKCHANNEL_PATH: &str = "/.portcullis/backchannel-logout";
/// Largest form body read by `logout` and `backchannel-logout`.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// For a front end whose answer reaches the browser (forward-auth with
/// `?redirect=true`, Envoy's ext_authz): a refusal that asks a browser to sign
/// in becomes a 302 to the proxy's own login, which comes back to `original`
/// (the URL the browser asked for) if it is an allowed target. Other refusals
/// stay as they are.
pub fn send_to_login(refusal: &mut Refusal, public_url: &str, original: &str) {
    if !refusal.sign_in {
        return;
    }
    refusal.redirect = Some(Box::new(crate::respond::Redirect {
        location: format!(
            "{public_url}{LOGIN_PATH}?rd={}",
            portcullis_identity::fetch::form_encode(original)
        ),
        set_cookies: Vec::new(),
    }));
}

fn login_of(rt: &Runtime) -> Result<&Login, Refusal> {
    rt.login
        .as_deref()
        .ok_or_else(|| Refusal::with_message(Reason::NoRoute, "browser login is not configured"))
}

fn only(method: &Method, allowed: &Method) -> Result<(), Refusal> {
    if method == allowed {
        Ok(())
    } else {
        Err(Refusal::with_message(
            Reason::BadRequest,
            format!("only {allowed} is supported here"),
        ))
    }
}

/// `GET /.portcullis/login?rd=URL`: to the provider, then back to `rd`. The
/// oldest of the browser's sign-ins in progress beyond the few it keeps end
/// here (see [`super::cookie`]).
pub async fn login(
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    rt: &Runtime,
    ex: &Exchange,
) -> Result<Response<ProxyBody>, Refusal> {
    only(method, &Method::GET)?;
    let login = login_of(rt)?;
    let rd = form_value(query.unwrap_or(""), "rd").unwrap_or_else(|| "/".to_string());
    let rd = login.safe_target(&rd).ok_or_else(|| {
        Refusal::with_message(Reason::BadRequest, "rd is not an allowed redirect target")
    })?;
    // Too long to remember (a front proxy's `rd` is the whole original URL):
    // back to it without its query, or to `/`, as for the proxy's own pages.
    let bare = rd.split_once('?').map_or(rd.as_str(), |(url, _)| url);
    let rd = login.return_to([rd.as_str(), bare]);
    let (location, started) = login.start(&rd).await?;
    let mut cookies = login.cookies.surplus_sign_ins(headers);
    cookies.extend(started);
    Ok(redirect(&location, &cookies, &ex.request_id))
}

/// `GET /.portcullis/callback?code=…&state=…`: the provider sends the browser
/// back here. The state must be one this browser started (its cookie), the
/// code is redeemed with the PKCE verifier, and the ID token must carry the
/// nonce; then a session begins and the browser goes where it was going.
pub async fn callback(
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    rt: &Runtime,
    ex: &mut Exchange,
) -> Result<Response<ProxyBody>, Refusal> {
    only(method, &Method::GET)?;
    let login = login_of(rt)?;
    let query = query.unwrap_or("");
    let refused =
        |why: &str| Refusal::with_message(Reason::BadRequest, format!("sign-in failed: {why}"));
    let state = form_value(query, "state").ok_or_else(|| refused("no state"))?;
    let pending = login.pending(headers, &state).ok_or_else(|| {
        refused("this sign-in was not started in this browser, or it took too long; start again")
    })?;
    if let Some(error) = form_value(query, "error") {
        // The provider's own error code (access_denied, login_required, …),
        // reduced to the characters such a code has.
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return Err(refused(&format!("the provider answered {code}")));
    }
    let code = form_value(query, "code").ok_or_else(|| refused("no code"))?;
    let tokens = login
        .rp
        .exchange_code(&code, &pending.verifier, &login.callback_url)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, provider = %login.provider, "authorization code exchange failed");
            Refusal::with_message(Reason::InvalidToken, "sign-in failed: the provider did not accept the code")
        })?;
    let id_token = tokens.id_token.unwrap_or_default();
    let identity = rt
        .auth
        .verify_id_token(
            &login.provider,
            &id_token,
            login.rp.client_id(),
            Some(&pending.nonce),
        )
        .await
        .map_err(|e| {
            tracing::warn!(reason = %e.reason, description = %e.description, "ID token rejected");
            Refusal::with_message(e.reason, format!("sign-in failed: {}", e.description))
        })?;
    ex.identity = Arc::new(identity.clone());
    let session_cookie = login
        .open_session(
            identity,
            id_token,
            tokens.refresh_token,
            tokens.expires_in.as_secs(),
        )
        .await?;
    let [clear, clear_marker] = login.cookies.clear_pending(&state);
    // Checked when sign-in started; checked again, as the cookie is only as
    // trustworthy as the secret.
    let rd = login
        .safe_target(&pending.rd)
        .unwrap_or_else(|| "/".to_string());
    Ok(redirect(
        &rd,
        &[session_cookie, clear, clear_marker],
        &ex.request_id,
    ))
}

/// `POST /.portcullis/logout`: ends the session (with the CSRF token of a page
/// the proxy served it, or from a same-origin page: `public_url`'s, or the
/// one of `https` and `host`, where it was posted), then signs out at the
/// provider when it offers RP-initiated logout.
pub async fn logout(
    headers: &HeaderMap,
    body: &Bytes,
    (https, host): (bool, &JudgedHost),
    rt: &Runtime,
    ex: &mut Exchange,
) -> Result<Response<ProxyBody>, Refusal> {
    let login = login_of(rt)?;
    let form = std::str::from_utf8(body).unwrap_or("");
    // An ended session is already signed out; a confused request (two
    // sessions) is not.
    let active = match login.session(headers, &rt.auth).await? {
        super::SessionLookup::Live(active) => Some(active),
        super::SessionLookup::None | super::SessionLookup::Dead => None,
    };
    let clear = login.cookies.clear_session();
    let Some(active) = active else {
        return Ok(signed_out(&[clear], &ex.request_id));
    };
    ex.identity = Arc::new(active.session.identity.clone());
    let same_origin = headers
        .get(ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| login.origins.is_same_origin(o, https, host));
    let token_ok = form_value(form, "csrf").is_some_and(|t| {
        aws_lc_rs::constant_time::verify_slices_are_equal(
            t.as_bytes(),
            active.session.csrf.as_bytes(),
        )
        .is_ok()
    });
    if !same_origin && !token_ok {
        return Err(Refusal::with_message(
            Reason::Forbidden,
            "sign-out needs the form of a page this proxy served (CSRF token) or a same-origin request",
        ));
    }
    login
        .store
        .remove(&active.key)
        .await
        .map_err(super::store_unavailable)?;
    let rd = form_value(form, "rd").and_then(|rd| login.safe_target(&rd));
    match login
        .rp
        .endpoints()
        .await
        .ok()
        .and_then(|e| e.end_session.clone())
    {
        Some(end) => {
            let enc = portcullis_identity::fetch::form_encode;
            let sep = if end.contains('?') { '&' } else { '?' };
            let mut location = format!(
                "{end}{sep}id_token_hint={}&client_id={}",
                enc(&active.session.tokens.id_token),
                enc(login.rp.client_id())
            );
            if let Some(rd) = rd.filter(|r| r.starts_with("http")) {
                location.push_str("&post_logout_redirect_uri=");
                location.push_str(&enc(&rd));
            }
            Ok(redirect(&location, &[clear], &ex.request_id))
        }
        None => match rd {
            Some(rd) => Ok(redirect(&rd, &[clear], &ex.request_id)),
            None => Ok(signed_out(&[clear], &ex.request_id)),
        },
    }
}

/// `POST /.portcullis/backchannel-logout` (OpenID Connect Back-Channel Logout
/// 1.0): the provider says a person signed out; every session it names ends.
pub async fn backchannel(body: &Bytes, rt: &Runtime) -> Result<Response<ProxyBody>, Refusal> {
    let login = login_of(rt)?;
    let form = std::str::from_utf8(body).unwrap_or("");
    let token = form_value(form, "logout_token")
        .ok_or_else(|| Refusal::with_message(Reason::BadRequest, "no logout_token"))?;
    let who = rt
        .auth
        .verify_logout_token(&login.provider, &token, login.rp.client_id())
        .await
        .map_err(|e| {
            tracing::info!(reason = %e.reason, description = %e.description, "logout token rejected");
            // §2.8: a token that does not verify is a 400.
            let mut r = Refusal::with_message(Reason::BadRequest, format!("invalid logout_token: {}", e.description));
            r.status = Some(StatusCode::BAD_REQUEST);
            r
        })?;
    let ended = login
        .store
        .remove_matching(&login.provider, who.sid.as_deref(), who.sub.as_deref())
        .await
        .map_err(super::store_unavailable)?;
    tracing::info!(sessions = ended, "back-channel logout");
    let mut resp = Response::new(full(""));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn signed_out(cookies: &[HeaderValue], request_id: &str) -> Response<ProxyBody> {
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Signed out</title></head>\
         <body><h1>You are signed out</h1><p>Request id: <code>{}</code></p></body></html>\n",
        html_escape(request_id)
    );
    let mut resp = Response::new(full(page));
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        h.append(http::header::SET_COOKIE, c.clone());
    }
    resp
}

/// The sign-out form a page shows a signed-in person.
pub fn signout_form(csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{LOGOUT_PATH}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\">Sign out</button></form>",
        html_escape(csrf)
    )
}

/// The first value of `name` in an `application/x-www-form-urlencoded` text (a
/// query string or a form body). A malformed escape makes the value absent.
pub fn form_value(form: &str, name: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k)? == name)
            .then(|| percent_decode(v))
            .flatten()
    })
}

/// Decodes form encoding (`%XX`, `+` as a space); `None` when an escape is
/// malformed or the result is not UTF-8 (refused, never guessed at).
pub(super) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_decode() {
        assert_eq!(
            form_value("a=1&rd=%2Fx%3Fy%3D1&b", "rd").as_deref(),
            Some("/x?y=1")
        );
        assert_eq!(form_value("csrf=a+b", "csrf").as_deref(), Some("a b"));
        assert_eq!(form_value("rd=%zz", "rd"), None);
        assert_eq!(form_value("", "rd"), None);
        assert_eq!(form_value("b", "b").as_deref(), Some(""));
    }
}
