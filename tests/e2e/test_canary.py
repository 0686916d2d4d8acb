"""No secret in plaintext outside memory (DESIGN.md §5 invariant 1), checked with canaries.

Links take a unique canary secret from ``fromEnv``, ``fromFile`` and a SOPS-encrypted file;
every command (including failing ones) runs as a subprocess, and the canary must appear in
no stdout/stderr, no plan file, and not in the bytes of the SQLite file or its -wal/-shm.
``secrets decrypt`` is left out: it prints plaintext by design.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

from tests.conftest import require
from tests.support.cli import INSTANCE, Linkctl, Result, link_doc


class Recorder:
    """Runs linkctl and keeps every result, so all output can be searched for the canary."""

    def __init__(self, linkctl: Linkctl) -> None:
        self.linkctl = linkctl
        self.results: list[Result] = []

    def __call__(self, *args: str, **kw: object) -> Result:
        result = self.linkctl(*args, **kw)  # type: ignore[arg-type]
        self.results.append(result)
        return result


def _stored_secret(linkctl: Linkctl, name: str) -> str | None:
    """Read a stored secret back through the store API (proves it was stored at all)."""
    code = (
        "import os, sys\n"
        "from reconciler.settings import Settings\n"
        "from reconciler.store import open_store\n"
        "s = open_store(Settings.from_env(os.environ))\n"
        "v = s.read_secret(sys.argv[1], 'clientSecret')\n"
        "sys.stdout.write('<none>' if v is None else v.reveal())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, name],
        env=linkctl.env,
        cwd=linkctl.cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return None if out == "<none>" else out


def _sops_available(run: Recorder) -> bool:
    help_text = run("secrets", "encrypt", "--help", expect=None)
    return help_text.returncode == 0 and "--age" in help_text.stdout


def test_canary_secret_never_leaves_memory(linkctl: Linkctl) -> None:
    marker = f"canary-{uuid.uuid4().hex}"
    secrets = {
        "env": f"{marker}-env-1",
        "file": f"{marker}-file-1",
        "sops": f"{marker}-sops-1",
    }
    run = Recorder(linkctl)
    work = linkctl.cwd
    links = work / "links"
    links.mkdir()
    (links / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    (links / "env.yaml").write_text(link_doc("canary-env", secret_env="CANARY_SECRET"), encoding="utf-8")
    secret_dir = work / "secret-files"  # outside links/: only the link file reads it
    secret_dir.mkdir()
    (secret_dir / "client-secret.txt").write_text(secrets["file"] + "\n", encoding="utf-8")
    (links / "file.yaml").write_text(
        link_doc("canary-file", provider="microsoft", scopes=["https://graph.microsoft.com/Mail.Read"])
        + "  clientSecret:\n    fromFile: ../secret-files/client-secret.txt\n",
        encoding="utf-8",
    )
    linkctl.env["CANARY_SECRET"] = secrets["env"]
    linkctl.env["LINKCTL_SECRET_DIRS"] = str(secret_dir)  # like a /run/secrets mount outside the tree

    names = ["canary-env", "canary-file"]
    sops = _sops_available(run)
    # A missing SOPS path fails under CI instead of silently dropping the SOPS canary.
    require(sops, "`linkctl secrets encrypt --age` is unavailable, the SOPS canary cannot run")
    if sops:
        run("keygen", "-o", str(work / "age-key.txt"))
        recipient = re.search(r"age1[0-9a-z]+", (work / "age-key.txt").read_text()).group(0)  # type: ignore[union-attr]
        plain = link_doc("canary-sops").replace("  scopes:", f"  clientSecret: {secrets['sops']}\n  scopes:")
        (links / "sops.yaml").write_text(plain, encoding="utf-8")
        run("secrets", "encrypt", "--age", recipient, "--in-place", "links/sops.yaml")
        encrypted = (links / "sops.yaml").read_text(encoding="utf-8")
        assert marker not in encrypted and "ENC[AES256_GCM," in encrypted
        linkctl.env["SOPS_AGE_KEY_FILE"] = str(work / "age-key.txt")
        names.append("canary-sops")

    # Keep a connection open so the WAL survives between runs and its bytes can be inspected.
    db = linkctl.state_db
    run("state", "show")  # a read-only command: it creates nothing ...
    assert not db.exists()
    run("plan", "--out", str(work / "plan-0.json"), str(links))  # ... a saved plan creates the store
    keep_open = sqlite3.connect(db)
    keep_open.execute("SELECT count(*) FROM links").fetchone()
    plan_files: list[Path] = []

    try:
        run("validate", "links")
        run("validate", "-v", "-o", "json", "links")
        run("plan", "links")
        run("plan", "-v", "links")
        run("plan", "-o", "json", "links")
        plan_files.append(work / "plan1.json")
        run("plan", "--out", str(plan_files[-1]), "links")
        run("apply", "--plan", str(plan_files[-1]))
        run("apply", "links")
        run("apply", "-o", "json", "links")
        run("reconcile", "links")
        run("reconcile", "-o", "json", "links")
        # The secrets were stored (encrypted), so the checks below are not vacuous.
        for name in names:
            assert _stored_secret(linkctl, name) == secrets[name.split("-")[1]]

        # Change every secret: the plan says so without any value.
        secrets = {k: v.replace("-1", "-2") for k, v in secrets.items()}
        linkctl.env["CANARY_SECRET"] = secrets["env"]
        (secret_dir / "client-secret.txt").write_text(secrets["file"] + "\n", encoding="utf-8")
        if sops:
            (links / "sops.yaml").write_text(
                link_doc("canary-sops").replace("  scopes:", f"  clientSecret: {secrets['sops']}\n  scopes:"),
                encoding="utf-8",
            )
            run("secrets", "encrypt", "--age", recipient, "--in-place", "links/sops.yaml")
        changed = run("plan", "--detailed-exitcode", "links", expect=2)
        for name in names:
            assert f"~ update {name} " in changed.stdout
        assert changed.stdout.count("clientSecret: (sensitive value changed)") == len(names), changed
        as_json = run("plan", "-o", "json", "links").json()
        for change in as_json["changes"]:
            assert change["fields"] == [{"path": "clientSecret", "sensitive": True}], change
        plan_files.append(work / "plan2.json")
        run("plan", "--out", str(plan_files[-1]), "links")
        run("apply", "--plan", str(plan_files[-1]))
        for name in names:
            assert _stored_secret(linkctl, name) == secrets[name.split("-")[1]]

        for cmd in (["list"], ["list", "-o", "json"], ["state", "show"], ["state", "show", "-o", "json"]):
            run(*cmd)
        run("state", "events", "--limit", "500")
        run("state", "events", "--limit", "500", "-o", "json")
        for name in names:
            run("show", name)
            run("show", "-o", "json", name)
            run("redirect-url", name)
            run("redirect-url", name, "--from", "links")
            run("state", "events", "--link", name)

        # Failing commands: a stale plan, and bad files that hold a canary in odd places.
        plan_files.append(work / "stale.json")
        run("plan", "--out", str(plan_files[-1]), "links")
        linkctl.env["CANARY_SECRET"] = secrets["env"].replace("-2", "-3")
        run("apply", "links")
        run("apply", "--plan", str(plan_files[-1]), expect=4)
        bad_files = {
            "plaintext.yaml": link_doc("bad-plain").replace(
                "  scopes:", f"  clientSecret: {marker}-plain\n  scopes:"
            ),
            "list.yaml": link_doc("bad-list").replace(
                "  scopes:", f"  clientSecret: [{marker}-list]\n  scopes:"
            ),
            "typo.yaml": link_doc("bad-typo").replace(
                "  scopes:", f"  clientSecret:\n    fromEnvv: {marker}-typo\n  scopes:"
            ),
            "syntax.yaml": link_doc("bad-syntax").replace(
                "  scopes:", f'  clientSecret: "{marker}-syntax\n  scopes:'
            ),
            "mapping.yaml": link_doc("bad-map").replace(
                "  scopes:", f"  clientSecret: {{{marker}: x}}\n  scopes:"
            ),
            "tagged.yaml": link_doc("bad-tag").replace(
                "  scopes:", f"  clientSecret: !secret {marker}-tag\n  scopes:"
            ),
            "yaml11.yaml": link_doc("bad-yaml11").replace(
                "  scopes:", f"  clientId: {marker}\n  clientId: on\n  scopes:"
            ),
        }
        for file_name, text in bad_files.items():
            bad = work / "bad" / file_name
            bad.parent.mkdir(exist_ok=True)
            bad.write_text(INSTANCE + "---\n" + text, encoding="utf-8")
            run("validate", str(bad), expect=3)
            run("validate", "-o", "json", str(bad), expect=3)
            run("plan", str(bad), expect=3)
            run("--debug", "apply", str(bad), expect=3)
        run("apply", "links", env={"SOPS_AGE_KEY_FILE": str(work / "nope.txt")}, expect=3 if sops else 0)
        run("validate", "links", env={"CANARY_SECRET": ""}, expect=3)

        wal = Path(str(db) + "-wal")
        assert wal.exists() and wal.stat().st_size > 0, "the WAL should hold recent commits"
        stores = {p: p.read_bytes() for p in (db, wal, Path(str(db) + "-shm")) if p.exists()}
    finally:
        keep_open.close()

    leaks = [str(r) for r in run.results if marker in r.output]
    assert not leaks, "canary printed by:\n" + "\n".join(leaks)
    for path in plan_files:
        text = path.read_text(encoding="utf-8")
        json.loads(text)
        assert marker not in text, path
    for path, data in stores.items():
        assert marker.encode() not in data, f"canary in plaintext in {path}"
        assert marker.encode("utf-16-le") not in data, f"canary (UTF-16) in {path}"
    # Nothing else linkctl wrote (key file, state dir, anything under HOME) holds it either.
    for root, _dirs, files in os.walk(linkctl.env["HOME"]):
        for file_name in files:
            path = Path(root, file_name)
            assert marker.encode() not in path.read_bytes(), f"canary in {path}"
    # The final store is readable after the WAL checkpoint too.
    final = db.read_bytes()
    assert marker.encode() not in final
