"""Key rotation at the provider while Portcullis runs (SPEC §2 providers:
"keys are also refetched when a token names an unknown kid, at most once per
jwks_min_refresh" — 1s in this suite's config)."""

import time

from conftest import jwt_parts

MIN_REFRESH = 1.0


def settle_after_last_jwks_fetch(idp):
    """Let jwks_min_refresh pass since Portcullis last fetched the keys, so the
    next unknown kid is allowed to trigger a refetch."""
    last = idp.stats()["last_jwks_fetch_ms"]
    assert last is not None, "Portcullis never fetched the provider's JWKS"
    wait = last / 1000 + MIN_REFRESH + 0.3 - time.time()
    if wait > 0:
        time.sleep(wait)


def test_token_signed_by_new_key_is_accepted_on_first_use(idp, stack):
    old_token = idp.token()
    assert stack.get("/api/orders", old_token).status_code == 200
    old_kid = jwt_parts(old_token)[0]["kid"]

    settle_after_last_jwks_fetch(idp)
    rotated = idp.rotate()
    assert rotated["kids"][0] == rotated["kid"] != old_kid
    fetches = idp.stats()["jwks_fetches"]

    new_token = idp.token()
    assert jwt_parts(new_token)[0]["kid"] == rotated["kid"], "the IdP did not sign with its new key"
    r = stack.get("/api/orders", new_token)  # the first use: no retry
    assert r.status_code == 200, r.text
    assert r.json()["claims"]["sub"] == "orders-agent"
    assert idp.stats()["jwks_fetches"] > fetches, "accepted without refetching the JWKS?"

    # The old key is still published, so tokens it signed stay valid.
    assert stack.get("/api/orders", old_token).status_code == 200


def test_retired_key_is_refused_once_the_new_key_set_is_fetched(idp, stack):
    # Signed by the key about to be retired, and never shown to Portcullis (so
    # no token cache can answer for it): only the key set decides.
    before_token = idp.token()
    assert stack.get("/api/orders", idp.token()).status_code == 200  # its key is known

    settle_after_last_jwks_fetch(idp)
    rotated = idp.rotate(retire=True)  # the JWKS now holds only the new key
    assert rotated["kids"] == [rotated["kid"]]

    fresh = idp.token()
    assert stack.get("/api/orders", fresh).status_code == 200  # triggers the refetch

    r = stack.get("/api/orders", before_token)
    assert r.status_code == 401, f"a token signed by a retired key is still accepted: {r.text}"
    assert r.json()["error"] == "unknown_key", r.text
