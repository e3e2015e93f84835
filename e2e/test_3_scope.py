"""Scope policy: orders:read for GET, orders:write for POST (SPEC §2 routes, §6)."""

from conftest import parse_www_authenticate


def assert_insufficient_scope(r, needed: str):
    assert r.status_code == 403, r.text
    scheme, params = parse_www_authenticate(r.headers.get("www-authenticate", ""))
    assert scheme == "Bearer", r.headers
    assert params.get("error") == "insufficient_scope", r.headers
    assert params.get("scope") == needed, r.headers
    body = r.json()
    assert body["error"] == "insufficient_scope", body
    assert body["request_id"], body


def test_post_without_write_scope_is_403_insufficient_scope(idp, stack):
    token = idp.token(scope="orders:read")
    before = len(stack.upstream_seen())
    r = stack.post("/api/orders", token, json={"item": "widget"})
    assert_insufficient_scope(r, "orders:write")
    assert len(stack.upstream_seen()) == before, "a denied POST reached the upstream"


def test_read_only_token_still_reads(idp, stack):
    token = idp.token(client_id="reports-agent", scope="orders:read")
    assert stack.get("/api/orders", token).status_code == 200
    assert_insufficient_scope(stack.post("/api/orders", token, json={}), "orders:write")


def test_token_without_any_scope_cannot_read(idp, stack):
    token = idp.token(scope=None)
    assert "scope" not in idp.token_response(scope=None)
    assert_insufficient_scope(stack.get("/api/orders", token), "orders:read")


def test_write_scope_alone_does_not_grant_read(idp, stack):
    token = idp.token(scope="orders:write")
    assert_insufficient_scope(stack.get("/api/orders/7", token), "orders:read")
    assert stack.post("/api/orders", token, json={}).status_code == 200
