#!/usr/bin/env python3
"""Benchmark key material: a JWKS from public PEMs, and bulk JWT minting.

Only `cryptography` is needed (installed into bench/.venv by bench/run). JWTs are
assembled by hand (header.payload.signature, base64url without padding) so that
100k tokens mint in seconds on two processes.

  mint.py jwks --key rsa_pub.pem:k-rsa --key ec_pub.pem:k-ec --out jwks.json
  mint.py tamper --in FILE --out FILE
  mint.py tokens --key rsa.pem --kid k-rsa --iss I --aud A --count 100000 --out FILE
                 [--unique] [--tamper] [--ttl 7200] [--jobs 2]

One token per line. --unique gives every token its own `sub` and `jti` (so no two
are equal and no cache can help); --tamper corrupts each signature (a refusal
costs a full verification).
"""
import argparse
import base64
import json
import multiprocessing
import os
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint_b64u(n: int, size: int | None = None) -> str:
    size = size or (n.bit_length() + 7) // 8
    return b64u(n.to_bytes(size, "big"))


def jwk_of(pub, kid: str) -> dict:
    if isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": uint_b64u(nums.n), "e": uint_b64u(nums.e)}
    if isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1":
        nums = pub.public_numbers()
        return {"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                "x": uint_b64u(nums.x, 32), "y": uint_b64u(nums.y, 32)}
    raise SystemExit(f"unsupported public key type for kid {kid}")


def cmd_jwks(args):
    keys = []
    for spec in args.key:
        path, _, kid = spec.rpartition(":")
        with open(path, "rb") as f:
            pub = serialization.load_pem_public_key(f.read())
        keys.append(jwk_of(pub, kid))
    with open(args.out, "w") as f:
        json.dump({"keys": keys}, f, indent=1)


_KEY = None
_ARGS = None


def _init(key_path, args):
    global _KEY, _ARGS
    with open(key_path, "rb") as f:
        _KEY = serialization.load_pem_private_key(f.read(), password=None)
    _ARGS = args


def _sign(signing_input: bytes) -> bytes:
    if isinstance(_KEY, rsa.RSAPrivateKey):
        return _KEY.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    der = _KEY.sign(signing_input, ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _mint_range(bounds):
    start, end = bounds
    a = _ARGS
    alg = "RS256" if isinstance(_KEY, rsa.RSAPrivateKey) else "ES256"
    header = b64u(json.dumps({"alg": alg, "typ": "JWT", "kid": a.kid},
                             separators=(",", ":")).encode())
    now = int(time.time())
    out = []
    for i in range(start, end):
        sub = f"{a.sub}-{i:06d}" if a.unique else a.sub
        claims = {
            "iss": a.iss, "sub": sub, "aud": a.aud,
            "iat": now, "nbf": now - 5, "exp": now + a.ttl,
            "email": f"{sub}@example.com",
            "groups": ["dev", "staff"],
            "scope": "openid orders:read profile",
            "client_id": "bench-client",
        }
        if a.unique:
            claims["jti"] = f"bench-{os.getpid()}-{i}"
        payload = b64u(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode()
        sig = bytearray(_sign(signing_input))
        if a.tamper:
            sig[len(sig) // 2] ^= 0x5A
        out.append(f"{header}.{payload}.{b64u(bytes(sig))}")
    return out


def cmd_tokens(args):
    jobs = max(1, args.jobs)
    n = args.count
    chunk = max(1, (n + jobs * 4 - 1) // (jobs * 4))
    ranges = [(s, min(n, s + chunk)) for s in range(0, n, chunk)]
    if jobs == 1 or n < 200:
        _init(args.key, args)
        parts = [_mint_range(r) for r in ranges]
    else:
        with multiprocessing.Pool(jobs, initializer=_init, initargs=(args.key, args)) as pool:
            parts = pool.map(_mint_range, ranges)
    with open(args.out, "w") as f:
        for part in parts:
            f.write("\n".join(part))
            f.write("\n")


def cmd_tamper(args):
    """Copies a token file with one base64url character in the middle of each
    signature changed: same header and claims, a signature that cannot verify."""
    with open(args.input) as src, open(args.out, "w") as dst:
        for line in src:
            line = line.strip()
            if not line:
                continue
            head, _, sig = line.rpartition(".")
            k = len(sig) // 2
            c = "B" if sig[k] == "A" else "A"
            dst.write(f"{head}.{sig[:k]}{c}{sig[k + 1:]}\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    j = sub.add_parser("jwks")
    j.add_argument("--key", action="append", required=True, help="PUBLIC_PEM:KID")
    j.add_argument("--out", required=True)
    t = sub.add_parser("tokens")
    t.add_argument("--key", required=True)
    t.add_argument("--kid", required=True)
    t.add_argument("--iss", required=True)
    t.add_argument("--aud", required=True)
    t.add_argument("--sub", default="bench-user")
    t.add_argument("--count", type=int, default=1)
    t.add_argument("--ttl", type=int, default=7200)
    t.add_argument("--unique", action="store_true")
    t.add_argument("--tamper", action="store_true")
    t.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    t.add_argument("--out", required=True)
    x = sub.add_parser("tamper")
    x.add_argument("--in", dest="input", required=True)
    x.add_argument("--out", required=True)
    args = p.parse_args()
    {"jwks": cmd_jwks, "tokens": cmd_tokens, "tamper": cmd_tamper}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
