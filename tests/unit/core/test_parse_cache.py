"""The parse cache: unchanged files are not parsed again; nothing secret is ever cached."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from reconciler.load import load_paths, parse, parse_cache, remember_parsed
from reconciler.validate import validate

INSTANCE = "apiVersion: linkctl.dev/v1\nkind: Instance\nmetadata: {name: i}\nspec: {baseUrl: https://wiki.example.com}\n"
LINK = (
    "apiVersion: linkctl.dev/v1\nkind: OutgoingLink\nmetadata: {name: a}\nspec:\n"
    "  provider: google\n  clientId: id\n  clientSecret: {fromEnv: S}\n  scopes: [openid]\n"
)


def _cycle(tmp_path: Path, env: dict[str, str]) -> list[str]:
    loaded = load_paths([str(tmp_path / "links")], env=env)
    result = validate(loaded, env=env)
    remember_parsed(loaded, result.diagnostics)
    return [d.render() for d in result.diagnostics if d.is_error]


def _entries(env: dict[str, str]) -> list[Path]:
    return [p for p in Path(env["XDG_CACHE_HOME"]).rglob("*") if p.is_file()]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "instance.yaml").write_text(INSTANCE)
    return {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"), "S": "secret-value"}


def test_unchanged_files_are_not_parsed_again(tmp_path: Path, env: dict[str, str], monkeypatch) -> None:
    (tmp_path / "links" / "a.yaml").write_text(LINK)
    assert _cycle(tmp_path, env) == []
    assert len(_entries(env)) == 2

    def no_parse(*_: object) -> None:
        raise AssertionError("a cached file was parsed again")

    monkeypatch.setattr(parse, "parse_text", no_parse)
    loaded = load_paths([str(tmp_path / "links")], env=env)
    result = validate(loaded, env=env)
    assert result.ok and [link.name for link in result.links] == ["a"]
    (doc,) = [d for d in loaded.documents if d.name == "a"]
    assert doc.locate(("spec", "scopes", 0)) == (8, 12)  # positions still exact


def test_files_with_errors_or_plaintext_secrets_are_not_cached(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "links" / "typo.yaml").write_text(LINK.replace("fromEnv: S", "fromEnvv: secret-in-a-typo"))
    assert _cycle(tmp_path, env)
    (tmp_path / "links" / "typo.yaml").unlink()
    (tmp_path / "links" / "instance.yaml").write_text(
        INSTANCE.replace(
            "baseUrl: https://wiki.example.com",
            "baseUrl: https://wiki.example.com, allowPlaintextSecrets: true",
        )
    )
    (tmp_path / "links" / "plain.yaml").write_text(LINK.replace("{fromEnv: S}", "plaintext-secret-value"))
    assert _cycle(tmp_path, env) == []
    cached = b"".join(p.read_bytes() for p in _entries(env))
    assert b"secret-in-a-typo" not in cached and b"plaintext-secret-value" not in cached
    assert len(_entries(env)) == 2  # the two versions of the instance file, nothing else


def test_corrupt_entries_are_misses_and_the_cache_can_be_turned_off(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "links" / "a.yaml").write_text(LINK)
    _cycle(tmp_path, env)
    for entry in _entries(env):
        entry.write_bytes(b"\x00garbage")
    assert _cycle(tmp_path, env) == []
    off = {**env, "LINKCTL_NO_CACHE": "1", "XDG_CACHE_HOME": str(tmp_path / "other")}
    assert _cycle(tmp_path, off) == [] and _entries(off) == []


def test_other_tools_documents_keep_a_file_out_of_the_cache(tmp_path: Path, env: dict[str, str]) -> None:
    # A Kubernetes Secret next to a link: the file validates (the Secret is skipped), but
    # its stringData is plaintext that must not be copied to ~/.cache.
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: k8s-canary-9}\n"
    (tmp_path / "links" / "mixed.yaml").write_text(LINK + "---\n" + secret)
    assert _cycle(tmp_path, env) == []
    assert b"k8s-canary-9" not in b"".join(p.read_bytes() for p in _entries(env))
    assert len(_entries(env)) == 1  # the instance file only


def test_cache_is_private_whatever_the_umask(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "links" / "a.yaml").write_text(LINK)
    old = os.umask(0)
    try:
        assert _cycle(tmp_path, env) == []
    finally:
        os.umask(old)
    entries = _entries(env)
    assert entries and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in entries)
    assert all(stat.S_IMODE(p.parent.stat().st_mode) == 0o700 for p in entries)
    assert all(stat.S_IMODE(p.parent.parent.stat().st_mode) == 0o700 for p in entries)


def _plant(entry: Path) -> None:
    """Rewrite a cache entry so that it declares another clientId than the file does."""
    parsed, per_document, json_fallback = parse_cache.ParseCache.decode(entry.read_bytes(), "x")  # type: ignore[misc]
    for data, _ in parsed:
        if data.get("kind") == "OutgoingLink":
            data["spec"]["clientId"] = "planted-by-someone-else"
    entry.write_bytes(parse_cache.ParseCache.encode(parsed, per_document, json_fallback))


@pytest.mark.parametrize(
    "spoil",
    [
        lambda p: os.chown(p, 12345, -1),
        lambda p: os.chmod(p, 0o602),
        lambda p: os.chmod(p.parent, 0o777),
        lambda p: os.chown(p.parent, 12345, -1),
    ],
    ids=["entry-not-ours", "entry-world-writable", "dir-world-writable", "dir-not-ours"],
)
def test_an_entry_planted_by_another_user_is_ignored(tmp_path: Path, env: dict[str, str], spoil) -> None:
    (tmp_path / "links" / "a.yaml").write_text(LINK)
    assert _cycle(tmp_path, env) == []
    for entry in _entries(env):
        _plant(entry)
    loaded = load_paths([str(tmp_path / "links")], env=env)
    assert (
        validate(loaded, env=env).links[0].spec["clientId"] == "planted-by-someone-else"
    )  # the cache is used
    for entry in _entries(env):
        spoil(entry)
    loaded = load_paths([str(tmp_path / "links")], env=env)
    assert validate(loaded, env=env).links[0].spec["clientId"] == "id"  # the file's real contents
