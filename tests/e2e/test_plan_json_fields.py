"""Plan JSON and audit events carry only real fields: no ``{path: "", old: {}, new: null}`` entries."""

from __future__ import annotations

from typing import Any

from tests.support.cli import INSTANCE, Linkctl, link_doc

SECRETS = {"ALPHA_SECRET": "alpha-secret-1", "BETA_SECRET": "beta-secret-1"}


def _write(linkctl: Linkctl, *docs: str) -> str:
    directory = linkctl.cwd / "links"
    directory.mkdir(exist_ok=True)
    (directory / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    (directory / "links.yaml").write_text("---\n".join(docs), encoding="utf-8")
    return "links"


def _assert_real_fields(plan: dict[str, Any]) -> None:
    for change in plan["changes"]:
        for field in change["fields"]:
            assert field["path"], f"a field without a path in {change['action']} {change['link']}: {field}"


def test_create_rename_delete_plans_and_events_have_no_empty_paths(linkctl: Linkctl) -> None:
    linkctl.env.update(SECRETS)
    links = _write(
        linkctl, link_doc("alpha", secret_env="ALPHA_SECRET"), link_doc("beta", secret_env="BETA_SECRET")
    )
    create = linkctl("plan", links, "-o", "json").json()
    assert {c["action"] for c in create["changes"]} == {"create"}
    _assert_real_fields(create)
    paths = {f["path"] for f in create["changes"][0]["fields"]}
    assert {"provider", "clientId", "scopes"} <= paths
    linkctl("apply", links)

    renamed = link_doc("alpha-two", secret_env="ALPHA_SECRET", metadata_extra="renamedFrom: alpha")
    links = _write(linkctl, renamed)  # beta is gone: deleted with --prune
    plan = linkctl("plan", links, "--prune", "-o", "json").json()
    assert sorted(c["action"] for c in plan["changes"]) == ["delete", "rename"]
    _assert_real_fields(plan)
    assert next(c for c in plan["changes"] if c["action"] == "delete")["fields"] == []
    linkctl("apply", links, "--prune")

    events = linkctl("state", "events", "-o", "json").json()["events"]
    assert any("provider" in (e.get("detail") or {}).get("fields", []) for e in events)
    for event in events:
        detail = event.get("detail") or {}
        assert "" not in detail, event
        assert "" not in (detail.get("fields") or []), event
