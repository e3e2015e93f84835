#!/usr/bin/env python3
"""Writes a synthetic audit file (SPEC §7 lines, exactly as the proxy writes them)
and a config whose routes it names, for benchmarking `portcullis policy suggest`
and `policy report`.

    bench/gen_audit.py --lines 1000000 --out audit.log --config portcullis.yaml [--seed 1]

The traffic is shaped like a rollout: four routes (two in audit mode), 40 service
clients, 2,000 people in 30 groups, 20 workloads; paths with numeric ids, UUIDs
and a long tail of documents; about 70% allowed, 25% denied in shadow, 5% refused
at authentication. Deterministic for a given seed. Standard library only.
"""

import argparse
import json
import random
import uuid

ISSUER = "https://idp.bench.local"

ROUTES = [
    # name, prefix, mode
    ("orders", "/api/orders", "audit"),
    ("docs", "/docs", "audit"),
    ("admin", "/admin", "enforce"),
    ("static", "/static", "enforce"),
]


def config(path, audit):
    routes = []
    for name, prefix, mode in ROUTES:
        routes.append(
            f"""  - name: {name}
    match: {{ path_prefix: {prefix} }}
    upstream: http://127.0.0.1:9
    mode: {mode}
    policy:
      deny:
        - name: no-interns
          groups: [interns]
      allow:
        - name: admins
          groups: [admins]
        - name: readers
          methods: [GET, HEAD]
          groups: [g0, g1, g2]
"""
        )
    text = f"""server:
  listen: 127.0.0.1:18080
audit:
  sink: file:{audit}
providers:
  - name: idp
    issuer: {ISSUER}
    audiences: [bench]
    discovery: false
    jwks_uri: {ISSUER}/jwks
routes:
{''.join(routes)}"""
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    if args.config:
        config(args.config, args.out)

    services = [f"svc-{i:02d}" for i in range(40)]
    workloads = [f"spiffe://cluster.local/ns/ns{i % 5}/sa/app{i}" for i in range(20)]
    people = []
    for i in range(2000):
        groups = sorted({f"g{rnd.randrange(30)}" for _ in range(rnd.randint(1, 4))} | {"staff"})
        people.append((f"user-{i:04d}", f"user{i}@shop.example", groups))
    uuids = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(5000)]
    docs = [f"/docs/{s}/{p}" for s in ("guide", "api", "faq", "howto") for p in
            (f"page-{n}" for n in range(40))]

    def path_for(route):
        r = rnd.random()
        if route == "orders":
            if r < 0.5:
                return f"/api/orders/{rnd.randrange(10**6)}"
            if r < 0.8:
                return f"/api/orders/{rnd.choice(uuids)}/items"
            if r < 0.9:
                return "/api/orders"
            return "/api/orders/summary"
        if route == "docs":
            return rnd.choice(docs)
        if route == "admin":
            return rnd.choice(["/admin/users", "/admin/audit", f"/admin/users/{rnd.randrange(5000)}"])
        return f"/static/{rnd.choice(['css', 'js', 'img'])}/{rnd.randrange(300)}.{rnd.choice(['css', 'js', 'png'])}"

    methods = ["GET"] * 7 + ["POST", "PUT", "DELETE", "HEAD"]
    with open(args.out, "w") as out:
        for n in range(args.lines):
            name, _prefix, mode = rnd.choice(ROUTES)
            who = rnd.random()
            if who < 0.4:
                c = rnd.choice(services)
                ident = {"type": "service", "sub": c, "email": None, "issuer": ISSUER,
                         "client_id": c, "groups": [], "workload": None}
            elif who < 0.5:
                w = rnd.choice(workloads)
                ident = {"type": "workload", "sub": w, "email": None, "issuer": None,
                         "client_id": None, "groups": [], "workload": w}
            else:
                sub, email, groups = rnd.choice(people)
                ident = {"type": "user", "sub": sub, "email": email, "issuer": ISSUER,
                         "client_id": "web", "groups": groups, "workload": None}
            fate = rnd.random()
            enforced = mode == "enforce"
            if fate < 0.05:
                decision, reason, rule, status = "deny", "missing_token", None, 401
                ident = {"type": "anonymous", "sub": None, "email": None, "issuer": None,
                         "client_id": None, "groups": [], "workload": None}
                enforced = True
            elif fate < 0.75:
                decision, reason, rule, status = "allow", "allowed", rnd.choice(["admins", "readers"]), 200
            else:
                decision, reason, rule = "deny", "forbidden", None
                status = 200 if not enforced else 403
            line = {
                "timestamp": f"2026-11-22T16:{n // 60000 % 60:02d}:{n // 1000 % 60:02d}.{n % 1000:03d}000Z",
                "request_id": f"{n:016x}",
                "trace_id": f"{rnd.getrandbits(128):032x}",
                "client_ip": f"10.0.{n % 250}.{n % 199}",
                "method": rnd.choice(methods),
                "host": "shop.example",
                "path": path_for(name),
                "route": name,
                "decision": decision,
                "reason": reason,
                "rule": rule,
                "enforced": enforced,
                "identity": ident,
                "status": status,
                "duration_ms": round(rnd.random() * 5, 3),
                "upstream_ms": round(rnd.random() * 4, 3),
                "bytes_out": rnd.randrange(100, 5000),
            }
            out.write(json.dumps(line, separators=(",", ":")))
            out.write("\n")


if __name__ == "__main__":
    main()
