"""Fast record building: the same frozen records as their ``__init__``, and the stored JSON decoder."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json

import pytest

from reconciler.domain.links import DesiredLink
from reconciler.domain.records import record_builder
from reconciler.plan import UNCHANGED, Change
from reconciler.secrets import Secret
from reconciler.store.base import StoredLink, loads_stored_json
from reconciler.store.sqlite_links import link_from_row


def test_builder_makes_what_init_makes_and_stays_frozen() -> None:
    values = ("uid-1", "a", "google", '{"scopes":["x"]}', "h", {"clientSecret": "fp"}, 3, "f.yaml", 7,
              "linkctl", "delete", 1.0, 2.0)  # fmt: skip
    built = record_builder(StoredLink)(values)
    assert built == StoredLink(*values)
    assert built.spec == {"scopes": ["x"]}  # the cached property still works
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.name = "b"  # type: ignore[misc]
    change = (UNCHANGED, "a", "google", (), "f.yaml:1", None, {}, None, (), None)
    assert record_builder(Change)(change) == Change(*change)
    secrets = {"clientSecret": Secret("s")}
    desired = ("a", "google", {}, secrets, "f.yaml", 1, "delete", None, frozenset(), None)
    assert record_builder(DesiredLink)(desired) == DesiredLink(*desired)


def test_link_from_row_is_the_row_in_column_order() -> None:
    row = ("uid-1", "a", "google", "{}", "h", '{"clientSecret":"fp"}', 1, None, None, "linkctl", "retain",
           1.0, 2.0)  # fmt: skip
    assert link_from_row(row) == StoredLink(*row[:5], {"clientSecret": "fp"}, *row[6:])  # type: ignore[misc]


def test_builder_refuses_what_it_cannot_build_like_init() -> None:
    @dataclasses.dataclass
    class Mutable:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Slotted:
        a: int

    @dataclasses.dataclass(frozen=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            raise ValueError

    for cls in (Mutable, Slotted, Checked):
        with pytest.raises(TypeError):
            record_builder(cls)
    with pytest.raises(TypeError, match="needs 13 values"):
        record_builder(StoredLink)(("too", "few"))


@pytest.mark.parametrize(
    "text", ['{"a":1}', ' {"a": 1} ', '{"a":1}x', "", "nul", "\ufeff{}", '[1,"\\u00e9"]', "NaN", '{"a":1}{}']
)
def test_stored_json_decodes_and_refuses_like_json_loads(text: str) -> None:
    try:
        expected = json.loads(text)
    except json.JSONDecodeError as error:
        with pytest.raises(json.JSONDecodeError) as caught:
            loads_stored_json(text)
        assert str(caught.value) == str(error)
    else:
        got = loads_stored_json(text)
        assert got == expected or (got != got and expected != expected)  # NaN


def test_fingerprint_is_hmac_of_context_parts_and_value_nul_separated() -> None:
    key = bytes(range(32))
    secret = Secret("välue")
    assert secret.fingerprint(key) == hmac.new(key, "välue".encode(), hashlib.sha256).hexdigest()
    assert (
        secret.fingerprint(key, "notify-secret", "https://h/ü")
        == hmac.new(key, "notify-secret\x00https://h/ü\x00välue".encode(), hashlib.sha256).hexdigest()
    )


def test_field_changes_are_slotted_frozen_records() -> None:
    # A plan of 10,000 new links holds about 200,000 of them: no __dict__ each (9 MiB at peak).
    from reconciler.plan import FieldChange

    change = FieldChange("scopes", ["a"], ["a", "b"])
    assert not hasattr(change, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        change.path = "other"  # type: ignore[misc]
    assert change.to_json() == {"path": "scopes", "old": ["a"], "new": ["a", "b"], "sensitive": False}
