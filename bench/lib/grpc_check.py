#!/usr/bin/env python3
"""Writes one gRPC-framed envoy.service.auth.v3.CheckRequest, as Envoy's
ext_authz filter sends it, for h2load to post again and again (--data).

Encoded by hand (protobuf wire format; no protoc or generated code needed) with
the field numbers of Envoy's API definitions (attribute_context.proto): the e2e
suite checks the server against messages generated from those definitions, and
bench/run checks this body is answered `allowed` before any load.
"""
import argparse
import struct


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(tag, payload):
    """A length-delimited field (strings, messages, map entries)."""
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(tag << 3 | 2) + varint(len(payload)) + payload


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="GET")
    ap.add_argument("--host", required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--header", action="append", default=[], help="NAME: VALUE")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    headers = {":method": a.method, ":path": a.path, ":authority": a.host}
    for h in a.header:
        k, v = h.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    http = (
        field(1, "bench-request")  # id
        + field(2, a.method)
        + b"".join(field(3, field(1, k) + field(2, v)) for k, v in headers.items())
        + field(4, a.path)
        + field(5, a.host)
        + field(6, "http")
        + field(10, "HTTP/1.1")
    )
    source = field(1, field(1, field(2, "127.0.0.1") + varint(3 << 3) + varint(40000)))
    attributes = field(1, source) + field(4, field(2, http))  # source, request.http
    message = field(1, attributes)  # CheckRequest.attributes
    # gRPC framing: not compressed, 4-byte big-endian length.
    with open(a.out, "wb") as f:
        f.write(b"\0" + struct.pack(">I", len(message)) + message)


if __name__ == "__main__":
    main()
