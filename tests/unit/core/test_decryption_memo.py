"""load.decryption_memo: ``validate`` leaves a SOPS file closed only if those bytes opened with these keys."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from reconciler import sops
from reconciler.load.decryption_memo import DecryptionMemo, identity_fingerprint
from reconciler.load.parse_cache import source_fingerprint
from reconciler.validate import ValidationResult, declared_state
from tests.conftest import ROOT

SOPS_FILE = "links/google-support-mail.yaml"
DEPLOYMENT_RECIPES = ("kubernetes", "systemd", "ci")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The examples' link repository (one SOPS file), without the deployment recipes."""
    target = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", target, ignore=shutil.ignore_patterns(*DEPLOYMENT_RECIPES))
    return target


@pytest.fixture
def env(tmp_path: Path, repo: Path) -> dict[str, str]:
    return {
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "TRACKER_CLIENT_SECRET": "tracker-secret",
        "SOPS_AGE_KEY_FILE": str(repo / "keys" / "demo-age-key.txt"),
    }


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SOPS files decrypted, in order."""
    names: list[str] = []
    original = sops.decrypt_text

    def counting(text: str, **kw: Any) -> list[Any]:
        names.append(kw["filename"])
        return original(text, **kw)

    monkeypatch.setattr(sops, "decrypt_text", counting)
    return names


def validate(repo: Path, env: dict[str, str], **kw: Any) -> ValidationResult:
    """What ``linkctl validate`` asks for: no secret values."""
    return declared_state([str(repo)], env=env, meanwhile=None, secret_values=False, **kw)


def shown(result: ValidationResult) -> tuple[Any, ...]:
    """What ``validate`` prints of a result."""
    return (
        result.ok,
        [d.render() for d in result.diagnostics],
        result.files,
        sorted(link.name for link in result.links),
        result.skipped,
    )


def test_an_unchanged_sops_file_is_opened_once_then_vouched_for(
    repo: Path, env: dict[str, str], opened: list[str]
) -> None:
    first = validate(repo, env)
    assert first.ok, [d.render() for d in first.diagnostics]
    second = validate(repo, env)
    third = validate(repo, env)
    assert len(opened) == 1, "an unchanged SOPS file was opened again"
    uncached = validate(repo, {**env, "LINKCTL_NO_CACHE": "1"})
    assert shown(second) == shown(third) == shown(first) == shown(uncached)


def test_plan_still_gets_the_decrypted_secret(repo: Path, env: dict[str, str], opened: list[str]) -> None:
    validate(repo, env)
    validate(repo, env)
    planned = declared_state([str(repo)], env=env, meanwhile=None)  # plan's call: values needed
    assert len(opened) == 2
    secret = next(link for link in planned.links if link.name == "support-gmail").secrets["clientSecret"]
    assert not secret.reveal().startswith("ENC[")


@pytest.mark.parametrize(
    "change",
    ["key removed", "another key", "key added inline", "key command", "ignore mac", "no cache"],
)
def test_other_identities_or_options_open_the_file_again(
    repo: Path, env: dict[str, str], opened: list[str], tmp_path: Path, change: str
) -> None:
    assert validate(repo, env).ok and validate(repo, env).ok and len(opened) == 1
    kw: dict[str, Any] = {}
    changed = dict(env)
    if change == "key removed":
        changed["SOPS_AGE_KEY_FILE"] = str(tmp_path / "missing.txt")
    elif change == "another key":
        # Same path, other content: the demo key plus a line that is no identity.
        Path(env["SOPS_AGE_KEY_FILE"]).write_text(Path(env["SOPS_AGE_KEY_FILE"]).read_text() + "# rotated\n")
    elif change == "key added inline":
        changed["SOPS_AGE_KEY"] = Path(env["SOPS_AGE_KEY_FILE"]).read_text()
    elif change == "key command":
        changed["SOPS_AGE_KEY_CMD"] = f"cat {env['SOPS_AGE_KEY_FILE']}"
    elif change == "ignore mac":
        kw["ignore_mac"] = True
    else:
        changed["LINKCTL_NO_CACHE"] = "1"
    result = validate(repo, changed, **kw)
    assert len(opened) == 2, f"{change}: the memo vouched for a file under other identities"
    if change == "key removed":
        assert not result.ok and any(d.code == "sops" for d in result.diagnostics)
    else:
        assert result.ok


def test_an_edited_sops_file_is_opened_and_its_tampering_found(
    repo: Path, env: dict[str, str], opened: list[str]
) -> None:
    assert validate(repo, env).ok and validate(repo, env).ok
    path = repo / SOPS_FILE
    text = path.read_text()
    assert "clientId: " in text
    path.write_text(text.replace("clientId: ", "clientId: x", 1))  # a plain value under the MAC
    tampered = validate(repo, env)
    assert len(opened) == 2 and not tampered.ok
    assert any("MAC" in d.message for d in tampered.diagnostics), [d.render() for d in tampered.diagnostics]


def test_the_same_text_read_as_json_is_opened_again(
    repo: Path, env: dict[str, str], opened: list[str]
) -> None:
    # The format is the file name's: a YAML SOPS file renamed to .json does not open as JSON.
    assert validate(repo, env).ok and validate(repo, env).ok and len(opened) == 1
    (repo / SOPS_FILE).rename((repo / SOPS_FILE).with_suffix(".json"))
    renamed = validate(repo, env)
    assert len(opened) == 2 and not renamed.ok
    assert shown(renamed) == shown(validate(repo, {**env, "LINKCTL_NO_CACHE": "1"}))


def test_a_default_keys_folder_that_cannot_be_searched_is_noted_not_a_crash(
    repo: Path, env: dict[str, str], opened: list[str]
) -> None:
    # Stat of ~/.config/sops/age/keys.txt fails (here: a name too long; a root-owned folder
    # left by `sudo sops` is the usual case): the memo is off and the keyring says why.
    env = {**env, "XDG_CONFIG_HOME": "/tmp/" + "x" * 300}
    for _ in range(2):
        assert validate(repo, env).ok
    assert len(opened) == 2


def test_a_validation_cache_miss_opens_the_vouched_file_and_validates_in_full(
    repo: Path, env: dict[str, str], opened: list[str]
) -> None:
    # The Instance is in every validation cache key: editing it is a miss for every file,
    # and the rules must then see the decrypted value, not its stand-in.
    assert validate(repo, env).ok and validate(repo, env).ok and len(opened) == 1
    instance = repo / "instance.yaml"
    instance.write_text(instance.read_text() + "\n# edited\n")
    result = validate(repo, env)
    assert len(opened) == 2 and result.ok
    assert shown(result) == shown(validate(repo, {**env, "LINKCTL_NO_CACHE": "1"}))


def test_a_file_with_another_encrypted_value_is_opened_every_time(
    repo: Path, env: dict[str, str], opened: list[str], tmp_path: Path
) -> None:
    path = repo / SOPS_FILE
    plain = sops.dump_documents(
        sops.decrypt_text(path.read_text(), filename="f", fmt="yaml", env=env), fmt="yaml"
    )
    opened.clear()
    rule = sops.EncryptionRule(encrypted_regex="^(clientSecret|clientId)$")
    encrypted = sops.encrypt_text(
        plain, filename=str(path), fmt="yaml", env=env, recipients=[_recipient(env)], rule=rule
    )
    assert encrypted.count("ENC[") >= 2
    path.write_text(encrypted)
    for _ in range(3):
        assert validate(repo, env).ok
    assert len(opened) == 3, "a file whose clientId is encrypted was vouched for"
    memo = DecryptionMemo.for_env(env, ignore_mac=False)
    assert memo is not None
    # Even an entry planted for it is not enough: the file's other ENC value is seen.
    from reconciler.load.parse_cache import ParseCache

    key = ParseCache.key(path.read_text())
    memo._blobs.put(memo._key(key, "yaml"), b"opened\n")
    assert memo.opened_before(key, "yaml")
    assert validate(repo, env).ok and len(opened) == 4


def _recipient(env: dict[str, str]) -> str:
    return next(
        line.split(": ", 1)[1]
        for line in Path(env["SOPS_AGE_KEY_FILE"]).read_text().splitlines()
        if line.startswith("# public key: ")
    )


def test_entries_are_private_and_hold_neither_a_value_nor_a_key(repo: Path, env: dict[str, str]) -> None:
    validate(repo, env)
    entries = [p for p in (Path(env["XDG_CACHE_HOME"]) / "linkctl").glob("opened-*/*/*") if p.is_file()]
    assert len(entries) == 1
    assert {p.read_bytes() for p in entries} == {b"opened\n"}
    assert all(os.stat(p).st_mode & 0o077 == 0 for p in entries)
    folders = {p.parent for p in entries} | {p.parent.parent for p in entries}
    assert all(os.stat(d).st_mode & 0o777 == 0o700 for d in folders)


def test_a_key_source_that_is_no_regular_file_turns_the_memo_off(tmp_path: Path) -> None:
    fifo = tmp_path / "keys.fifo"
    os.mkfifo(fifo)
    assert identity_fingerprint({"SOPS_AGE_KEY_FILE": str(fifo)}) is None
    assert identity_fingerprint({"SOPS_AGE_KEY_FILE": str(tmp_path)}) is None
    assert identity_fingerprint({"SOPS_AGE_KEY_FILE": str(tmp_path / "missing")}) is None
    assert identity_fingerprint({"SOPS_AGE_KEY_CMD": "true"}) is None
    assert identity_fingerprint({"SOPS_AGE_KEY": "a"}) != identity_fingerprint({"SOPS_AGE_KEY": "b"})


def test_entries_made_by_other_opening_code_do_not_vouch(
    repo: Path, env: dict[str, str], opened: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.load import decryption_memo

    sources = [entry.split(":")[0] for entry in source_fingerprint(decryption_memo._OPENING_CODE)]
    assert {"sops/tree.py", "sops/yamlv3/read.py", "load/sops_overlay.py", "load/decryption_memo.py"} <= set(
        sources
    )
    assert not any("__pycache__" in s or not s.endswith(".py") for s in sources)
    assert validate(repo, env).ok and validate(repo, env).ok and len(opened) == 1
    edited = [*source_fingerprint(decryption_memo._OPENING_CODE), "sops/tree.py:1:1"]
    monkeypatch.setattr(decryption_memo, "source_fingerprint", lambda names: edited)
    assert validate(repo, env).ok and len(opened) == 2, "an entry of the old SOPS code vouched"
