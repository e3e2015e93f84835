#!/usr/bin/env python3
"""Opens N keep-alive connections to a server, sends one request on each (so every
connection has gone through the server's full request path), leaves them idle,
and reports the server's resident memory.

  idle_conns.py --port P --count 10000 --pid PID [--pid PID]... [--header 'K: V'] [--hold 2]

Prints one JSON object: connections opened, still open after the hold, the summed
VmRSS (KiB) of the given processes and their children before and with the
connections. Stdlib only; needs `ulimit -n` above COUNT.
"""
import argparse
import asyncio
import json
import os
import sys
import time


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry))
    return out


def rss_kib(pids):
    total = 0
    seen = set()
    for pid in pids:
        for p in [pid] + children(pid):
            if p in seen:
                continue
            seen.add(p)
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                pass
    return total


async def one(host, port, request, sem, conns, failures):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await asyncio.wait_for(reader.readexactly(length), 10)
            if not 200 <= status < 300:
                failures.append(status)
            conns.append((reader, writer))
        except Exception as e:  # noqa: BLE001 - counted and reported
            failures.append(type(e).__name__)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--pid", type=int, action="append", required=True)
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--hold", type=float, default=2.0)
    a = ap.parse_args()

    before = rss_kib(a.pid)
    extra = "".join(f"{h}\r\n" for h in a.header)
    request = (f"GET {a.path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n{extra}\r\n").encode()
    conns, failures = [], []
    sem = asyncio.Semaphore(256)
    t0 = time.monotonic()
    await asyncio.gather(*(one(a.host, a.port, request, sem, conns, failures) for _ in range(a.count)))
    opened_s = time.monotonic() - t0
    await asyncio.sleep(a.hold)
    # The event loop keeps reading every socket: one the server closed meanwhile
    # has its reader at EOF.
    still_open = sum(1 for reader, _ in conns if not reader.at_eof())
    with_conns = rss_kib(a.pid)
    for _, w in conns:
        w.close()
    print(json.dumps({
        "requested": a.count, "opened": len(conns), "still_open": still_open,
        "failures": len(failures), "failure_kinds": sorted({str(f) for f in failures})[:5],
        "open_seconds": round(opened_s, 2), "rss_before_kib": before, "rss_with_conns_kib": with_conns,
        "per_conn_bytes": round((with_conns - before) * 1024 / max(1, still_open)),
    }))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
