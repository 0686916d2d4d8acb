"""``apply --plan FILE`` with a malformed or hostile plan file: exit 3 naming FILE and the field.

Each case starts from a real saved plan (``plan --out``), breaks one thing, and checks that
apply refuses it without a traceback and without touching the store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import INSTANCE, Linkctl, link_doc, write

Mutation = Callable[[dict[str, Any]], Any]


def _set(path: tuple[str | int, ...], value: Any) -> Mutation:
    def mutate(plan: dict[str, Any]) -> Any:
        target: Any = plan
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return plan

    return mutate


# (id, what the plan becomes, the JSON path the message must name)
JSON_CASES: list[tuple[str, Mutation, str]] = [
    ("list", lambda plan: [], "$"),
    ("empty-object", lambda plan: {}, "$.format_version"),
    ("string", lambda plan: "x", "$"),
    ("unknown-format-version", _set(("format_version",), "99"), "$.format_version"),
    ("serial-string", _set(("serial",), "1"), "$.serial"),
    ("serial-bool", _set(("serial",), True), "$.serial"),
    ("serial-negative", _set(("serial",), -1), "$.serial"),
    ("serial-missing", lambda plan: {k: v for k, v in plan.items() if k != "serial"}, "$.serial"),
    ("changes-object", _set(("changes",), {}), "$.changes"),
    ("change-not-object", _set(("changes", 0), "create alpha"), "$.changes[0]"),
    ("change-action-number", _set(("changes", 0, "action"), 1), "$.changes[0].action"),
    ("change-action-unknown", _set(("changes", 0, "action"), "explode"), "$.changes[0].action"),
    ("change-link-missing", lambda plan: plan["changes"][0].pop("link") and plan, "$.changes[0].link"),
    ("change-fields-string", _set(("changes", 0, "fields"), "all"), "$.changes[0].fields"),
    (
        "change-scopes-string",
        _set(("changes", 0, "reauthorize_scopes"), "email"),
        "$.changes[0].reauthorize_scopes",
    ),
    ("change-preset-list", _set(("changes", 0, "preset_added"), []), "$.changes[0].preset_added"),
    ("inputs-string", _set(("inputs",), "links.yaml"), "$.inputs"),
    ("inputs-number-item", _set(("inputs",), [1]), "$.inputs[0]"),
    ("prune-string", _set(("prune",), "false"), "$.prune"),
    ("created-at-string", _set(("created_at",), "yesterday"), "$.created_at"),
    ("instance-number", _set(("instance",), 7), "$.instance"),
]


@pytest.fixture
def saved(linkctl: Linkctl) -> tuple[dict[str, Any], int]:
    """A store with one applied link and a valid saved plan creating a second; and the serial."""
    write(linkctl.cwd / "links" / "instance.yaml", INSTANCE)
    write(linkctl.cwd / "links" / "alpha.yaml", link_doc("alpha"))
    linkctl("apply", "links")
    write(linkctl.cwd / "links" / "beta.yaml", link_doc("beta"))
    linkctl("plan", "--out", "good.json", "links")
    plan = json.loads((linkctl.cwd / "good.json").read_text(encoding="utf-8"))
    plan["changes"].sort(key=lambda c: c["action"] != "create")  # changes[0] is the create
    return plan, linkctl.snapshot()["serial"]


def _refused(linkctl: Linkctl, plan_file: Path, serial: int) -> str:
    result = linkctl("apply", "--plan", str(plan_file), expect=3, timeout=30)
    assert str(plan_file) in result.stderr, str(result)
    state = linkctl.snapshot()
    assert state["serial"] == serial and [link["name"] for link in state["links"]] == ["alpha"]
    return result.stderr


@pytest.mark.parametrize(
    ("mutation", "field"), [case[1:] for case in JSON_CASES], ids=[c[0] for c in JSON_CASES]
)
def test_malformed_plan_names_file_and_field(
    linkctl: Linkctl, saved: tuple[dict[str, Any], int], mutation: Mutation, field: str
) -> None:
    plan, serial = saved
    bad = linkctl.cwd / "bad.json"
    bad.write_text(json.dumps(mutation(plan)), encoding="utf-8")
    stderr = _refused(linkctl, bad, serial)
    assert f"{field} " in stderr, stderr


def _write_bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _big(path: Path) -> None:
    with path.open("wb") as handle:
        handle.truncate(16 * 1024 * 1024 + 1)


# (id, how FILE is made, what the message says)
FILE_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("not-utf8", _write_bytes(b'{"format_version": "\xff\xfe"}'), "not UTF-8"),
    ("invalid-json", _write_bytes(b'{"format_version": "1",'), "not valid JSON"),
    ("duplicate-key", _write_bytes(b'{"serial": 1, "serial": 2}'), "duplicate key"),
    ("deep-nesting", _write_bytes(b"[" * 10_000 + b"]" * 10_000), "nesting deeper"),
    ("fifo", lambda path: os.mkfifo(path), "not a regular file"),
    ("over-16-mib", _big, "byte limit"),
]


@pytest.mark.parametrize(
    ("make", "message"), [case[1:] for case in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_unreadable_plan_file_is_refused_at_once(
    linkctl: Linkctl, saved: tuple[dict[str, Any], int], make: Callable[[Path], None], message: str
) -> None:
    _, serial = saved
    bad = linkctl.cwd / "bad.json"
    make(bad)
    assert message in _refused(linkctl, bad, serial)


def test_device_plan_file_is_refused(linkctl: Linkctl, saved: tuple[dict[str, Any], int]) -> None:
    _, serial = saved
    assert "not a regular file" in _refused(linkctl, Path("/dev/zero"), serial)


def test_valid_saved_plan_still_applies(linkctl: Linkctl, saved: tuple[dict[str, Any], int]) -> None:
    plan, serial = saved
    (linkctl.cwd / "again.json").write_text(json.dumps(plan), encoding="utf-8")
    linkctl("apply", "--plan", "again.json")
    assert linkctl.snapshot()["serial"] == serial + 1
