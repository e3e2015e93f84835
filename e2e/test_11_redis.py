"""Cluster-wide rate limits (SPEC §2 `shared_state`, `rate_limit`; §6 429; §8
`portcullis_shared_state_up`): a real Debian `redis-server` (the ACL user of
docs/operations.md with a password, database 2, no persistence) shared by four replicas of the real
binary — three with `on_redis_down: local`, one with `deny`.

- a limit of N/s per identity holds across three replicas within ±10% over 10 s
  of load spread round-robin, for two identities at once;
- Redis killed: the `local` replicas fall back to their own limiter (each
  counts alone), the `deny` one answers 503, every replica's gauge says 0 and
  each logs the transition once — not once per request;
- Redis restarted: limits are shared again without a restart of Portcullis;
- the Redis password is in no log line, even at debug level.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import E2E, free_ports, portcullis_bin, start, stop, wait_until
from test_8_bypass import port_open

ISSUER = "https://redis.example"
RATE, BURST = 20, 5          # /limited: 20 requests per second, bursts of 5
SLOW_BURST = 5               # /slow: 1 per second, bursts of 5

CONFIG = """
server:
  listen: 127.0.0.1:{port}
admin:
  listen: 127.0.0.1:{admin_port}
providers:
  - name: dev
    issuer: {issuer}
    jwks_file: {keys}/jwks.json
    audiences: [orders-api]
    algorithms: [ES256]
shared_state:
  # The password comes from the environment, as it should in production.
  redis: "redis://portcullis:${{REDIS_PASSWORD}}@127.0.0.1:{redis_port}/2"
  on_redis_down: {mode}
  timeout: 500ms          # generous: a loaded CI machine must not look like a dead Redis
audit:
  sink: none
routes:
  - name: limited
    match: {{ path_prefix: /limited }}
    upstream: http://127.0.0.1:{echo_port}
    rate_limit: {{ requests_per_second: {rate}, burst: {burst}, key: identity }}
    policy:
      allow:
        - authenticated: true
  - name: slow
    match: {{ path_prefix: /slow }}
    upstream: http://127.0.0.1:{echo_port}
    rate_limit: {{ requests_per_second: 1, burst: {slow_burst}, key: identity }}
    policy:
      allow:
        - authenticated: true
  - name: open
    match: {{ path_prefix: /open }}
    upstream: http://127.0.0.1:{echo_port}
    policy:
      allow:
        - authenticated: true
"""


def documented_acl() -> list[str]:
    """The ACL rules docs/operations.md gives Portcullis's Redis user: the
    tests run with exactly those, so the documented list cannot fall behind
    the commands Portcullis sends."""
    doc = (E2E.parent / "docs" / "operations.md").read_text()
    (line,) = [l for l in doc.splitlines() if l.strip().startswith("user portcullis on >PASSWORD")]
    return line.split()[4:]


@dataclass
class Redis:
    port: int
    password: str
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            pytest.fail("redis-server is required (scripts/test installs it)")
        self.proc = start([binary, "--port", str(self.port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no",
                           "--user", "default", "off",
                           "--user", "portcullis", "on", f">{self.password}",
                           *documented_acl(),
                           # The tests' own look at the keys (SCAN is not Portcullis's).
                           "--user", "inspector", "on", f">{self.password}", "~*", "+@all"],
                          self.log, stdout=subprocess.DEVNULL)
        wait_until("redis-server", lambda: port_open(self.port), self.proc, self.log)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)

    def keys(self, pattern: str) -> list[str]:
        return self.cli("--scan", "--pattern", pattern).split()

    def cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--user", "inspector",
                              "-n", "2", *args],
                             env={"REDISCLI_AUTH": self.password, "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, errors="replace", timeout=10,
                             check=True)
        return out.stdout


@dataclass
class Replica:
    url: str
    admin: str
    mode: str
    stderr: Path
    proc: subprocess.Popen

    def gauge(self) -> float | None:
        text = httpx.get(f"{self.admin}/metrics", timeout=5).text
        m = re.search(r"^portcullis_shared_state_up (\S+)$", text, re.M)
        return float(m.group(1)) if m else None

    def log_lines(self, needle: str) -> list[str]:
        return [line for line in self.stderr.read_text(errors="replace").splitlines()
                if needle in line]


@dataclass
class Cluster:
    redis: Redis
    local: list[Replica]
    deny: Replica
    keys: Path
    binary: str
    config: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, sub: str) -> str:
        if sub not in self.tokens:
            out = subprocess.run([self.binary, "token", "mint", "--key", str(self.keys / "private.pem"),
                                  "--iss", ISSUER, "--aud", "orders-api", "--ttl", "10m", "--sub", sub],
                                 capture_output=True, text=True, timeout=30, check=True)
            self.tokens[sub] = out.stdout.strip()
        return self.tokens[sub]

    def replicas(self) -> list[Replica]:
        return [*self.local, self.deny]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    binary = portcullis_bin()
    work = tmp_path_factory.mktemp("redis")
    keys = work / "keys"
    subprocess.run([binary, "keys", "generate", "--alg", "ES256", "--out", str(keys)],
                   check=True, capture_output=True, timeout=30)
    password = "pw-" + secrets.token_urlsafe(18)
    # Ten ports at once (Redis, the echo upstream, four replicas' two each):
    # picked one by one, the same port could be handed out twice.
    ports = iter(free_ports(10))
    redis = Redis(next(ports), password, work / "redis.log")
    procs: list[subprocess.Popen] = []
    try:
        redis.start()
        echo_port = next(ports)
        echo = start([sys.executable, str(E2E / "upstream" / "h2c_echo.py"), str(echo_port)],
                     work / "echo.log", stdout=subprocess.DEVNULL)
        procs.append(echo)
        env = {"REDIS_PASSWORD": password, "PORTCULLIS_LOG": "debug", "PATH": "/usr/bin:/bin"}
        replicas = []
        for i, mode in enumerate(["local", "local", "local", "deny"]):
            port, admin_port = next(ports), next(ports)
            config = work / f"replica{i}.yaml"
            config.write_text(CONFIG.format(port=port, admin_port=admin_port, issuer=ISSUER,
                                            keys=keys, redis_port=redis.port, mode=mode,
                                            echo_port=echo_port, rate=RATE, burst=BURST,
                                            slow_burst=SLOW_BURST))
            check = subprocess.run([binary, "check", "-c", str(config)], env=env,
                                   capture_output=True, text=True, timeout=30)
            assert check.returncode == 0, check.stdout + check.stderr
            stderr = work / f"replica{i}.stderr"
            proc = start([binary, "serve", "-c", str(config)], stderr,
                         stdout=subprocess.DEVNULL, env=env)
            procs.append(proc)
            replicas.append(Replica(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}",
                                    mode, stderr, proc))
        wait_until("hypercorn echo", lambda: port_open(echo_port), echo, work / "echo.log")
        for r in replicas:
            wait_until("Portcullis /readyz",
                       lambda: httpx.get(f"{r.admin}/readyz").status_code == 200, r.proc, r.stderr)
            wait_until("portcullis_shared_state_up 1", lambda: r.gauge() == 1, r.proc, r.stderr)
        yield Cluster(redis, replicas[:3], replicas[3], keys, binary, work / "replica0.yaml")
    finally:
        for p in reversed(procs):
            stop(p)
        redis.kill()


def hammer(urls: list[str], token: str, seconds: float, per_second: float,
           counts: dict, lock: threading.Lock, start_at: float) -> None:
    """Paced requests for `seconds`, round-robin over `urls` (one keep-alive
    connection each), counting answers by status."""
    clients = [httpx.Client(timeout=5) for _ in urls]
    headers = {"Authorization": f"Bearer {token}"}
    try:
        while time.monotonic() < start_at:
            time.sleep(0.001)
        n = 0
        while True:
            due = start_at + n / per_second
            if due >= start_at + seconds:
                break
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            i = n % len(urls)
            r = clients[i].get(urls[i], headers=headers)
            n += 1
            with lock:
                counts[r.status_code] = counts.get(r.status_code, 0) + 1
                if r.status_code == 429:
                    counts.setdefault("headers", dict(r.headers))
    finally:
        for c in clients:
            c.close()


def test_a_limit_per_identity_holds_across_three_replicas(cluster):
    seconds, load = 10.0, 3.5 * RATE     # each identity sends 3.5x its limit
    urls = [f"{r.url}/limited/x" for r in cluster.local]
    results = {}
    lock = threading.Lock()
    start_at = time.monotonic() + 0.5
    threads = []
    for sub in ["alice", "bob"]:
        results[sub] = {}
        token = cluster.token(sub)
        # Two senders per identity, so one slow answer does not stall its load.
        for _ in range(2):
            t = threading.Thread(target=hammer, args=(urls, token, seconds, load / 2,
                                                      results[sub], lock, start_at))
            threads.append(t)
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    expected = RATE * seconds + BURST
    for sub, counts in results.items():
        statuses = {k: v for k, v in counts.items() if k != "headers"}
        assert set(statuses) <= {200, 429}, (sub, statuses)
        allowed = statuses.get(200, 0)
        assert 0.9 * expected <= allowed <= 1.1 * expected, (sub, allowed, expected, statuses)
        h = counts["headers"]
        assert int(h["retry-after"]) >= 1
        assert h["ratelimit-policy"] == f'"default";q={BURST};w=1', h
        assert re.fullmatch(r'"default";r=0;t=\d+', h["ratelimit"]), h
    # The counters are in the URL's database, under the route's prefix, one per
    # identity: the provider (its name's length first) and the subject.
    assert sorted(cluster.redis.keys("portcullis:rl:limited:*")) == \
        ["portcullis:rl:limited:sub:3:dev:alice", "portcullis:rl:limited:sub:3:dev:bob"]


def burst(replica: Replica, path: str, token: str, n: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    with httpx.Client(timeout=5) as c:
        for _ in range(n):
            started = time.monotonic()
            r = c.get(f"{replica.url}{path}", headers={"Authorization": f"Bearer {token}"})
            # Nobody waits on a dead Redis: the answer comes within the timeout.
            assert time.monotonic() - started < 1.0, r
            counts[r.status_code] = counts.get(r.status_code, 0) + 1
    return counts


def test_redis_down_then_back(cluster):
    replicas = cluster.replicas()
    token = cluster.token("carol")
    # Shared: a burst spread over the three local replicas gets one budget.
    allowed = sum(burst(r, "/slow/x", token, 4).get(200, 0) for r in cluster.local)
    assert SLOW_BURST <= allowed <= SLOW_BURST + 1, allowed

    cluster.redis.kill()
    for r in replicas:
        wait_until("portcullis_shared_state_up 0", lambda: r.gauge() == 0, r.proc, r.stderr,
                   timeout=10)
    # local: each replica counts alone, so each allows its own burst (and still refuses past it).
    dave = cluster.token("dave")
    for r in cluster.local:
        counts = burst(r, "/slow/x", dave, 3 * SLOW_BURST)
        assert set(counts) == {200, 429}, counts
        assert SLOW_BURST <= counts[200] <= SLOW_BURST + 1, counts
    # deny: 503 for rate-limited routes (with a hint to retry), others unaffected.
    with httpx.Client(timeout=5) as c:
        r = c.get(f"{cluster.deny.url}/limited/x", headers={"Authorization": f"Bearer {dave}"})
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "upstream_unavailable"
        assert r.headers["retry-after"] == "1"
        r = c.get(f"{cluster.deny.url}/open/x", headers={"Authorization": f"Bearer {dave}"})
        assert r.status_code == 200, r.text
    # One line for the transition on each replica, however many requests met it.
    for r in replicas:
        assert len(r.log_lines("Redis unreachable")) == 1, r.log_lines("Redis unreachable")

    cluster.redis.start()
    for r in replicas:
        wait_until("portcullis_shared_state_up 1", lambda: r.gauge() == 1, r.proc, r.stderr,
                   timeout=15)
        assert len(r.log_lines("Redis answers again")) == 1
    # Shared again, without restarting Portcullis.
    erin = cluster.token("erin")
    allowed = sum(burst(r, "/slow/x", erin, 4).get(200, 0) for r in cluster.local)
    assert SLOW_BURST <= allowed <= SLOW_BURST + 1, allowed
    with httpx.Client(timeout=5) as c:
        r = c.get(f"{cluster.deny.url}/limited/x", headers={"Authorization": f"Bearer {erin}"})
        assert r.status_code == 200, r.text


def test_the_redis_password_is_never_logged(cluster):
    for r in cluster.replicas():
        text = r.stderr.read_text(errors="replace")
        assert "Redis" in text          # the transitions above were logged...
        assert cluster.redis.password not in text    # ...without the password
        assert "portcullis:***@" in text or "redis://" not in text
    # Nor by `check` when the URL it is given is wrong.
    bad = cluster.config.read_text().replace("/2\"", "/two\"")
    path = cluster.config.with_name("bad.yaml")
    path.write_text(bad)
    out = subprocess.run([cluster.binary, "check", "-c", str(path)],
                         env={"REDIS_PASSWORD": cluster.redis.password, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "database number" in out.stdout + out.stderr
    assert cluster.redis.password not in out.stdout + out.stderr
