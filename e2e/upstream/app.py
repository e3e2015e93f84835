"""A FastAPI service behind Portcullis that trusts only what it can verify.

Every request must carry Portcullis's signed assertion (`X-Portcullis-Assertion`),
checked with PyJWT against the proxy's published keys. The answer echoes the
verified claims and the identity headers the service received, so the e2e tests
can assert on exactly what an upstream sees.

    PORTCULLIS_URL=http://127.0.0.1:8080 ASSERTION_AUDIENCE=http://127.0.0.1:8000 \
        python upstream/app.py 8000

`PORTCULLIS_URL` is Portcullis's `server.public_url` (the assertions' `iss`, and
where its JWKS is served). `ASSERTION_AUDIENCE` is this service's own origin,
the `aud` Portcullis uses unless the route sets `audience`. The test fixtures
bind the listening socket themselves and hand it over as `UPSTREAM_FD`.
"""

import os
import sys

import jwt
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request

# --- the verification a service behind Portcullis needs: this is all of it ---
PORTCULLIS = os.environ["PORTCULLIS_URL"]  # Portcullis's server.public_url
AUDIENCE = os.environ["ASSERTION_AUDIENCE"]  # this service's origin, or the route's `audience`
# Where its keys are fetched: the public URL, unless the test runs Portcullis
# under a name only the browser resolves (PORTCULLIS_JWKS_URL, test_10).
jwks = jwt.PyJWKClient(os.environ.get("PORTCULLIS_JWKS_URL",
                                      f"{PORTCULLIS}/.well-known/portcullis/jwks.json"))


def verified_caller(request: Request) -> dict:
    try:
        assertion = request.headers["x-portcullis-assertion"]
        key = jwks.get_signing_key_from_jwt(assertion)
        return jwt.decode(assertion, key, algorithms=["ES256", "EdDSA"],
                          audience=AUDIENCE, issuer=PORTCULLIS,
                          options={"require": ["iss", "aud", "sub", "exp", "iat"]})
    except (KeyError, jwt.PyJWTError) as err:
        raise HTTPException(401, f"no valid Portcullis assertion: {err!r}") from err
# ------------------------------------------------------------------------------

IDENTITY_PREFIXES = ("x-auth-request", "x-forwarded", "x-portcullis", "x-request-id",
                     "traceparent", "authorization", "cookie")
app = FastAPI()
seen: list[dict] = []  # every request that reached this service (test plumbing)


@app.middleware("http")
async def record(request: Request, call_next):
    if request.url.path != "/__upstream/seen":
        seen.append({"method": request.method, "path": request.url.path})
    return await call_next(request)


@app.get("/__upstream/seen")
def requests_seen() -> list[dict]:
    """Not behind Portcullis: the tests ask the service directly what reached it."""
    return seen


@app.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
def echo(request: Request, path: str, claims: dict = Depends(verified_caller)) -> dict:
    # Raw pairs, in order, duplicates kept: a spoofed header would show up here.
    # Underscore spellings (x_auth_request_user) count as identity headers too.
    headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]
               if k.decode("latin-1").replace("_", "-").startswith(IDENTITY_PREFIXES)]
    return {"method": request.method, "path": request.url.path, "claims": claims,
            "headers": headers, "raw_path": request.scope.get("raw_path", b"").decode("latin-1")}


if __name__ == "__main__":
    if "UPSTREAM_FD" in os.environ:
        uvicorn.run(app, fd=int(os.environ["UPSTREAM_FD"]), log_level="warning", access_log=False)
    else:
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
