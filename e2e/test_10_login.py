"""Browser sign-in end to end (SPEC §2 login, §4 login/callback/logout/
backchannel-logout): a real headless Chromium (Debian `chromium`, driven by
npm `playwright-core`, see browser/login.mjs) signs in through the real
`oidc-provider` (its development login and consent pages) at the real
Portcullis binary, in front of the FastAPI service that verifies Portcullis's
assertions.

The provider here is its own instance with a browser-login client `portal`
whose access tokens live 32 s: Portcullis refreshes 30 s before expiry, so a
request two seconds after sign-in must refresh (once, however many requests
arrive together).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from types import SimpleNamespace

import httpx
import pytest

from conftest import E2E, free_port, launch, portcullis_bin, start_idp, stop

pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian chromium")

CONFIG = """
server:
  listen: 127.0.0.1:{port}
  public_url: {public_url}
  trusted_proxies: [127.0.0.1/32]   # forward-auth below asks from loopback
admin:
  listen: 127.0.0.1:{admin_port}
audit:
  sink: file:{audit_log}
providers:
  - name: idp
    issuer: {issuer}
    audiences: [portal]
    client_id: portal
    client_secret: {login_secret}
login:
  provider: idp
  cookie:
    secret: {cookie_secret}
routes:
  - name: app
    match: {{ path_prefix: /app }}
    upstream: {upstream}
    login: true
    policy:
      allow:
        - name: admins
          groups: [admins]
  - name: api
    match: {{ path_prefix: /api }}
    upstream: {upstream}
    policy:
      allow:
        - groups: [admins]
"""


def signed_in_stack(workdir, host: str, config: str, tag: str, **idp_env):
    """Its own provider with the browser-login client, and Portcullis from
    `config` with `public_url` http://HOST:PORT; yields them, stops them after."""
    port = free_port()
    base = f"http://{host}:{port}"
    login_secret = secrets.token_urlsafe(24)
    env = {"IDP_LOGIN_SECRET": login_secret,
           "IDP_LOGIN_REDIRECT": f"{base}/.portcullis/callback",
           "IDP_LOGIN_BACKCHANNEL": f"{base}/.portcullis/backchannel-logout"} | idp_env
    for issuer, _proc in start_idp(workdir, env, tag=tag):
        stack = launch(portcullis_bin(), SimpleNamespace(issuer=issuer), workdir, config,
                       tag=tag, port=port, public_url=base, login_secret=login_secret,
                       cookie_secret=secrets.token_urlsafe(32))
        try:
            yield SimpleNamespace(base=base, issuer=issuer, stack=stack, port=port,
                                  secrets=[login_secret])
        finally:
            stop(stack.proc, grace=20)
            stop(stack.upstream_proc)


@pytest.fixture(scope="module")
def login_stack(workdir):
    yield from signed_in_stack(workdir, "127.0.0.1", CONFIG, "-login", IDP_LOGIN_AT_TTL="32")


def browse(s, *steps):
    plan = {"base": s.base, "idp": s.issuer, "steps": list(steps)}
    run = subprocess.run(["node", str(E2E / "browser" / "login.mjs"), json.dumps(plan)],
                         cwd=E2E, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, f"browser: {run.stderr[-3000:]}"
    return json.loads(run.stdout)


def echo(page: dict) -> dict:
    """The upstream's JSON answer, as Chromium shows it (inside a <pre>)."""
    text = page["text"]
    start, end = text.index("{"), text.rindex("}") + 1
    return json.loads(text[start:end].replace("&amp;", "&").replace("&quot;", '"'))


def token_requests(s) -> int:
    return httpx.get(f"{s.issuer}/__admin/stats").json()["token_requests"]


def test_sign_in_lands_on_the_original_url_and_the_service_sees_the_user(login_stack):
    s = login_stack
    signed_in, cookies, who = browse(
        s,
        {"do": "signin", "path": "/app/page?x=1&y=two", "user": "alice"},
        {"do": "cookies"},
        {"do": "fetch", "path": "/.portcullis/whoami"},
    )
    assert signed_in["url"] == f"{s.base}/app/page?x=1&y=two"
    seen = echo(signed_in)
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["x-auth-request-user"] == "alice"
    assert headers["x-auth-request-email"] == "alice@example.com"
    assert seen["claims"]["sub"] == "alice" and seen["claims"]["groups"] == ["admins"]
    # No cookie of Portcullis's reaches the service.
    assert "_portcullis" not in headers.get("cookie", "")
    ours = [c for c in cookies if c["name"] == "_portcullis"]
    assert len(ours) == 1, cookies
    cookie = ours[0]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax", cookie
    # Only a random id and its MAC: no JWT, nothing the provider issued.
    assert "eyJ" not in cookie["value"] and len(cookie["value"]) < 80, cookie["value"]
    assert not [c for c in cookies if c["name"].startswith("_portcullis_s")], \
        "the sign-in cookie is removed once it was used"
    body = json.loads(who["text"])
    assert who["status"] == 200 and body["type"] == "user" and body["sub"] == "alice"
    assert body["session"]["csrf_token"]


def test_api_clients_get_401_never_a_redirect(login_stack):
    s = login_stack
    for headers in ({}, {"Accept": "application/json"},
                    {"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"}):
        r = httpx.get(f"{s.base}/app/page", headers=headers)
        assert r.status_code == 401, (headers, r.status_code)
        assert r.headers["www-authenticate"] == 'Bearer realm="portcullis"'
    browser = httpx.get(f"{s.base}/app/page", headers={"Accept": "text/html"})
    assert browser.status_code == 302
    location = browser.headers["location"]
    assert location.startswith(f"{s.issuer}/auth?"), location
    for part in ("code_challenge_method=S256", "code_challenge=", "state=", "nonce=",
                 "client_id=portal", "response_type=code"):
        assert part in location, part
    set_cookie = browser.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
    assert "Path=/.portcullis/callback" in set_cookie
    # A route without `login: true` never redirects.
    assert httpx.get(f"{s.base}/api/x", headers={"Accept": "text/html"}).status_code == 401


def test_login_refuses_open_redirects(login_stack):
    s = login_stack
    for rd in ("//evil.example/", "/\\evil.example", "https:evil.example", "/%2F%2Fevil.example",
               "https://127.0.0.1@evil.example/", "https://evil.example/"):
        r = httpx.get(f"{s.base}/.portcullis/login", params={"rd": rd})
        assert r.status_code == 400, (rd, r.status_code, r.headers.get("location"))
    ok = httpx.get(f"{s.base}/.portcullis/login", params={"rd": "/app/x"})
    assert ok.status_code == 302 and ok.headers["location"].startswith(s.issuer)


def test_a_callback_this_browser_did_not_start_is_refused(login_stack):
    s = login_stack
    r = httpx.get(f"{s.base}/.portcullis/callback", params={"state": "forged", "code": "x"})
    assert r.status_code == 400
    assert "session" not in r.headers.get("set-cookie", "")


def test_a_user_without_the_group_gets_the_403_page_with_sign_out(login_stack):
    s = login_stack
    (page,) = browse(s, {"do": "signin", "path": "/app/admin", "user": "bob"})
    assert page["url"] == f"{s.base}/app/admin"
    text = page["text"]
    assert "bob@example.com" in text, text
    assert "/.portcullis/logout" in text and 'name="csrf"' in text
    assert "alice" not in text


def test_refresh_happens_once_when_the_access_token_expires(login_stack):
    s = login_stack
    before = token_requests(s)
    first, _, statuses, after_refresh = browse(
        s,
        {"do": "signin", "path": "/app/r", "user": "alice"},
        {"do": "sleep", "ms": 3000},
        {"do": "parallel", "path": "/app/r", "n": 6},
        {"do": "fetch", "path": "/app/r", "api": True},
    )
    assert echo(first)["claims"]["sub"] == "alice"
    assert statuses == [200] * 6
    assert after_refresh["status"] == 200
    # One code exchange and exactly one refresh for the six requests at once.
    assert token_requests(s) - before == 2


def test_logout_ends_the_session(login_stack):
    s = login_stack
    _, before, logged_out, after = browse(
        s,
        {"do": "signin", "path": "/app/l", "user": "alice"},
        {"do": "fetch", "path": "/app/l", "api": True},
        {"do": "logout"},
        {"do": "fetch", "path": "/app/l", "api": True},
    )
    assert before["status"] == 200
    # RP-initiated logout: on to the provider's end_session_endpoint.
    assert logged_out["url"].startswith(f"{s.issuer}/session/end"), logged_out["url"]
    assert after["status"] == 401, after


def test_logout_without_the_csrf_token_is_refused(login_stack):
    s = login_stack
    r = httpx.post(f"{s.base}/.portcullis/logout", data={"csrf": "guess"},
                   headers={"Cookie": "_portcullis=forged.mac"})
    # A forged cookie names no session: nothing to end, and nothing ended.
    assert r.status_code in (200, 302)
    _, cross_site = browse(
        s,
        {"do": "signin", "path": "/app/c", "user": "alice"},
        {"do": "fetch", "path": "/app/c", "api": True},
    )
    assert cross_site["status"] == 200


def test_back_channel_logout_from_the_provider_ends_the_session(login_stack):
    s = login_stack
    sent = httpx.get(f"{s.issuer}/__admin/stats").json()["backchannel_sent"]
    _, before, _, after = browse(
        s,
        {"do": "signin", "path": "/app/b", "user": "alice"},
        {"do": "fetch", "path": "/app/b", "api": True},
        {"do": "idp_logout"},
        {"do": "fetch", "path": "/app/b", "api": True},
    )
    assert before["status"] == 200
    assert httpx.get(f"{s.issuer}/__admin/stats").json()["backchannel_sent"] > sent
    assert after["status"] == 401
    assert json.loads(after["text"])["error"] == "session_expired"


def test_forged_logout_tokens_are_refused(login_stack):
    s = login_stack
    for token in ("", "not.a.jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."):
        r = httpx.post(f"{s.base}/.portcullis/backchannel-logout", data={"logout_token": token})
        assert r.status_code == 400, token


def test_no_token_or_secret_in_logs_or_audit(login_stack):
    s = login_stack
    stderr = s.stack.stderr_log.read_text(errors="replace")
    audit = s.stack.audit_log.read_text(errors="replace")
    for secret in s.secrets:
        assert secret not in stderr and secret not in audit
    for text in (stderr, audit):
        assert "eyJ" not in text, "a JWT reached a log"
    lines = [json.loads(l) for l in audit.splitlines() if l.strip()]
    assert any(l["path"] == "/.portcullis/callback" and l["identity"]["sub"] == "alice"
               for l in lines)


def test_forward_auth_redirects_browsers_only_when_asked(login_stack):
    """Traefik/Caddy pass `?redirect=true` and the answer to the browser; nginx
    asks without it and turns the 401 into `error_page 401 = @login`."""
    s = login_stack
    described = {"X-Forwarded-Method": "GET", "X-Forwarded-Proto": "http",
                 "X-Forwarded-Host": s.base.removeprefix("http://"),
                 "X-Forwarded-Uri": "/app/deep?q=1", "Accept": "text/html"}
    r = httpx.get(f"{s.base}/.portcullis/authz?redirect=true", headers=described)
    assert r.status_code == 302
    rd = httpx.QueryParams(httpx.URL(r.headers["location"]).query)["rd"]
    assert r.headers["location"].startswith(f"{s.base}/.portcullis/login?")
    assert rd == f"{s.base}/app/deep?q=1"
    assert httpx.get(f"{s.base}/.portcullis/authz", headers=described).status_code == 401
    api = described | {"Accept": "application/json"}
    assert httpx.get(f"{s.base}/.portcullis/authz?redirect=true", headers=api).status_code == 401
    # The login endpoint it points at starts sign-in and keeps where to return.
    start = httpx.get(r.headers["location"])
    assert start.status_code == 302 and start.headers["location"].startswith(s.issuer)


# Forgery from a sibling subdomain needs names: every subdomain of
# `portcullis.localhost` is the same site (Chromium resolves `*.localhost` to
# loopback itself), so `SameSite=Lax` lets a page on `evil.portcullis.localhost`
# make the browser POST to the app with its session cookie.
SITE_CONFIG = CONFIG.replace(
    "  cookie:\n", "  trusted_origins: [\"http://portal.portcullis.localhost\"]\n  cookie:\n")


@pytest.fixture(scope="module")
def site_stack(workdir):
    yield from signed_in_stack(workdir, "app.portcullis.localhost", SITE_CONFIG, "-site")


def test_a_sibling_subdomains_page_cannot_post_with_the_session(site_stack):
    s = site_stack
    signed_in, own, forged, trusted, after = browse(
        s,
        {"do": "signin", "path": "/app/page", "user": "alice"},
        {"do": "post", "path": "/api/transfer"},
        {"do": "forge", "from": f"http://evil.portcullis.localhost:{s.port}", "path": "/api/transfer"},
        {"do": "forge", "from": f"http://portal.portcullis.localhost:{s.port}", "path": "/api/transfer"},
        {"do": "fetch", "path": "/.portcullis/whoami"},
    )
    assert signed_in["url"] == f"{s.base}/app/page", signed_in["url"]
    # The app's own form: the service gets the POST, as alice.
    assert own["status"] == 200, own["text"][-2000:]
    assert echo(own)["claims"]["sub"] == "alice"
    # The sibling's page: refused before the service sees it.
    assert forged["status"] == 403, forged["text"][-2000:]
    assert "cross-site request forgery" in forged["text"]
    # An origin the deployment trusts (login.trusted_origins) may; that it
    # arrives as alice shows the browser does send the cookie from a sibling.
    assert trusted["status"] == 200, trusted["text"][-2000:]
    assert echo(trusted)["claims"]["sub"] == "alice"
    assert json.loads(after["text"])["sub"] == "alice"
    lines = [json.loads(line) for line in s.stack.audit_log.read_text().splitlines()]
    refused = [l for l in lines if l["status"] == 403 and l["path"] == "/api/transfer"]
    assert len(refused) == 1 and refused[0]["reason"] == "forbidden", refused
    assert refused[0]["identity"]["sub"] == "alice"
