"""Login sessions shared through Redis (SPEC §2 `shared_state`, `login`; issue
14): three replicas of the real binary behind one "load balancer" address
(`public_url` is the first replica's, where the browser signs in), one real
Debian `redis-server` (ACL user, database 2, no persistence), the real
`oidc-provider` with its browser client, and a real headless Chromium for the
sign-in itself. After that the session cookie is replayed by httpx against
each replica, as a load balancer spreading one browser's requests would.

- a session made on replica 1 works on replicas 2 and 3;
- logout on replica 2 ends it on replicas 1 and 3;
- `POST /sessions/revoke` (admin listener) by `sub` ends every session of that
  person on every replica within a second (by `sid`: the unit tests of
  login/redis_store, as the provider's `sid` is not visible from here);
- the provider's back-channel logout, sent to replica 3, ends the session on 1;
- one refresh of an expiring session however many replicas see it at once;
- nothing in Redis is a token or a cookie; the gauge counts the cluster;
- Redis gone: session requests are refused with 503, never let through.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

from conftest import free_port, free_ports, launch, portcullis_bin, start_idp, stop, wait_until
from test_10_login import browse
from test_11_redis import Redis

pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian chromium")

CONFIG = """
server:
  listen: 127.0.0.1:{port}
  public_url: {public_url}
admin:
  listen: 127.0.0.1:{admin_port}
audit:
  sink: file:{audit_log}
assertion:
  signing_keys_dir: {keys_dir}   # one key set for the replicas, as in operations.md
providers:
  - name: idp
    issuer: {issuer}
    audiences: [portal]
    client_id: portal
    client_secret: {login_secret}
shared_state:
  redis: "redis://portcullis:{redis_password}@127.0.0.1:{redis_port}/2"
  timeout: 500ms
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
        - name: signed-in
          authenticated: true
"""

API = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def cluster(workdir):
    ports = free_ports(3)
    base = f"http://127.0.0.1:{ports[0]}"
    login_secret = secrets.token_urlsafe(24)
    redis = Redis(free_port(), "pw-" + secrets.token_urlsafe(18), workdir / "redis-sessions.log")
    redis.start()
    env = {"IDP_LOGIN_SECRET": login_secret,
           "IDP_LOGIN_REDIRECT": f"{base}/.portcullis/callback",
           # The provider's back-channel logouts reach the third replica only.
           "IDP_LOGIN_BACKCHANNEL": f"http://127.0.0.1:{ports[2]}/.portcullis/backchannel-logout",
           "IDP_LOGIN_AT_TTL": "32"}
    stacks = []
    try:
        for issuer, _proc in start_idp(workdir, env, tag="-sessions"):
            cookie_secret = secrets.token_urlsafe(32)
            for i, port in enumerate(ports):
                stacks.append(launch(portcullis_bin(), SimpleNamespace(issuer=issuer), workdir,
                                     CONFIG, tag=f"-sessions{i}", port=port, public_url=base,
                                     login_secret=login_secret, cookie_secret=cookie_secret,
                                     redis_port=redis.port, redis_password=redis.password,
                                     keys_dir=workdir / "sessions-keys"))
            yield SimpleNamespace(base=base, issuer=issuer, stacks=stacks, redis=redis,
                                  secrets=[login_secret, cookie_secret, redis.password])
    finally:
        for s in stacks:
            stop(s.proc, grace=20)
            stop(s.upstream_proc)
        redis.kill()


def sign_in(c, user: str) -> str:
    """Signs `user` in at replica 1 in a fresh browser; the session cookie."""
    _, cookies = browse(c, {"do": "signin", "path": "/app/", "user": user}, {"do": "cookies"})
    (value,) = [k["value"] for k in cookies if k["name"] == "_portcullis"]
    return value


def get(stack, path: str, cookie: str) -> httpx.Response:
    return httpx.get(f"{stack.url}{path}", headers=API | {"Cookie": f"_portcullis={cookie}"},
                     timeout=10)


def subject(r: httpx.Response) -> str:
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()["claims"]["sub"]


def gauge(stack, name: str) -> float | None:
    text = httpx.get(f"{stack.admin}/metrics", timeout=5).text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_a_session_made_on_one_replica_works_on_every_replica(cluster):
    cookie = sign_in(cluster, "alice")
    for stack in cluster.stacks:
        assert subject(get(stack, "/app/x", cookie)) == "alice"
    who = httpx.get(f"{cluster.stacks[1].url}/.portcullis/whoami",
                    headers={"Cookie": f"_portcullis={cookie}"}).json()
    assert who["sub"] == "alice" and who["session"]["csrf_token"]


def test_logout_on_replica_2_ends_it_on_replicas_1_and_3(cluster):
    one, two, three = cluster.stacks
    cookie = sign_in(cluster, "alice")
    assert subject(get(three, "/app/x", cookie)) == "alice"
    csrf = httpx.get(f"{two.url}/.portcullis/whoami",
                     headers={"Cookie": f"_portcullis={cookie}"}).json()["session"]["csrf_token"]
    out = httpx.post(f"{two.url}/.portcullis/logout", data={"csrf": csrf},
                     headers={"Cookie": f"_portcullis={cookie}"})
    assert out.status_code in (200, 302), out.text
    for stack in (one, three, two):
        r = get(stack, "/app/x", cookie)
        assert r.status_code == 401, (stack.url, r.text)
        assert r.json()["error"] == "session_expired"


def revoke(stack, **who) -> httpx.Response:
    return httpx.post(f"{stack.admin}/sessions/revoke", json=who, timeout=10)


def test_revoke_by_sub_ends_every_session_of_that_person_on_every_replica_within_a_second(cluster):
    one, two, three = cluster.stacks
    carol = [sign_in(cluster, "carol"), sign_in(cluster, "carol")]
    dave = sign_in(cluster, "dave")
    for cookie in carol:
        assert subject(get(two, "/app/x", cookie)) == "carol"
    started = time.monotonic()
    r = revoke(three, sub="carol")
    assert r.status_code == 200 and r.json() == {"revoked": 2}, r.text
    ended = {}
    while len(ended) < 4 and time.monotonic() - started < 5:
        for i, (stack, cookie) in enumerate([(s, c) for s in (one, two) for c in carol]):
            if i not in ended and get(stack, "/app/x", cookie).status_code == 401:
                ended[i] = time.monotonic() - started
    assert len(ended) == 4 and max(ended.values()) < 1.0, ended
    # Nobody else's session ended.
    assert subject(get(one, "/app/x", dave)) == "dave"
    # Misuse: no subject, the wrong method, garbage.
    assert revoke(three).status_code == 400
    assert httpx.post(f"{three.admin}/sessions/revoke", content=b"{not json",
                      headers={"Content-Type": "application/json"}).status_code == 400
    assert httpx.get(f"{three.admin}/sessions/revoke").status_code == 405
    # Not a form (a cross-site page could send one), not from a browser page.
    assert httpx.post(f"{three.admin}/sessions/revoke", data={"sub": "dave"}).status_code == 415
    assert httpx.post(f"{three.admin}/sessions/revoke", json={"sub": "dave"},
                      headers={"Origin": "https://evil.example"}).status_code == 403
    assert subject(get(one, "/app/x", dave)) == "dave"
    assert revoke(three, sub="nobody").json() == {"revoked": 0}


def test_back_channel_logout_at_replica_3_ends_the_session_on_replica_1(cluster):
    stats = lambda: httpx.get(f"{cluster.issuer}/__admin/stats").json()
    sent = stats()["backchannel_sent"]
    _, before, _, after = browse(
        cluster,
        {"do": "signin", "path": "/app/b", "user": "frank"},
        {"do": "fetch", "path": "/app/b", "api": True},
        {"do": "idp_logout"},
        {"do": "fetch", "path": "/app/b", "api": True},
    )
    assert before["status"] == 200
    assert stats()["backchannel_sent"] > sent
    assert after["status"] == 401 and json.loads(after["text"])["error"] == "session_expired"
    lines = cluster.stacks[2].stderr_log.read_text(errors="replace")
    assert "back-channel logout" in lines


def test_one_refresh_however_many_replicas_see_the_expiring_session(cluster):
    before = httpx.get(f"{cluster.issuer}/__admin/stats").json()["token_requests"]
    cookie = sign_in(cluster, "grace")
    time.sleep(3)  # the access token (32 s) is now within the 30 s refresh margin
    statuses = []
    lock = threading.Lock()

    def hit(stack):
        r = get(stack, "/app/r", cookie)
        with lock:
            statuses.append(r.status_code)

    threads = [threading.Thread(target=hit, args=(s,)) for s in cluster.stacks * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200] * 9, statuses
    after = httpx.get(f"{cluster.issuer}/__admin/stats").json()["token_requests"]
    # One code exchange and exactly one refresh for nine requests on three replicas.
    assert after - before == 2, after - before


def test_nothing_in_redis_is_a_token_or_a_cookie_and_the_gauge_counts_the_cluster(cluster):
    cookie = sign_in(cluster, "heidi")
    keys = cluster.redis.keys("portcullis:session*")
    assert any(k.startswith("portcullis:session:") for k in keys), keys
    session_id = cookie.split(".")[0]
    for key in keys:
        assert session_id not in key and cookie not in key
    for key in [k for k in keys if k.startswith("portcullis:session:")]:
        sealed = cluster.redis.cli("HGET", key, "d")
        assert "eyJ" not in sealed and "heidi" not in sealed
    gauges = {gauge(stack, "portcullis_sessions") for stack in cluster.stacks}
    assert len(gauges) == 1 and gauges.pop() >= 1, gauges
    for stack in cluster.stacks:
        for text in (stack.stderr_log.read_text(errors="replace"),
                     stack.audit_log.read_text(errors="replace")):
            assert "eyJ" not in text
            for secret in cluster.secrets:
                assert secret not in text


def test_redis_gone_refuses_session_requests_with_503(cluster):
    """Last: it kills Redis. Sessions cannot be checked, so none is let through;
    Redis comes back empty (no persistence), so the session is over."""
    cookie = sign_in(cluster, "ivan")
    cluster.redis.kill()
    for stack in cluster.stacks:
        wait_until("portcullis_shared_state_up 0",
                   lambda: gauge(stack, "portcullis_shared_state_up") == 0,
                   stack.proc, stack.stderr_log, timeout=10)
        r = get(stack, "/app/x", cookie)
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "upstream_unavailable"
    cluster.redis.start()
    for stack in cluster.stacks:
        wait_until("portcullis_shared_state_up 1",
                   lambda: gauge(stack, "portcullis_shared_state_up") == 1,
                   stack.proc, stack.stderr_log, timeout=15)
        r = get(stack, "/app/x", cookie)
        assert r.status_code == 401 and r.json()["error"] == "session_expired", r.text
