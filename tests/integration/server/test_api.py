"""The token API against the real oidc-provider oracle, through a real ``linkctl serve``.

The auth matrix (no key, wrong key, revoked, expired, key for another link, admin key)
never yields a token, and a refused request for an unknown link reads exactly like one
for a link the key may not read; fresh and refresh-needed tokens come through the same
lease path as ``linkctl token``; provider trouble and links that need a human get their
status codes; the access log names key ids and never a key, token or query value.
"""

from __future__ import annotations

import time

import pytest

from reconciler.services import apikeys
from tests.support.oracle import OidcServer
from tests.support.oracle_links import open_store
from tests.support.server import Served, create_key, run_linkctl


def _stored_access_token(env: dict[str, str], name: str) -> str:
    with open_store(env) as store:
        grant = store.get_grant(name, with_tokens=True)
        assert grant is not None and grant.access_token is not None
        return grant.access_token.reveal()


def _refused(served: Served, env: dict[str, str], path: str, key: str | None, status: int) -> dict[str, str]:
    answer = served.get(path, key=key)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) >= {"error", "message"} and "access_token" not in body
    for name in ("ci-one", "ci-two", "other"):
        assert _stored_access_token(env, name) not in answer.text
    return body


def test_auth_matrix_never_yields_a_token(served: Served, api_env: dict[str, str]) -> None:
    path = "/v1/links/ci-one/token"
    assert _refused(served, api_env, path, None, 401)["reason"] == "missing"
    assert served.get(path).headers["www-authenticate"].startswith("Bearer")
    _refused(served, api_env, path, "not-a-key", 401)
    assert _refused(served, api_env, path, apikeys.new_key().reveal(), 401)["reason"] == "unknown"
    answer = served.get(path, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert answer.status_code == 401

    revoked = create_key(api_env, "--links", "ci-*")
    assert served.get(path, key=revoked).status_code == 200
    newest = run_json(api_env, "apikey", "list", "-o", "json")[-1]["id"]
    assert run_linkctl(api_env, "apikey", "revoke", newest).returncode == 0
    time.sleep(1.1)  # the documented bound: a seen key is re-read at most 1 s later
    assert _refused(served, api_env, path, revoked, 401)["reason"] == "revoked"

    with open_store(api_env) as store:
        # A key that expired yesterday, made by the real create path with a clock two days back.
        _, expired = apikeys.create(
            store, patterns=["*"], expires_days=1, clock=lambda: time.time() - 2 * 86400
        )
    assert _refused(served, api_env, path, expired.reveal(), 401)["reason"] == "expired"

    other = create_key(api_env, "--links", "other")
    denied = _refused(served, api_env, path, other, 403)
    unknown = _refused(served, api_env, "/v1/links/ci-nope/token", other, 403)
    assert denied["message"].replace("ci-one", "X") == unknown["message"].replace("ci-nope", "X")
    assert denied["error"] == unknown["error"] == "forbidden"
    # Same for status reads: a link the key may not read and one that is not there.
    assert served.get("/v1/links/ci-one", key=other).status_code == 403
    wide = create_key(api_env, "--links", "*")
    assert served.get("/v1/links/nope", key=wide).json() == {
        **served.get("/v1/links/ci-one", key=other).json(),
        "message": served.get("/v1/links/nope", key=wide).json()["message"],
    }

    admin = create_key(api_env, "--links", "*", "--admin")
    assert _refused(served, api_env, path, admin, 403)["reason"] == "admin_only"
    _refused(served, api_env, "/v1/links", admin, 403)


def run_json(env: dict[str, str], *args: str) -> list[dict[str, object]]:
    import json

    result = run_linkctl(env, *args)
    assert result.returncode == 0, result.stderr
    data: list[dict[str, object]] = json.loads(result.stdout)
    return data


def test_fresh_and_refreshed_tokens(served: Served, api_env: dict[str, str], oracle: OidcServer) -> None:
    key = create_key(api_env, "--links", "ci-*", "--name", "ci job")
    answer = served.get("/v1/links/ci-two/token?min_valid=5", key=key)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_at", "scope"}
    assert body["access_token"] == _stored_access_token(api_env, "ci-two")
    assert body["token_type"].lower() == "bearer" and body["expires_at"].endswith("Z")
    assert answer.headers["cache-control"] == "no-store"
    assert not [r for r in oracle.requests() if r.get("grant_type") == "refresh_token"]

    # More validity than the stored token has left (the oracle's tokens live 60 s): refreshed first.
    refreshed = served.get("/v1/links/ci-two/token?min_valid=59.9", key=key)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["access_token"] != body["access_token"]
    assert refreshed.json()["access_token"] == _stored_access_token(api_env, "ci-two")
    assert [r["grant_type"] for r in oracle.requests()] == ["refresh_token"]

    too_long = served.get("/v1/links/ci-two/token?min_valid=3600", key=key)
    assert too_long.status_code == 422, too_long.text
    assert too_long.json()["error"] == "token_lifetime_too_short" and "60 s" in too_long.json()["message"]

    for bad in ("-1", "nan", "1e9", "abc"):
        assert served.get(f"/v1/links/ci-two/token?min_valid={bad}", key=key).status_code == 400

    needs = served.get("/v1/links/ci-new/token", key=key)
    assert needs.status_code == 409, needs.text
    assert needs.json()["error"] == "needs_authorization"

    oracle.fault("unavailable", retry_after=7)
    down = served.get("/v1/links/ci-one/token?min_valid=59.9", key=key)
    assert down.status_code == 503, down.text
    assert down.json()["error"] == "provider_unavailable" and down.headers["retry-after"] == "7"

    listing = served.get("/v1/links", key=key).json()["links"]
    assert [v["name"] for v in listing] == ["ci-new", "ci-one", "ci-two"]
    shown = served.get("/v1/links/ci-two", key=key)
    assert shown.status_code == 200 and shown.json()["status"] == "healthy"
    assert served.get("/v1/links/ci-one", key=key).json()["status"] == "transient_error"
    assert shown.json()["spec"]["clientSecret"] == "(stored, encrypted)"

    used = [v for v in run_json(api_env, "apikey", "list", "-o", "json") if v["label"] == "ci job"]
    assert used[0]["last_used_at"] is not None or _eventually_used(api_env)


def _eventually_used(env: dict[str, str]) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(
            v["last_used_at"] for v in run_json(env, "apikey", "list", "-o", "json") if v["label"] == "ci job"
        ):
            return True
        time.sleep(0.1)
    return False


def test_access_log_names_key_ids_never_secrets(served: Served, api_env: dict[str, str]) -> None:
    key = create_key(api_env, "--links", "ci-one")
    answer = served.get("/v1/links/ci-one/token?min_valid=1&code=abc123&state=xyz789", key=key)
    assert answer.status_code == 400  # unknown parameters are refused, and still logged scrubbed
    assert served.get("/v1/links/ci-one/token?min_valid=1", key=key).status_code == 200
    time.sleep(0.2)
    log = served.log()
    assert '"GET /v1/links/ci-one/token?min_valid=1&code=***&state=***" 400' in log
    assert key not in log and "abc123" not in log and "xyz789" not in log
    assert _stored_access_token(api_env, "ci-one") not in log
    key_id = run_json(api_env, "apikey", "list", "-o", "json")[-1]["id"]
    assert f"key={key_id}" in log


@pytest.mark.parametrize("path", ["/v1/links/ci-one/token", "/v1/links", "/v1/links/ci-one"])
def test_other_methods_and_paths_answer_json(served: Served, path: str) -> None:
    answer = served.request("POST", path)
    assert answer.status_code == 405 and answer.json()["error"] == "method_not_allowed"
    assert served.get("/v1/nothing").json()["error"] == "not_found"
