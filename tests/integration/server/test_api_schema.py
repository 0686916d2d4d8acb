"""schemathesis against ``/openapi.json``: no server error, every answer as the document says.

Runs the document the server serves (``reconciler.server.openapi.schema``) against the real
``linkctl serve`` of this module's store, with a key that may read the ``ci-*`` links; a few
examples per operation keep it bounded (seconds, not minutes).
"""

from __future__ import annotations

import copy

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from reconciler.server.openapi import schema as api_schema
from tests.support.server import Served, create_key


def _with_examples() -> dict[str, object]:
    """The document with example link names of this store, so the examples phase reaches the 200s."""
    document = copy.deepcopy(api_schema())
    for path in document["paths"].values():
        for parameter in path["get"].get("parameters", ()):
            if parameter["name"] == "name":
                parameter["examples"] = {"readable": {"value": "ci-one"}, "needs": {"value": "ci-new"}}
            if parameter["name"] == "min_valid":
                parameter["examples"] = {"some": {"value": 5}}
    return document


schema = schemathesis.openapi.from_dict(_with_examples())


def test_served_document_is_the_module_one(served: Served) -> None:
    assert httpx.get(served.base_url + "/openapi.json").json() == api_schema()


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_api_conforms(case: schemathesis.Case, served: Served, api_env: dict[str, str]) -> None:
    key = _key(api_env)
    # positive_data_acceptance is left out: a schema-valid min_valid above the provider's token
    # lifetime is refused with the documented 422, which that check counts as a rejection.
    case.call_and_validate(
        base_url=served.base_url,
        headers={"Authorization": f"Bearer {key}"},
        excluded_checks=[positive_data_acceptance],
    )


_KEYS: dict[str, str] = {}


def _key(env: dict[str, str]) -> str:
    """One key per store for the whole module (creating one per example would be slow)."""
    store = env["LINKCTL_STATE"]
    if store not in _KEYS:
        _KEYS[store] = create_key(env, "--links", "ci-*")
    return _KEYS[store]
