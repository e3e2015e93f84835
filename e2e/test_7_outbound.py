"""Outbound credentials (SPEC §9) against the real oidc-provider as the token
endpoint: Portcullis holds the OAuth clients (client_secret_basic, and
private_key_jwt with a key made for this run), and a partner API (FastAPI,
upstream/partner.py) verifies every token it receives with PyJWT against the
provider's JWKS.

This module runs its own IdP (with the partner clients and a short token
lifetime), partner API and Portcullis, so that token counts are its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import (E2E, Idp, b64url, free_ports, portcullis_bin, read_line, remember, start, stop,
                      wait_until)

TOKEN_TTL = 12  # seconds: refreshed from 9s on (a quarter before expiry)
BILLING = "billing.billing.serviceaccount.identity.linkerd.cluster.local"  # allowed
WEB = "frontend.web.serviceaccount.identity.linkerd.cluster.local"  # not allowed
ROUTES = ["basic", "jwt", "burst", "refresh", "denied", "down"]

CONFIG = """\
server:
  listen: 127.0.0.1:{port}
  trusted_proxies: [127.0.0.1]     # the mesh sidecar on this host
admin:
  listen: 127.0.0.1:{admin_port}
workload_identity:
  trust_domain: cluster.local
  accept: [linkerd]
providers:
  - name: oidc-provider
    issuer: {issuer}
    audiences: [orders-api]
    algorithms: [RS256]
audit:
  sink: "file:{audit_log}"
credentials:
{credentials}routes:
{routes}"""

CREDENTIAL_BASIC = """\
  - name: partner-{name}
    provider: oidc-provider                # token endpoint from discovery
    client_id: partner-basic
    client_secret: ${{PARTNER_SECRET}}
    scopes: [partner:read]
    audience: urn:portcullis:partner-api
"""

CREDENTIAL_JWT = """\
  - name: partner-jwt
    token_endpoint: {issuer}/token
    client_id: partner-jwt
    private_key_file: {key_file}
    scopes: [partner:read]
    audience: urn:portcullis:partner-api
"""

ROUTE = """\
  - name: {name}
    match: {{ path_prefix: /{name} }}
    upstream: {partner}
    upstream_auth: {{ credential: partner-{name} }}
    policy:
      allow:
        - name: billing-workloads
          workloads: [spiffe://cluster.local/ns/billing/**]
        - name: orders-agent
          clients: [orders-agent]
"""


@dataclass
class Outbound:
    url: str
    admin: str
    partner: str
    idp: Idp
    partner_secret: str
    key_pem: str
    audit_log: object
    stderr_log: object

    def get(self, path: str, workload: str | None = BILLING, token: str | None = None,
            client: httpx.Client | None = None) -> httpx.Response:
        headers = {}
        if workload:
            headers["l5d-client-id"] = workload
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return (client or httpx).get(f"{self.url}{path}", headers=headers, timeout=30)

    def seen(self, route: str | None = None) -> list[dict]:
        entries = httpx.get(f"{self.partner}/__partner/seen").json()
        for e in entries:
            if "token" in e:
                remember(e["token"])
        return [e for e in entries if route is None or e["path"].startswith(f"/{route}")]

    def fetches(self, credential: str, result: str = "success") -> int:
        text = httpx.get(f"{self.admin}/metrics").text
        m = re.search(r'^portcullis_outbound_token_fetch_total\{credential="%s",result="%s"\} (\d+)'
                      % (re.escape(credential), result), text, re.M)
        return int(m.group(1)) if m else 0

    def token_requests(self) -> int:
        return httpx.get(f"{self.idp.issuer}/__admin/stats").json()["token_requests"]

    def set_token_down(self, on: bool) -> None:
        httpx.post(f"{self.idp.issuer}/__admin/token_down", params={"on": "1" if on else "0"})


def bind_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@pytest.fixture(scope="module")
def outbound(workdir):
    binary = portcullis_bin()
    wd = workdir / "outbound"
    wd.mkdir(exist_ok=True)
    # The private_key_jwt key exists only for this run: PEM for Portcullis, the
    # public JWK for the provider's client registration.
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    key_file = wd / "partner-jwt.pem"
    key_file.write_text(key_pem)
    key_file.chmod(0o600)
    public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    # Portcullis names its key by the RFC 7638 thumbprint (`kid`), as IdPs expect.
    members = json.dumps({k: public_jwk[k] for k in ("crv", "kty", "x", "y")},
                         separators=(",", ":"), sort_keys=True)
    public_jwk["kid"] = b64url(hashlib.sha256(members.encode()).digest())
    partner_secret = secrets.token_urlsafe(24)
    caller_secrets = {"orders-agent": secrets.token_urlsafe(24),
                      "reports-agent": secrets.token_urlsafe(24)}
    env = os.environ | {"IDP_SECRET_BASIC": caller_secrets["orders-agent"],
                        "IDP_SECRET_POST": caller_secrets["reports-agent"],
                        "IDP_SECRET_PARTNER": partner_secret,
                        "IDP_PARTNER_JWKS": json.dumps({"keys": [public_jwk]}),
                        "IDP_PARTNER_TTL": str(TOKEN_TTL)}
    procs: list[subprocess.Popen] = []
    try:
        idp_log = wd / "idp.stderr"
        idp_proc = start(["node", str(E2E / "idp" / "server.mjs"), "0"], idp_log,
                         stdout=subprocess.PIPE, env=env, cwd=E2E)
        procs.append(idp_proc)
        line = wait_until("oidc-provider", lambda: read_line(idp_proc.stdout), idp_proc, idp_log)
        issuer = f"http://127.0.0.1:{int(line.split()[1])}"
        wait_until("oidc-provider discovery",
                   lambda: httpx.get(f"{issuer}/.well-known/openid-configuration").status_code
                   == 200, idp_proc, idp_log)
        idp = Idp(issuer, caller_secrets, idp_proc)

        sock = bind_socket()
        partner = f"http://127.0.0.1:{sock.getsockname()[1]}"
        partner_log = wd / "partner.log"
        partner_proc = start([sys.executable, str(E2E / "upstream" / "partner.py")], partner_log,
                             stdout=subprocess.DEVNULL, pass_fds=[sock.fileno()],
                             env=os.environ | {"PARTNER_ISSUER": issuer,
                                               "PARTNER_AUDIENCE": "partner-api",
                                               "UPSTREAM_FD": str(sock.fileno())})
        procs.append(partner_proc)
        sock.close()
        wait_until("partner API", lambda: httpx.get(f"{partner}/__partner/seen").status_code
                   == 200, partner_proc, partner_log)

        port, admin_port = free_ports(2)
        credentials = "".join(CREDENTIAL_BASIC.format(name=n) for n in ROUTES if n != "jwt")
        credentials += CREDENTIAL_JWT.format(issuer=issuer, key_file=key_file)
        routes = "".join(ROUTE.format(name=n, partner=partner) for n in ROUTES)
        audit_log = wd / "audit.log"
        config_file = wd / "portcullis.yaml"
        config_file.write_text(CONFIG.format(port=port, admin_port=admin_port, issuer=issuer,
                                             audit_log=audit_log, credentials=credentials,
                                             routes=routes))
        # The secret reaches Portcullis only through the environment (${PARTNER_SECRET}).
        penv = os.environ | {"PARTNER_SECRET": partner_secret, "PORTCULLIS_LOG": "debug"}
        check = subprocess.run([binary, "check", "-c", str(config_file)], capture_output=True,
                               text=True, timeout=30, env=penv)
        assert check.returncode == 0, f"portcullis check: {check.stdout}{check.stderr}"
        stderr_log = wd / "portcullis.stderr"
        proc = start([binary, "serve", "-c", str(config_file)], stderr_log,
                     stdout=subprocess.DEVNULL, env=penv)
        procs.append(proc)
        wait_until("Portcullis /readyz",
                   lambda: httpx.get(f"http://127.0.0.1:{admin_port}/readyz").status_code == 200,
                   proc, stderr_log)
        yield Outbound(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", partner,
                       idp, partner_secret, key_pem, audit_log, stderr_log)
    finally:
        for p in reversed(procs):
            stop(p)


def test_check_reports_an_unknown_credential_with_its_position(outbound, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("credentials:\n  - name: partner\n    token_endpoint: https://idp/token\n"
                      "    client_id: c\n    client_secret: s\nroutes:\n  - name: r\n"
                      "    match: { path_prefix: / }\n    upstream: http://127.0.0.1:1\n"
                      "    upstream_auth: { credential: partnr }\n    auth: none\n")
    check = subprocess.run([portcullis_bin(), "check", "-c", str(config)], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode != 0
    assert f"{config}:10:34: routes[0].upstream_auth.credential: unknown credential `partnr`" \
        in check.stdout + check.stderr


@pytest.mark.parametrize("route,client_id", [("basic", "partner-basic"),
                                             ("jwt", "partner-jwt")])
def test_the_partner_receives_a_verified_token_for_the_proxys_client(outbound, route, client_id):
    r = outbound.get(f"/{route}/orders")
    assert r.status_code == 200, r.text
    assert r.json()["client_id"] == client_id
    entry = outbound.seen(route)[-1]
    assert entry["authorizations"] == 1
    assert entry["claims"]["aud"] == "partner-api"
    assert entry["claims"]["client_id"] == client_id
    assert "partner:read" in entry["claims"]["scope"].split()
    assert outbound.fetches(f"partner-{route}") == 1


def test_the_callers_authorization_is_replaced(outbound):
    caller = outbound.idp.token()  # orders-agent's own token, for orders-api
    r = outbound.get("/basic/caller", workload=None, token=caller)
    assert r.status_code == 200, r.text
    entry = outbound.seen("basic/caller")[-1]
    assert entry["authorizations"] == 1
    assert entry["token"] != caller
    assert entry["claims"]["client_id"] == "partner-basic"


def test_many_concurrent_requests_share_one_token_fetch(outbound):
    before = outbound.token_requests()
    with httpx.Client(limits=httpx.Limits(max_connections=40)) as client, \
            ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(lambda i: outbound.get(f"/burst/{i}", client=client).status_code,
                                 range(80)))
    assert statuses == [200] * 80
    assert outbound.fetches("partner-burst") == 1
    assert len({e["token"] for e in outbound.seen("burst")}) == 1
    # No other credential was due meanwhile (they all were fetched seconds ago).
    assert outbound.token_requests() - before == 1


def test_tokens_are_refreshed_before_they_expire(outbound):
    tokens: list[tuple[float, dict]] = []
    deadline = time.time() + TOKEN_TTL * 1.6
    while time.time() < deadline:
        r = outbound.get("/refresh/tick")
        # The partner verified `exp` itself: an expired token would be a 401 here.
        assert r.status_code == 200, r.text
        claims = outbound.seen("refresh")[-1]["claims"]
        if not tokens or tokens[-1][1]["jti"] != claims["jti"]:
            tokens.append((time.time(), claims))
        time.sleep(0.4)
    assert len(tokens) >= 2, "the token was never refreshed"
    for (_, old), (_, new) in zip(tokens, tokens[1:]):
        # Fetched ahead of time: the successor was issued while the old one was valid,
        # at least the refresh margin (a quarter of its lifetime) before its end.
        assert new["iat"] <= old["exp"] - TOKEN_TTL // 4 + 1, (old, new)
    # A refresh started by the last request may not have been seen yet.
    assert len(tokens) <= outbound.fetches("partner-refresh") <= len(tokens) + 1


def test_a_workload_the_policy_refuses_gets_403_and_no_token_is_fetched(outbound):
    r = outbound.get("/denied/orders", workload=WEB)
    assert r.status_code == 403, r.text
    assert outbound.seen("denied") == []
    assert outbound.fetches("partner-denied") == 0
    assert outbound.fetches("partner-denied", "error") == 0


def test_no_token_means_502_and_nothing_forwarded(outbound):
    outbound.set_token_down(True)
    try:
        r = outbound.get("/down/orders")
        assert r.status_code == 502, r.text
        assert r.json()["error"] == "credential_unavailable"
        # Inside the backoff the next caller fails at once, without a new request.
        assert outbound.get("/down/orders").status_code == 502
    finally:
        outbound.set_token_down(False)
    assert outbound.seen("down") == []
    assert outbound.fetches("partner-down", "error") == 1
    assert outbound.fetches("partner-down") == 0


def test_no_secret_key_or_token_reaches_a_log(outbound):
    time.sleep(0.5)  # the audit writer batches
    audit = outbound.audit_log.read_text()
    logs = audit + outbound.stderr_log.read_text()
    tokens = {e["token"] for e in outbound.seen() if "token" in e}
    assert tokens, "the partner saw tokens"
    for token in tokens:
        assert token not in logs
        assert token.split(".")[2] not in logs  # not even the signature part
    assert outbound.partner_secret not in logs
    key_body = "".join(outbound.key_pem.splitlines()[1:-1])
    assert key_body[:40] not in logs
    lines = [json.loads(line) for line in audit.splitlines() if line.strip()]
    by_route = {}
    for line in lines:
        by_route.setdefault(line["route"], []).append(line)
    for route in ROUTES:
        assert all(l["credential"] == f"partner-{route}" for l in by_route[route]), route
    assert {l["reason"] for l in by_route["down"]} == {"credential_unavailable"}
    assert {l["status"] for l in by_route["denied"]} == {403}
