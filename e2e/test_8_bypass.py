"""Ways around the policy (SPEC §5), tried as an attacker of a reverse proxy
would, against the real binary. Each attack has a control showing that the
protected route really denies (or that the upstream really would have acted on
what the attack smuggled), so a test cannot pass because nothing happened.

Peers: an h2c-capable echo upstream (hypercorn), an HTTPS upstream speaking h2
that records request trailers (the `h2` library), raw HTTP/1.1 over sockets and
a raw HTTP/2 client (`h2`). Clients connect from 127.0.0.1 (untrusted) or from
127.0.0.2 (listed in `trusted_proxies`).
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import E2E, free_ports, portcullis_bin, start, stop, wait_until

UNTRUSTED = "127.0.0.1"
TRUSTED = "127.0.0.2"
ISSUER = "https://bypass.example"

CONFIG = """
server:
  listen: 127.0.0.1:{port}
  trusted_proxies: [127.0.0.2/32]
admin:
  listen: 127.0.0.1:{admin_port}
providers:
  - name: dev
    issuer: {issuer}
    jwks_file: {keys}/jwks.json
    audiences: [bypass]
    algorithms: [ES256]
workload_identity:
  trust_domain: cluster.local
  accept: [xfcc, linkerd]
audit:
  sink: file:{audit}
routes:
  - name: admin-host
    match: {{ hosts: [admin.example] }}
    upstream: {echo}
    policy:
      allow:
        - groups: [admins]
  - name: public-host
    match: {{ hosts: [public.example] }}
    upstream: {echo}
    auth: none
  - name: admin
    match: {{ path_prefix: /admin }}
    upstream: {echo}
    policy:
      allow:
        - groups: [admins]
  - name: trailers
    match: {{ path_prefix: /trailers }}
    upstream: https://127.0.0.1:{h2_port}
    upstream_tls: {{ ca_file: {cert} }}
    auth: none
  - name: workload
    match: {{ path_prefix: /wl }}
    upstream: {echo}
    policy:
      allow:
        - workloads: [spiffe://cluster.local/ns/prod/sa/api]
  - name: whoever
    match: {{ path_prefix: /whoever }}
    upstream: {echo}
    policy:
      allow:
        - authenticated: true
  - name: public
    match: {{ path_prefix: / }}
    upstream: {echo}
    auth: none
"""


@dataclass
class Bypass:
    port: int
    echo_port: int
    h2_port: int
    cert: Path
    audit: Path
    keys: Path
    binary: str

    def mint(self, *args: str) -> str:
        out = subprocess.run([self.binary, "token", "mint", "--key", str(self.keys / "private.pem"),
                              "--iss", ISSUER, "--aud", "bypass", "--ttl", "10m", *args],
                             capture_output=True, text=True, timeout=30, check=True)
        return out.stdout.strip()


def self_signed(dirpath: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = dirpath / "cert.pem", dirpath / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def bypass(tmp_path_factory):
    binary = portcullis_bin()
    work = tmp_path_factory.mktemp("bypass")
    keys = work / "keys"
    subprocess.run([binary, "keys", "generate", "--alg", "ES256", "--out", str(keys)],
                   check=True, capture_output=True, timeout=30)
    cert, key = self_signed(work)
    echo_port, h2_port, port, admin_port = free_ports(4)
    procs = []
    try:
        echo = start([sys.executable, str(E2E / "upstream" / "h2c_echo.py"), str(echo_port)],
                     work / "echo.log", stdout=subprocess.DEVNULL)
        procs.append(echo)
        wait_until("hypercorn echo", lambda: port_open(echo_port), echo, work / "echo.log")
        h2up = start([sys.executable, str(E2E / "upstream" / "h2_trailers.py"), str(h2_port),
                      str(cert), str(key)], work / "h2.log", stdout=subprocess.DEVNULL)
        procs.append(h2up)
        wait_until("h2 upstream", lambda: port_open(h2_port), h2up, work / "h2.log")
        audit = work / "audit.log"
        config = work / "portcullis.yaml"
        config.write_text(CONFIG.format(port=port, admin_port=admin_port, issuer=ISSUER,
                                        keys=keys, audit=audit, echo=f"http://127.0.0.1:{echo_port}",
                                        h2_port=h2_port, cert=cert))
        check = subprocess.run([binary, "check", "-c", str(config)], capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        proxy = start([binary, "serve", "-c", str(config)], work / "portcullis.stderr",
                      stdout=subprocess.DEVNULL)
        procs.append(proxy)
        wait_until("Portcullis /readyz",
                   lambda: httpx.get(f"http://127.0.0.1:{admin_port}/readyz").status_code == 200,
                   proxy, work / "portcullis.stderr")
        yield Bypass(port, echo_port, h2_port, cert, audit, keys, binary)
    finally:
        for p in reversed(procs):
            stop(p)


# ------------------------------------------------------------------ clients

def connect(port: int, source: str = UNTRUSTED) -> socket.socket:
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


@dataclass
class Answer:
    status: int
    headers: dict[str, list[str]]
    body: bytes
    rest: bytes = b""

    def json(self) -> dict:
        return json.loads(self.body)

    def seen_headers(self) -> dict[str, list[str]]:
        """The request headers the echo upstream reported, by lower-case name."""
        out: dict[str, list[str]] = {}
        for k, v in self.json()["headers"]:
            out.setdefault(k.lower(), []).append(v)
        return out


def read_h1(sock: socket.socket) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    length = int(headers.get("content-length", ["0"])[0])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Answer(status, headers, rest[:length], rest[length:])


def raw(port: int, request: bytes, source: str = UNTRUSTED) -> Answer:
    with connect(port, source) as s:
        s.sendall(request)
        return read_h1(s)


def h1(port: int, method: str, target: str, headers: list[tuple[str, str]],
       source: str = UNTRUSTED) -> Answer:
    lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers]
    if not any(k.lower() == "connection" for k, _ in headers):
        lines.append("Connection: close")
    return raw(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), source)


def h2_request(port: int, headers: list[tuple[str, str]], body: bytes | None = None,
               trailers: list[tuple[str, str]] | None = None, tls_ca: Path | None = None,
               source: str = UNTRUSTED) -> Answer:
    """One HTTP/2 request: prior knowledge in clear text, or ALPN h2 over TLS."""
    sock = connect(port, source)
    if tls_ca is not None:
        ctx = ssl.create_default_context(cafile=str(tls_ca))
        ctx.set_alpn_protocols(["h2"])
        sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    # An attacker's client: it sends what it is told, checked or not.
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False))
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    end = body is None and trailers is None
    conn.send_headers(stream, headers, end_stream=end)
    if body is not None:
        conn.send_data(stream, body, end_stream=trailers is None)
    if trailers is not None:
        conn.send_headers(stream, trailers, end_stream=True)
    sock.sendall(conn.data_to_send())
    status, resp_headers, data = 0, {}, b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            done = False
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                    for k, v in event.headers:
                        if k == ":status":
                            status = int(v)
                        else:
                            resp_headers.setdefault(k, []).append(v)
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)) \
                        and event.stream_id == stream:
                    done = True
            sock.sendall(conn.data_to_send())
            if done:
                break
    finally:
        sock.close()
    return Answer(status, resp_headers, data)


def audit_line(bypass: Bypass, request_id: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in bypass.audit.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("request_id") == request_id:
                return rec
        time.sleep(0.1)
    raise AssertionError(f"no audit line for {request_id}")


# ---------------------------------------------- 1. the host judged is forwarded

def test_absolute_form_with_a_different_host_is_refused(bypass):
    # Control: the admin host's route really denies without a token.
    assert h1(bypass.port, "GET", "/x", [("Host", "admin.example")]).status == 401
    ok = h1(bypass.port, "GET", "http://public.example/x", [("Host", "public.example")])
    assert ok.status == 200, ok.body
    seen = ok.seen_headers()
    assert seen["host"] == ["public.example"] and seen["x-forwarded-host"] == ["public.example"]
    # The attack: judged by the public route, served as the admin host.
    bad = h1(bypass.port, "GET", "http://public.example/x", [("Host", "admin.example")])
    assert bad.status == 400, bad.body
    assert bad.json()["error"] == "bad_request"
    # Two Host lines are no better.
    two = h1(bypass.port, "GET", "/x", [("Host", "public.example"), ("Host", "admin.example")])
    assert two.status == 400


def test_h2_authority_and_a_different_host_header_are_refused(bypass):
    base = [(":method", "GET"), (":scheme", "http"), (":path", "/x")]
    ok = h2_request(bypass.port, base[:2] + [(":authority", "public.example")] + base[2:])
    assert ok.status == 200, ok.body
    assert ok.seen_headers()["host"] == ["public.example"]
    assert ok.seen_headers()["x-forwarded-host"] == ["public.example"]
    bad = h2_request(bypass.port, base[:2] + [(":authority", "public.example")] + base[2:]
                     + [("host", "admin.example")])
    assert bad.status == 400, bad.body


# ------------------------------------------------------ 2. no h2c smuggling

H2C_UPGRADE = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
               ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]


def test_the_upstream_would_open_an_h2c_tunnel(bypass):
    # Control: asked directly, hypercorn switches to h2c.
    direct = h1(bypass.echo_port, "GET", "/x", [("Host", "public.example")] + H2C_UPGRADE)
    assert direct.status == 101, direct.headers


@pytest.mark.parametrize("connection", ["Upgrade, HTTP2-Settings", "Upgrade"])
def test_h2c_upgrade_is_never_forwarded(bypass, connection):
    headers = [("Host", "public.example"), ("Connection", connection), ("Upgrade", "h2c"),
               ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]
    with connect(bypass.port) as s:
        s.sendall(("GET /x HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
                   + "\r\n").encode())
        answer = read_h1(s)
        assert answer.status == 200, answer.headers
        seen = answer.seen_headers()
        # Forwarded as a plain request: no upgrade, no HTTP2-Settings.
        assert "upgrade" not in seen and "http2-settings" not in seen, seen
        assert answer.headers.get("connection") == ["close"]
        # Nothing more is read from this connection: an h2 preface gets no answer
        # (the proxy has closed it: an orderly end, or a reset if the preface
        # arrived after the close).
        try:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            assert s.recv(65536) == b""
        except (ConnectionResetError, BrokenPipeError):
            pass
    # The protected path, inside where a tunnel would have been, still denies.
    assert h1(bypass.port, "GET", "/admin/secret", [("Host", "x")]).status == 401


# -------------------------------------------------- 3. trailers carry no identity

SPOOFED_TRAILERS = [("x-auth-request-user", "root"), ("x-portcullis-assertion", "forged"),
                    ("x-portcullis-workload", "spiffe://cluster.local/ns/prod/sa/api"),
                    ("authorization", "Bearer forged")]


def test_the_h2_upstream_records_trailers(bypass):
    direct = h2_request(bypass.h2_port, [(":method", "POST"), (":scheme", "https"),
                                         (":authority", "127.0.0.1"), (":path", "/trailers")],
                        body=b"hello", trailers=SPOOFED_TRAILERS, tls_ca=bypass.cert)
    assert direct.status == 200
    assert [k for k, _ in direct.json()["trailers"]] == [k for k, _ in SPOOFED_TRAILERS]


def test_h1_chunked_trailers_are_dropped(bypass):
    trailer_lines = "".join(f"{k}: {v}\r\n" for k, v in SPOOFED_TRAILERS)
    request = ("POST /trailers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               "Connection: close\r\n\r\n5\r\nhello\r\n0\r\n" + trailer_lines + "\r\n").encode()
    answer = raw(bypass.port, request)
    assert answer.status == 200, answer.body
    seen = answer.json()
    assert seen["upstream"] == "h2-trailers" and seen["body"] == "hello"
    assert seen["trailers"] == [], seen


def test_h2_trailers_are_dropped(bypass):
    answer = h2_request(bypass.port, [(":method", "POST"), (":scheme", "http"),
                                      (":authority", "x"), (":path", "/trailers")],
                        body=b"hello", trailers=SPOOFED_TRAILERS)
    assert answer.status == 200, answer.body
    seen = answer.json()
    assert seen["body"] == "hello" and seen["trailers"] == [], seen


# ---------------------------------------------------- 4. every line of a header

PROD = "spiffe://cluster.local/ns/prod/sa/api"
DEV = "spiffe://cluster.local/ns/dev/sa/tool"


def test_xfcc_lines_read_as_one_list_whose_last_element_decides(bypass):
    one = h1(bypass.port, "GET", "/wl", [("Host", "x"), ("X-Forwarded-Client-Cert",
                                                       f"By=spiffe://cluster.local/ns/gw/sa/gw;URI={PROD}")],
             source=TRUSTED)
    assert one.status == 200, one.body  # control: the prod workload is allowed
    # A client-written first line naming prod, then the line the nearest hop added.
    two = h1(bypass.port, "GET", "/wl", [("Host", "x"),
                                         ("X-Forwarded-Client-Cert", f"URI={PROD}"),
                                         ("X-Forwarded-Client-Cert", f"URI={DEV}")],
             source=TRUSTED)
    assert two.status == 403, two.body
    # The same list on one line decides the same way.
    joined = h1(bypass.port, "GET", "/wl", [("Host", "x"),
                                            ("X-Forwarded-Client-Cert", f"URI={PROD},URI={DEV}")],
                source=TRUSTED)
    assert joined.status == 403


def test_more_than_one_l5d_client_id_is_refused(bypass):
    prod = "api.prod.serviceaccount.identity.linkerd.cluster.local"
    one = h1(bypass.port, "GET", "/wl", [("Host", "x"), ("l5d-client-id", prod)], source=TRUSTED)
    assert one.status == 200, one.body
    two = h1(bypass.port, "GET", "/wl", [("Host", "x"), ("l5d-client-id", prod),
                                         ("l5d-client-id", "tool.dev.serviceaccount.identity.linkerd.cluster.local")],
             source=TRUSTED)
    assert two.status == 400, two.body


# --------------------------------------------- 5. case and %3B do not dodge a route

@pytest.mark.parametrize("path", ["/Admin/secret", "/ADMIN/secret", "/%41dmin/secret",
                                  "/admin%3Bx/secret", "/admin%3bx/secret", "/Admin;x/secret"])
def test_case_and_encoded_parameters_do_not_dodge_a_route(bypass, path):
    assert h1(bypass.port, "GET", "/public/x", [("Host", "x")]).status == 200  # control
    answer = h1(bypass.port, "GET", path, [("Host", "x")])
    assert answer.status == 401, (path, answer.body)


def test_the_upstream_receives_the_path_as_judged(bypass):
    admin = bypass.mint("--sub", "root", "--groups", "admins")
    answer = h1(bypass.port, "GET", "/Admin/Secret", [("Host", "x"),
                                                      ("Authorization", f"Bearer {admin}")])
    assert answer.status == 200, answer.body
    assert answer.json()["raw_path"] == "/Admin/Secret"


# ------------------------------------- 6. reserved endpoints after normalization

@pytest.mark.parametrize("path", ["/.well-known/portcullis//jwks.json",
                                  "/.well-known/portcullis/./jwks.json",
                                  "/.well-known/portcullis/%6Awks.json",
                                  "/%2Ewell-known/portcullis/jwks.json",
                                  "/x/../.well-known/portcullis/jwks.json"])
def test_jwks_spellings_are_answered_by_the_proxy(bypass, path):
    canonical = h1(bypass.port, "GET", "/.well-known/portcullis/jwks.json", [("Host", "x")])
    assert canonical.status == 200 and "keys" in canonical.json()
    answer = h1(bypass.port, "GET", path, [("Host", "x")])
    assert answer.status == 200
    assert answer.json() == canonical.json(), answer.body  # the proxy's keys, not the echo


@pytest.mark.parametrize("path", ["//.portcullis/authz", "/%2Eportcullis/authz",
                                  "/.portcullis/./x", "/.Portcullis/authz"])
def test_reserved_prefix_spellings_never_reach_the_upstream(bypass, path):
    control = h1(bypass.port, "GET", "/.well-known/other", [("Host", "x")])
    assert control.json()["upstream"] == "h2c-echo"
    answer = h1(bypass.port, "GET", path, [("Host", "x")])
    assert "upstream" not in answer.json(), answer.body


# ------------------------------------- 7. rewrite, override and origin headers

ORIGIN_HEADERS = [("X-Original-URL", "/admin/secret"), ("X-Rewrite-URL", "/admin/secret"),
                  ("X-Envoy-Original-Path", "/admin/secret"), ("Forwarded", "for=1.2.3.4;host=admin.example"),
                  ("X-Real-IP", "1.2.3.4"), ("X-Client-IP", "1.2.3.4"), ("True-Client-IP", "1.2.3.4"),
                  ("X-Forwarded-Prefix", "/admin"), ("X-Forwarded-Port", "443"),
                  ("X-Forwarded-Scheme", "https"), ("X-Forwarded-Server", "admin.example"),
                  ("X_Original_URL", "/admin/secret")]
OVERRIDES = [("X-HTTP-Method-Override", "DELETE"), ("X-Method-Override", "DELETE"),
             ("X-HTTP-Method", "DELETE")]


def test_rewrite_and_origin_headers_from_untrusted_peers_are_removed(bypass):
    answer = h1(bypass.port, "POST", "/public/x", [("Host", "x"), ("Content-Length", "0")]
                + ORIGIN_HEADERS + OVERRIDES)
    assert answer.status == 200
    seen = answer.seen_headers()
    for name, _ in ORIGIN_HEADERS + OVERRIDES:
        if name.lower() != "forwarded":
            assert name.lower() not in seen, (name, seen)
    # Forwarded is the proxy's own view.
    assert seen["forwarded"] == ['for=127.0.0.1;proto=http;host="x"'], seen
    assert answer.json()["method"] == "POST"


def test_method_overrides_are_removed_even_from_trusted_peers(bypass):
    answer = h1(bypass.port, "POST", "/public/x", [("Host", "x"), ("Content-Length", "0"),
                                                   ("X-Original-URL", "/kept")] + OVERRIDES,
                source=TRUSTED)
    seen = answer.seen_headers()
    assert seen.get("x-original-url") == ["/kept"]  # control: a trusted hop may rewrite
    for name, _ in OVERRIDES:
        assert name.lower() not in seen, seen


# ----------------------------------------------- 8. identity headers cannot split

def test_a_group_with_a_comma_is_left_out_of_the_groups_header(bypass):
    sneaky = bypass.mint("--sub", "mallory", "--claim", 'groups=["users,admins","devs"]')
    # Control: to the policy the caller is not an admin.
    denied = h1(bypass.port, "GET", "/admin/x", [("Host", "x"), ("Authorization", f"Bearer {sneaky}")])
    assert denied.status == 403, denied.body
    answer = h1(bypass.port, "GET", "/whoever", [("Host", "x"), ("Authorization", f"Bearer {sneaky}")])
    assert answer.status == 200, answer.body
    assert answer.seen_headers()["x-auth-request-groups"] == ["devs"]


# ---------------------------------------- 9. garbage X-Forwarded-For entries

def test_a_garbage_xff_entry_cannot_hide_the_client(bypass):
    for rid, chain, want in [("xff-control", "203.0.113.7", "203.0.113.7"),
                             ("xff-garbage", "not-an-ip, 203.0.113.7", "203.0.113.7")]:
        answer = h1(bypass.port, "GET", "/public/x", [("Host", "x"), ("X-Request-Id", rid),
                                                      ("X-Forwarded-For", chain)], source=TRUSTED)
        assert answer.status == 200
        assert audit_line(bypass, rid)["client_ip"] == want


# ----------------------------------------------------- methods and CONNECT

@pytest.mark.parametrize("method,target", [("get", "/public/x"), ("CONNECT", "public.example:443"),
                                           ("PURGE", "/public/x")])
def test_unknown_and_lowercase_methods_and_connect_are_refused(bypass, method, target):
    assert h1(bypass.port, "GET", "/public/x", [("Host", "x")]).status == 200
    answer = h1(bypass.port, method, target, [("Host", "public.example")])
    assert answer.status == 400, (method, answer.status)
