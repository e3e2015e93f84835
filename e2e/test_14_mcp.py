"""MCP gateway (SPEC §10) with the official MCP Python SDK on both sides: two
FastMCP servers over the streamable HTTP transport (one answering in JSON, one
in SSE, both with sessions) behind the real Portcullis binary, and the SDK's
own client (streamablehttp_client + ClientSession) in front of it, with tokens
minted by `portcullis token mint` for a jwks_file provider whose audience is
each route's resource URI (RFC 8707).

The servers record every tool execution and every request's headers
(upstream/mcp_server.py), so the tests see what reached them: a denied call
never executes, and no caller's token ever arrives.

This module runs its own Portcullis and servers on free ports.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError

from conftest import (E2E, free_port, free_ports, parse_www_authenticate, portcullis_bin, remember, start,
                      stop, wait_until)

ISSUER = "https://agents.idp.example"
MODES = ["json", "sse"]
ACCEPT = "application/json, text/event-stream"

CONFIG = """\
server:
  listen: 127.0.0.1:{port}
  public_url: {url}
admin:
  listen: 127.0.0.1:{admin_port}
providers:
  - name: agents
    issuer: {issuer}
    jwks_file: {jwks}
    audiences: [{url}/json/mcp, {url}/sse/mcp]
    algorithms: [ES256]
audit:
  sink: "file:{audit_log}"
routes:
{routes}"""

ROUTE = """\
  - name: {mode}
    match: {{ path_prefix: /{mode}/mcp }}
    upstream: http://127.0.0.1:{upstream_port}
    mcp: {{}}
    policy:
      deny:
        - name: agents-never-delete
          groups: [agents]
          tools: ["delete_*"]
      allow:
        - name: agents-read
          groups: [agents]
          tools: [get_*, search]
        - name: admins
          groups: [admins]
"""


@dataclass
class McpStack:
    url: str
    admin: str
    upstreams: dict[str, str]
    audit_log: Path
    stderr_log: Path
    binary: str
    keys: Path
    workdir: Path

    def token(self, sub: str, groups: str, mode: str = "json") -> str:
        out = subprocess.run(
            [self.binary, "token", "mint", "--key", str(self.keys / "private.pem"), "--iss", ISSUER,
             "--sub", sub, "--aud", f"{self.url}/{mode}/mcp", "--groups", groups,
             "--claim", f"client_id={sub}", "--ttl", "10m"],
            capture_output=True, text=True, timeout=30, check=True)
        return remember(out.stdout.strip())

    def seen(self, mode: str) -> dict:
        return httpx.get(f"{self.upstreams[mode]}/__seen", timeout=10).json()

    def audit_lines(self) -> list[dict]:
        return [json.loads(l) for l in self.audit_log.read_text().splitlines() if l.strip()]


@pytest.fixture(scope="module")
def mcp_stack(tmp_path_factory) -> McpStack:
    binary = portcullis_bin()
    work = tmp_path_factory.mktemp("mcp")
    keys = work / "keys"
    subprocess.run([binary, "keys", "generate", "--alg", "ES256", "--out", str(keys)],
                   check=True, capture_output=True, timeout=30)
    servers, upstreams, routes = [], {}, []
    port, admin_port = free_ports(2)
    url = f"http://127.0.0.1:{port}"
    proc = None
    try:
        for mode in MODES:
            up_port = free_port()
            log = work / f"mcp-{mode}.log"
            servers.append(start([sys.executable, str(E2E / "upstream" / "mcp_server.py"),
                                  str(up_port), mode, f"/{mode}/mcp"], log,
                                 stdout=subprocess.DEVNULL))
            upstreams[mode] = f"http://127.0.0.1:{up_port}"
            routes.append(ROUTE.format(mode=mode, upstream_port=up_port))
            wait_until(f"MCP server ({mode})",
                       lambda m=mode: httpx.get(f"{upstreams[m]}/__seen").status_code == 200,
                       servers[-1], log)
        audit_log = work / "audit.log"
        config = work / "portcullis.yaml"
        config.write_text(CONFIG.format(port=port, url=url, admin_port=admin_port, issuer=ISSUER,
                                        jwks=keys / "jwks.json", audit_log=audit_log,
                                        routes="".join(routes)))
        check = subprocess.run([binary, "check", "-c", str(config)], capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        stderr_log = work / "portcullis.stderr"
        proc = start([binary, "serve", "-c", str(config)], stderr_log, stdout=subprocess.DEVNULL)
        wait_until("Portcullis /readyz",
                   lambda: httpx.get(f"http://127.0.0.1:{admin_port}/readyz").status_code == 200,
                   proc, stderr_log)
        yield McpStack(url, f"http://127.0.0.1:{admin_port}", upstreams, audit_log, stderr_log,
                       binary, keys, work)
    finally:
        stop(proc, grace=20)
        for s in servers:
            stop(s)


def run(coro):
    return asyncio.run(coro)


async def session_do(url: str, token: str, work):
    """Runs `work(session, get_session_id)` in an initialized SDK client session."""
    headers = {"Authorization": f"Bearer {token}"}
    async with streamablehttp_client(url, headers=headers) as (read, write, get_session_id):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await work(session, get_session_id)


def text_of(result) -> str:
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


@pytest.mark.parametrize("mode", MODES)
def test_list_and_calls_follow_the_policy(mcp_stack, mode):
    url = f"{mcp_stack.url}/{mode}/mcp"
    agent = mcp_stack.token("agent-7", "agents", mode)
    admin = mcp_stack.token("ops-1", "admins", mode)
    before = mcp_stack.seen(mode)["executed"]

    async def agent_work(session, _):
        tools = await session.list_tools()
        allowed = await session.call_tool("get_weather", {"city": "Paris"})
        found = await session.call_tool("search", {"query": "tea"})
        denied = {}
        for tool, args in [("delete_records", {"table": "orders"}), ("admin_reset", {})]:
            with pytest.raises(McpError) as err:
                await session.call_tool(tool, args)
            denied[tool] = err.value.error
        # The session survives denials.
        again = await session.call_tool("get_weather", {"city": "Oslo"})
        return sorted(t.name for t in tools.tools), text_of(allowed), text_of(found), denied, text_of(again)

    names, weather, found, denied, again = run(session_do(url, agent, agent_work))
    assert names == ["get_weather", "search"]
    assert weather == "sunny in Paris" and found == "results for tea" and again == "sunny in Oslo"
    for tool, error in denied.items():
        assert error.code == -32003, (tool, error)
        assert error.data["error"] == "forbidden"
        assert re.fullmatch(r"[0-9a-f-]{16,}", error.data["request_id"]), error.data
    assert "agents-never-delete" in denied["delete_records"].message, denied["delete_records"].message

    async def admin_work(session, _):
        tools = await session.list_tools()
        reset = await session.call_tool("admin_reset", {})
        return sorted(t.name for t in tools.tools), text_of(reset)

    names, reset = run(session_do(url, admin, admin_work))
    assert names == ["admin_reset", "delete_records", "get_weather", "search"]
    assert reset == "reset"

    seen = mcp_stack.seen(mode)
    executed = seen["executed"][len(before):]
    # The agent's two denied calls never reached the server; the admin's call did.
    assert executed == ["get_weather", "search", "get_weather", "admin_reset"], executed
    # No request the server received carried a caller's token or any Authorization.
    for headers in seen["headers"]:
        assert "authorization" not in headers, headers
        for value in headers.values():
            assert agent not in value and admin not in value


def initialize(url: str, token: str | None, extra: dict | None = None) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "1"}}}
    return post(url, token, body, extra)


def post(url: str, token: str | None, body, extra: dict | None = None, raw: bytes | None = None):
    headers = {"Accept": ACCEPT, "Content-Type": "application/json",
               "MCP-Protocol-Version": "2025-06-18"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    headers |= extra or {}
    content = raw if raw is not None else json.dumps(body).encode()
    with httpx.Client(timeout=30) as c:
        with c.stream("POST", url, headers=headers, content=content) as r:
            r.read()
            return r


@pytest.mark.parametrize("mode", MODES)
def test_a_session_belongs_to_its_creator(mcp_stack, mode):
    url = f"{mcp_stack.url}/{mode}/mcp"
    owner = mcp_stack.token("agent-owner", "agents", mode)
    thief = mcp_stack.token("ops-thief", "admins", mode)
    r = initialize(url, owner)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    with_sid = lambda hdrs: sum(1 for h in hdrs if h.get("mcp-session-id") == sid)
    reached = with_sid(mcp_stack.seen(mode)["headers"])

    # Another identity presenting it: 404, and nothing is forwarded.
    r = post(url, thief, listing, {"Mcp-Session-Id": sid})
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "no_route"
    # An id the server never issued: the same answer.
    r = post(url, owner, listing, {"Mcp-Session-Id": "f" * 32})
    assert r.status_code == 404
    assert with_sid(mcp_stack.seen(mode)["headers"]) == reached

    # Its creator goes on using it.
    post(url, owner, {"jsonrpc": "2.0", "method": "notifications/initialized"}, {"Mcp-Session-Id": sid})
    r = post(url, owner, listing, {"Mcp-Session-Id": sid})
    assert r.status_code == 200, r.text
    assert "get_weather" in r.text and "delete_records" not in r.text
    assert with_sid(mcp_stack.seen(mode)["headers"]) == reached + 2


def test_batches_and_malformed_bodies_are_refused(mcp_stack):
    url = f"{mcp_stack.url}/json/mcp"
    agent = mcp_stack.token("agent-batch", "agents")
    before = len(mcp_stack.seen("json")["headers"])
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
             {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
              "params": {"name": "delete_records", "arguments": {"table": "x"}}}]
    r = post(url, agent, batch)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32600 and r.json()["id"] is None
    for raw in [b"{not json", b"\xff\xfe", b'{"id":1,"method":"tools/call","params":{"name":"search","name":"delete_records"}}']:
        r = post(url, agent, None, raw=raw)
        assert r.status_code == 400, raw
        assert r.json()["error"]["code"] in (-32700, -32600), r.text
    assert len(mcp_stack.seen("json")["headers"]) == before, "nothing refused was forwarded"


def test_challenge_and_protected_resource_metadata(mcp_stack):
    for mode in MODES:
        r = initialize(f"{mcp_stack.url}/{mode}/mcp", None)
        assert r.status_code == 401
        scheme, params = parse_www_authenticate(r.headers["www-authenticate"])
        metadata_url = f"{mcp_stack.url}/.well-known/oauth-protected-resource/{mode}/mcp"
        assert scheme == "Bearer" and params == {"realm": "portcullis",
                                                 "resource_metadata": metadata_url}
        r = initialize(f"{mcp_stack.url}/{mode}/mcp", "not-a-jwt")
        assert r.status_code == 401
        _, params = parse_www_authenticate(r.headers["www-authenticate"])
        assert params["error"] == "invalid_token" and params["resource_metadata"] == metadata_url
        doc = httpx.get(metadata_url, timeout=10)
        assert doc.status_code == 200 and doc.headers["content-type"] == "application/json"
        assert doc.json() == {"resource": f"{mcp_stack.url}/{mode}/mcp",
                              "authorization_servers": [ISSUER],
                              "bearer_methods_supported": ["header"]}


def test_a_caller_allowed_nothing_cannot_connect(mcp_stack):
    nobody = mcp_stack.token("someone", "users")
    r = initialize(f"{mcp_stack.url}/json/mcp", nobody)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"


def test_forward_token_is_a_check_error(mcp_stack, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(CONFIG.format(port=1, url="http://127.0.0.1:1", admin_port=2, issuer=ISSUER,
                                    jwks=mcp_stack.keys / "jwks.json",
                                    audit_log=tmp_path / "a.log",
                                    routes=ROUTE.format(mode="json", upstream_port=3)
                                    + "    forward_token: true\n"))
    r = subprocess.run([mcp_stack.binary, "check", "-c", str(config)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert "forward_token: an MCP server must never receive the caller's token" in r.stdout + r.stderr


def test_explain_judges_a_tool(mcp_stack, tmp_path):
    config = next(mcp_stack.workdir.glob("portcullis.yaml"))
    claims = json.dumps({"iss": ISSUER, "sub": "agent-x", "groups": ["agents"]})
    base = [mcp_stack.binary, "explain", "-c", str(config), "--method", "POST",
            "--url", f"{mcp_stack.url}/json/mcp", "--claims", claims]
    allowed = subprocess.run(base + ["--mcp-tool", "get_weather"], capture_output=True, text=True)
    denied = subprocess.run(base + ["--mcp-tool", "delete_records"], capture_output=True, text=True)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert denied.returncode == 3, denied.stdout + denied.stderr
    assert "agents-never-delete" in denied.stdout


def test_every_call_has_one_audit_line_and_a_metric(mcp_stack):
    # After the tests above (pytest runs a module's tests in order).
    lines = [l for l in mcp_stack.audit_lines() if l["route"] in MODES]
    calls = [l for l in lines if l["mcp"] and l["mcp"]["method"] == "tools/call"]
    denied = [l for l in calls if l["mcp"]["tool"] == "delete_records"]
    assert denied and all(l["decision"] == "deny" and l["reason"] == "forbidden"
                          and l["status"] == 200 and l["rule"] == "agents-never-delete"
                          and l["upstream_ms"] is None for l in denied), denied
    allowed = [l for l in calls if l["mcp"]["tool"] == "get_weather"]
    assert allowed and all(l["decision"] == "allow" and l["rule"] == "agents-read"
                           and isinstance(l["mcp"]["id"], int) for l in allowed), allowed
    lists = [l for l in lines if l["mcp"] and l["mcp"]["method"] == "tools/list"]
    assert lists and all(l["mcp"]["tool"] is None for l in lists)
    assert all(l["identity"]["sub"] for l in calls)
    text = mcp_stack.audit_log.read_text() + mcp_stack.stderr_log.read_text()
    assert "Bearer " not in text and "eyJ" not in text, "no token in the audit line or the log"
    metrics = httpx.get(f"{mcp_stack.admin}/metrics", timeout=10).text
    for mode in MODES:
        assert re.search(rf'portcullis_mcp_calls_total\{{route="{mode}",tool="delete_records",decision="deny"\}} [1-9]', metrics), metrics
        assert re.search(rf'portcullis_mcp_calls_total\{{route="{mode}",tool="get_weather",decision="allow"\}} [1-9]', metrics)


@pytest.fixture(scope="module")
def mcp_pair(mcp_stack):
    """Two more replicas in front of the same JSON MCP server, sharing one real
    redis-server (`shared_state`) and the first stack's `public_url` (so the
    same tokens serve), as replicas behind one load balancer would."""
    from test_11_redis import Redis
    redis = Redis(free_port(), "pw-" + secrets.token_urlsafe(12), mcp_stack.workdir / "redis.log")
    redis.start()
    route = ROUTE.format(mode="json", upstream_port=mcp_stack.upstreams["json"].rsplit(":", 1)[1])
    procs, urls = [], []
    try:
        for i in range(2):
            port, admin_port = free_ports(2)
            config = mcp_stack.workdir / f"pair{i}.yaml"
            config.write_text(CONFIG.format(
                port=port, url=mcp_stack.url, admin_port=admin_port, issuer=ISSUER,
                jwks=mcp_stack.keys / "jwks.json", audit_log=mcp_stack.workdir / f"pair{i}.audit",
                routes=route) + "shared_state:\n"
                f"  redis: redis://portcullis:{redis.password}@127.0.0.1:{redis.port}/2\n")
            log = mcp_stack.workdir / f"pair{i}.stderr"
            procs.append(start([mcp_stack.binary, "serve", "-c", str(config)], log,
                               stdout=subprocess.DEVNULL))
            wait_until("Portcullis /readyz",
                       lambda: httpx.get(f"http://127.0.0.1:{admin_port}/readyz").status_code == 200,
                       procs[-1], log)
            urls.append(f"http://127.0.0.1:{port}/json/mcp")
        yield urls, redis
    finally:
        for p in procs:
            stop(p)
        redis.kill()


def test_a_session_made_on_one_replica_is_its_creators_on_every_replica(mcp_stack, mcp_pair):
    (one, two), redis = mcp_pair
    owner = mcp_stack.token("agent-roaming", "agents")
    thief = mcp_stack.token("ops-thief-2", "admins")
    r = initialize(one, owner)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    post(two, owner, {"jsonrpc": "2.0", "method": "notifications/initialized"}, {"Mcp-Session-Id": sid})
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    r = post(two, owner, listing, {"Mcp-Session-Id": sid})
    assert r.status_code == 200, r.text
    assert "get_weather" in r.text
    # Still nobody else's, on either replica.
    for url in (one, two):
        assert post(url, thief, listing, {"Mcp-Session-Id": sid}).status_code == 404
    # Redis holds the binding under a digest of the owner, nothing readable.
    (key,) = redis.keys("portcullis:mcp-session:*")
    assert "agent-roaming" not in redis.cli("GET", key)
    # Deleted on one replica: gone on the other.
    with httpx.Client(timeout=30) as c:
        d = c.delete(one, headers={"Authorization": f"Bearer {owner}", "Mcp-Session-Id": sid,
                                   "MCP-Protocol-Version": "2025-06-18"})
    assert d.status_code in (200, 202, 204), d.text
    # The binding went with it (the server too would 404 a deleted session, so
    # look at Redis itself).
    assert redis.keys("portcullis:mcp-session:*") == []
    assert post(two, owner, listing, {"Mcp-Session-Id": sid}).status_code == 404
