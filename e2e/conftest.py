"""Fixtures for the interop suite: a real OpenID Provider (npm oidc-provider),
the Portcullis release binary, and a FastAPI upstream that verifies Portcullis's
assertions with PyJWT. All three run on loopback for the whole session and are
stopped in teardown, also when a test or a fixture fails.

PORTCULLIS_BIN names the binary (default: ../target/release/portcullis).
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

E2E = Path(__file__).resolve().parent
ROOT = E2E.parent
STARTUP_TIMEOUT = 60  # seconds; two busy cores make node and the venv slow to start

# Every token string handed out or sent during the session: test_6 checks that
# none of them was written to the audit file or to Portcullis's stderr.
TOKENS_SEEN: list[str] = []
# Every request sent to the session stack's listener, as (method, url): test_6
# checks that each one produced exactly one audit line.
REQUESTS_SENT: list[tuple[str, str]] = []


# --------------------------------------------------------------------- helpers

def remember(token: str) -> str:
    TOKENS_SEEN.append(token)
    return token


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token: str) -> tuple[dict, dict]:
    header, payload, _ = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload))


def parse_www_authenticate(value: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x", error="y"` -> ("Bearer", {"realm": "x", "error": "y"})."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        while i < len(rest) and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        name = rest[i:eq].strip()
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            j = i + 1
            buf = []
            while j < len(rest) and rest[j] != '"':
                if rest[j] == "\\" and j + 1 < len(rest):
                    j += 1
                buf.append(rest[j])
                j += 1
            params[name] = "".join(buf)
            i = j + 1
        else:
            j = rest.find(",", i)
            j = len(rest) if j < 0 else j
            params[name] = rest[i:j].strip()
            i = j
    return scheme, params


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports: held open together while they are chosen, so
    that no two of them are the same one handed out twice."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if pytest itself is killed."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start(cmd: list[str], log: Path, **kw) -> subprocess.Popen:
    """A child in its own process group (so teardown can stop all of it), its
    stderr to a file, killed by the kernel should pytest die without teardown."""
    with open(log, "wb") as stderr:
        return subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL,
                                stderr=stderr, preexec_fn=_die_with_parent, **kw)


def stop(proc: subprocess.Popen | None, grace: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def read_line(stream, timeout: float = 0.5) -> str:
    """One line from a child's stdout, or "" when none arrives within timeout."""
    if select.select([stream], [], [], timeout)[0]:
        return stream.readline().decode()
    return ""


def wait_until(what: str, check, proc: subprocess.Popen, log: Path, timeout=STARTUP_TIMEOUT):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} during startup:\n"
                               f"{log.read_text(errors='replace')[-4000:]}")
        try:
            result = check()
            if result:
                return result
        except Exception as err:  # not up yet
            last = err
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout}s (last: {last!r}):\n"
                       f"{log.read_text(errors='replace')[-4000:]}")


# ---------------------------------------------------------------------- the IdP

@dataclass
class Idp:
    issuer: str
    secrets: dict[str, str]
    proc: subprocess.Popen

    def token_response(self, client_id="orders-agent", scope="orders:read orders:write",
                       resource: str | None = None) -> dict:
        """A real token request; orders-agent authenticates with client_secret_basic,
        reports-agent with client_secret_post."""
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        if resource:
            form["resource"] = resource
        auth = None
        if client_id == "orders-agent":
            auth = (client_id, self.secrets[client_id])
        else:
            form |= {"client_id": client_id, "client_secret": self.secrets[client_id]}
        r = httpx.post(f"{self.issuer}/token", data=form, auth=auth, timeout=30)
        assert r.status_code == 200, f"token endpoint: {r.status_code} {r.text}"
        body = r.json()
        remember(body["access_token"])
        return body

    def token(self, **kw) -> str:
        return self.token_response(**kw)["access_token"]

    def rotate(self, retire: bool = False) -> dict:
        r = httpx.post(f"{self.issuer}/__admin/rotate", params={"retire": "1"} if retire else {})
        r.raise_for_status()
        return r.json()

    def stats(self) -> dict:
        return httpx.get(f"{self.issuer}/__admin/stats").json()

    def jwks(self) -> dict:
        return httpx.get(f"{self.issuer}/jwks").json()


WORKDIR: list[Path] = []


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("portcullis-e2e")
    WORKDIR.append(path)
    return path


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if WORKDIR and exitstatus != 0:
        terminalreporter.write_line(
            f"e2e logs (portcullis.yaml, portcullis.stderr, audit.log, idp.stderr, "
            f"upstream.log): {WORKDIR[0]}")


def start_idp(workdir: Path, env: dict[str, str], tag: str = ""):
    """Starts e2e/idp/server.mjs with `env` (its clients' secrets); yields its
    issuer once discovery answers, and stops it afterwards."""
    if not (E2E / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("e2e/node_modules is missing: run `npm ci` in e2e/ first")
    log = workdir / f"idp{tag}.stderr"
    proc = start(["node", str(E2E / "idp" / "server.mjs"), "0"], log,
                 stdout=subprocess.PIPE, env=os.environ | env, cwd=E2E)
    try:
        line = wait_until("oidc-provider", lambda: read_line(proc.stdout), proc, log)
        assert line.startswith("READY "), line
        issuer = f"http://127.0.0.1:{int(line.split()[1])}"
        wait_until("oidc-provider discovery",
                   lambda: httpx.get(f"{issuer}/.well-known/openid-configuration").status_code == 200,
                   proc, log)
        yield issuer, proc
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def idp(workdir) -> Idp:
    client_secrets = {"orders-agent": secrets.token_urlsafe(24),
                      "reports-agent": secrets.token_urlsafe(24)}
    env = {"IDP_SECRET_BASIC": client_secrets["orders-agent"],
           "IDP_SECRET_POST": client_secrets["reports-agent"]}
    for issuer, proc in start_idp(workdir, env):
        yield Idp(issuer, client_secrets, proc)


# ----------------------------------------------------------- Portcullis + upstream

@dataclass
class Stack:
    url: str            # Portcullis listener = server.public_url
    admin: str          # admin listener
    upstream: str       # the FastAPI service, directly
    audit_log: Path
    stderr_log: Path
    config_file: Path
    proc: subprocess.Popen
    upstream_proc: subprocess.Popen
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))
    # Every request sent through `request`, as (method, path); the session
    # stack's is REQUESTS_SENT.
    sent: list[tuple[str, str]] = field(default_factory=list)

    def get(self, path: str, token: str | None = None, **kw) -> httpx.Response:
        return self.request("GET", path, token, **kw)

    def post(self, path: str, token: str | None = None, **kw) -> httpx.Response:
        return self.request("POST", path, token, **kw)

    def request(self, method: str, path: str, token: str | None = None,
                headers: dict | None = None, **kw) -> httpx.Response:
        headers = dict(headers or {})
        if token is not None:
            remember(token)
            headers["Authorization"] = f"Bearer {token}"
        self.sent.append((method, path))
        return self.client.request(method, f"{self.url}{path}", headers=headers, **kw)

    def close(self) -> None:
        """Stops Portcullis (SIGTERM: it drains) and the upstream."""
        self.client.close()
        stop(self.proc, grace=20)
        stop(self.upstream_proc)

    def upstream_seen(self) -> list[dict]:
        return httpx.get(f"{self.upstream}/__upstream/seen").json()

    def audit_lines(self) -> list[dict]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]


CONFIG = """\
# Written by e2e/conftest.py for one test session.
server:
  listen: 127.0.0.1:{port}
  public_url: http://127.0.0.1:{port}
admin:
  listen: 127.0.0.1:{admin_port}
providers:
  - name: oidc-provider
    issuer: {issuer}               # keys via OIDC discovery
    audiences: [orders-api]
    algorithms: [RS256, ES256, PS256]
    jwks_min_refresh: 1s
assertion:
  algorithm: ES256
audit:
  sink: "file:{audit_log}"
routes:
  - name: orders-read
    match: {{ path_prefix: /api/orders, methods: [GET, HEAD] }}
    upstream: {upstream}
    policy:
      allow:
        - name: readers
          scopes: [orders:read]
  - name: orders-write
    match: {{ path_prefix: /api/orders, methods: [POST, PUT, PATCH, DELETE] }}
    upstream: {upstream}
    policy:
      allow:
        - name: writers
          scopes: [orders:write]
"""


def portcullis_bin() -> str:
    binary = os.environ.get("PORTCULLIS_BIN") or str(ROOT / "target" / "release" / "portcullis")
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.fail(f"Portcullis binary not found at {binary}: "
                    "run `cargo build --release -p portcullis` or set PORTCULLIS_BIN")
    return binary


def launch(binary: str, idp: Idp, workdir: Path, config: str = CONFIG, tag: str = "",
           port: int | None = None, **fields) -> Stack:
    """Start the upstream and Portcullis; stop both if either fails to come up.
    `config` is a template over port, admin_port, issuer, audit_log, upstream
    and `fields`; `tag` keeps this stack's files apart from others'."""
    port, admin_port = port or free_port(), free_port()
    while admin_port == port:
        admin_port = free_port()
    proxy_url = f"http://127.0.0.1:{port}"

    # The upstream's socket is bound here and inherited, so its port is known
    # (and is the assertion audience) before Portcullis's config is written.
    up_sock = socket.socket()
    up_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    up_sock.bind(("127.0.0.1", 0))
    up_sock.listen(64)
    upstream = f"http://127.0.0.1:{up_sock.getsockname()[1]}"
    up_log = workdir / f"upstream{tag}.log"
    # Replicas behind one address share a `public_url` (the assertions' issuer).
    up_env = os.environ | {"PORTCULLIS_URL": fields.get("public_url", proxy_url),
                           "PORTCULLIS_JWKS_URL": f"{proxy_url}/.well-known/portcullis/jwks.json",
                           "ASSERTION_AUDIENCE": upstream,
                           "UPSTREAM_FD": str(up_sock.fileno())}
    upstream_proc = start([sys.executable, str(E2E / "upstream" / "app.py")], up_log,
                          stdout=subprocess.DEVNULL, env=up_env, pass_fds=[up_sock.fileno()])
    up_sock.close()

    audit_log = workdir / f"audit{tag}.log"
    config_file = workdir / f"portcullis{tag}.yaml"
    config_file.write_text(config.format(port=port, admin_port=admin_port, issuer=idp.issuer,
                                         audit_log=audit_log, upstream=upstream, **fields))
    stderr_log = workdir / f"portcullis{tag}.stderr"
    proc = None
    try:
        wait_until("FastAPI upstream",
                   lambda: httpx.get(f"{upstream}/__upstream/seen").status_code == 200,
                   upstream_proc, up_log)
        check = subprocess.run([binary, "check", "-c", str(config_file)],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"portcullis check: {check.stdout}{check.stderr}"
        # debug logging on purpose: test_6 asserts no token reaches the log even then.
        proc = start([binary, "serve", "-c", str(config_file)], stderr_log,
                     stdout=subprocess.DEVNULL, env=os.environ | {"PORTCULLIS_LOG": "debug"})
        wait_until("Portcullis /readyz",
                   lambda: httpx.get(f"http://127.0.0.1:{admin_port}/readyz").status_code == 200,
                   proc, stderr_log)
    except BaseException:
        stop(proc)
        stop(upstream_proc)
        raise
    return Stack(proxy_url, f"http://127.0.0.1:{admin_port}", upstream, audit_log, stderr_log,
                 config_file, proc, upstream_proc)


def launch_retrying(idp: Idp, workdir: Path, **kw) -> Stack:
    """`launch`, started over on new ports when a probed free port was taken by
    someone else before Portcullis bound it. Anything else is a failure."""
    binary = portcullis_bin()
    for attempt in range(3):
        try:
            return launch(binary, idp, workdir, **kw)
        except RuntimeError as err:
            if attempt == 2 or "in use" not in str(err).lower():
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def stack(idp, workdir) -> Stack:
    s = launch_retrying(idp, workdir)
    s.sent = REQUESTS_SENT
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def curl() -> str:
    path = shutil.which("curl")
    if not path:
        pytest.fail("the curl binary is required (scripts/test installs it)")
    return path
