"""Duplicate JSON keys are refused at their line and column, in every reader that uses strict_json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler import strict_json
from reconciler.load import load_paths


@pytest.mark.parametrize(
    ("text", "key", "line", "column"),
    [
        ('{"a": 1,\n "a": 2}', "a", 2, 2),
        ('{"x": {"k": [1, {"k": 2}], "k": 3}}', "k", 1, 28),  # the inner objects' k are not repeats
        ('[{"a\\u0062": 1, "ab": 2}]', "ab", 1, 17),  # escapes compare by their decoded text
    ],
)
def test_duplicate_key_is_located(text: str, key: str, line: int, column: int) -> None:
    with pytest.raises(json.JSONDecodeError) as caught:
        strict_json.loads(text)
    error = caught.value
    assert (error.msg, error.lineno, error.colno) == (f"duplicate key {key!r}", line, column)


def test_strings_that_look_like_keys_are_values() -> None:
    assert strict_json.loads('{"a": "\\":", "b": ["a", "a"]}') == {"a": '":', "b": ["a", "a"]}


def test_json_fallback_file_reports_the_duplicate_at_its_position(tmp_path: Path) -> None:
    # The surrogate-pair escape makes libyaml refuse the file, so it is read as JSON.
    (tmp_path / "bad.json").write_text(
        '{"apiVersion": "linkctl.dev/v1", "kind": "OutgoingLink",\n'
        ' "metadata": {"name": "j", "labels": {"mood": "\\ud83d\\ude00"}},\n'
        ' "kind": "Again"}\n',
        encoding="utf-8",
    )
    (diagnostic,) = load_paths([str(tmp_path)], env={}).diagnostics
    assert diagnostic.message == "invalid JSON: duplicate key 'kind'"
    assert (diagnostic.line, diagnostic.column) == (3, 2)


@pytest.mark.parametrize(
    ("text", "problem", "column"),
    [
        ('{"a": "1e999", "b": 1e999}', "1e999 is not a finite number", 21),  # the string is not the number
        ("[1, NaN]", "NaN is not JSON", 5),
        ('{"a": -Infinity}', "-Infinity is not JSON", 7),
    ],
)
def test_numbers_that_are_not_finite_are_refused_where_they_are(text: str, problem: str, column: int) -> None:
    with pytest.raises(json.JSONDecodeError) as caught:
        strict_json.loads(text)
    assert (caught.value.msg, caught.value.lineno, caught.value.colno) == (problem, 1, column)


def test_the_sops_reader_keeps_non_finite_numbers_it_writes_itself() -> None:
    assert strict_json.loads('{"a": Infinity, "b": -Infinity}', allow_non_finite=True) == {
        "a": float("inf"),
        "b": float("-inf"),
    }
    with pytest.raises(json.JSONDecodeError, match="duplicate key 'a'"):
        strict_json.loads('{"a": NaN, "a": 1}', allow_non_finite=True)
