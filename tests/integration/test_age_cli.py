"""Our age implementation against Debian's ``age``/``age-keygen`` (the Go reference), both ways."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.sops import age
from tests.conftest import ROOT, require_tool

SIZES = [0, 1, 32, 65536, 65537, 200_000]


@pytest.mark.parametrize("armored", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_age_cli_decrypts_ours(size: int, armored: bool, tmp_path: Path) -> None:
    age_bin = require_tool("age")
    ident = age.generate_identity()
    key = tmp_path / "key.txt"
    key.write_text(ident.encode() + "\n")
    data = os.urandom(size)
    ct = tmp_path / "ct.age"
    ct.write_bytes(age.encrypt(data, [ident.recipient, age.generate_identity().recipient], armored=armored))
    out = subprocess.run([age_bin, "-d", "-i", str(key), str(ct)], capture_output=True, check=True)
    assert out.stdout == data


@pytest.mark.parametrize("armored", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_we_decrypt_age_cli(size: int, armored: bool, tmp_path: Path) -> None:
    age_bin = require_tool("age")
    keygen = require_tool("age-keygen")
    key = tmp_path / "key.txt"
    subprocess.run([keygen, "-o", str(key)], capture_output=True, check=True)
    identities = age.parse_identities(key.read_text())
    data = os.urandom(size)
    plain = tmp_path / "plain"
    plain.write_bytes(data)
    args = [age_bin, "-e", "-r", identities[0].recipient, "-r", age.generate_identity().recipient]
    ct = subprocess.run(
        [*args, *(["-a"] if armored else []), str(plain)], capture_output=True, check=True
    ).stdout
    assert age.decrypt(ct, identities) == data
    with pytest.raises(age.NoMatch):
        age.decrypt(ct, [age.generate_identity()])


def test_keygen_matches_age_keygen(tmp_path: Path) -> None:
    """`linkctl keygen` output is a valid identities file for age; public keys agree."""
    keygen = require_tool("age-keygen")
    path = tmp_path / "k.txt"
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "keygen", "-o", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    public = subprocess.run(
        [keygen, "-y", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert done.stderr.strip() == f"Public key: {public}"
    assert f"# public key: {public}" in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    again = subprocess.run(
        [sys.executable, "-m", "reconciler", "keygen", "-o", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr
