"""Encrypted stays secret: SOPS-encrypted clientId and tokenParams are sealed, never stored readable.

Needs no sops or age binary: ``linkctl keygen`` and ``linkctl secrets encrypt`` write the file
(``tests/e2e/test_encrypted_fields.py`` does the same with the real sops binary, where it is
installed). After ``apply`` no canary may be in the store's bytes (file, -wal, -shm) and
``show`` must report the values as stored encrypted, while the link still holds them.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.cli import INSTANCE, Linkctl


def _link(canaries: dict[str, str]) -> str:
    return (
        "apiVersion: linkctl.dev/v1\nkind: OutgoingLink\nmetadata:\n  name: reports\nspec:\n"
        "  provider: custom\n  grant: client_credentials\n  clientAuth: client_secret_post\n"
        "  tokenEndpoint: https://id.example.com/token\n"
        f"  clientId: {canaries['id']}\n  clientSecret: {canaries['secret']}\n"
        "  scopes: [reports.read]\n  tokenParams:\n"
        f"    client_assertion: {canaries['assertion']}\n    audience: reports\n"
    )


def _stored(linkctl: Linkctl, field: str) -> str:
    """A sealed value read back through the store API (the checks below are not vacuous)."""
    code = (
        "import os, sys\n"
        "from reconciler.settings import Settings\n"
        "from reconciler.store import open_store\n"
        "v = open_store(Settings.from_env(os.environ)).read_secret('reports', sys.argv[1])\n"
        "sys.stdout.write('<none>' if v is None else v.reveal())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, field],
        env=linkctl.env,
        cwd=linkctl.cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_sops_encrypted_client_id_and_token_params_are_sealed_not_stored_readable(linkctl: Linkctl) -> None:
    marker = f"canary-{uuid.uuid4().hex}"
    canaries = {"id": f"{marker}-id", "secret": f"{marker}-secret", "assertion": f"{marker}-jwt"}
    work = linkctl.cwd
    links = work / "links"
    links.mkdir()
    (links / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    linkctl("keygen", "-o", str(work / "age-key.txt"))
    found = re.search(r"age1[0-9a-z]+", (work / "age-key.txt").read_text(encoding="utf-8"))
    assert found is not None
    linkctl.env["SOPS_AGE_KEY_FILE"] = str(work / "age-key.txt")
    (links / "reports.yaml").write_text(_link(canaries), encoding="utf-8")
    regex = "^(clientId|clientSecret|client_assertion)$"
    target = links / "reports.yaml"
    linkctl("secrets", "encrypt", "--age", found.group(0), "--encrypted-regex", regex, "-i", str(target))
    encrypted = (links / "reports.yaml").read_text(encoding="utf-8")
    assert marker not in encrypted and "audience: reports" in encrypted

    db = linkctl.state_db
    outputs = [linkctl("plan", "links"), linkctl("apply", "links")]
    keep_open = sqlite3.connect(db)  # the WAL survives, so its bytes are checked too
    try:
        keep_open.execute("SELECT count(*) FROM links").fetchone()
        shown = linkctl("show", "-o", "json", "reports")
        outputs += [shown, linkctl("show", "reports"), linkctl("list", "-o", "json")]
        stores = {p: p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()}
    finally:
        keep_open.close()

    assert shown.json()["client_id"] == "(stored, encrypted)"
    sealed = "(stored, encrypted)"
    assert shown.json()["spec"]["tokenParams"] == {"audience": "reports", "client_assertion": sealed}
    assert _stored(linkctl, "clientId") == canaries["id"]
    assert _stored(linkctl, "tokenParams.client_assertion") == canaries["assertion"]
    for path, data in stores.items():
        for name, canary in canaries.items():
            assert canary.encode() not in data, f"the encrypted {name} is readable in {path}"
    leaks = [str(r) for r in outputs if marker in r.output]
    assert not leaks, "canary printed by:\n" + "\n".join(leaks)


def test_a_link_file_edited_after_linkctl_encrypted_it_is_refused_by_the_mac(linkctl: Linkctl) -> None:
    """A readable value edited by hand breaks the file's MAC: validate, plan and apply refuse it."""
    work = linkctl.cwd
    links = work / "links"
    links.mkdir()
    (links / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    linkctl("keygen", "-o", str(work / "age-key.txt"))
    found = re.search(r"age1[0-9a-z]+", (work / "age-key.txt").read_text(encoding="utf-8"))
    assert found is not None
    linkctl.env["SOPS_AGE_KEY_FILE"] = str(work / "age-key.txt")
    target = links / "reports.yaml"
    target.write_text(
        _link({"id": "reports-client", "secret": "s3cret", "assertion": "jwt"}), encoding="utf-8"
    )
    regex = "^(clientSecret|client_assertion)$"
    linkctl("secrets", "encrypt", "--age", found.group(0), "--encrypted-regex", regex, "-i", str(target))
    linkctl("validate", "links")  # untouched, it loads
    edited = target.read_text(encoding="utf-8").replace("audience: reports", "audience: everyone")
    assert edited != target.read_text(encoding="utf-8")
    target.write_text(edited, encoding="utf-8")
    for command in (["validate"], ["plan"], ["apply"]):
        refused = linkctl(*command, "links", expect=3)
        assert "MAC mismatch" in refused.stderr, refused
    assert not linkctl.state_db.exists() or linkctl("list", "-o", "json").json()["links"] == []
