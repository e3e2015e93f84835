"""Envoy ext_authz (SPEC §4) with an independent client: the messages come from
PyPI `envoy-data-plane` (generated from Envoy's own API definitions, so a wrong
field number on Portcullis' hand-written side shows up here), sent over real
HTTP/2 with gRPC framing by httpx + h2, to the release binary, with tokens from
the real oidc-provider.

This module runs its own Portcullis (with `ext_authz.grpc_listen`), so its audit
lines are its own.
"""

from __future__ import annotations

import json
import struct
import subprocess
import warnings
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

with warnings.catch_warnings():
    # The generated package trips pydantic's deprecation warnings on import.
    warnings.simplefilter("ignore")
    from envoy_data_plane.envoy.service.auth.v3 import (AttributeContext,
                                                        AttributeContextHttpRequest,
                                                        AttributeContextPeer,
                                                        AttributeContextRequest, CheckRequest,
                                                        CheckResponse)

from conftest import free_ports, portcullis_bin, remember, start, stop, wait_until

# Portcullis sets the deprecated `append` too, for Envoys that read only it.
pytestmark = pytest.mark.filterwarnings("ignore:HeaderValueOption.append is deprecated")

CHECK = "/envoy.service.auth.v3.Authorization/Check"
OK, PERMISSION_DENIED, UNAUTHENTICATED = 0, 7, 16

CONFIG = """\
server:
  listen: 127.0.0.1:{port}
  public_url: http://127.0.0.1:{port}
  trusted_proxies: [127.0.0.1/32]   # the Envoy: its source.principal counts
admin:
  listen: 127.0.0.1:{admin_port}
ext_authz:
  grpc_listen: 127.0.0.1:{grpc_port}
  login_redirect: true   # browsers on `login: true` routes get the 302 to sign in
workload_identity:
  trust_domain: cluster.local
  accept: [xfcc]
providers:
  - name: oidc-provider
    issuer: {issuer}
    audiences: [orders-api]
    algorithms: [RS256, ES256, PS256]
    # For `login` (browsers are only sent to it here; test_10 signs in).
    client_id: portal
    client_secret: not-used-in-this-module
login:
  provider: oidc-provider
  cookie:
    secret: ext-authz-module-cookie-secret-of-32-bytes
audit:
  sink: "file:{audit_log}"
routes:
  - name: orders
    match: {{ path_prefix: /api/orders }}
    policy:
      allow:
        - name: readers
          scopes: [orders:read]
          methods: [GET]
        - name: checkout
          workloads: [spiffe://cluster.local/ns/shop/sa/checkout]
  - name: limited
    match: {{ path_prefix: /limited }}
    auth: none
    rate_limit: {{ requests_per_second: 0.01, burst: 1, key: ip }}
  - name: app
    match: {{ path_prefix: /app }}
    login: true
    policy:
      allow:
        - authenticated: true
"""


@pytest.fixture(scope="module")
def authorizer(idp, workdir):
    binary = portcullis_bin()
    port, admin_port, grpc_port = free_ports(3)
    audit_log = workdir / "ext_authz_audit.log"
    config = workdir / "ext_authz.yaml"
    config.write_text(CONFIG.format(port=port, admin_port=admin_port, grpc_port=grpc_port,
                                    issuer=idp.issuer, audit_log=audit_log))
    check = subprocess.run([binary, "check", "-c", str(config)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, f"portcullis check: {check.stdout}{check.stderr}"
    log = workdir / "ext_authz.stderr"
    proc = start([binary, "serve", "-c", str(config)], log, stdout=subprocess.DEVNULL)
    # gRPC is HTTP/2 with prior knowledge: no HTTP/1.1, no upgrade.
    client = httpx.Client(http1=False, http2=True, timeout=30)
    try:
        wait_until("Portcullis /readyz",
                   lambda: httpx.get(f"http://127.0.0.1:{admin_port}/readyz").status_code == 200,
                   proc, log)
        yield client, f"http://127.0.0.1:{grpc_port}", audit_log
    finally:
        client.close()
        stop(proc)


def call(authorizer, request: CheckRequest) -> CheckResponse:
    client, base, _ = authorizer
    message = bytes(request)
    framed = struct.pack(">BI", 0, len(message)) + message
    resp = client.post(f"{base}{CHECK}", content=framed,
                       headers={"content-type": "application/grpc", "te": "trailers"})
    assert resp.status_code == 200, resp
    assert resp.http_version == "HTTP/2"
    assert resp.headers["content-type"].startswith("application/grpc")
    body = resp.content
    assert len(body) >= 5, f"no gRPC message (grpc-status {resp.headers.get('grpc-status')})"
    compressed, length = struct.unpack(">BI", body[:5])
    assert compressed == 0 and len(body) == 5 + length
    return CheckResponse().parse(body[5:])


def envoy_check(method: str, path: str, headers: dict[str, str], principal: str = "") -> CheckRequest:
    headers = {**headers, ":path": path, ":method": method, ":authority": "orders.example.com"}
    return CheckRequest(attributes=AttributeContext(
        source=AttributeContextPeer(principal=principal),
        request=AttributeContextRequest(http=AttributeContextHttpRequest(
            method=method, path=path, host="orders.example.com", scheme="https",
            headers=headers, protocol="HTTP/1.1"))))


def headers_of(options) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}


def test_allowed_sets_identity_and_removes_spoofed_headers(authorizer, idp):
    token = remember(idp.token(scope="orders:read"))
    resp = call(authorizer, envoy_check("GET", "/api/orders/1?x=1", {
        "authorization": f"Bearer {token}",
        "x-auth-request-user": "mallory",
        "x-auth-request-groups": "admins",
    }))
    assert resp.status.code == OK
    ok = resp.ok_response
    set_ = headers_of(ok.headers)
    assert set_["x-auth-request-user"] != "mallory"
    assert set_["x-auth-request-client-id"] == "orders-agent"
    assert set_["x-portcullis-assertion"].count(".") == 2
    # append_action OVERWRITE_IF_EXISTS_OR_ADD (2), and the deprecated append false.
    assert all(o.append_action == 2 and o.append is False for o in ok.headers)
    assert "authorization" in ok.headers_to_remove
    assert "x-auth-request-groups" in ok.headers_to_remove
    assert not set(ok.headers_to_remove) & set(set_)


def test_no_token_is_unauthenticated_401(authorizer):
    resp = call(authorizer, envoy_check("GET", "/api/orders/1", {}))
    assert resp.status.code == UNAUTHENTICATED
    denied = resp.denied_response
    assert denied.status.code == 401
    headers = headers_of(denied.headers)
    assert headers["www-authenticate"] == 'Bearer realm="portcullis"'
    assert headers["content-type"] == "application/json"
    body = json.loads(denied.body)
    assert body["error"] == "missing_token"
    assert body["request_id"] == headers["x-request-id"]


def test_policy_denial_is_permission_denied_403(authorizer, idp):
    token = remember(idp.token(scope="orders:write"))
    resp = call(authorizer, envoy_check("GET", "/api/orders/1", {"authorization": f"Bearer {token}"}))
    assert resp.status.code == PERMISSION_DENIED
    assert resp.denied_response.status.code == 403
    assert json.loads(resp.denied_response.body)["error"] == "insufficient_scope"


def test_source_principal_is_the_workload(authorizer):
    resp = call(authorizer, envoy_check("POST", "/api/orders", {},
                                        principal="spiffe://cluster.local/ns/shop/sa/checkout"))
    assert resp.status.code == OK
    assert headers_of(resp.ok_response.headers)["x-portcullis-workload"] == \
        "spiffe://cluster.local/ns/shop/sa/checkout"
    outside = call(authorizer, envoy_check("POST", "/api/orders", {},
                                           principal="spiffe://elsewhere/ns/shop/sa/checkout"))
    assert outside.status.code == UNAUTHENTICATED


def test_rate_limited_is_permission_denied_429(authorizer):
    assert call(authorizer, envoy_check("GET", "/limited", {})).status.code == OK
    resp = call(authorizer, envoy_check("GET", "/limited", {}))
    assert resp.status.code == PERMISSION_DENIED
    denied = resp.denied_response
    assert denied.status.code == 429
    assert int(headers_of(denied.headers)["retry-after"]) >= 1
    assert json.loads(denied.body)["error"] == "rate_limited"


def test_path_tricks_are_judged_as_the_proxy_judges_them(authorizer, idp):
    """The described path is refused where the listener would refuse it (SPEC
    §5: an encoded slash is a 400), and also where the listener would rewrite
    it before forwarding (dot segments), since Envoy forwards it as written."""
    token = remember(idp.token(scope="orders:read"))
    auth = {"authorization": f"Bearer {token}"}
    for sneaky in ["/api/orders/..%2f..%2fadmin", "/api/orders%2F1"]:
        resp = call(authorizer, envoy_check("GET", sneaky, auth))
        assert resp.status.code == 3, sneaky          # INVALID_ARGUMENT
        assert resp.denied_response.status.code == 400, sneaky
        assert json.loads(resp.denied_response.body)["error"] == "bad_request"
    # A dot-segment walk is refused, not judged where it lands: Envoy forwards
    # the path as written (unless normalize_path), and a service that does not
    # resolve `..` would serve it from the route it started in.
    for walk in ["/api/x/../orders/1", "/api/orders/../../app/x", "/api/orders/%2e%2e/x"]:
        walked = call(authorizer, envoy_check("GET", walk, auth))
        assert walked.status.code == 3, walk          # INVALID_ARGUMENT
        assert json.loads(walked.denied_response.body)["error"] == "bad_request"
    # The normal form of the same path is allowed for a reader.
    assert call(authorizer, envoy_check("GET", "/api/orders/1", auth)).status.code == OK


def test_a_browser_that_should_sign_in_is_sent_to_the_login(authorizer):
    """Envoy hands the denial to the browser as it is (as Traefik and Caddy do
    with forward-auth's `?redirect=true`): a page request to a `login: true`
    route without a session is a 302 to Portcullis's login, which brings the
    browser back to the URL it asked for."""
    resp = call(authorizer, envoy_check("GET", "/app/page?x=1", {"accept": "text/html"}))
    assert resp.status.code == UNAUTHENTICATED
    denied = resp.denied_response
    assert denied.status.code == 302
    location = headers_of(denied.headers)["location"]
    url = urlsplit(location)
    assert (url.scheme, url.hostname, url.path) == ("http", "127.0.0.1", "/.portcullis/login")
    assert parse_qs(url.query)["rd"] == ["https://orders.example.com/app/page?x=1"]
    # API clients, and routes without `login: true`, get the 401.
    api = call(authorizer, envoy_check("GET", "/app/page", {"accept": "application/json"}))
    assert api.status.code == UNAUTHENTICATED and api.denied_response.status.code == 401
    other = call(authorizer, envoy_check("GET", "/api/orders/1", {"accept": "text/html"}))
    assert other.denied_response.status.code == 401


def test_every_check_is_one_audit_line(authorizer):
    _, _, audit_log = authorizer
    lines = [json.loads(line) for line in audit_log.read_text().splitlines() if line.strip()]
    assert lines and all(line["frontend"] == "ext_authz" for line in lines)
    assert {line["reason"] for line in lines} >= {"allowed", "missing_token", "insufficient_scope"}
