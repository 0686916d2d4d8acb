"""Link files encrypted by the real sops binary load, validate and keep positions."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from reconciler.load import load_paths
from reconciler.validate import validate
from tests.conftest import require_tool

LINK = """# yaml-language-server: $schema=../schemas/outgoing-link.schema.json
apiVersion: linkctl.dev/v1
kind: OutgoingLink
metadata:
  name: tracker
spec:
  provider: custom
  issuer: https://id.example.com
  clientId: wiki
  clientSecret: canary-sops-link-secret
  scopes:
    # what the app reads
    - openid
    - offline_access
"""
INSTANCE = "apiVersion: linkctl.dev/v1\nkind: Instance\nmetadata: {name: i}\nspec: {baseUrl: https://wiki.example.com}\n"


def _keygen(tmp_path: Path, env: dict[str, str]) -> str:
    key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True, env=env)
    return next(line.split(": ")[1] for line in key.read_text().splitlines() if "public key" in line)


def test_sops_default_rule_with_a_comment_in_a_list(tmp_path: Path) -> None:
    sops = require_tool("sops")
    require_tool("age-keygen")
    env = {**os.environ, "SOPS_DISABLE_VERSION_CHECK": "1", "SOPS_AGE_KEY_FILE": str(tmp_path / "key.txt")}
    recipient = _keygen(tmp_path, env)
    plain = tmp_path / "tracker.yaml"
    plain.write_text(LINK)
    # The default rule encrypts everything, comments too; sops writes the list comment as an item.
    encrypted = subprocess.run(
        [sops, "encrypt", "--age", recipient, str(plain)], check=True, capture_output=True, text=True, env=env
    ).stdout
    assert ",type:comment]" in encrypted and "canary-sops-link-secret" not in encrypted
    plain.write_text(encrypted)
    (tmp_path / "instance.yaml").write_text(INSTANCE)
    result = validate(load_paths([str(tmp_path)], env=env), env=env)
    assert result.ok, [d.render() for d in result.diagnostics]
    (link,) = result.links
    assert link.spec["scopes"] == ["openid", "offline_access"]
    assert link.secrets["clientSecret"].reveal() == "canary-sops-link-secret"
    # Values that sops encrypted are sensitive in plans, secret or not.
    assert {"clientId", "scopes", "issuer"} <= link.sensitive_fields
    # clientId is sealed; what linkctl reads itself stays readable, and a warning says so.
    assert link.spec["clientId"] == {"$secret": "clientId"} and link.secrets["clientId"].reveal() == "wiki"
    (warning,) = [d for d in result.diagnostics if d.code == "encrypted-readable-field"]
    assert "spec.scopes" in warning.message and "spec.issuer" in warning.message
    assert "apiVersion" not in warning.message and "metadata.name" not in warning.message


def test_values_encrypted_with_a_regex_are_sealed_by_their_path(tmp_path: Path) -> None:
    sops = require_tool("sops")
    require_tool("age-keygen")
    env = {**os.environ, "SOPS_DISABLE_VERSION_CHECK": "1", "SOPS_AGE_KEY_FILE": str(tmp_path / "key.txt")}
    recipient = _keygen(tmp_path, env)
    plain = tmp_path / "tracker.yaml"
    plain.write_text(
        LINK.replace(
            "  issuer: https://id.example.com\n",
            "  tokenEndpoint: http://127.0.0.1:9/token\n  authorizationEndpoint: https://id.example.com/a\n",
        )
        + "  tokenParams:\n    client_assertion: canary-assertion\n    audience: api\n"
        + "  authorizeParams:\n    login_hint: canary-hint\n"
    )
    regex = "^(clientSecret|client_assertion|login_hint|tokenEndpoint)$"
    encrypted = subprocess.run(
        [sops, "encrypt", "--age", recipient, "--encrypted-regex", regex, str(plain)],
        check=True, capture_output=True, text=True, env=env,
    ).stdout  # fmt: skip
    plain.write_text(encrypted)
    (tmp_path / "instance.yaml").write_text(INSTANCE)
    result = validate(load_paths([str(tmp_path)], env=env), env=env)
    # tokenEndpoint must be readable (http on loopback without allowInsecureLoopback is refused)
    # and the refusal does not quote the decrypted URL.
    (error,) = [d for d in result.diagnostics if d.is_error]
    assert error.code == "insecure-url" and "127.0.0.1" not in error.render()
    (tmp_path / "instance.yaml").write_text(INSTANCE.replace("com}", "com, allowInsecureLoopback: true}"))
    result = validate(load_paths([str(tmp_path)], env=env), env=env)
    assert result.ok, [d.render() for d in result.diagnostics]
    (link,) = result.links
    assert link.spec["tokenParams"] == {
        "client_assertion": {"$secret": "tokenParams.client_assertion"},
        "audience": "api",
    }
    assert link.spec["authorizeParams"]["login_hint"] == {"$secret": "authorizeParams.login_hint"}
    assert link.spec["clientId"] == "wiki" and link.spec["tokenEndpoint"] == "http://127.0.0.1:9/token"
    assert link.secrets["tokenParams.client_assertion"].reveal() == "canary-assertion"
    assert link.secrets["authorizeParams.login_hint"].reveal() == "canary-hint"
    assert "canary" not in repr(link) and "canary" not in json.dumps(link.spec)
    assert link.sensitive_fields == frozenset(
        {"tokenParams.client_assertion", "authorizeParams.login_hint", "tokenEndpoint"}
    )


def test_a_link_file_edited_after_encryption_is_refused_by_validate_plan_and_apply(tmp_path: Path) -> None:
    """Bad input never corrupts: the SOPS MAC check is on for link files (a changed clientId)."""
    from tests.support.oracle_links import linkctl, state_env

    sops = require_tool("sops")
    require_tool("age-keygen")
    links = tmp_path / "links"
    links.mkdir()
    env = {
        **state_env(tmp_path),
        "SOPS_DISABLE_VERSION_CHECK": "1",
        "SOPS_AGE_KEY_FILE": str(tmp_path / "key.txt"),
    }
    recipient = _keygen(tmp_path, env)
    plain = links / "tracker.yaml"
    plain.write_text(LINK)
    encrypted = subprocess.run(
        [sops, "encrypt", "--age", recipient, "--encrypted-regex", "^clientSecret$", str(plain)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert "clientId: wiki" in encrypted and "canary-sops-link-secret" not in encrypted
    plain.write_text(encrypted)
    (links / "instance.yaml").write_text(INSTANCE)

    def linkctl_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(linkctl(*args), env=env, capture_output=True, text=True, timeout=60)

    intact = linkctl_run("validate", str(links))
    assert intact.returncode == 0, intact.stdout + intact.stderr  # the refusal below is the edit's doing
    plain.write_text(encrypted.replace("clientId: wiki", "clientId: attacker"))
    for command in ("validate", "plan", "apply"):
        refused = linkctl_run(command, str(links))
        output = refused.stdout + refused.stderr
        assert refused.returncode == 3, f"{command}: {output}"
        assert "MAC mismatch" in output and str(plain.name) in output, f"{command}: {output}"
        assert "Traceback" not in output
    listed = linkctl_run("list", "-o", "json")
    assert "attacker" not in listed.stdout and "tracker" not in listed.stdout  # nothing was applied
