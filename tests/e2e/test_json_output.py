"""``-o json`` on every command printing data; a failure is then one JSON object (stderr; token: stdout)."""

from __future__ import annotations

import json

from reconciler.cli import build_parser
from reconciler.cli.parser_finish import leaf_parsers
from tests.support.cli import INSTANCE, Linkctl, link_doc

PRINTS_DATA = {
    "validate", "plan", "apply", "reconcile", "list", "show", "redirect-url", "state show", "state events",
    "schema", "authorize", "doctor", "token", "keeper", "init",
}  # fmt: skip


def _links(linkctl: Linkctl, *docs: str) -> str:
    directory = linkctl.cwd / "links"
    directory.mkdir(exist_ok=True)
    (directory / "instance.yaml").write_text(INSTANCE)
    (directory / "links.yaml").write_text("---\n".join(docs))
    return "links"


def test_every_command_that_prints_data_takes_output_json() -> None:
    commands = {" ".join(words): sub for words, sub, nested in leaf_parsers(build_parser()) if not nested}
    assert set(commands) >= PRINTS_DATA
    for command in PRINTS_DATA:
        choices = [a.choices for a in commands[command]._actions if "--output" in a.option_strings]
        assert choices and "json" in choices[0], f"`linkctl {command}` lacks -o json"


def test_redirect_url_and_schema_print_one_json_document(linkctl: Linkctl) -> None:
    links = _links(linkctl, link_doc("alpha"))
    from_files = linkctl("redirect-url", "alpha", "--from", links, "-o", "json").json()
    assert from_files == {
        "name": "alpha",
        "redirect_url": "https://wiki.example.com/oauth/callback/alpha",
        "from": "files",
    }
    linkctl("apply", links)
    assert linkctl("redirect-url", "-o", "json", "alpha").json()["from"] == "store"
    schemas = linkctl("schema", "-o", "json").json()
    assert set(schemas) >= {"outgoing-link.schema.json", "instance.schema.json"}
    written = linkctl("schema", "--write", "out", "-o", "json").json()["written"]
    assert all((linkctl.cwd / path).exists() for path in written)


def test_with_output_json_a_failure_is_one_json_object_on_stderr(linkctl: Linkctl) -> None:
    links = _links(linkctl, link_doc("alpha"), link_doc("alpha"))  # a duplicate name: invalid
    failed = linkctl("plan", "-o", "json", links, expect=3)
    assert failed.stdout == ""
    error = json.loads(failed.stderr)
    assert error["error"] == "invalid_configuration" and error["exit_code"] == 3
    assert error["diagnostics"] and all({"file", "line", "message"} <= set(d) for d in error["diagnostics"])
    assert any(d["file"] == "links/links.yaml" and d["line"] for d in error["diagnostics"])
    unknown = linkctl("show", "nosuch", "-o", "json", expect=None)
    assert unknown.returncode != 0 and unknown.stdout == ""
    assert json.loads(unknown.stderr)["exit_code"] == unknown.returncode
    text = linkctl("show", "nosuch", expect=unknown.returncode)
    assert text.stderr.startswith("error: ")  # without -o json: text, as before
    token = linkctl("token", "nosuch", "-o", "json", expect=None)  # token's contract: JSON on stdout
    assert json.loads(token.stdout)["exit_code"] == token.returncode
