"""SPEC §7: one JSON audit line per request, with the decision and its reason;
SPEC §5: no token is ever written to the audit file or to the log (the suite
runs Portcullis with PORTCULLIS_LOG=debug). Runs last: it greps for every token
the session used."""

import time
import uuid

from conftest import REQUESTS_SENT, TOKENS_SEEN

AUDIT_FIELDS = {"timestamp", "request_id", "method", "path", "route", "decision", "reason",
                "status", "identity"}


def wait_for_lines(stack, marker: str, count: int, timeout: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in stack.audit_lines() if marker in str(line.get("path", ""))]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_one_audit_line_per_request_with_decision_and_reason(idp, stack):
    marker = uuid.uuid4().hex
    reader = idp.token(scope="orders:read")
    requests = [  # (method, path, token, status, decision, reason)
        ("GET", f"/api/orders/{marker}-allowed", reader, 200, "allow", "allowed"),
        ("POST", f"/api/orders/{marker}-scope", reader, 403, "deny", "insufficient_scope"),
        ("GET", f"/api/orders/{marker}-anonymous", None, 401, "deny", "missing_token"),
        ("GET", f"/api/orders/{marker}-garbage", "not-a-jwt", 401, "deny", "invalid_token"),
        ("GET", f"/nowhere/{marker}-noroute", None, 404, "deny", "no_route"),
    ]
    request_ids = {}
    for method, path, token, status, _, _ in requests:
        r = stack.request(method, path, token)
        assert r.status_code == status, (path, r.status_code, r.text)
        if status != 200:
            request_ids[path] = r.json()["request_id"]

    lines = wait_for_lines(stack, marker, len(requests))
    assert len(lines) == len(requests), (
        f"expected {len(requests)} audit lines for this test's requests, got {len(lines)}: {lines}")
    by_path = {}
    for line in lines:
        assert line["path"] not in by_path, f"two audit lines for {line['path']}"
        by_path[line["path"]] = line

    for method, path, token, status, decision, reason in requests:
        line = by_path.get(path)
        assert line is not None, f"no audit line for {method} {path}: {lines}"
        missing = AUDIT_FIELDS - line.keys()
        assert not missing, f"audit line lacks {missing}: {line}"
        assert line["method"] == method, line
        assert line["status"] == status, line
        assert line["decision"] == decision, line
        assert line["reason"] == reason, line
        assert line["request_id"], line
        if path in request_ids:
            assert line["request_id"] == request_ids[path], "audit and response request ids differ"
        if decision == "allow":
            assert line["identity"]["sub"] == "orders-agent", line
            assert line["identity"]["client_id"] == "orders-agent", line
            assert line["identity"]["issuer"] == idp.issuer, line
            assert line["route"] == "orders-read", line

    assert len({line["request_id"] for line in lines}) == len(lines), "request ids repeat"


def test_every_audit_line_is_complete_json(stack):
    lines = stack.audit_lines()  # json.loads of each line: a broken line fails here
    assert lines, "the audit file is empty"
    for line in lines:
        assert {"timestamp", "request_id", "decision", "reason"} <= line.keys(), line
        assert line["decision"] in ("allow", "deny"), line


def test_audit_line_count_matches_requests_sent(stack):
    """Across the whole session: as many audit lines as requests made to the
    listener (the assertion JWKS, which the upstream also fetches, aside)."""
    def is_jwks(path: str) -> bool:
        return "/.well-known/portcullis/" in path

    sent = [r for r in REQUESTS_SENT if not is_jwks(r[1])]
    deadline = time.monotonic() + 5  # the audit writer is asynchronous
    while True:
        lines = [line for line in stack.audit_lines() if not is_jwks(str(line.get("path", "")))]
        if len(lines) >= len(sent) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(lines) == len(sent), (
        f"{len(sent)} requests sent but {len(lines)} audit lines; "
        f"paths audited: {sorted(str(line.get('path')) for line in lines)}")


def test_no_token_in_audit_file_or_stderr(stack):
    assert TOKENS_SEEN, "the session used no tokens?"
    audit = stack.audit_log.read_text(errors="replace")
    stderr = stack.stderr_log.read_text(errors="replace")
    assert stderr.strip(), "Portcullis wrote nothing to stderr at debug level?"
    for token in set(TOKENS_SEEN):
        pieces = [token]
        if token.count(".") == 2:  # a signature alone is a replayable secret too
            pieces.append(token.rsplit(".", 1)[1])
        for piece in pieces:
            if len(piece) < 16:
                continue
            assert piece not in audit, f"token material in the audit file: {piece[:24]}..."
            assert piece not in stderr, f"token material in Portcullis's stderr: {piece[:24]}..."
