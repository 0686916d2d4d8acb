"""``--prune`` never deletes what the user still declares (issue 8, section 1).

Every refusal is checked to change nothing: ``list -o json``, the state serial and the
audit log are exactly as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import INSTANCE, Linkctl, link_doc, make_linkctl

# Any request to a provider fails at once: nothing listens on port 9.
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


@pytest.fixture
def cli(isolated_env: dict[str, str], tmp_path: Path) -> Linkctl:
    return make_linkctl({**isolated_env, "ALPHA_SECRET": "alpha-secret-1", **OFFLINE}, tmp_path)


def _write(cli: Linkctl, directory: str, files: dict[str, str]) -> str:
    root = cli.cwd / directory
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return directory


def _state(cli: Linkctl) -> dict[str, Any]:
    events = cli("state", "events", "--limit", "1000", "-o", "json").json()["events"]
    return {**cli.snapshot(), "events": events}


def _applied(cli: Linkctl) -> str:
    links = _write(
        cli,
        "links",
        {
            "instance.yaml": INSTANCE,
            "alpha.yaml": link_doc("alpha", secret_env="ALPHA_SECRET"),
            "beta.yaml": link_doc("beta", secret_env="ALPHA_SECRET"),
        },
    )
    cli("apply", links)
    return links


@pytest.mark.parametrize("command", ["apply", "reconcile", "plan"])
@pytest.mark.parametrize("contents", ["empty", "instance-only", "other-tools-only"])
def test_prune_over_inputs_that_declare_nothing_is_refused(cli: Linkctl, command: str, contents: str) -> None:
    _applied(cli)
    files = {"empty": {}, "instance-only": {"instance.yaml": INSTANCE}}.get(
        contents, {"config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"}
    )
    (cli.cwd / "checkout").mkdir()
    _write(cli, "checkout", files)
    before = _state(cli)
    refused = cli(command, "--prune", "checkout", expect=3)
    assert "refusing to prune: the inputs declare no" in refused.stderr
    assert "--allow-empty-prune" in refused.stderr
    assert refused.stdout == ""
    assert _state(cli) == before


def test_allow_empty_prune_deletes_everything_on_purpose(cli: Linkctl) -> None:
    _applied(cli)
    _write(cli, "checkout", {"instance.yaml": INSTANCE})
    plan = cli("plan", "--prune", "--allow-empty-prune", "--out", "p.json", "checkout")
    assert "- delete alpha (google)" in plan.stdout
    saved = json.loads((cli.cwd / "p.json").read_text(encoding="utf-8"))
    assert saved["allow_empty_prune"] is True and saved["instance"] == "wiki"
    cli("apply", "--plan", "p.json")  # the saved plan carries the explicit choice
    assert cli.snapshot()["links"] == []


def test_store_of_another_instance_is_refused_until_adopted(cli: Linkctl) -> None:
    _applied(cli)
    other = INSTANCE.replace("name: wiki", "name: blog").replace("wiki.example.com", "blog.example.com")
    repo = _write(cli, "blog", {"instance.yaml": other, "gamma.yaml": link_doc("gamma")})
    before = _state(cli)
    for args in (("plan", repo), ("apply", repo), ("apply", "--prune", repo), ("reconcile", "--prune", repo)):
        refused = cli(*args, expect=3)
        assert "belongs to Instance 'wiki', but these files declare Instance 'blog'" in refused.stderr
        assert "--adopt-store wiki" in refused.stderr
        assert _state(cli) == before
    wrong = cli("apply", "--adopt-store", "demo", repo, expect=3)
    assert "records Instance 'wiki', not 'demo'" in wrong.stderr
    assert _state(cli) == before

    cli("plan", "--adopt-store", "wiki", "--prune", "--out", "adopt.json", repo)
    adopted = cli("apply", "--plan", "adopt.json")
    assert "The store now belongs to Instance 'blog' (was 'wiki')." in adopted.stdout
    assert [link["name"] for link in cli.snapshot()["links"]] == ["gamma"]
    events = cli("state", "events", "-o", "json").json()["events"]
    assert any(
        e["action"] == "store.adopted" and e["detail"] == {"instance": "blog", "from": "wiki"} for e in events
    )
    cli("plan", repo)  # from now on the store is blog's
    assert "belongs to Instance 'blog'" in cli("plan", "links", expect=3).stderr


def test_saved_plan_of_another_instance_is_refused(cli: Linkctl) -> None:
    links = _applied(cli)
    cli("plan", "--prune", "--out", "p.json", links)
    (cli.cwd / links / "instance.yaml").write_text(
        INSTANCE.replace("name: wiki", "name: blog"), encoding="utf-8"
    )
    before = _state(cli)
    refused = cli("apply", "--plan", "p.json", expect=3)
    assert "belongs to Instance 'wiki', but these files declare Instance 'blog'" in refused.stderr
    assert _state(cli) == before


def test_a_store_from_before_records_its_instance_on_the_next_apply(cli: Linkctl) -> None:
    import sqlite3

    links = _applied(cli)
    with sqlite3.connect(cli.state_db) as conn:  # a store applied before instances were recorded
        conn.execute("DELETE FROM meta WHERE key = 'instance'")
    serial = cli.snapshot()["serial"]
    recorded = cli("apply", links)
    assert "The store now belongs to Instance 'wiki'." in recorded.stdout
    assert cli.snapshot()["serial"] == serial + 1
    events = cli("state", "events", "-o", "json").json()["events"]
    assert events[0]["action"] == "store.instance_recorded" and events[0]["detail"] == {"instance": "wiki"}
    assert "No changes" in cli("apply", links).stdout  # recorded once


def test_symlinked_and_upper_case_files_are_declared(cli: Linkctl) -> None:
    shared = _write(cli, "shared", {"beta.YAML": link_doc("beta", secret_env="ALPHA_SECRET")})
    links = _write(
        cli,
        "links",
        {"instance.yaml": INSTANCE, "alpha.yaml": link_doc("alpha", secret_env="ALPHA_SECRET")},
    )
    (cli.cwd / links / "team").symlink_to(cli.cwd / shared, target_is_directory=True)
    (cli.cwd / shared / "loop").symlink_to(cli.cwd / links, target_is_directory=True)  # a cycle
    (cli.cwd / links / ".hidden.yaml").write_text("not: [yaml\n", encoding="utf-8")  # still ignored
    cli("apply", links)
    assert [link["name"] for link in cli.snapshot()["links"]] == ["alpha", "beta"]
    assert "No changes" in cli("apply", "--prune", links).stdout


def test_delete_lines_say_whether_tokens_are_revoked(cli: Linkctl) -> None:
    links = _applied(cli)
    (cli.cwd / links / "beta.yaml").unlink()
    text = cli("plan", "--prune", links).stdout
    assert (
        "- delete beta (google)\n      deletes it locally only (no tokens to revoke at the provider)" in text
    )
    change = next(
        c for c in cli("plan", "--prune", "-o", "json", links).json()["changes"] if c["link"] == "beta"
    )
    assert change["action"] == "delete" and change["revokes_tokens"] is False


@pytest.mark.parametrize(
    "doc",
    [
        link_doc(
            "ms", provider="microsoft", secret_env="ALPHA_SECRET", scopes=("offline_access", "Mail.Read")
        ),
        link_doc(
            "idp",
            provider="custom",
            secret_env="ALPHA_SECRET",
            scopes=("offline_access", "openid"),
            extra="issuer: https://id.example.invalid",
        ),
    ],
    ids=["microsoft", "custom-issuer"],
)
def test_never_authorized_link_is_deleted_offline(cli: Linkctl, doc: str) -> None:
    links = _write(
        cli,
        "links",
        {
            "instance.yaml": INSTANCE,
            "alpha.yaml": link_doc("alpha", secret_env="ALPHA_SECRET"),
            "gone.yaml": doc,
        },
    )
    cli("apply", links)
    (cli.cwd / links / "gone.yaml").unlink()
    pruned = cli("apply", "--prune", links)  # exit 0: no discovery, no request
    assert "discovery" not in pruned.stderr and "warning" not in pruned.stderr
    assert [link["name"] for link in cli.snapshot()["links"]] == ["alpha"]


def test_rename_onto_a_stored_link_is_refused(cli: Linkctl) -> None:
    links = _applied(cli)  # alpha and beta are stored
    (cli.cwd / links / "alpha.yaml").unlink()
    (cli.cwd / links / "beta.yaml").write_text(
        link_doc("beta", secret_env="ALPHA_SECRET", metadata_extra="renamedFrom: alpha"), encoding="utf-8"
    )
    before = _state(cli)
    for args in (("plan", "--prune", links), ("apply", "--prune", links)):
        refused = cli(*args, expect=3)
        assert (
            f"{links}/beta.yaml:5:16: error: renamedFrom 'alpha': both 'alpha' and 'beta' are already stored"
            in (refused.stderr)
        )
        assert "remove renamedFrom" in refused.stderr
        assert _state(cli) == before
