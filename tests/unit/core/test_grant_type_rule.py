"""The client-credentials test on a spec, and its shortcut on stored JSON, agree."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.domain.links import spec_json_uses_client_credentials, uses_client_credentials


@pytest.mark.parametrize(
    "spec",
    [
        {"grant": "client_credentials", "tokenEndpoint": "https://idp.example/token"},
        {"grant": "authorization_code"},
        {},
        # The word elsewhere in the spec must not make the shortcut answer yes.
        {
            "grant": "authorization_code",
            "scopes": ["client_credentials"],
            "description": "client_credentials",
        },
        {"grant": "device_code", "authorizeParams": {"client_credentials": "x"}},
        {"grant": None},
    ],
)
def test_stored_json_and_spec_give_the_same_answer(spec: dict[str, Any]) -> None:
    expected = spec.get("grant") == "client_credentials"
    assert uses_client_credentials(spec) is expected
    for text in (json.dumps(spec), json.dumps(spec, sort_keys=True, separators=(",", ":"))):
        assert spec_json_uses_client_credentials(text) is expected
