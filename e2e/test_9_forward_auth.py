"""Portcullis as the authorizer of the data plane a team already runs (SPEC §4):
the real Debian nginx (`auth_request`) and caddy (`forward_auth`) ask
`/.portcullis/authz` about each request, and pass the verified identity on to a
service behind them. The same routes and policy decide as for proxied requests;
one audit line per check says `frontend: forward_auth`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

from conftest import E2E, free_ports, portcullis_bin, start, stop, wait_until
from test_8_bypass import TRUSTED, port_open

ISSUER = "https://fa.example"

CONFIG = """
server:
  listen: 127.0.0.1:{port}
  public_url: http://127.0.0.1:{port}
  trusted_proxies: [127.0.0.1/32]
admin:
  listen: 127.0.0.1:{admin_port}
providers:
  - name: dev
    issuer: {issuer}
    jwks_file: {keys}/jwks.json
    audiences: [orders-api]
    algorithms: [ES256]
audit:
  sink: file:{audit}
routes:
  - name: orders
    match: {{ path_prefix: /orders }}
    audience: orders-service
    policy:
      allow:
        - name: readers
          scopes: [orders:read]
          methods: [GET]
  - name: public
    match: {{ path_prefix: /public }}
    auth: none
"""

NGINX = """
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx.err warn;
events {{}}
http {{
  access_log off;
  client_body_temp_path {work}/tmp;
  proxy_temp_path {work}/tmp;
  fastcgi_temp_path {work}/tmp;
  uwsgi_temp_path {work}/tmp;
  scgi_temp_path {work}/tmp;
  server {{
    listen 127.0.0.1:{nginx_port};
    location = /_portcullis {{
      internal;
      proxy_pass http://127.0.0.1:{port}/.portcullis/authz;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
    location / {{
      auth_request /_portcullis;
      auth_request_set $pc_user $upstream_http_x_auth_request_user;
      auth_request_set $pc_email $upstream_http_x_auth_request_email;
      auth_request_set $pc_groups $upstream_http_x_auth_request_groups;
      auth_request_set $pc_client $upstream_http_x_auth_request_client_id;
      auth_request_set $pc_workload $upstream_http_x_portcullis_workload;
      auth_request_set $pc_assertion $upstream_http_x_portcullis_assertion;
      auth_request_set $pc_cookie $upstream_http_x_portcullis_cookie;
      proxy_set_header X-Auth-Request-User $pc_user;
      proxy_set_header X-Auth-Request-Email $pc_email;
      proxy_set_header X-Auth-Request-Groups $pc_groups;
      proxy_set_header X-Auth-Request-Client-Id $pc_client;
      proxy_set_header X-Portcullis-Workload $pc_workload;
      proxy_set_header X-Portcullis-Assertion $pc_assertion;
      proxy_set_header Cookie $pc_cookie;
      proxy_set_header X-Portcullis-Cookie "";
      proxy_set_header X-Forwarded-User "";
      proxy_set_header X-Forwarded-Email "";
      proxy_set_header X-Forwarded-Groups "";
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header Authorization "";
      proxy_pass http://127.0.0.1:{echo_port};
    }}
  }}
}}
"""

CADDYFILE = """
{{
  admin off
  auto_https off
  storage file_system {work}/caddy
}}
(portcullis_unset) {{
  @unset_{{args.0}} header_regexp {{args.0}} ^\\{{http\\.reverse_proxy\\.header\\.
  request_header @unset_{{args.0}} -{{args.0}}
}}
http://127.0.0.1:{caddy_port} {{
  route {{
    request_header -X-Auth-Request-*
    request_header -X-Portcullis-*
    request_header -X-Forwarded-User
    request_header -X-Forwarded-Email
    request_header -X-Forwarded-Groups
    forward_auth 127.0.0.1:{port} {{
      uri /.portcullis/authz
      copy_headers X-Auth-Request-User X-Auth-Request-Email X-Auth-Request-Groups X-Auth-Request-Client-Id X-Portcullis-Workload X-Portcullis-Assertion X-Portcullis-Cookie
    }}
    import portcullis_unset X-Auth-Request-User
    import portcullis_unset X-Auth-Request-Email
    import portcullis_unset X-Auth-Request-Groups
    import portcullis_unset X-Auth-Request-Client-Id
    import portcullis_unset X-Portcullis-Workload
    import portcullis_unset X-Portcullis-Assertion
    request_header Cookie {{http.request.header.X-Portcullis-Cookie}}
    request_header -X-Portcullis-Cookie
    request_header -Authorization
    reverse_proxy 127.0.0.1:{echo_port}
  }}
}}
"""


@dataclass
class Fronts:
    port: int
    fronts: dict[str, str]
    audit: Path
    keys: Path
    binary: str

    def mint(self, *args: str) -> str:
        out = subprocess.run([self.binary, "token", "mint", "--key", str(self.keys / "private.pem"),
                              "--iss", ISSUER, "--aud", "orders-api", "--ttl", "10m", *args],
                             capture_output=True, text=True, timeout=30, check=True)
        return out.stdout.strip()

    def audit_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


@pytest.fixture(scope="module")
def fronts(tmp_path_factory):
    nginx, caddy = shutil.which("nginx") or "/usr/sbin/nginx", shutil.which("caddy")
    if not Path(nginx).exists() or not caddy:
        pytest.fail("nginx and caddy are required (scripts/test installs them)")
    binary = portcullis_bin()
    work = tmp_path_factory.mktemp("forward-auth")
    (work / "tmp").mkdir()
    keys = work / "keys"
    subprocess.run([binary, "keys", "generate", "--alg", "ES256", "--out", str(keys)],
                   check=True, capture_output=True, timeout=30)
    port, admin_port, echo_port, nginx_port, caddy_port = free_ports(5)
    procs = []
    try:
        echo = start([sys.executable, str(E2E / "upstream" / "h2c_echo.py"), str(echo_port)],
                     work / "echo.log", stdout=subprocess.DEVNULL)
        procs.append(echo)
        audit = work / "audit.log"
        config = work / "portcullis.yaml"
        config.write_text(CONFIG.format(port=port, admin_port=admin_port, issuer=ISSUER,
                                        keys=keys, audit=audit))
        proxy = start([binary, "serve", "-c", str(config)], work / "portcullis.stderr",
                      stdout=subprocess.DEVNULL)
        procs.append(proxy)
        (work / "nginx.conf").write_text(NGINX.format(work=work, port=port, echo_port=echo_port,
                                                      nginx_port=nginx_port))
        ng = start([nginx, "-c", str(work / "nginx.conf"), "-e", str(work / "nginx.err")],
                   work / "nginx.log", stdout=subprocess.DEVNULL)
        procs.append(ng)
        (work / "Caddyfile").write_text(CADDYFILE.format(work=work, port=port, echo_port=echo_port,
                                                         caddy_port=caddy_port))
        cd = start([caddy, "run", "--config", str(work / "Caddyfile"), "--adapter", "caddyfile"],
                   work / "caddy.log", stdout=subprocess.DEVNULL,
                   env={"HOME": str(work), "XDG_DATA_HOME": str(work), "PATH": "/usr/bin:/bin"})
        procs.append(cd)
        wait_until("hypercorn echo", lambda: port_open(echo_port), echo, work / "echo.log")
        wait_until("Portcullis /readyz",
                   lambda: httpx.get(f"http://127.0.0.1:{admin_port}/readyz").status_code == 200,
                   proxy, work / "portcullis.stderr")
        wait_until("nginx", lambda: port_open(nginx_port), ng, work / "nginx.log")
        wait_until("caddy", lambda: port_open(caddy_port), cd, work / "caddy.log")
        yield Fronts(port, {"nginx": f"http://127.0.0.1:{nginx_port}",
                            "caddy": f"http://127.0.0.1:{caddy_port}"}, audit, keys, binary)
    finally:
        for p in reversed(procs):
            stop(p)


def seen(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert body["upstream"] == "h2c-echo", body
    return {k.lower(): v for k, v in body["headers"]}


@pytest.mark.parametrize("front", ["nginx", "caddy"])
def test_allowed_requests_reach_the_service_with_the_verified_identity(fronts, front):
    token = fronts.mint("--sub", "alice", "--groups", "dev", "--scope", "orders:read")
    r = httpx.get(f"{fronts.fronts[front]}/orders/42?view=full",
                  headers={"Authorization": f"Bearer {token}", "X-Auth-Request-User": "root"})
    assert r.status_code == 200, r.text
    headers = seen(r)
    assert headers["x-auth-request-user"] == "alice"
    assert headers["x-auth-request-groups"] == "dev"
    assert "authorization" not in headers
    # The assertion verifies against the proxy's published keys, for the route's audience.
    jwks = jwt.PyJWKClient(f"http://127.0.0.1:{fronts.port}/.well-known/portcullis/jwks.json")
    assertion = headers["x-portcullis-assertion"]
    claims = jwt.decode(assertion, jwks.get_signing_key_from_jwt(assertion).key,
                        algorithms=["ES256"], audience="orders-service")
    assert claims["sub"] == "alice" and claims["idp"] == ISSUER


@pytest.mark.parametrize("front", ["nginx", "caddy"])
def test_the_service_hears_only_what_portcullis_vouched_for(fronts, front):
    # The front proxy forwards the client's own headers unless the recipe
    # replaces them: forged identity, a forged answer header and the host.
    token = fronts.mint("--sub", "alice", "--scope", "orders:read")
    forged = {"X-Auth-Request-Email": "ceo@corp.example", "X-Auth-Request-Client-Id": "billing",
              "X-Portcullis-Workload": "spiffe://cluster.local/ns/pay/sa/admin",
              "X-Forwarded-User": "root", "X-Forwarded-Email": "root@corp.example",
              "X-Forwarded-Groups": "admins", "X-Portcullis-Cookie": "session=stolen",
              "X-Forwarded-Host": "admin.internal"}
    r = httpx.get(f"{fronts.fronts[front]}/orders/42",
                  headers={"Authorization": f"Bearer {token}", "Cookie": "theme=dark", **forged})
    assert r.status_code == 200, r.text
    headers = seen(r)
    assert headers["x-auth-request-user"] == "alice"
    for name in forged:
        if name != "X-Forwarded-Host":
            assert name.lower() not in headers, (name, headers)
    assert headers["x-forwarded-host"] != "admin.internal", headers
    # The Cookie the service gets is Portcullis's answer (the session cookie
    # taken out), not the client's line and not the forged answer header.
    assert headers["cookie"] == "theme=dark", headers
    # An anonymous caller on a public route: no identity header at all (Caddy
    # 2.6's copy_headers writes its placeholder into a header the answer
    # leaves out; the recipe removes it).
    r = httpx.get(f"{fronts.fronts[front]}/public/x", headers={"X-Auth-Request-User": "root"})
    assert r.status_code == 200, r.text
    left = [k for k in seen(r) if k.startswith(("x-auth-request-", "x-portcullis-"))]
    assert left == [], seen(r)


@pytest.mark.parametrize("front", ["nginx", "caddy"])
def test_denials_are_the_policys(fronts, front):
    url = f"{fronts.fronts[front]}/orders/42"
    assert httpx.get(url).status_code == 401
    reader = fronts.mint("--sub", "alice", "--scope", "orders:read")
    assert httpx.post(url, headers={"Authorization": f"Bearer {reader}"}).status_code == 403
    nobody = fronts.mint("--sub", "bob", "--scope", "other")
    assert httpx.get(url, headers={"Authorization": f"Bearer {nobody}"}).status_code == 403
    # Paths are judged after normalization, as the proxy judges them.
    for sneaky in ["/ORDERS/42", "/public/../orders/42", "/orders%3Bx/42"]:
        r = httpx.get(fronts.fronts[front] + sneaky)
        assert r.status_code == 401, (sneaky, r.status_code)
    assert httpx.get(f"{fronts.fronts[front]}/public/x").status_code == 200


def test_every_check_leaves_an_audit_line(fronts):
    token = fronts.mint("--sub", "carol", "--scope", "orders:read")
    assert httpx.get(f"{fronts.fronts['nginx']}/orders/7",
                     headers={"Authorization": f"Bearer {token}"}).status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        mine = [line for line in fronts.audit_lines() if line["identity"]["sub"] == "carol"]
        if mine:
            break
        time.sleep(0.1)
    assert len(mine) == 1, mine
    line = mine[0]
    assert line["frontend"] == "forward_auth"
    assert (line["method"], line["path"], line["route"], line["decision"]) == \
        ("GET", "/orders/7", "orders", "allow")
    assert token not in fronts.audit.read_text()


def test_untrusted_peers_get_no_answer(fronts):
    # 127.0.0.2 is not in trusted_proxies here: nothing is judged for it.
    token = fronts.mint("--sub", "alice", "--scope", "orders:read")
    transport = httpx.HTTPTransport(local_address=TRUSTED)
    with httpx.Client(transport=transport) as c:
        r = c.get(f"http://127.0.0.1:{fronts.port}/.portcullis/authz",
                  headers={"Authorization": f"Bearer {token}", "X-Forwarded-Uri": "/orders/1"})
    assert r.status_code == 403
    assert "x-portcullis-assertion" not in r.headers
