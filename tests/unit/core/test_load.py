"""Loader: positions, YAML traps, skipping other tools' documents."""

from __future__ import annotations

import time
from pathlib import Path

from reconciler.load import load_paths


def _load(tmp_path: Path, text: str, name: str = "links.yaml"):
    (tmp_path / name).write_text(text, encoding="utf-8")
    return load_paths([str(tmp_path)], env={})


LINK = """apiVersion: linkctl.dev/v1
kind: OutgoingLink
metadata:
  name: a
spec:
  provider: google
  scopes: [x]
"""


def test_positions_point_at_values(tmp_path: Path) -> None:
    result = _load(tmp_path, LINK)
    (doc,) = result.documents
    assert doc.locate(("spec", "provider")) == (6, 13)
    assert doc.locate(("spec", "scopes", 0)) == (7, 12)
    assert doc.locate(("spec", "provider"), key=True) == (6, 3)
    assert doc.locate(("spec", "missing")) == (6, 3)  # deepest existing node


def test_multi_document_and_foreign_documents_are_skipped(tmp_path: Path) -> None:
    text = (
        LINK
        + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n"
        + LINK.replace("name: a", "name: b")
    )
    result = _load(tmp_path, text)
    assert [d.name for d in result.documents] == ["a", "b"]
    assert result.documents[1].line == 13
    assert any("apiVersion 'v1'" in s for s in result.skipped)
    assert not result.diagnostics


def test_duplicate_keys_are_errors_with_both_lines(tmp_path: Path) -> None:
    result = _load(tmp_path, LINK.replace("  name: a\n", "  name: a\n  name: b\n"))
    (diag,) = result.diagnostics
    assert diag.line == 5 and diag.code == "duplicate-key"
    assert "first defined at line 4" in diag.message


def test_yaml11_lookalikes_are_errors(tmp_path: Path) -> None:
    head = "apiVersion: linkctl.dev/v1\nkind: Instance\n"
    result = _load(tmp_path, head + "a: [on, no, 0755, 2024-01-01, 1_000, 'on', true, 12, 0x1f]\n", "x.yaml")
    codes = [(d.line, d.column, d.code) for d in result.diagnostics]
    assert codes == [
        (3, 5, "yaml11-ambiguous"),
        (3, 9, "yaml11-ambiguous"),
        (3, 13, "yaml11-ambiguous"),
        (3, 19, "yaml11-ambiguous"),
        (3, 31, "yaml11-ambiguous"),
    ]
    foreign = _load(tmp_path, "apiVersion: v1\nkind: ConfigMap\ndata: {enabled: on}\n", "x.yaml")
    assert foreign.diagnostics == [] and foreign.skipped


def test_core_schema_scalars(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "apiVersion: linkctl.dev/v1\nkind: Instance\nmetadata: {name: i}\n"
        "spec: {a: true, b: 12, c: 0x1f, d: 1.5, e: ~, f: 'yes'}\n"
    )
    (doc,) = load_paths([str(tmp_path)], env={}).documents
    assert doc.data["spec"] == {"a": True, "b": 12, "c": 31, "d": 1.5, "e": None, "f": "yes"}


def test_alias_bomb_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 9)}]")
    started = time.perf_counter()
    result = _load(tmp_path, "\n".join(lines) + "\n")
    assert time.perf_counter() - started < 2
    assert [d.code for d in result.diagnostics] == ["alias-bomb"]


def test_merge_keys_and_custom_tags_refused(tmp_path: Path) -> None:
    head = "apiVersion: linkctl.dev/v1\nkind: Instance\n"
    result = _load(tmp_path, head + "base: &b {x: 1}\nother:\n  <<: *b\ntagged: !secret abc\n")
    assert sorted(d.code or "" for d in result.diagnostics) == ["yaml-merge", "yaml-tag"]


def test_syntax_error_has_position(tmp_path: Path) -> None:
    result = _load(tmp_path, "a: [1,\nb: c\n")
    (diag,) = result.diagnostics
    assert diag.code == "syntax" and diag.line in (2, 3) and diag.column is not None


def test_unknown_kind_and_version(tmp_path: Path) -> None:
    result = _load(
        tmp_path, "apiVersion: linkctl.dev/v1\nkind: Link\n---\napiVersion: linkctl.dev/v9\nkind: Instance\n"
    )
    assert [(d.code, d.line) for d in result.diagnostics] == [("unknown-kind", 2), ("api-version", 4)]


def test_directories_recurse_and_skip_hidden(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "sub" / "a.yml").write_text(LINK)
    (tmp_path / ".hidden" / "b.yaml").write_text(LINK)
    (tmp_path / ".sops.yaml").write_text("creation_rules: []\n")
    (tmp_path / "notes.txt").write_text("x")
    result = load_paths([str(tmp_path)], env={})
    assert result.files == [str(tmp_path / "sub" / "a.yml")]


def test_json_documents(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(
        '{\n\t"apiVersion": "linkctl.dev/v1",\n\t"kind": "OutgoingLink",\n\t"metadata": {"name": "j"}\n}\n'
    )
    (doc,) = load_paths([str(tmp_path)], env={}).documents
    assert doc.name == "j"


def test_missing_path_and_non_utf8(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_bytes(b"a: \xff\xfe\n")
    result = load_paths([str(tmp_path / "nope"), str(tmp_path / "bad.yaml")], env={})
    assert [d.code for d in result.diagnostics] == ["no-file", "encoding"]


def test_duplicate_key_names_the_first_kept_occurrence(tmp_path: Path) -> None:
    # A plain `<<` is refused as a merge key and never kept, so the quoted one is "first".
    text = LINK.replace("  scopes: [x]\n", "  scopes: [x]\n  <<: x\n  '<<': 1\n  '<<': 2\n  scopes: [y]\n")
    rendered = [d.render() for d in _load(tmp_path, text).diagnostics]
    assert any(":8:3: error: YAML merge keys (<<) are not supported" in r for r in rendered)
    assert any(":10:3: error: duplicate key '<<' (first defined at line 9)" in r for r in rendered)
    assert any(":11:3: error: duplicate key 'scopes' (first defined at line 7)" in r for r in rendered)


def test_json_that_yaml_cannot_read_is_read_as_json_and_refuses_duplicate_keys(tmp_path: Path) -> None:
    # A surrogate-pair escape is valid JSON that libyaml refuses: such files fall back to JSON.
    doc = (
        '{"apiVersion": "linkctl.dev/v1", "kind": "OutgoingLink",'
        ' "metadata": {"name": "j", "labels": {"mood": "\\ud83d\\ude00"}}}'
    )
    (parsed,) = _load(tmp_path, doc, "ok.json").documents
    assert parsed.name == "j" and parsed.data["metadata"]["labels"]["mood"] == "\U0001f600"
    broken = _load(tmp_path, doc.replace('"kind": "OutgoingLink"', '"kind": "A", "kind": "B"'), "ok.json")
    assert [d.message for d in broken.diagnostics] == ["invalid JSON: duplicate key 'kind'"]


def test_the_same_file_named_twice_is_read_once(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    good = tmp_path / "sub" / "good.yaml"
    good.write_text(LINK)
    (tmp_path / "alias.yaml").symlink_to(good)
    named = [str(tmp_path / "sub"), str(good), str(tmp_path / "sub" / ".." / "sub" / "good.yaml")]
    result = load_paths([*named, str(tmp_path / "alias.yaml")], env={})
    assert result.files == [str(good)]
    assert len(result.documents) == 1
    assert result.diagnostics == []


def test_yaml11_lookalike_mapping_values_are_errors_every_time(tmp_path: Path) -> None:
    # Mapping values take the constructor's fast path; YAML 1.1's reading of short ones is
    # remembered, which must neither hide the second occurrence nor keep a secret's value.
    from reconciler.load import yaml_positions

    remembered = yaml_positions._remembered_yaml11_tag
    remembered.cache_clear()
    link = (
        "apiVersion: linkctl.dev/v1\nkind: OutgoingLink\nmetadata: {name: %s}\nspec: {%s: %s, team: team-1}\n"
    )
    text = "---\n".join(
        [link % ("a", "enabled", "off"), link % ("b", "enabled", "off"), link % ("c", "clientSecret", "Off")]
    )
    result = _load(tmp_path, text)
    found = [(d.line, d.column, d.code) for d in result.diagnostics]
    assert found == [(4, 17, "yaml11-ambiguous"), (9, 17, "yaml11-ambiguous"), (14, 22, "yaml11-ambiguous")]
    assert result.diagnostics[0].message == "unquoted `off` is a boolean to YAML 1.1 tools"
    assert result.diagnostics[2].message == "this unquoted value is a boolean to YAML 1.1 tools"
    assert "Off" not in (result.diagnostics[2].hint or "")
    assert [d.data["spec"]["team"] for d in result.documents] == ["team-1"] * 3
    hits = remembered.cache_info().hits
    remembered("off")
    assert remembered.cache_info().hits == hits + 1  # the text was remembered...
    remembered("Off")
    assert remembered.cache_info().hits == hits + 1  # ...the secret's value was not


def test_core_resolver_shortcuts_answer_as_the_resolver_table_does() -> None:
    import yaml
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    from reconciler.load.yaml_positions import NodeLoader

    loader = NodeLoader("")
    try:
        for kind in (ScalarNode, MappingNode, SequenceNode):
            for value in ("", "text", "true", "on", "12", "0x1f", "1.5", "~", ".inf", "team-1", "None"):
                for implicit in ((True, False), (False, True), (False, False)):
                    table = yaml.resolver.BaseResolver.resolve(loader, kind, value, implicit)
                    assert loader.resolve(kind, value, implicit) == table, (kind, value, implicit)
    finally:
        loader.dispose()
