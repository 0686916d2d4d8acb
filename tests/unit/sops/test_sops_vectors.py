"""Conformance: every SOPS vector in ../shared/vectors decrypts to what real sops (and an
independent verifier) produced, or is refused with a clear reason (PGP-only, post-quantum,
dotenv/INI, tampered)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from reconciler import sops
from reconciler.errors import CryptoError
from reconciler.sops import yamlv3
from reconciler.sops.data_key import recover_data_key
from tests.conftest import VECTORS, require_vectors

# relative path -> (kind, key files)
# Why each tampered vector is refused (the first check that notices its edit).
TAMPERED_FAILURES = {
    "sops-secrets-operator/01-test-secrets.yaml": (
        "spec.secretTemplates.stringData.username: cannot decrypt the value"
    ),
}
CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "kustomize-controller/age.yaml": ("age", ("age.txt",)),
    "kustomize-controller/merge1.yaml": ("age", ("age.txt",)),
    "kustomize-controller/merge2.yaml": ("age", ("age.txt",)),
    "kustomize-controller/global-secret.yaml": ("age", ("age-global.txt",)),
    "kustomize-controller/file.txt": ("age", ("age.txt",)),
    "kustomize-controller/age-pq.yaml": ("pq", ("age-pq.txt",)),
    "kustomize-controller/pgp.yaml": ("pgp", ("age.txt",)),
    "kustomize-controller/env.env": ("dotenv", ()),
    "kustomize-controller/inside-secret.yaml": ("nested", ("age.txt",)),
    "sops-nix/secrets.yaml": ("age", ("age-keys.txt",)),
    "sops-nix/secrets.json": ("pgp", ("age-keys.txt",)),
    "sops-nix/secrets.bin": ("pgp", ("age-keys.txt",)),
    "sops-nix/secrets.env": ("dotenv", ()),
    "sops-nix/secrets.ini": ("ini", ()),
    "helm-secrets/secrets.age.yaml": ("age", ("key.txt",)),
    "helm-secrets/secrets.yaml": ("pgp", ("key.txt",)),
    "sops-age/secret.enc.yaml": ("age", ("key.txt",)),
    "sops-age/secret.enc.json": ("age", ("key.txt",)),
    "sops-age/secret.enc.env": ("dotenv", ()),
    "sops-secrets-operator/00-test-secrets.yaml": ("age", ("key-file.txt",)),
    "sops-secrets-operator/01-test-secrets.yaml": ("tampered", ("key-file.txt",)),
    "sops-secrets-operator/02-test-secrets.yaml": ("age", ("key-file.txt",)),
    "sops-secrets-operator/03-test-secrets-enforce-ownership.yaml": ("age", ("key-file.txt",)),
    "sops-secrets-operator/04-test-secrets-mac-only.yaml": ("age", ("key-file.txt",)),
    "getsops-sops/comments.enc.yaml": ("pgp", ()),
    "getsops-sops/comments_unencrypted_comments.yaml": ("pgp", ()),
    "getsops-sops/example.json": ("pgp", ()),
    "getsops-sops/example.yaml": ("pgp", ()),
    "getsops-sops/format.enc.json": ("pgp", ()),
    "getsops-sops/format.enc.yaml": ("pgp", ()),
    "getsops-sops/multiple_keys.yaml": ("pgp", ()),
    "getsops-sops/no_mac.yaml": ("pgp", ()),
}
for _name in (
    "empty_value",
    "encrypted_regex",
    "encrypted_suffix",
    "example",
    "mac_only_encrypted",
    "unencrypted_regex",
    "unencrypted_suffix",
):
    CASES[f"rops/age_{_name}.yaml"] = ("age", ("age-key.txt",))
for _name in (
    "comments-enc-regex.enc.yaml",
    "k8s-secret-indent2.enc.yaml",
    "k8s-secret.enc.yaml",
    "mac-only.enc.yaml",
    "multidoc.enc.yaml",
    "shamir.enc.yaml",
    "simple.enc.json",
    "types.enc.yaml",
):
    CASES[f"generated-sops-3.11.0/{_name}"] = ("age", ("keys.txt",))


def _env(folder: Path, key_files: tuple[str, ...]) -> dict[str, str]:
    text = "".join((folder / k).read_text() for k in key_files)
    return {"SOPS_AGE_KEY": text, "HOME": "/nonexistent"}


def _normal(tree: Any) -> Any:
    """Times as RFC3339 text and float/int unified, so trees from different oracles compare."""
    if isinstance(tree, dict):
        return {k: _normal(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_normal(v) for v in tree]
    if isinstance(tree, dt.datetime):
        return yamlv3.format_time(tree)
    if isinstance(tree, float) and tree.is_integer():
        return int(tree)
    return tree


def _expected_trees(rel: str, fmt: str) -> list[tuple[str, Any]]:
    """Every independent expectation available for a vector."""
    folder, name = rel.split("/", 1)
    out: list[tuple[str, Any]] = []
    verifier = json.loads((VECTORS / "decrypted_by_verifier.json").read_text())
    if rel in verifier:
        out.append(("verifier", verifier[rel]))
    sops_out = VECTORS / folder / "expected-sops-3.11-decrypt" / name
    if folder == "generated-sops-3.11.0":
        stem, ext = name.rsplit(".enc.", 1)
        sops_out = VECTORS / folder / "expected" / f"{stem}.dec.{ext}"
    if sops_out.exists():
        text = sops_out.read_text()
        if name == "file.txt":
            out.append(("sops 3.11 (binary store)", [yamlv3.load_json(text)]))
        else:
            out.append(("sops 3.11", [yamlv3.load_json(text)] if fmt == "json" else yamlv3.load_all(text)))
    if folder == "rops":
        plain = VECTORS / folder / name.replace(".yaml", "_plaintext.yaml")
        out.append(("rops plaintext", yamlv3.load_all(plain.read_text())))
    if folder == "sops-secrets-operator":
        raw = VECTORS / folder / name.replace("-test-", "-raw-test-")
        # 00's raw input had "Pa$$word" expanded by a shell before encryption; the others are faithful.
        if raw.exists() and not name.startswith("00-"):
            out.append(("raw", yamlv3.load_all(raw.read_text())))
    return out


@pytest.mark.parametrize("rel", sorted(CASES))
def test_vector(rel: str) -> None:
    path = require_vectors(rel)
    kind, key_files = CASES[rel]
    folder = path.parent
    if kind in ("dotenv", "ini"):
        with pytest.raises(
            CryptoError, match=f"{'dotenv' if kind == 'dotenv' else 'INI'} sops format is not supported"
        ):
            sops.detect_format(str(path))
        return
    text = path.read_text()
    fmt = sops.detect_format(str(path), text)
    env = _env(folder, key_files)
    if kind == "nested":
        outer = yamlv3.load_all(text)[0]
        inner = base64.b64decode(outer["data"]["key"]).decode()
        docs = sops.decrypt_text(inner, filename=f"{path}#data.key", fmt="json", env=env)
        # The exact plaintext sealed inside the Secret (MAC-verified), not merely "something".
        assert docs == [{"data": "value"}]
        return
    if kind == "pgp":
        fingerprints = _pgp_fingerprints(text, fmt)
        with pytest.raises(CryptoError) as info:
            sops.decrypt_text(text, filename=str(path), fmt=fmt, env=env)
        message = str(info.value)
        assert str(path) in message and "PGP" in message
        for fp in fingerprints:
            assert fp in message
        assert info.value.hint and "age" in info.value.hint
        return
    if kind == "pq":
        with pytest.raises(CryptoError) as info:
            sops.decrypt_text(text, filename=str(path), fmt=fmt, env=env)
        assert "post-quantum" in str(info.value) and str(path) in str(info.value)
        return
    if kind == "tampered":  # refused for the edit, not for a missing key: the precise failure per vector
        with pytest.raises(CryptoError, match=re.escape(TAMPERED_FAILURES[rel])) as info:
            sops.decrypt_text(text, filename=str(path), fmt=fmt, env=env)
        assert str(path) in str(info.value)
        return
    docs = sops.decrypt_text(text, filename=str(path), fmt=fmt, env=env)
    expectations = _expected_trees(rel, fmt)
    assert expectations, f"no expectation for {rel}"
    for source, want in expectations:
        assert _normal(docs) == _normal(want), f"differs from {source}"


def test_an_edited_plaintext_value_is_refused_by_the_mac() -> None:
    """Encrypted stays secret: a value sops left in clear is still covered by the MAC."""
    folder = require_vectors("generated-sops-3.11.0")
    text = (folder / "k8s-secret.enc.yaml").read_text()
    assert text.count("    name: mysecret\n") == 1
    edited = text.replace("    name: mysecret\n", "    name: attacker\n")
    env = _env(folder, ("keys.txt",))
    with pytest.raises(CryptoError, match="MAC mismatch") as info:
        sops.decrypt_text(edited, filename="edited.yaml", fmt="yaml", env=env)
    assert "edited.yaml" in str(info.value)
    # Only the MAC notices this edit: with the check off the edited value comes through.
    (doc,) = sops.decrypt_text(edited, filename="edited.yaml", fmt="yaml", env=env, ignore_mac=True)
    assert doc["metadata"]["name"] == "attacker"


def _pgp_fingerprints(text: str, fmt: str) -> list[str]:
    doc = (yamlv3.load_json(text) if fmt == "json" else yamlv3.load_all(text)[0])["sops"]
    groups = [doc, *list(doc.get("key_groups") or [])]
    return [e["fp"] for g in groups for e in (g.get("pgp") or []) if isinstance(e, dict) and "fp" in e]


def test_every_vector_file_is_classified() -> None:
    root = require_vectors()
    skip_dirs = {"cctv-age", "expected", "expected-sops-3.11-decrypt", "plain"}
    found = set()
    for path in root.rglob("*"):
        if not path.is_file() or set(path.relative_to(root).parts[:-1]) & skip_dirs:
            continue
        text = path.read_text(errors="replace")
        if "ENC[AES256_GCM" in text or "sops_" in text or "inside" in path.name:
            found.add(str(path.relative_to(root)))
    found -= {"MANIFEST.md", "decrypted_by_verifier.json", "provenance.tsv"}
    assert found <= set(CASES), sorted(found - set(CASES))


def test_no_mac_requires_ignore_mac() -> None:
    """A file with ``mac: ""`` fails unless ignore_mac (getsops no_mac.yaml, rebuilt for age)."""
    folder = require_vectors("generated-sops-3.11.0")
    text = (folder / "k8s-secret.enc.yaml").read_text()
    lines = [("    mac: " + '""') if line.startswith("    mac: ") else line for line in text.splitlines()]
    tampered = "\n".join(lines) + "\n"
    env = _env(folder, ("keys.txt",))
    with pytest.raises(CryptoError, match="MAC mismatch") as info:
        sops.decrypt_text(tampered, filename="no-mac.yaml", fmt="yaml", env=env)
    assert "no-mac.yaml" in str(info.value)
    docs = sops.decrypt_text(tampered, filename="no-mac.yaml", fmt="yaml", env=env, ignore_mac=True)
    assert docs[0]["stringData"]


def test_shamir_needs_both_groups() -> None:
    folder = require_vectors("generated-sops-3.11.0")
    text = (folder / "shamir.enc.yaml").read_text()
    with pytest.raises(CryptoError, match="1 of the 2 needed shares") as info:
        sops.decrypt_text(text, filename="shamir.enc.yaml", fmt="yaml", env=_env(folder, ("key1.txt",)))
    assert "group 2: age age1tf3cyv5" in str(info.value)


def test_datakeys_match() -> None:
    """The unwrapped data keys equal the ones the research recorded (unit check of age + Shamir)."""
    from reconciler.sops import keys

    folder = require_vectors("generated-sops-3.11.0")
    expected = json.loads((folder / "datakeys.json").read_text())
    ring = keys.load_keyring(_env(folder, ("keys.txt",)))
    for name, hexkey in expected.items():
        text = (folder / name).read_text()
        doc = yamlv3.load_json(text) if name.endswith(".json") else yamlv3.load_all(text)[0]
        assert recover_data_key(doc["sops"], name, ring).hex() == hexkey
