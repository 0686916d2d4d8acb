"""``linkctl init``: a scaffold that validates as it is, keeps its private key outside, overwrites nothing."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.support.cli import Linkctl


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_scaffold_validates_and_a_secret_encrypts_for_its_new_key(linkctl: Linkctl) -> None:
    made = linkctl("init", "repo", "--base-url", "https://wiki.example.com/", "-o", "json").json()
    repo = linkctl.cwd / "repo"
    key_file = Path(made["age_key_file"])
    assert key_file == Path(linkctl.env["HOME"]) / ".config" / "sops" / "age" / "keys.txt"
    assert not key_file.resolve().is_relative_to(repo.resolve())
    assert _mode(key_file) == 0o600 and _mode(key_file.parent) == 0o700
    assert made["recipient"] in key_file.read_text() and "AGE-SECRET-KEY-1" in key_file.read_text()
    assert {(linkctl.cwd / f).relative_to(repo).as_posix() for f in made["files"]} >= {
        "instance.yaml",
        ".sops.yaml",
        ".gitignore",
        "links/google.yaml",
        "links/microsoft.yaml",
        "links/custom.yaml",
        "schemas/outgoing-link.schema.json",
    }
    assert f"age: {made['recipient']}" in (repo / ".sops.yaml").read_text()
    assert (
        (repo / "links" / "google.yaml")
        .read_text()
        .startswith("# yaml-language-server: $schema=../schemas/outgoing-link.schema.json")
    )
    assert "AGE-SECRET-KEY" not in "".join(p.read_text() for p in repo.rglob("*") if p.is_file())
    checked = linkctl("validate", "-o", "json", "repo").json()
    assert checked["valid"] and checked["links"] == ["wiki-custom", "wiki-google", "wiki-microsoft"]
    url = linkctl("redirect-url", "wiki-google", "--from", "repo").stdout.strip()
    assert url == "https://wiki.example.com/oauth/callback/wiki-google"

    # The order of work the comments describe: fill in the client, encrypt, validate.
    google = repo / "links" / "google.yaml"
    google.write_text(
        google.read_text()
        .replace(
            "  # clientId: 1234567890-abc.apps.googleusercontent.com",
            "  clientId: 42-x.apps.googleusercontent.com",
        )
        .replace(
            "  # clientSecret: GOCSPX-…          # encrypted by `linkctl secrets encrypt --in-place`",
            "  clientSecret: GOCSPX-init-canary",
        )
    )
    linkctl.cwd = repo
    linkctl("secrets", "encrypt", "--in-place", "links/google.yaml")
    assert "GOCSPX-init-canary" not in google.read_text() and "ENC[AES256_GCM" in google.read_text()
    again = linkctl("validate", "-o", "json", ".").json()
    assert again["valid"] and not any("wiki-google" in d["message"] for d in again["diagnostics"])


def test_init_overwrites_nothing_and_keeps_the_key_outside_the_repository(linkctl: Linkctl) -> None:
    linkctl("init", "repo", "--base-url", "https://wiki.example.com")
    repo = linkctl.cwd / "repo"
    key_file = Path(linkctl.env["HOME"]) / ".config" / "sops" / "age" / "keys.txt"
    before = {p: p.read_bytes() for p in [*repo.rglob("*"), key_file] if p.is_file()}
    refused = linkctl("init", "repo", "--base-url", "https://other.example.com", expect=3)
    assert "init never overwrites a file" in refused.stderr and "instance.yaml" in refused.stderr
    assert {p: p.read_bytes() for p in [*repo.rglob("*"), key_file] if p.is_file()} == before

    inside = linkctl(
        "init", "new", "--base-url", "https://wiki.example.com", "--age-key-file", "new/keys.txt", expect=3
    )
    assert "inside the repository" in inside.stderr and not (linkctl.cwd / "new" / "instance.yaml").exists()


def test_an_existing_recipient_is_used_as_is_and_bad_input_is_refused(linkctl: Linkctl) -> None:
    recipient = "age1qj4hde2y7n49ctqn3chackhh9sradp57cdfjdj7ktt8yl38l4yjsqmupkk"
    made = linkctl(
        "init", "r", "--base-url", "https://w.example.com", "--recipient", recipient, "-o", "json"
    ).json()
    assert made["age_key_file"] is None and made["recipient"] == recipient
    assert not (Path(linkctl.env["HOME"]) / ".config" / "sops").exists()
    bad_url = linkctl("init", "x", "--base-url", "wiki.example.com", expect=3)
    assert "is not an http(s) URL with a host" in bad_url.stderr and "hint:" in bad_url.stderr
    bad_recipient = linkctl(
        "init", "y", "--base-url", "https://w.example.com", "--recipient", "age1nope", expect=None
    )
    assert bad_recipient.returncode not in (0, 1) and "Traceback" not in bad_recipient.stderr
    assert not (linkctl.cwd / "y").exists()
    missing = linkctl("init", "z", expect=64)
    assert "--base-url" in missing.stderr
