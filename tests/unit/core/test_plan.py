"""Planner: create/update/delete/rename/drift/orphan/retain, redaction, JSON round trip."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from reconciler import plan as plans
from reconciler.domain.links import DesiredLink
from reconciler.render import render_text
from reconciler.secrets import Secret
from reconciler.store.base import StoredLink

KEY = b"k" * 32


def desired(
    name: str, *, secret: str = "s3cr3t-canary", renamed_from: str | None = None, **spec: Any
) -> DesiredLink:
    base = {
        "provider": "google",
        "clientId": "id",
        "clientSecret": {"$secret": "clientSecret"},
        "scopes": ["a"],
    }
    base.update(spec)
    return DesiredLink(
        name,
        "google",
        base,
        {"clientSecret": Secret(secret)},
        "f.yaml",
        3,
        "delete",
        renamed_from,
        frozenset(),
    )


def stored(link: DesiredLink, *, policy: str = "delete", tamper: dict[str, Any] | None = None) -> StoredLink:
    fps = plans.fingerprints(link, KEY)
    spec = dict(link.spec)
    digest = plans.spec_hash(spec, fps)
    spec.update(tamper or {})
    return StoredLink(
        "uid-" + link.name,
        link.name,
        link.provider,
        json.dumps(spec, sort_keys=True, separators=(",", ":")),
        digest,
        fps,
        1,
        "f.yaml",
        3,
        "linkctl",
        policy,
        0.0,
        0.0,
    )


def compute(want: list[DesiredLink], have: list[StoredLink], prune: bool = False) -> plans.Plan:
    return plans.compute_plan(want, have, serial=7, fingerprint_key=KEY, prune=prune)


def actions(plan: plans.Plan) -> list[tuple[str, str]]:
    return [(c.action, c.link) for c in plan.changes]


def test_create_unchanged_and_noop() -> None:
    a = desired("a")
    plan = compute([a], [])
    assert actions(plan) == [("create", "a")] and plan.has_changes and plan.serial == 7
    again = compute([a], [stored(a)])
    assert actions(again) == [("unchanged", "a")] and not again.has_changes


def test_update_is_field_level_and_secret_change_is_redacted() -> None:
    old = desired("a")
    new = desired("a", secret="other-canary", scopes=["a", "b"])
    plan = compute([new], [stored(old)])
    (change,) = plan.changes
    assert change.action == "update"
    assert [(f.path, f.sensitive) for f in change.fields] == [("scopes", False), ("clientSecret", True)]
    text = render_text(plan) + json.dumps(plan.to_json())
    assert "(sensitive value changed)" in text
    assert "canary" not in text


def test_drift_detected_and_corrected() -> None:
    a = desired("a")
    plan = compute([a], [stored(a, tamper={"clientId": "changed-by-hand"})])
    (change,) = plan.changes
    assert change.action == "drift" and change.fields[0].path == "clientId"


def test_orphans_prune_and_retain() -> None:
    gone, kept = desired("gone"), desired("kept")
    have = [stored(gone), stored(kept, policy="retain")]
    assert actions(compute([], have)) == [("orphan", "gone"), ("retain", "kept")]
    assert actions(compute([], have, prune=True)) == [("delete", "gone"), ("retain", "kept")]


def test_rename_moves_instead_of_delete_create() -> None:
    old = desired("old")
    plan = compute([desired("new", renamed_from="old")], [stored(old)], prune=True)
    assert actions(plan) == [("rename", "new")]
    assert plan.changes[0].renamed_from == "old" and plan.changes[0].fields == ()


def test_json_round_trip_and_same_changes() -> None:
    plan = compute([desired("a"), desired("b")], [])
    copy = plans.Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert copy.same_changes(plan) and copy.serial == plan.serial
    assert copy == plan  # everything apply --plan reuses: inputs, prune, fields, renames
    edited = compute([desired("a", scopes=["z"]), desired("b")], [])
    assert not edited.same_changes(plan)


def test_sensitive_fields_from_sops_are_redacted() -> None:
    old = desired("a")
    new = DesiredLink(
        "a",
        "google",
        {**old.spec, "clientId": "new-id"},
        old.secrets,
        "f.yaml",
        3,
        "delete",
        None,
        frozenset({"clientId"}),
    )
    plan = compute([new], [stored(old)])
    assert plan.changes[0].fields[0].sensitive
    assert "new-id" not in render_text(plan)


def test_stored_spec_is_decoded_once_and_the_plan_keeps_none() -> None:
    have = stored(desired("a"))
    assert have.spec is have.spec  # decoded on first use, then kept
    assert have.fresh_spec() == have.spec and have.fresh_spec() is not have.spec
    other = stored(desired("b"))
    assert not compute([desired("b")], [other]).has_changes
    assert "spec" not in other.__dict__  # the planner's copy is not kept on the link


def test_each_sealed_field_is_sensitive_on_its_own_path() -> None:
    marker = {"$secret": "tokenParams.client_assertion"}
    old = desired("a", tokenParams={"client_assertion": marker, "audience": "x"})
    old = dataclasses.replace(
        old,
        secrets={**old.secrets, "tokenParams.client_assertion": Secret("jwt-canary-1")},
        sensitive_fields=frozenset({"tokenParams.client_assertion", "scopes"}),
    )
    new = dataclasses.replace(
        old,
        spec={**old.spec, "tokenParams": {"client_assertion": marker, "audience": "y"}, "scopes": ["b"]},
        secrets={**old.secrets, "tokenParams.client_assertion": Secret("jwt-canary-2")},
    )
    plan = compute([new], [stored(old)])
    fields = {f.path: f for f in plan.changes[0].fields}
    assert set(fields) == {"scopes", "tokenParams.audience", "tokenParams.client_assertion"}
    assert fields["tokenParams.client_assertion"].sensitive and fields["scopes"].sensitive
    assert (fields["tokenParams.audience"].old, fields["tokenParams.audience"].new) == ("x", "y")
    text = render_text(plan) + json.dumps(plan.to_json())
    assert "jwt-canary" not in text and "tokenParams.client_assertion: (sensitive value changed)" in text
    created = compute([new], [])
    assert [f.to_json() for f in created.changes[0].fields if f.path.startswith("tokenParams.c")] == [
        {"path": "tokenParams.client_assertion", "sensitive": True}
    ]
