"""``spec.notify`` of the Instance: URL rules, secret sources, errors with file:line and a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.load import load_paths
from reconciler.validate import validate


def _instance(notify: str, *, loopback: bool = False) -> str:
    extra = "  allowInsecureLoopback: true\n" if loopback else ""
    return (
        "apiVersion: linkctl.dev/v1\nkind: Instance\nmetadata: {name: wiki}\nspec:\n"
        f"  baseUrl: https://wiki.example.com\n{extra}  notify:\n{notify}"
    )


def _validate(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    (tmp_path / "instance.yaml").write_text(text, encoding="utf-8")
    env = env if env is not None else {"HOOK_KEY": "a-webhook-signing-key-canary"}
    return validate(load_paths([str(tmp_path)], env=env), env=env)


def test_targets_are_read_with_their_secret_and_never_formatted(tmp_path: Path) -> None:
    (tmp_path / "hook.key").write_text("file-signing-key-0123456789\n", encoding="utf-8")
    result = _validate(
        tmp_path,
        _instance(
            "  - {url: 'https://hooks.example.com/services/T/B/x', secret: {fromEnv: HOOK_KEY}}\n"
            "  - {url: 'http://127.0.0.1:9/hook', secret: {fromFile: hook.key}}\n",
            loopback=True,
        ),
    )
    assert result.ok, result.diagnostics
    first, second = result.notify
    assert first.secret.reveal() == "a-webhook-signing-key-canary"
    assert first.origin == "https://hooks.example.com" and second.origin == "http://127.0.0.1:9"
    assert second.secret.reveal() == "file-signing-key-0123456789"
    assert "canary" not in repr(result.notify) and "services/T" not in repr(result.notify)


@pytest.mark.parametrize(
    ("entry", "code", "path", "loopback"),
    [
        (
            "  - {url: 'http://hooks.example.com/x', secret: {fromEnv: HOOK_KEY}}\n",
            "insecure-url",
            "url",
            True,
        ),
        ("  - {url: 'http://127.0.0.1:9/x', secret: {fromEnv: HOOK_KEY}}\n", "insecure-url", "url", False),
        (
            "  - {url: 'https://u:p@hooks.example.com/x', secret: {fromEnv: HOOK_KEY}}\n",
            "url-credentials",
            "url",
            False,
        ),
        (
            "  - {url: 'https://hooks.example.com/x#f', secret: {fromEnv: HOOK_KEY}}\n",
            "bad-url",
            "url",
            False,
        ),
        (
            "  - {url: 'https://hooks.example.com/x', secret: plaintext-key-0123456789}\n",
            "plaintext-secret",
            "secret",
            False,
        ),
        (
            "  - {url: 'https://hooks.example.com/x', secret: {fromEnv: MISSING}}\n",
            "secret-unresolved",
            "secret.fromEnv",
            False,
        ),
        (
            "  - {url: 'https://hooks.example.com/x', secret: {fromEnv: SHORT}}\n",
            "weak-notify-secret",
            "secret",
            False,
        ),
    ],
)
def test_bad_targets_name_file_line_path_and_a_fix(
    tmp_path: Path, entry: str, code: str, path: str, loopback: bool
) -> None:
    result = _validate(
        tmp_path, _instance(entry, loopback=loopback), env={"HOOK_KEY": "k" * 20, "SHORT": "short"}
    )
    (error,) = [d for d in result.diagnostics if d.is_error]
    assert error.code == code, error
    assert error.file and error.file.endswith("instance.yaml") and error.line == 7 + loopback
    assert ".".join(map(str, error.path)) == f"spec.notify.0.{path}"
    assert error.hint or code in ("secret-empty",)
    assert "plaintext-key" not in error.render() and "u:p@" not in error.render()
    assert result.notify == []


def test_a_url_declared_twice_is_refused(tmp_path: Path) -> None:
    entry = "  - {url: 'https://hooks.example.com/x', secret: {fromEnv: HOOK_KEY}}\n"
    result = _validate(tmp_path, _instance(entry * 2))
    assert [d.code for d in result.diagnostics if d.is_error] == ["duplicate-notify"]
    assert len(result.notify) == 1


def test_unknown_fields_and_a_missing_secret_are_structural_errors(tmp_path: Path) -> None:
    result = _validate(
        tmp_path, _instance("  - {url: 'https://hooks.example.com/x', secrett: {fromEnv: K}}\n")
    )
    assert {d.code for d in result.diagnostics if d.is_error} >= {"unknown-field"}
