"""OpenTelemetry traces (SPEC §2 `telemetry`) into a real OTLP receiver: the
collector's gRPC `TraceService`, served by PyPI `grpcio` with the messages of
PyPI `opentelemetry-proto` (generated from the OTLP definitions), on a free
port. The release binary exports to it; the FastAPI upstream echoes the
`traceparent` it received; the audit line says its `trace_id`. All three must
name one trace, and the spans must link up (server → authenticate, upstream).

Then the collector is taken away: a port nobody listens on, and one that
accepts TCP and never answers. Requests must go on completing as before while
the exporter is stuck, and SIGTERM must still exit promptly.
"""

from __future__ import annotations

import os

# The receiver runs in this process, which keeps starting children: without
# this, gRPC's fork handlers can abort a child between fork and exec.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"

import socket
import statistics
import threading
import time
from concurrent import futures
from contextlib import contextmanager

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import TOKENS_SEEN, free_port, launch_retrying, stop
from test_9_ext_authz import call, envoy_check

# The ext_authz answer is read with envoy-data-plane, which warns about a
# deprecated field Portcullis sets for older Envoys.
pytestmark = pytest.mark.filterwarnings("ignore:HeaderValueOption.append is deprecated")

CONFIG = """\
server:
  listen: 127.0.0.1:{port}
  public_url: http://127.0.0.1:{port}
  trusted_proxies: [127.0.0.1/32]    # the test client may continue its own trace
admin:
  listen: 127.0.0.1:{admin_port}
ext_authz:
  grpc_listen: 127.0.0.1:{grpc_port}
providers:
  - name: oidc-provider
    issuer: {issuer}
    audiences: [orders-api]
    algorithms: [RS256, ES256, PS256]
assertion:
  algorithm: ES256
audit:
  sink: "file:{audit_log}"
telemetry:
  otlp_endpoint: {endpoint}
  service_name: {service}
  sample_ratio: {ratio}
routes:
  - name: orders-read
    match: {{ path_prefix: /api/orders, methods: [GET] }}
    upstream: {upstream}
    policy:
      allow:
        - name: readers
          scopes: [orders:read]
"""

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_PARENT = "00f067aa0ba902b7"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every export request, parsed and as the bytes that arrived."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request, context):
        with self.lock:
            self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[dict, Span]]:
        """(resource attributes, span) for every span received so far."""
        out = []
        with self.lock:
            for req in self.requests:
                for rs in req.resource_spans:
                    resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        out.extend((resource, s) for s in ss.spans)
        return out

    def raw(self) -> bytes:
        with self.lock:
            return b"".join(r.SerializeToString() for r in self.requests)

    def trace(self, trace_id: str, count: int, timeout: float = 20) -> dict[str, Span]:
        """The spans of `trace_id` by name, once `count` of them arrived."""
        deadline = time.monotonic() + timeout
        while True:
            found = {s.name: s for _, s in self.spans() if s.trace_id.hex() == trace_id}
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


@pytest.fixture(scope="module")
def collector():
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"http://127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@contextmanager
def portcullis(idp, workdir, tag: str, endpoint: str, ratio: str = "1.0"):
    """A Portcullis exporting to `endpoint`, with its own upstream and files."""
    grpc_port = free_port()
    s = launch_retrying(idp, workdir, config=CONFIG, tag=tag, endpoint=endpoint,
                        service=f"portcullis-{tag.rstrip('.')}", ratio=ratio,
                        grpc_port=grpc_port)
    s.ext_authz = f"http://127.0.0.1:{grpc_port}"
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def traced(idp, workdir, collector):
    with portcullis(idp, workdir, "otel.", collector[1]) as s:
        yield s


def upstream_traceparent(resp) -> tuple[str, str, str]:
    """(trace id, parent span id, flags) of the traceparent the upstream got."""
    tps = [v for k, v in resp.json()["headers"] if k == "traceparent"]
    assert len(tps) == 1, resp.json()["headers"]
    version, trace_id, parent, flags = tps[0].split("-")
    assert version == "00"
    return trace_id, parent, flags


def audit_line(stack, request_id: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [a for a in stack.audit_lines() if a["request_id"] == request_id]
        if lines:
            return lines[0]
        time.sleep(0.05)
    raise AssertionError(f"no audit line for {request_id}")


def attrs(span: Span) -> dict:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value if v.HasField("string_value") else (
            v.int_value if v.HasField("int_value") else v.bool_value)
    return out


def test_a_new_trace_upstream_audit_and_spans_share_one_trace_id(traced, collector, idp):
    servicer, _ = collector
    resp = traced.get("/api/orders/7", idp.token())
    assert resp.status_code == 200, resp.text
    trace_id, parent, flags = upstream_traceparent(resp)
    assert flags == "01"
    audit = audit_line(traced, resp.headers["x-request-id"])
    assert audit["trace_id"] == trace_id

    spans = servicer.trace(trace_id, 3)
    assert set(spans) == {"GET orders-read", "authenticate", "upstream"}, list(spans)
    server, auth, upstream = spans["GET orders-read"], spans["authenticate"], spans["upstream"]
    assert server.kind == Span.SPAN_KIND_SERVER and server.parent_span_id == b""
    assert auth.parent_span_id == server.span_id
    assert upstream.kind == Span.SPAN_KIND_CLIENT and upstream.parent_span_id == server.span_id
    # The upstream was told that the proxy's client span is its parent.
    assert upstream.span_id.hex() == parent
    # Children lie within their parent.
    for child in (auth, upstream):
        assert server.start_time_unix_nano <= child.start_time_unix_nano
        assert child.end_time_unix_nano <= server.end_time_unix_nano

    a = attrs(server)
    assert a["portcullis.route"] == "orders-read"
    assert a["portcullis.decision"] == "allow" and a["portcullis.reason"] == "allowed"
    assert a["portcullis.identity.type"] == audit["identity"]["type"]
    assert a["portcullis.identity.subject"] == audit["identity"]["sub"]
    assert a["portcullis.request_id"] == audit["request_id"]
    assert a["http.response.status_code"] == 200
    resource = next(r for r, s in servicer.spans() if s.span_id == server.span_id)
    assert resource["service.name"] == "portcullis-otel"


def test_a_refusal_is_a_span_too_and_no_token_is_exported(traced, collector, idp):
    servicer, _ = collector
    token = idp.token(scope="orders:write")  # valid, without orders:read
    resp = traced.get("/api/orders/7", token)
    assert resp.status_code == 403, resp.text
    audit = audit_line(traced, resp.headers["x-request-id"])
    spans = servicer.trace(audit["trace_id"], 2)
    assert set(spans) == {"GET orders-read", "authenticate"}, list(spans)
    a = attrs(spans["GET orders-read"])
    assert a["portcullis.decision"] == "deny"
    assert a["portcullis.reason"] == audit["reason"] == "insufficient_scope"
    assert a["http.response.status_code"] == 403

    resp = traced.get("/api/orders/7", "not-a-token")
    assert resp.status_code == 401
    audit = audit_line(traced, resp.headers["x-request-id"])
    auth = servicer.trace(audit["trace_id"], 2)["authenticate"]
    assert auth.status.code == auth.status.STATUS_CODE_ERROR
    assert attrs(auth)["portcullis.reason"] == "invalid_token"

    raw = servicer.raw()
    assert raw, "nothing was exported"
    for seen in TOKENS_SEEN + ["not-a-token"]:
        assert seen.encode() not in raw, "a token reached the collector"


def test_a_sampled_incoming_traceparent_is_continued(traced, collector, idp):
    servicer, _ = collector
    incoming = f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"
    resp = traced.get("/api/orders/8", idp.token(), headers={"traceparent": incoming})
    assert resp.status_code == 200
    trace_id, parent, flags = upstream_traceparent(resp)
    assert (trace_id, flags) == (INCOMING_TRACE, "01")
    assert audit_line(traced, resp.headers["x-request-id"])["trace_id"] == INCOMING_TRACE
    spans = servicer.trace(INCOMING_TRACE, 3)
    assert spans["GET orders-read"].parent_span_id.hex() == INCOMING_PARENT
    assert spans["upstream"].span_id.hex() == parent


def test_forward_auth_and_ext_authz_checks_are_server_spans_in_the_callers_trace(
        traced, collector, idp):
    servicer, _ = collector
    token = idp.token()
    fa_trace, ea_trace = "11111111111111111111111111111111", "22222222222222222222222222222222"
    resp = traced.get("/.portcullis/authz", token, headers={
        "x-forwarded-method": "GET", "x-forwarded-uri": "/api/orders/9",
        "x-forwarded-host": "orders.example.com",
        "traceparent": f"00-{fa_trace}-{INCOMING_PARENT}-01"})
    assert resp.status_code == 200, resp.text
    spans = servicer.trace(fa_trace, 2)
    assert set(spans) == {"forward_auth GET orders-read", "authenticate"}, list(spans)
    server = spans["forward_auth GET orders-read"]
    assert server.parent_span_id.hex() == INCOMING_PARENT
    assert attrs(server)["portcullis.frontend"] == "forward_auth"

    with httpx.Client(http1=False, http2=True, timeout=30) as client:
        answer = call((client, traced.ext_authz, None), envoy_check("GET", "/api/orders/9", {
            "authorization": f"Bearer {token}",
            "traceparent": f"00-{ea_trace}-{INCOMING_PARENT}-01"}))
    assert answer.status.code == 0
    spans = servicer.trace(ea_trace, 2)
    assert set(spans) == {"ext_authz GET orders-read", "authenticate"}, list(spans)
    server = spans["ext_authz GET orders-read"]
    assert server.parent_span_id.hex() == INCOMING_PARENT
    assert attrs(server)["portcullis.decision"] == "allow"
    assert spans["authenticate"].parent_span_id == server.span_id


def test_sample_ratio_zero_drops_new_traces_but_honours_a_sampled_parent(idp, workdir, collector):
    servicer, endpoint = collector
    with portcullis(idp, workdir, "otel-ratio0.", endpoint, ratio="0.0") as s:
        token = idp.token()
        fresh = s.get("/api/orders/1", token)
        assert fresh.status_code == 200
        fresh_trace, _, fresh_flags = upstream_traceparent(fresh)
        assert fresh_flags == "00", "the upstream is told the new trace is not sampled"

        trace = "0af7651916cd43dd8448eb211c80319c"
        resp = s.get("/api/orders/2", token, headers={"traceparent": f"00-{trace}-b7ad6b7169203331-01"})
        assert resp.status_code == 200
        assert upstream_traceparent(resp)[0::2] == (trace, "01")
        spans = servicer.trace(trace, 3)
        assert set(spans) == {"GET orders-read", "authenticate", "upstream"}
        # Exported a second after the sampled one at the latest: give it two.
        time.sleep(2)
        assert not [sp for _, sp in servicer.spans() if sp.trace_id.hex() == fresh_trace]


# ------------------------------------------------------------ a dead collector

class Blackhole:
    """Accepts TCP connections and reads whatever arrives, never answering."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.bytes = 0
        self.first = b""  # the first bytes that arrived
        self.open: list[socket.socket] = []
        self.running = True
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            self.open.append(conn)
            threading.Thread(target=self.drain, args=(conn,), daemon=True).start()

    def drain(self, conn):
        while self.running:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            if not self.first:
                self.first = data
            self.bytes += len(data)

    def close(self):
        self.running = False
        for c in self.open:
            c.close()
        self.sock.close()


# A request that waited for an export would take the exporter's 5 s timeout.
SLOWEST = 4.5


def latencies(stack, token: str, n: int) -> list[float]:
    """The latency of each of `n` requests, eight at a time."""
    def one(i: int) -> float:
        t0 = time.monotonic()
        resp = stack.get(f"/api/orders/{i}", token)
        took = time.monotonic() - t0
        assert resp.status_code == 200, resp.text
        assert took < SLOWEST, f"request {i} took {took:.1f}s"
        return took
    with futures.ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(n)))


@pytest.fixture(scope="module")
def baseline(traced, idp) -> float:
    """Median latency with the collector answering."""
    return statistics.median(latencies(traced, idp.token(), 100))


@pytest.mark.parametrize("dead", ["refused", "never_answers"])
def test_a_dead_collector_does_not_slow_or_block_requests(idp, workdir, baseline, dead):
    hole = Blackhole() if dead == "never_answers" else None
    # free_port() binds and releases a port: nobody listens there now.
    port = hole.port if hole else free_port()
    try:
        with portcullis(idp, workdir, f"otel-{dead}.", f"http://127.0.0.1:{port}") as s:
            # 800 requests make 2,400 spans: past the exporter's 2,048-span queue,
            # so the drop path runs too, while the exporter is stuck or failing.
            took = latencies(s, idp.token(), 800)
            if hole:
                assert hole.connections >= 1 and hole.bytes > 0, "the exporter never tried"
            else:
                deadline = time.monotonic() + 15
                while "trace export failed" not in s.stderr_log.read_text():
                    assert time.monotonic() < deadline, "no export failure was reported"
                    time.sleep(0.2)
            median = statistics.median(took)
            # Loose on purpose (two shared cores); `latencies` already refused
            # any request that could have waited for an export.
            assert median < 3 * baseline + 0.05, (median, baseline)
            # SIGTERM still exits promptly: the last flush is bounded (3 s).
            t0 = time.monotonic()
            stop(s.proc, grace=20)
            assert s.proc.returncode == 0
            assert time.monotonic() - t0 < 10
    finally:
        if hole:
            hole.close()


def test_an_https_collector_is_spoken_to_over_tls(idp, workdir):
    hole = Blackhole()
    try:
        with portcullis(idp, workdir, "otel-https.", f"https://localhost:{hole.port}") as s:
            assert s.get("/api/orders/1", idp.token()).status_code == 200
            deadline = time.monotonic() + 15
            while not hole.first:
                assert time.monotonic() < deadline, "the exporter never connected"
                time.sleep(0.1)
            # A TLS handshake record (ClientHello), not the HTTP/2 preface in clear.
            assert hole.first[:1] == b"\x16" and hole.first[5:6] == b"\x01", hole.first[:16]
    finally:
        hole.close()
