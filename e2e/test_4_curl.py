"""SPEC §3, §5 and §6 as a person with the real `curl` binary sees them."""

import json
import subprocess

from conftest import REQUESTS_SENT, remember


def curl_request(curl: str, url: str, *args: str) -> tuple[int, dict[str, list[str]], str]:
    """(status, headers by lower-case name, body) of one `curl -sS -i` call."""
    REQUESTS_SENT.append(("curl", url))
    out = subprocess.run([curl, "-sS", "-i", "--max-time", "20", *args, url],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
    status_line, *lines = head.split("\n")
    headers: dict[str, list[str]] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(status_line.split()[1]), headers, body


def test_no_token_is_401_missing_token_with_bare_challenge(stack, curl):
    status, headers, body = curl_request(curl, f"{stack.url}/api/orders")
    assert status == 401, body
    assert headers.get("www-authenticate") == ['Bearer realm="portcullis"'], headers
    assert headers.get("content-type", [""])[0].startswith("application/json"), headers
    error = json.loads(body)
    assert error["error"] == "missing_token", error
    assert error["message"] and error["request_id"], error


def test_no_route_is_404_no_route(stack, curl):
    status, _, body = curl_request(curl, f"{stack.url}/nothing/here")
    assert status == 404, body
    assert json.loads(body)["error"] == "no_route", body


def test_valid_token_with_curl(idp, stack, curl):
    token = idp.token()
    status, _, body = curl_request(curl, f"{stack.url}/api/orders/9",
                                   "-H", f"Authorization: Bearer {token}")
    assert status == 200, body
    assert json.loads(body)["claims"]["sub"] == "orders-agent"


def test_spoofed_identity_headers_never_reach_the_upstream(idp, stack, curl):
    token = idp.token(scope="orders:read")
    spoofed = [
        "X-Auth-Request-User: admin",
        "x-auth-request-user: root",
        "X_Auth_Request_User: admin-underscore",
        "X-Auth-Request-Email: admin@example.com",
        "X-Auth-Request-Groups: admins",
        "X-Auth-Request-Client-Id: trusted-client",
        "X-Forwarded-User: admin",
        "X-Forwarded-Email: admin@example.com",
        "X-Forwarded-Groups: admins",
        "X-Portcullis-Workload: spiffe://cluster.local/ns/prod/sa/billing",
        "X-Portcullis-Assertion: forged.assertion.value",
    ]
    args = ["-H", f"Authorization: Bearer {token}"]
    for h in spoofed:
        args += ["-H", h]
    status, _, body = curl_request(curl, f"{stack.url}/api/orders/1", *args)
    assert status == 200, body  # the upstream verified the proxy's assertion, not the forged one
    seen = json.loads(body)
    received: dict[str, list[str]] = {}
    for name, value in seen["headers"]:
        received.setdefault(name.lower().replace("_", "-"), []).append(value)
    assert received.get("x-auth-request-user") == ["orders-agent"], received
    assert received.get("x-auth-request-client-id") == ["orders-agent"], received
    for gone in ["x-auth-request-email", "x-auth-request-groups", "x-forwarded-user",
                 "x-forwarded-email", "x-forwarded-groups", "x-portcullis-workload"]:
        assert gone not in received, f"{gone} reached the upstream: {received[gone]}"
    assert received.get("x-portcullis-assertion") != ["forged.assertion.value"]
    assert len(received.get("x-portcullis-assertion", [])) == 1, received
    assert seen["claims"]["sub"] == "orders-agent"


def test_spoofed_identity_headers_without_token_are_still_401(stack, curl):
    status, headers, body = curl_request(curl, f"{stack.url}/api/orders",
                                         "-H", "X-Auth-Request-User: admin",
                                         "-H", "X-Portcullis-Assertion: forged")
    assert status == 401, body
    assert json.loads(body)["error"] == "missing_token"


def test_two_authorization_headers_are_400(idp, stack, curl):
    a, b = idp.token(), idp.token(client_id="reports-agent", scope="orders:read")
    before = len(stack.upstream_seen())
    status, _, body = curl_request(curl, f"{stack.url}/api/orders",
                                   "-H", f"Authorization: Bearer {a}",
                                   "-H", f"Authorization: Bearer {b}")
    assert status == 400, body
    assert json.loads(body)["error"] == "bad_request", body
    assert len(stack.upstream_seen()) == before


def test_encoded_slash_is_400(idp, stack, curl):
    token = remember(idp.token())
    status, _, body = curl_request(curl, f"{stack.url}/api/orders%2F..%2F..%2Fadmin",
                                   "--path-as-is", "-H", f"Authorization: Bearer {token}")
    assert status == 400, body
    assert json.loads(body)["error"] == "bad_request", body


def test_dot_segments_are_normalized_before_matching(idp, stack, curl):
    """/api/orders/../../nothing is judged (and would be forwarded) as /nothing."""
    token = idp.token()
    status, _, body = curl_request(curl, f"{stack.url}/api/orders/../../nothing",
                                   "--path-as-is", "-H", f"Authorization: Bearer {token}")
    assert status == 404, body
    assert json.loads(body)["error"] == "no_route", body
    status, _, body = curl_request(curl, f"{stack.url}/api//orders/./a/../5",
                                   "--path-as-is", "-H", f"Authorization: Bearer {token}")
    assert status == 200, body
    assert json.loads(body)["path"] == "/api/orders/5", body
