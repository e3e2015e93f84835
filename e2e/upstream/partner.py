"""A partner API (think: behind MuleSoft) that accepts only the OAuth tokens of
its own identity provider: every request's `Authorization: Bearer` token is
verified with PyJWT against the provider's JWKS, for this API's audience. It
knows nothing of Portcullis: this is what the outbound side of the proxy must
satisfy.

    PARTNER_ISSUER=http://127.0.0.1:9000 PARTNER_AUDIENCE=partner-api \
        python upstream/partner.py 8001

The test fixtures bind the listening socket and hand it over as `UPSTREAM_FD`.
"""

import os
import sys
import time

import jwt
import uvicorn
from fastapi import FastAPI, HTTPException, Request

ISSUER = os.environ["PARTNER_ISSUER"]
AUDIENCE = os.environ["PARTNER_AUDIENCE"]
jwks = jwt.PyJWKClient(f"{ISSUER}/jwks")

app = FastAPI()
seen: list[dict] = []  # every request that reached this API (test plumbing)


@app.get("/__partner/seen")
def requests_seen() -> list[dict]:
    """Not behind Portcullis: the tests ask the API directly what reached it."""
    return seen


@app.api_route("/{path:path}", methods=["GET", "POST"])
def api(request: Request, path: str) -> dict:
    values = [v.decode("latin-1") for k, v in request.scope["headers"] if k == b"authorization"]
    entry = {"path": request.url.path, "authorizations": len(values), "at": time.time()}
    seen.append(entry)
    if len(values) != 1 or not values[0].startswith("Bearer "):
        raise HTTPException(401, "exactly one bearer token required")
    token = values[0][len("Bearer "):]
    entry["token"] = token  # so the tests can check no log holds it
    try:
        key = jwks.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key, algorithms=["RS256", "ES256"], audience=AUDIENCE,
                            issuer=ISSUER, options={"require": ["iss", "aud", "exp", "iat"]})
    except jwt.PyJWTError as err:
        entry["error"] = repr(err)
        raise HTTPException(401, f"invalid token: {err!r}") from err
    entry["claims"] = claims
    return {"path": request.url.path, "client_id": claims.get("client_id")}


if __name__ == "__main__":
    if "UPSTREAM_FD" in os.environ:
        uvicorn.run(app, fd=int(os.environ["UPSTREAM_FD"]), log_level="warning", access_log=False)
    else:
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
