"""``validate --no-decrypt``: files encrypted by the real sops binary, checked with no age key anywhere.

The key used to encrypt is deleted before linkctl runs, so any attempt to decrypt would
fail; what needs no value (structure, SOPS metadata, MAC presence, the form of encrypted
values) is still checked with file:line, and what could not be checked is listed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.support.cli import INSTANCE, Linkctl

LINK = """\
apiVersion: linkctl.dev/v1
kind: OutgoingLink
metadata:
  name: {name}
spec:
  provider: custom
  grant: client_credentials
  tokenEndpoint: https://auth.example.com/token
  clientId: reports-client
  clientSecret: {secret}
  scopes: [reports.read]
{extra}"""


def _tree(root: Path) -> set[tuple[str, int]]:
    """Every file under ``root`` with its size: a run that writes anything changes it."""
    return {(str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def encrypt(linkctl: Linkctl, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Encrypt a link file with the real sops for a fresh age key, then delete the key."""
    sops = require_tool("sops")
    keygen = require_tool("age-keygen")
    key = tmp_path / "age-key.txt"
    subprocess.run([keygen, "-o", str(key)], check=True, capture_output=True)
    recipient = next(line.split(": ")[1] for line in key.read_text().splitlines() if "public key" in line)
    made: list[Path] = []

    def run(path: Path, text: str, *regex: str) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        command = [sops, "encrypt", "--age", recipient]
        if regex:
            command += ["--encrypted-regex", regex[0]]
        env = {**linkctl.env, "SOPS_DISABLE_VERSION_CHECK": "1"}
        out = subprocess.run(
            [*command, str(path)], check=True, capture_output=True, text=True, env=env
        ).stdout
        path.write_text(out, encoding="utf-8")
        made.append(path)
        return out

    yield run
    assert made


def test_encrypted_files_validate_without_any_key(linkctl: Linkctl, encrypt, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    links = linkctl.cwd / "links"
    links.mkdir()
    (links / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    secret = "canary-no-decrypt-3f1c"
    encrypted = encrypt(
        links / "reports.yaml",
        LINK.format(name="reports", secret=secret, extra=""),
        "^(clientSecret|tokenEndpoint)$",
    )
    assert secret not in encrypted
    (tmp_path / "age-key.txt").unlink()  # nothing could decrypt now
    assert not any(k.startswith("SOPS_AGE") for k in linkctl.env)

    # Without --no-decrypt the missing key is an error; with it the file validates.
    linkctl("validate", "links", expect=3)
    before = _tree(tmp_path)
    ok = linkctl("validate", "--no-decrypt", "links")
    assert "OK: 1 link(s) in 2 file(s)" in ok.stdout
    assert "2 item(s) not checked without decryption" in ok.stdout
    assert "links/reports.yaml:10: not checked:" in ok.stderr and "(at spec.clientSecret)" in ok.stderr
    assert "links/reports.yaml:8: not checked:" in ok.stderr and "(at spec.tokenEndpoint)" in ok.stderr
    report = linkctl("validate", "--no-decrypt", "-o", "json", "links").json()
    assert report["valid"] is True and report["decrypted"] is False
    assert report["links"] == ["reports"]
    assert {tuple(n["path"]) for n in report["not_checked"]} == {
        ("spec", "clientSecret"),
        ("spec", "tokenEndpoint"),
    }
    assert all(n["file"] == "links/reports.yaml" and n["line"] for n in report["not_checked"])
    assert _tree(tmp_path) == before  # no store, no cache, no key file written
    assert secret not in ok.output

    # A fork's job has no CI secrets either: an unset fromEnv variable is noted, not an error.
    (links / "env.yaml").write_text(
        LINK.format(name="from-env", secret="{fromEnv: TRACKER_CLIENT_SECRET}", extra=""), encoding="utf-8"
    )
    noted = linkctl("validate", "--no-decrypt", "-o", "json", "links").json()
    assert noted["valid"] is True and noted["links"] == ["from-env", "reports"]
    unset = "its environment variable is not set here, so the secret was not read"
    path = ["spec", "clientSecret", "fromEnv"]
    note = {"file": "links/env.yaml", "line": 10, "path": path, "reason": unset}
    assert note in noted["not_checked"], noted
    linkctl("validate", "links/env.yaml", expect=3)
    # CI gives a secret a fork may not read as an empty string: the same note.
    empty = linkctl(
        "validate", "--no-decrypt", "-o", "json", "links", env={"TRACKER_CLIENT_SECRET": ""}
    ).json()
    assert empty["valid"] is True and note in empty["not_checked"], empty
    (links / "env.yaml").unlink()

    # A normal run reports that everything was decrypted and nothing left unchecked.
    plain = linkctl("validate", "-o", "json", str(links / "instance.yaml")).json()
    assert plain["decrypted"] is True and plain["not_checked"] == []


def test_problems_that_need_no_key_still_fail_with_their_line(
    linkctl: Linkctl, encrypt, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    links = linkctl.cwd / "links"
    links.mkdir()
    (links / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    good = encrypt(links / "good.yaml", LINK.format(name="good", secret="s1", extra=""), "^clientSecret$")
    # A structural error in an encrypted file: tenant is Microsoft-only (line 13).
    encrypt(
        links / "tenant.yaml",
        LINK.format(name="tenant", secret="s2", extra="  tenant: common\n"),
        "^clientSecret$",
    )
    (tmp_path / "age-key.txt").unlink()
    lines = good.splitlines()
    mac_line = next(i for i, line in enumerate(lines) if line.startswith("    mac: "))
    sops_line = lines.index("sops:") + 1
    (links / "no-mac.yaml").write_text(
        "\n".join(lines[:mac_line] + lines[mac_line + 1 :]).replace("name: good", "name: no-mac") + "\n"
    )
    (links / "bad-time.yaml").write_text(
        good.replace("name: good", "name: bad-time").replace("lastmodified: ", "lastmodified: not-a-time #")
    )
    secret_line = next(i + 1 for i, line in enumerate(lines) if "clientSecret: ENC[" in line)
    (links / "tampered.yaml").write_text(
        good.replace("name: good", "name: tampered").replace(
            "clientSecret: ENC[AES256_GCM,data:", "clientSecret: x"
        )
    )
    result = linkctl("validate", "--no-decrypt", "links", expect=3)
    err = result.stderr
    assert f"links/no-mac.yaml:{sops_line}:1: error: links/no-mac.yaml: MAC missing" in err, result
    assert "links/bad-time.yaml:" in err and "'lastmodified' is missing or not an RFC3339 time" in err
    assert f"links/tampered.yaml:{secret_line}:" in err and "does not match sops' data format" in err
    assert "links/tenant.yaml:13:" in err and "tenant applies only to provider microsoft" in err
    assert "links/good.yaml" not in err.split("not checked")[0].replace("links/good.yaml:", "")
    report = linkctl("validate", "--no-decrypt", "-o", "json", "links", expect=3).json()
    assert report["error_count"] == 4 and report["links"] == ["good"]
    # --ignore-mac means nothing without a key to verify the MAC with.
    linkctl("validate", "--no-decrypt", "--ignore-mac", "links", expect=64)


def test_a_file_whose_apiversion_is_encrypted_is_listed_as_not_checked(
    linkctl: Linkctl, encrypt, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    links = linkctl.cwd / "links"
    links.mkdir()
    (links / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    encrypt(links / "all.yaml", LINK.format(name="all", secret="s3", extra=""))  # sops' default: everything
    os.unlink(tmp_path / "age-key.txt")
    report = linkctl("validate", "--no-decrypt", "-o", "json", "links").json()
    assert report["valid"] is True and report["links"] == []
    assert report["not_checked"] == [
        {
            "file": "links/all.yaml",
            "line": None,
            "path": [],
            "reason": "its apiVersion is encrypted: nothing in it was checked",
        }
    ]


def test_secrets_check_reports_only_plaintext_secrets_never_their_values(
    linkctl: Linkctl, encrypt, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    links = linkctl.cwd / "links"
    links.mkdir()
    encrypt(links / "sealed.yaml", LINK.format(name="sealed", secret="s4", extra=""), "^clientSecret$")
    (tmp_path / "age-key.txt").unlink()
    leaked = "canary-check-5e1a"
    extra = f"  tokenParams:\n    client_assertion: {leaked}-jwt\n"
    (links / "leaky.yaml").write_text(LINK.format(name="leaky", secret=leaked, extra=extra), encoding="utf-8")
    (links / "typo.yaml").write_text(LINK.format(name="typo", secret="{fromEnv: X}", extra="  tenant: a\n"))

    found = linkctl("secrets", "check", "links", expect=3)
    assert "links/leaky.yaml:10:17: error: clientSecret is in plaintext" in found.stderr
    assert "links/leaky.yaml:13:23: error: tokenParams.client_assertion looks like a secret" in found.stderr
    assert "2 plaintext secret(s) in 1 file(s)" in found.stderr
    assert "typo.yaml" not in found.stderr and "sealed.yaml" not in found.stderr  # other problems: validate's
    report = linkctl("secrets", "check", "-o", "json", "links", expect=3).json()
    assert report["ok"] is False and {d["code"] for d in report["diagnostics"]} == {"plaintext-secret"}
    clean = linkctl("secrets", "check", str(links / "sealed.yaml"), str(links / "typo.yaml"))
    assert clean.stdout == "OK: no plaintext secret in 2 file(s)\n"
    for run in (found, clean):
        assert leaked not in run.output
    assert leaked not in json.dumps(report)
