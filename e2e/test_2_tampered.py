"""Tampered and foreign tokens are refused with SPEC §6's 401 and reason codes,
and nothing of such a request reaches the upstream."""

import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from conftest import b64url, b64url_decode, jwt_parts, parse_www_authenticate, remember


def reencode(token: str, header: dict | None = None, claims: dict | None = None,
             signature: str | None = None) -> str:
    h, p, s = token.split(".")
    if header is not None:
        h = b64url(json.dumps(header, separators=(",", ":")).encode())
    if claims is not None:
        p = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{h}.{p}.{s if signature is None else signature}"


def payload_changed(idp):
    token = idp.token(scope="orders:read")
    header, claims = jwt_parts(token)
    claims["sub"] = "admin"
    claims["scope"] = "orders:read orders:write"
    return reencode(token, claims=claims)


def signature_changed(idp):
    token = idp.token()
    h, p, s = token.split(".")
    sig = bytearray(b64url_decode(s))
    sig[len(sig) // 2] ^= 0x01
    return f"{h}.{p}.{b64url(bytes(sig))}"


def alg_none(idp):
    token = idp.token()
    header, claims = jwt_parts(token)
    return reencode(token, header={**header, "alg": "none"}, signature="")


def alg_none_signature_kept(idp):
    token = idp.token()
    header, claims = jwt_parts(token)
    return reencode(token, header={**header, "alg": "none"})


def hs256_with_public_key(idp):
    """The classic key-confusion attack: HMAC keyed with the provider's public key."""
    token = idp.token()
    header, claims = jwt_parts(token)
    jwk = next(k for k in idp.jwks()["keys"] if k["kid"] == header["kid"])
    public_pem = jwt.PyJWK(jwk).key.public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = reencode(token, header={**header, "alg": "HS256"}, signature="")
    signing_input = forged.rsplit(".", 1)[0].encode()
    return f"{signing_input.decode()}.{b64url(hmac.new(public_pem, signing_input, hashlib.sha256).digest())}"


def unknown_kid(idp):
    token = idp.token()
    header, _ = jwt_parts(token)
    return reencode(token, header={**header, "kid": "no-such-key"})


def wrong_audience(idp):
    """Genuinely signed by the same provider, for another resource server."""
    token = idp.token(scope="billing:read", resource="urn:portcullis:billing-api")
    assert jwt_parts(token)[1]["aud"] == "billing-api"
    return token


def not_a_jwt(idp):
    return "definitely-not-a-jwt"


CASES = [
    (payload_changed, "bad_signature"),
    (signature_changed, "bad_signature"),
    (alg_none, "algorithm_not_allowed"),
    (alg_none_signature_kept, "algorithm_not_allowed"),
    (hs256_with_public_key, "algorithm_not_allowed"),
    (unknown_kid, "unknown_key"),
    (wrong_audience, "wrong_audience"),
    (not_a_jwt, "invalid_token"),
]


@pytest.mark.parametrize("make_token,code", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_token_is_refused_with_reason(idp, stack, make_token, code):
    token = remember(make_token(idp))
    before = len(stack.upstream_seen())
    r = stack.get("/api/orders/1", token)

    assert r.status_code == 401, r.text
    scheme, params = parse_www_authenticate(r.headers.get("www-authenticate", ""))
    assert scheme == "Bearer", r.headers
    assert params.get("realm") == "portcullis", r.headers
    assert params.get("error") == "invalid_token", r.headers
    assert params.get("error_description"), r.headers
    body = r.json()
    assert body["error"] == code, body
    assert body["message"] and body["request_id"], body
    assert token not in r.text, "the response echoes the token"
    assert len(stack.upstream_seen()) == before, "a refused request reached the upstream"


def test_valid_token_control_for_the_tampering_cases(idp, stack):
    """The same request with the untouched token passes: the 401s above are the tampering."""
    assert stack.get("/api/orders/1", idp.token()).status_code == 200
