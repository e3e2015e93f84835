"""A client-credentials JWT from a real OpenID Provider goes through Portcullis,
and the FastAPI upstream verifies Portcullis's assertion with PyJWT."""

from conftest import jwt_parts


def header_values(body: dict, name: str) -> list[str]:
    """Every value the upstream received for `name`, in any case or _/- spelling."""
    want = name.lower().replace("_", "-")
    return [v for k, v in body["headers"] if k.lower().replace("_", "-") == want]


def test_token_from_oidc_provider_is_an_rs256_at_jwt(idp):
    token_response = idp.token_response()
    assert token_response["token_type"].lower() == "bearer"
    header, claims = jwt_parts(token_response["access_token"])
    assert header["alg"] == "RS256" and header["typ"] == "at+jwt" and header["kid"]
    assert claims["iss"] == idp.issuer
    assert claims["aud"] == "orders-api"
    assert claims["sub"] == claims["client_id"] == "orders-agent"
    assert set(claims["scope"].split()) == {"orders:read", "orders:write"}


def test_client_credentials_token_is_accepted_and_identity_reaches_upstream(idp, stack):
    token = idp.token()  # client_secret_basic
    r = stack.get("/api/orders/42?expand=lines", token)
    assert r.status_code == 200, r.text
    body = r.json()

    # The upstream verified the assertion (ES256, its own origin as aud, the
    # proxy's public_url as iss) with PyJWT, or it would have answered 401.
    claims = body["claims"]
    assert claims["iss"] == stack.url
    assert claims["aud"] == stack.upstream
    assert claims["sub"] == "orders-agent"
    assert claims["client_id"] == "orders-agent"
    assert claims["idp"] == idp.issuer
    assert "orders:read" in (claims["scope"] if isinstance(claims["scope"], str)
                             else " ".join(claims["scope"]))
    assert claims["exp"] > claims["iat"]
    assert claims.get("jti")

    assert header_values(body, "X-Auth-Request-User") == ["orders-agent"]
    assert header_values(body, "X-Auth-Request-Client-Id") == ["orders-agent"]
    assert len(header_values(body, "X-Portcullis-Assertion")) == 1
    assert len(header_values(body, "X-Request-Id")) == 1
    # forward_token defaults to false: the caller's bearer token stays at the proxy.
    assert header_values(body, "Authorization") == []
    assert body["path"] == "/api/orders/42"


def test_client_secret_post_client_is_accepted_for_reads(idp, stack):
    token = idp.token(client_id="reports-agent", scope="orders:read")
    r = stack.get("/api/orders", token)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["claims"]["sub"] == "reports-agent"
    assert header_values(body, "X-Auth-Request-User") == ["reports-agent"]
    assert header_values(body, "X-Auth-Request-Client-Id") == ["reports-agent"]


def test_post_with_write_scope_is_forwarded(idp, stack):
    token = idp.token(scope="orders:write")
    r = stack.post("/api/orders", token, json={"item": "widget", "qty": 3})
    assert r.status_code == 200, r.text
    assert r.json()["method"] == "POST"
    assert r.json()["claims"]["sub"] == "orders-agent"


def test_assertion_keys_are_published_for_any_jwt_library(stack):
    r = stack.get("/.well-known/portcullis/jwks.json")
    assert r.status_code == 200
    keys = r.json()["keys"]
    assert keys and all(k.get("kid") for k in keys)
    assert all("d" not in k for k in keys), "private key material in the public JWKS"
