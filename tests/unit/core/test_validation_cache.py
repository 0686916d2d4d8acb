"""The validation cache: unchanged files are not validated again, and it never makes an invalid repo valid."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from reconciler.secrets import Secret
from reconciler.validate import ValidationResult, cache, declared_state
from reconciler.validate import validator as validator_module

INSTANCE = "apiVersion: linkctl.dev/v1\nkind: Instance\nmetadata: {name: i}\nspec: {baseUrl: https://wiki.example.com}\n"
LINK = (
    "apiVersion: linkctl.dev/v1\nkind: OutgoingLink\nmetadata: {{name: {name}}}\nspec:\n"
    "  provider: google\n  clientId: {client}\n  clientSecret: {secret}\n  scopes: [openid]\n"
)
PENDING = (
    "apiVersion: linkctl.dev/v1\nkind: OutgoingLink\nmetadata: {name: p}\n"
    "spec:\n  provider: google\n  scopes: [openid]\n"
)


def link(name: str = "a", client: str = "id", secret: str = "{fromEnv: S}", renamed: str = "") -> str:
    text = LINK.format(name=name, client=client, secret=secret)
    return text.replace("metadata: {", f"metadata: {{renamedFrom: {renamed}, ") if renamed else text


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "instance.yaml").write_text(INSTANCE)
    return {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"), "S": "secret-value"}


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many full validations ran (a replay from the cache is not one)."""
    counted: list[int] = []
    original = validator_module.Validator.run

    def counting(self: Any) -> ValidationResult:
        counted.append(1)
        return original(self)

    monkeypatch.setattr(validator_module.Validator, "run", counting)
    return counted


def _revealed(value: Any) -> Any:
    """``value`` with every Secret revealed and every dataclass as a dict of all its fields."""
    if isinstance(value, Secret):
        return ("secret", value.reveal())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _revealed(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _revealed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_revealed(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted(map(repr, value))
    return value


def summary(result: ValidationResult) -> dict[str, Any]:
    """Every field of a result (secrets revealed), so a field the cache forgets shows up as a difference.

    Of the Instance, what commands read of it (a replay keeps no pydantic model).
    """
    out = {}
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if field.name == "instance":
            out[field.name] = value and (value.metadata.name, value.spec.baseUrl)
        elif field.name == "diagnostics":
            out[field.name] = [d.render() for d in value]
        else:
            out[field.name] = _revealed(value)
    out["ok"] = result.ok
    return out


def state(paths: list[Path], env: dict[str, str]) -> ValidationResult:
    return declared_state([str(p) for p in paths], env=env, meanwhile=None)


def test_an_unchanged_repo_is_replayed_exactly_without_validating(
    tmp_path: Path, env: dict[str, str], runs: list[int]
) -> None:
    links = tmp_path / "links"
    (links / "a.yaml").write_text(link() + "---\n" + PENDING)
    secret = tmp_path / "links" / "secret.txt"
    secret.write_text("file-secret\n")
    (links / "b.yaml").write_text(link("b", secret="{fromFile: secret.txt}"))
    first = state([links], env)
    assert first.ok and runs == [1] and len(first.links) == 3
    assert any("pending credentials" in d.message for d in first.diagnostics)
    second = state([links], env)
    assert runs == [1], "an unchanged repository was validated again"
    assert summary(second) == summary(first)
    cold = state([links], {**env, "LINKCTL_NO_CACHE": "1"})
    assert summary(cold) == summary(first) and runs == [1, 1]


def test_what_depends_on_the_environment_is_checked_on_every_replay(
    tmp_path: Path, env: dict[str, str], runs: list[int]
) -> None:
    links = tmp_path / "links"
    (links / "a.yaml").write_text(link())
    (links / "s.txt").write_text("from-a-file")
    (links / "b.yaml").write_text(link("b", secret="{fromFile: s.txt}"))
    assert state([links], env).ok
    unset = state([links], {k: v for k, v in env.items() if k != "S"})
    assert not unset.ok and [d.name for d in unset.links] == ["b"]
    assert [d.code for d in unset.diagnostics if d.is_error] == ["secret-unresolved"]
    (links / "s.txt").unlink()
    gone = state([links], env)
    assert not gone.ok and "cannot read secret file" in gone.diagnostics[-1].message
    (links / "s.txt").write_text("")
    assert [d.code for d in state([links], env).diagnostics] == ["secret-empty"]
    (links / "s.txt").write_text("rotated")
    changed = state([links], {**env, "S": "new-value"})
    assert {d.name: d.secrets["clientSecret"].reveal() for d in changed.links} == {
        "a": "new-value",
        "b": "rotated",
    }
    assert runs == [1], "every check above is a replay: the files did not change"


def test_an_edited_file_a_changed_instance_or_new_rules_are_validated_again(
    tmp_path: Path, env: dict[str, str], runs: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    links = tmp_path / "links"
    (links / "a.yaml").write_text(link())
    assert state([links], env).links[0].spec["clientId"] == "id"
    (links / "a.yaml").write_text(link(client="id-2"))
    assert state([links], env).links[0].spec["clientId"] == "id-2"
    assert len(runs) == 2
    (links / "instance.yaml").write_text(INSTANCE.replace("wiki.example.com", "other.example.com"))
    moved = state([links], env)
    assert moved.links[0].spec["redirectUri"].startswith("https://other.example.com/")
    assert len(runs) == 3
    (links / "instance.yaml").write_text(INSTANCE.replace("wiki.example.com", "localhost"))
    refused = state([links], env)  # the same link file is invalid under this Instance
    assert not refused.ok and len(runs) == 4
    (links / "instance.yaml").write_text(INSTANCE)
    state([links], env)
    assert len(runs) == 4  # the first Instance's entries are still there
    monkeypatch.setattr(cache, "RULES_FORMAT", "test-rules")
    cache.rules_version.cache_clear()
    try:
        state([links], env)
    finally:
        cache.rules_version.cache_clear()
    assert len(runs) == 5


def test_duplicate_names_and_renames_across_cached_files_are_still_errors(
    tmp_path: Path, env: dict[str, str], runs: list[int]
) -> None:
    links = tmp_path / "links"
    instance = links / "instance.yaml"
    (links / "one.yaml").write_text(link())
    (links / "two.yaml").write_text(link(client="other"))  # also named "a"
    (links / "old.yaml").write_text(link("old"))
    (links / "new.yaml").write_text(link("new", renamed="old"))
    for name in ("one", "two", "old", "new"):
        assert state([instance, links / f"{name}.yaml"], env).ok  # each valid alone: cached
    assert len(runs) == 4
    both = state([instance, links / "one.yaml", links / "two.yaml"], env)
    assert [d.code for d in both.diagnostics] == ["duplicate-name"] and not both.ok
    renamed = state([instance, links / "old.yaml", links / "new.yaml"], env)
    assert [d.code for d in renamed.diagnostics] == ["bad-rename"] and not renamed.ok
    assert len(runs) == 4, "the checks across files ran on a replay"
    full = state([instance, links / "one.yaml", links / "two.yaml"], {**env, "LINKCTL_NO_CACHE": "1"})
    assert summary(full) == summary(both)
    full = state([instance, links / "old.yaml", links / "new.yaml"], {**env, "LINKCTL_NO_CACHE": "1"})
    assert summary(full) == summary(renamed)


def _entries(env: dict[str, str]) -> list[Path]:
    return [p for p in Path(env["XDG_CACHE_HOME"]).rglob("valid-*/*/*") if p.is_file()]


def test_entries_are_private_and_hold_no_secret(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "links" / "a.yaml").write_text(link())
    state([tmp_path / "links"], env)
    entries = _entries(env)
    assert len(entries) == 2
    for entry in entries:
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600
        assert stat.S_IMODE(entry.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(entry.parent.parent.stat().st_mode) == 0o700
        assert b"secret-value" not in entry.read_bytes()


def test_plaintext_secrets_and_errors_are_never_cached(tmp_path: Path, env: dict[str, str]) -> None:
    links = tmp_path / "links"
    (links / "instance.yaml").write_text(INSTANCE.replace(".com}", ".com, allowPlaintextSecrets: true}"))
    (links / "a.yaml").write_text(link(secret="plaintext-secret-value"))
    (links / "bad.yaml").write_text(link("b", secret="{fromEnv: UNSET}"))
    result = state([links], env)
    assert [d.code for d in result.diagnostics] == ["secret-unresolved"]
    cached = [e.read_bytes() for e in _entries(env)]
    assert len(cached) == 1  # the Instance file only
    assert not any(b"plaintext-secret-value" in blob for blob in cached)


@pytest.mark.parametrize(
    "damage", ["flip", "truncate", "forged", "group-writable", "symlink", "foreign-shape"]
)
def test_a_damaged_or_foreign_entry_is_a_miss(
    tmp_path: Path, env: dict[str, str], runs: list[int], damage: str
) -> None:
    links = tmp_path / "links"
    (links / "a.yaml").write_text(link())
    good = summary(state([links], env))
    (entry,) = [e for e in _entries(env) if b"OutgoingLink" in e.read_bytes()]
    blob = entry.read_bytes()
    if damage == "flip":
        entry.write_bytes(blob[:-3] + bytes([blob[-3] ^ 1]) + blob[-2:])
    elif damage == "truncate":
        entry.write_bytes(blob[:40])
    elif damage == "forged":  # a valid checksum does not make any payload an entry
        import hashlib
        import marshal

        payload = marshal.dumps([(0, "OutgoingLink", "a", (), [], "", ("a",), ("env", "S", 0))])
        entry.write_bytes(hashlib.sha256(payload).digest() + payload)
    elif damage == "foreign-shape":
        import hashlib
        import marshal

        payload = marshal.dumps({"not": "a list of entries"})
        entry.write_bytes(hashlib.sha256(payload).digest() + payload)
    elif damage == "group-writable":
        os.chmod(entry, 0o620)
    else:
        target = tmp_path / "planted"
        target.write_bytes(blob)
        entry.unlink()
        entry.symlink_to(target)
    assert summary(state([links], env)) == good
    assert runs == [1, 1], "a damaged entry was trusted"


def test_a_planted_entry_cannot_make_an_invalid_file_valid(
    tmp_path: Path, env: dict[str, str], runs: list[int]
) -> None:
    """An entry written for a valid text never answers for another text (keys are by content)."""
    links = tmp_path / "links"
    (links / "a.yaml").write_text(link())
    state([links], env)
    (links / "a.yaml").write_text(link(secret="{fromEnvv: S}"))  # a typo: invalid
    result = state([links], env)
    assert not result.ok and [d.code for d in result.diagnostics] == ["secret-source"]
    again = state([links], env)
    assert not again.ok and len(runs) == 3  # an invalid file is validated every time


def test_a_sops_file_is_decrypted_on_every_replay(tmp_path: Path, runs: list[int]) -> None:
    import shutil

    from tests.conftest import ROOT

    repo = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", repo)
    env = {
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "TRACKER_CLIENT_SECRET": "tracker-secret",
        "SOPS_AGE_KEY_FILE": str(repo / "keys" / "demo-age-key.txt"),
    }
    first = state([repo], env)
    assert first.ok
    second = state([repo], env)
    assert runs == [1] and summary(second) == summary(first)
    sealed = [d for d in second.links if d.name == "support-gmail"]
    assert sealed and sealed[0].secrets["clientSecret"].reveal()
    cached = b"".join(e.read_bytes() for e in _entries(env))
    assert sealed[0].secrets["clientSecret"].reveal().encode() not in cached
    no_key = state([repo], {**env, "SOPS_AGE_KEY_FILE": str(tmp_path / "missing.txt")})
    assert not no_key.ok, "a SOPS file that cannot be decrypted was replayed as valid"


NOTIFY = "  notify:\n    - url: https://hooks.example.com/linkctl\n      secret: {fromEnv: HOOK_SECRET}\n"


def test_an_instance_with_webhooks_is_validated_in_full_and_keeps_its_targets(
    tmp_path: Path, env: dict[str, str], runs: list[int]
) -> None:
    # Webhook secrets come from the environment, which an entry never holds: such a run is
    # never replayed, and every run has the same targets as a run without the cache.
    links = tmp_path / "links"
    (links / "instance.yaml").write_text(
        INSTANCE.replace(
            "spec: {baseUrl: https://wiki.example.com}\n",
            "spec:\n  baseUrl: https://wiki.example.com\n" + NOTIFY,
        )
    )
    (links / "a.yaml").write_text(link())
    env = {**env, "HOOK_SECRET": "hook-secret-0123456789"}
    first = state([links], env)
    assert first.ok and len(first.notify) == 1 and first.notify[0].secret.reveal() == env["HOOK_SECRET"]
    second = state([links], env)
    assert runs == [1, 1], "a run with webhook targets was replayed from the cache"
    assert summary(second) == summary(first)
    assert summary(state([links], {**env, "LINKCTL_NO_CACHE": "1"})) == summary(first)
    changed = state([links], {**env, "HOOK_SECRET": "another-secret-0123456789"})
    assert changed.notify[0].secret.reveal() == "another-secret-0123456789"


@pytest.mark.parametrize("example", ["examples"])
def test_a_replay_of_the_examples_equals_a_full_validation(
    tmp_path: Path, env: dict[str, str], runs: list[int], example: str
) -> None:
    # Every field of the result, for the shipped examples: a field the cache forgets fails here.
    repo = tmp_path / "repo"
    shutil.copytree(Path(__file__).resolve().parents[3] / example, repo)
    secrets = {name: "example-value-0123456789" for name in _env_names(repo)}
    env = {**env, **secrets, "SOPS_AGE_KEY_FILE": str(repo / "keys" / "demo-age-key.txt")}
    first = state([repo], env)
    assert first.ok and first.links, [d.render() for d in first.diagnostics]
    second = state([repo], env)
    uncached = state([repo], {**env, "LINKCTL_NO_CACHE": "1"})
    assert summary(second) == summary(first) == summary(uncached)
    assert len(runs) == 2, "an unchanged valid repository was validated again"


def _env_names(repo: Path) -> set[str]:
    """The variables the repository's files name with ``fromEnv``."""
    import re

    names: set[str] = set()
    for path in repo.rglob("*.yaml"):
        names.update(re.findall(r"fromEnv:\s*([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))
    return names


def test_no_cache_file_holds_a_plaintext_secret_that_allow_plaintext_let_through(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # allowPlaintextSecrets lets plaintext credentials validate; neither the parse cache nor
    # the validation cache may then keep a copy of them (both are keyed by content and live on).
    links = tmp_path / "links"
    (links / "instance.yaml").write_text(
        INSTANCE.replace(
            "spec: {baseUrl: https://wiki.example.com}\n",
            "spec:\n  baseUrl: https://wiki.example.com\n  allowPlaintextSecrets: true\n"
            "  notify:\n    - url: https://hooks.example.com/x\n"
            "      secret: plaintext-hook-key-0123456789\n",
        )
    )
    (links / "a.yaml").write_text(
        link().replace("  scopes:", "  tokenParams: {client_assertion: plaintext-assertion-value}\n  scopes:")
    )
    (links / "b.yaml").write_text(link("b"))  # nothing plaintext: may be cached
    first = state([links], env)
    assert first.ok, [d.render() for d in first.diagnostics]
    assert state([links], env).ok
    files = [p for p in Path(env["XDG_CACHE_HOME"]).rglob("*") if p.is_file()]
    assert files, "nothing was cached at all: the check proves nothing"
    for blob in (p.read_bytes() for p in files):
        assert b"plaintext-assertion-value" not in blob and b"plaintext-hook-key" not in blob
