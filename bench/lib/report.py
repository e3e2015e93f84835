#!/usr/bin/env python3
"""Turns bench/run's raw wrk outputs into the results table (Markdown + JSON).

Per scenario: the median over repetitions of requests/s, p50 and p99 (each median
taken on its own), the server's CPU time per request, and for Portcullis rows the
ratio to nginx plain proxy, to the bare hyper proxy (the framework floor) and to the
matching HAProxy JWT row. Then the targets
from the issue, the idle-connection memory and the criterion policy bench.
"""
import argparse
import csv
import json
import os
import re
import statistics

SCEN = {
    # name: (description, nginx reference, haproxy reference)
    "direct": ("upstream nginx, direct (ceiling)", None, None),
    "nginx": ("nginx reverse proxy, upstream keep-alive (floor)", None, None),
    "bare_hyper": ("bare hyper reverse proxy (bench/bare-hyper: one current-thread runtime, pooled client, no auth): the framework floor", "nginx", None),
    "haproxy_rs256": ("HAProxy jwt_verify RS256 + iss/aud/exp, one token", None, None),
    "haproxy_es256": ("HAProxy jwt_verify ES256 + iss/aud/exp, one token", None, None),
    "haproxy_rs256_unique": ("HAProxy jwt_verify RS256, a new token per request", None, None),
    "haproxy_es256_unique": ("HAProxy jwt_verify ES256, a new token per request", None, None),
    "haproxy_reject_badsig": ("HAProxy refusing bad RS256 signatures (401)", None, None),
    "pc_noauth": ("Portcullis, public route (auth: none), no token", "nginx", None),
    "pc_full_rs256": ("Portcullis full path, RS256 token (cached)", "nginx", "haproxy_rs256"),
    "pc_full_es256": ("Portcullis full path, ES256 token (cached)", "nginx", "haproxy_es256"),
    "pc_unique_rs256": ("Portcullis full path, a new RS256 token per request", "nginx", "haproxy_rs256_unique"),
    "pc_unique_es256": ("Portcullis full path, a new ES256 token per request", "nginx", "haproxy_es256_unique"),
    "pc_reject_badsig": ("Portcullis refusing bad RS256 signatures (401)", "nginx", "haproxy_reject_badsig"),
    "pc_reject_notoken": ("Portcullis refusing a request without token (401)", "nginx", None),
    "fa_rs256": ("Portcullis forward-auth `/.portcullis/authz`, RS256 token (cached), no upstream hop", "nginx", None),
    "grpc_check_rs256": ("Portcullis ext_authz gRPC `Check` (h2load, 8 conns × 8 streams), RS256 token (cached)", "nginx", None),
    "nginx_tls": ("nginx reverse proxy over TLS", None, None),
    "pc_tls_full_rs256": ("Portcullis full path RS256 over TLS", "nginx_tls", None),
    "paced_direct": ("paced ~6k req/s: upstream direct", None, None),
    "paced_nginx": ("paced ~6k req/s: nginx proxy", None, None),
    "paced_bare_hyper": ("paced ~6k req/s: bare hyper proxy", None, None),
    "paced_haproxy_rs256": ("paced ~6k req/s: HAProxy JWT RS256", None, None),
    "paced_pc_full_rs256": ("paced ~6k req/s: Portcullis full path RS256", None, None),
}

UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * UNIT[m.group(2)] if m else None


def parse_wrk(path):
    r = {"rps": None, "p50": None, "p99": None, "requests": 0, "non2xx": 0, "errors": 0}
    with open(path) as f:
        text = f.read()
    if text.startswith("starting benchmark...") or "\nfinished in " in text:
        return parse_h2load(text)
    if m := re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M):
        r["rps"] = float(m.group(1))
    if m := re.search(r"^\s+50%\s+(\S+)", text, re.M):
        r["p50"] = to_ms(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", text, re.M):
        r["p99"] = to_ms(m.group(1))
    if m := re.search(r"^\s+(\d+) requests in ([0-9.]+)(\w+)", text, re.M):
        r["requests"] = int(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        r["non2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        r["errors"] = sum(int(x) for x in m.groups())
    return r


def parse_h2load(text):
    """h2load's summary: req/s, answers, HTTP 2xx; it reports no percentiles."""
    r = {"rps": None, "p50": None, "p99": None, "requests": 0, "non2xx": 0, "errors": 0}
    if m := re.search(r"^finished in \S+, ([0-9.]+) req/s", text, re.M):
        r["rps"] = float(m.group(1))
    if m := re.search(r"^requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text, re.M):
        r["requests"] = int(m.group(1))
        r["errors"] = sum(int(x) for x in m.groups()[1:])
    if m := re.search(r"^status codes: (\d+) 2xx", text, re.M):
        r["non2xx"] = max(0, r["requests"] - int(m.group(1)))  # in-flight calls count too
    return r


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_ms(v):
    if v is None:
        return "—"
    return f"{v * 1000:.0f} µs" if v < 1 else f"{v:.2f} ms"


def fmt_ratio(v):
    return "—" if v is None else f"{v:.2f}×"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meta", required=True)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--idle")
    ap.add_argument("--criterion")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.meta) as f:
        meta = json.load(f)

    per = {}
    with open(a.runs) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            path = row["file"]
            if not os.path.exists(path):  # re-reading a saved run: raw/ beside runs.tsv
                path = os.path.join(os.path.dirname(a.runs), "raw", os.path.basename(path))
            w = parse_wrk(path)
            secs = int(row["cpu_ticks"]) / int(row["clk_tck"])
            w["cpu_us_per_req"] = secs * 1e6 / w["requests"] if w["requests"] else None
            w["cpu_util"] = secs / meta["duration_s"]
            w["cache_hit"] = int(row["cache_hit"] or 0)
            w["cache_miss"] = int(row["cache_miss"] or 0)
            w["proxy_core_busy"] = float(row.get("proxy_core_busy") or "nan")
            w["load_core_busy"] = float(row.get("load_core_busy") or "nan")
            per.setdefault(row["scenario"], []).append(w)

    res = {}
    for name, runs in per.items():
        res[name] = {
            "rps": med(r["rps"] for r in runs),
            "p50_ms": med(r["p50"] for r in runs),
            "p99_ms": med(r["p99"] for r in runs),
            "rps_all": [r["rps"] for r in runs],
            "cpu_us_per_req": med(r["cpu_us_per_req"] for r in runs),
            "cpu_util": med(r["cpu_util"] for r in runs),
            "proxy_core_busy": med(r["proxy_core_busy"] for r in runs if r["proxy_core_busy"] == r["proxy_core_busy"]),
            "load_core_busy": med(r["load_core_busy"] for r in runs if r["load_core_busy"] == r["load_core_busy"]),
            "requests": sum(r["requests"] for r in runs),
            "non2xx": sum(r["non2xx"] for r in runs),
            "socket_errors": sum(r["errors"] for r in runs),
            "cache_hit": sum(r["cache_hit"] for r in runs),
            "cache_miss": sum(r["cache_miss"] for r in runs),
        }

    def ratio(name, ref):
        if not ref or ref not in res or name not in res:
            return None
        x, y = res[name]["rps"], res[ref]["rps"]
        return x / y if x and y else None

    def cpu_ratio(name, ref):
        """Capacity ratio: requests per CPU-second of the proxy core, Portcullis over
        the reference. Unlike req/s it does not depend on whether the load core or
        a neighbour's compile job was the bottleneck during the run."""
        if not ref or ref not in res or name not in res:
            return None
        x, y = res[name]["cpu_us_per_req"], res[ref]["cpu_us_per_req"]
        return y / x if x and y else None

    lines = []
    out = lines.append
    out(f"Date {meta['date']}; `{meta['command']}`; portcullis {meta['portcullis_rev']}; "
        f"nginx {meta['nginx']}, HAProxy {meta['haproxy']}, wrk {meta['wrk']}, h2load {meta.get('h2load', '—')}.")
    out(f"Machine: {meta['nproc']} × {meta['cpu_model']}, kernel {meta['kernel']}. "
        f"Proxy on CPU {meta['proxy_cpu']}, wrk and the upstream on CPU {meta['load_cpu']} (nice {meta['nice']}).")
    out(f"`wrk -t1 -c{meta['connections']} -d{meta['duration_s']}s --latency`, {meta['reps']} run(s) per scenario "
        f"round-robin, median shown; {meta['tokens']} pre-minted tokens per algorithm for the unique-token rows.")
    out(f"Load before: `{meta['uptime_before']}`; after: `{meta['uptime_after']}`.")
    out("")
    out("| scenario | req/s | p50 | p99 | server CPU µs/req | server CPU use (proxy core busy) | load core busy | × nginx plain | × bare hyper | × HAProxy JWT | × nginx by CPU | × bare hyper by CPU | × HAProxy by CPU |")
    out("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (desc, nref, href) in SCEN.items():
        if name not in res or name.startswith("paced_"):
            continue
        r = res[name]
        rps = f"{r['rps']:,.0f}" if r["rps"] else "—"
        if name.startswith("pc_unique_"):
            # The figure is only what it says with (nearly) every token new to the
            # process: the share of cache misses stands beside it.
            checks = r["cache_hit"] + r["cache_miss"]
            rps += f" ({r['cache_miss'] / checks * 100:.1f}% miss)" if checks else " (no cache data)"
        elif name.endswith("_unique"):
            # No cache to ask: each token was used once if no run got through the file.
            once = max(w["requests"] for w in per[name]) <= meta["tokens"]
            rps += " (each token once)" if once else " (tokens reused)"
        cpu = f"{r['cpu_us_per_req']:.1f}" if r["cpu_us_per_req"] else "—"
        util = f"{r['cpu_util'] * 100:.0f}%" if r["cpu_util"] is not None else "—"
        if r.get("proxy_core_busy") is not None:
            util += f" ({r['proxy_core_busy'] * 100:.0f}%)"
        lbusy = f"{r['load_core_busy'] * 100:.0f}%" if r.get("load_core_busy") is not None else "—"
        # Plain-HTTP Portcullis rows against the framework they are built on.
        bref = "bare_hyper" if nref == "nginx" and name != "bare_hyper" else None
        out(f"| `{name}` {desc} | {rps} | {fmt_ms(r['p50_ms'])} | {fmt_ms(r['p99_ms'])} | {cpu} | {util} | {lbusy} | "
            f"{fmt_ratio(ratio(name, nref))}{' (TLS)' if nref == 'nginx_tls' else ''} | {fmt_ratio(ratio(name, bref))} | "
            f"{fmt_ratio(ratio(name, href))} | {fmt_ratio(cpu_ratio(name, nref))} | {fmt_ratio(cpu_ratio(name, bref))} | "
            f"{fmt_ratio(cpu_ratio(name, href))} |")
    paced = [n for n in SCEN if n.startswith("paced_") and n in res]
    if paced:
        out("")
        out(f"Latency at a moderate, steady load (each of {meta['connections']} connections waits "
            f"{meta['pace_ms']} ms between requests; added = minus `paced_direct`):")
        out("")
        out("| scenario | req/s | p50 | p99 | added p50 | added p99 | server CPU µs/req |")
        out("|---|---:|---:|---:|---:|---:|---:|")
        base = res.get("paced_direct")
        for name in paced:
            r = res[name]
            ap50 = r["p50_ms"] - base["p50_ms"] if base and r["p50_ms"] is not None else None
            ap99 = r["p99_ms"] - base["p99_ms"] if base and r["p99_ms"] is not None else None
            cpu = f"{r['cpu_us_per_req']:.1f}" if r["cpu_us_per_req"] else "—"
            out(f"| `{name}` | {r['rps']:,.0f} | {fmt_ms(r['p50_ms'])} | {fmt_ms(r['p99_ms'])} | "
                f"{fmt_ms(ap50) if name != 'paced_direct' else '—'} | {fmt_ms(ap99) if name != 'paced_direct' else '—'} | {cpu} |")
    uniq = [n for n in ("pc_unique_rs256", "pc_unique_es256") if n in res]
    if uniq:
        out("")
        out("Token cache during the unique-token rows (a fresh process per run, every request "
            "the next unused token): " + "; ".join(
            f"`{n}` {res[n]['cache_hit']:,} hits / {res[n]['cache_miss']:,} misses "
            f"({res[n]['cache_miss'] / max(1, res[n]['cache_hit'] + res[n]['cache_miss']) * 100:.1f}% miss)"
            for n in uniq) + ".")

    # Targets.
    targets = []

    def target(label, value, goal, higher=True, unit="×"):
        ok = None if value is None else (value >= goal if higher else value <= goal)
        targets.append({"target": label, "value": value, "goal": goal, "met": ok})
        v = "—" if value is None else (f"{value:.2f}{unit}" if unit == "×" else fmt_ms(value))
        g = f"{'≥' if higher else '≤'} {goal}{unit if unit == '×' else ' ms'}"
        out(f"| {label} | {v} | {g} | {'—' if ok is None else ('met' if ok else '**missed**')} |")

    out("")
    out("| target | measured | goal | |")
    out("|---|---:|---:|---|")
    target("full path RS256 vs nginx plain proxy (req/s)", ratio("pc_full_rs256", "nginx"), 0.9)
    target("full path RS256 vs nginx plain proxy (by CPU)", cpu_ratio("pc_full_rs256", "nginx"), 0.9)
    target("full path RS256 vs HAProxy RS256 jwt_verify (req/s)", ratio("pc_full_rs256", "haproxy_rs256"), 1.8)
    target("full path RS256 vs HAProxy RS256 jwt_verify (by CPU)", cpu_ratio("pc_full_rs256", "haproxy_rs256"), 1.8)
    target("unique RS256 tokens vs HAProxy unique RS256 (req/s)", ratio("pc_unique_rs256", "haproxy_rs256_unique"), 1.2)
    target("unique RS256 tokens vs HAProxy unique RS256 (by CPU)", cpu_ratio("pc_unique_rs256", "haproxy_rs256_unique"), 1.2)
    target("unique ES256 tokens vs HAProxy unique ES256 (req/s)", ratio("pc_unique_es256", "haproxy_es256_unique"), 1.2)
    target("unique ES256 tokens vs HAProxy unique ES256 (by CPU)", cpu_ratio("pc_unique_es256", "haproxy_es256_unique"), 1.2)
    target("forward-auth vs nginx plain proxy (req/s)", ratio("fa_rs256", "nginx"), 1.0)
    target("forward-auth vs nginx plain proxy (by CPU)", cpu_ratio("fa_rs256", "nginx"), 1.0)
    target("gRPC Check vs forward-auth (req/s)", ratio("grpc_check_rs256", "fa_rs256"), 0.8)
    target("gRPC Check vs forward-auth (by CPU)", cpu_ratio("grpc_check_rs256", "fa_rs256"), 0.8)
    added = None
    if "paced_pc_full_rs256" in res and "paced_direct" in res:
        added = res["paced_pc_full_rs256"]["p99_ms"] - res["paced_direct"]["p99_ms"]
    target("p99 added latency, 64 connections, paced", added, 0.5, higher=False, unit="ms")
    sat = None
    if "pc_full_rs256" in res and "direct" in res:
        sat = res["pc_full_rs256"]["p99_ms"] - res["direct"]["p99_ms"]
    target("p99 added latency, 64 connections, saturated", sat, 0.5, higher=False, unit="ms")
    if "bare_hyper" in res:
        # No goal of its own: where the framework alone stands, so a missed target
        # above reads as "hyper's floor" or "our own per-request work".
        floor = [f"bare hyper {fmt_ratio(ratio('bare_hyper', 'nginx'))} nginx "
                 f"({fmt_ratio(cpu_ratio('bare_hyper', 'nginx'))} by CPU)",
                 f"full path RS256 {fmt_ratio(ratio('pc_full_rs256', 'bare_hyper'))} bare hyper "
                 f"({fmt_ratio(cpu_ratio('pc_full_rs256', 'bare_hyper'))} by CPU)"]
        if "paced_bare_hyper" in res and "paced_direct" in res:
            floor.append("paced p99 added by bare hyper "
                         + fmt_ms(res["paced_bare_hyper"]["p99_ms"] - res["paced_direct"]["p99_ms"]))
        out("")
        out("Framework floor: " + "; ".join(floor) + ".")

    # Memory.
    idle = []
    if a.idle:
        try:
            with open(a.idle) as f:
                idle = [json.loads(line) for line in f if line.strip()]
        except OSError:
            pass
    out("")
    out(f"Portcullis RSS at rest (ready, before load): {meta['rss_rest_kib'] / 1024:.1f} MiB; "
        f"after the load runs: {meta['rss_after_load_kib'] / 1024:.1f} MiB.")
    if idle:
        out("")
        out("| idle keep-alive connections | opened | still open after the idle hold | RSS before | RSS with them | per connection |")
        out("|---|---:|---:|---:|---:|---:|")
        for item in idle:
            r = item["result"]
            out(f"| {item['target']} | {r['opened']:,} / {r['requested']:,} | {r['still_open']:,} | "
                f"{r['rss_before_kib'] / 1024:.1f} MiB | {r['rss_with_conns_kib'] / 1024:.1f} MiB | "
                f"{r['per_conn_bytes'] / 1024:.1f} KiB |")

    # Criterion.
    crit = []
    if a.criterion:
        try:
            with open(a.criterion) as f:
                text = f.read()
            for m in re.finditer(r"^(\S+)\s*\n?\s+time:\s+\[(\S+ \S+) (\S+ \S+) (\S+ \S+)\]", text, re.M):
                crit.append({"bench": m.group(1), "low": m.group(2), "estimate": m.group(3), "high": m.group(4)})
        except OSError:
            pass
    if crit:
        out("")
        out("Criterion micro-benches (`cargo bench -p portcullis-policy --bench decision`: 1,000 routes × 10 rules; `cargo bench -p portcullis-identity --bench assertion`: per-request crypto):")
        out("")
        out("| bench | time (estimate) | 95% interval |")
        out("|---|---:|---:|")
        for c in crit:
            out(f"| {c['bench']} | {c['estimate']} | {c['low']} – {c['high']} |")

    if meta.get("failed"):
        out("")
        out(f"FAILED: {', '.join(meta['failed'])}")

    md = "\n".join(lines) + "\n"
    with open(f"{a.out}/results.md", "w") as f:
        f.write(md)
    with open(f"{a.out}/results.json", "w") as f:
        json.dump({"meta": meta, "scenarios": res, "targets": targets, "idle": idle, "criterion": crit}, f, indent=1)


if __name__ == "__main__":
    main()
