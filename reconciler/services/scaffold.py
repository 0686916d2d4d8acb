"""``linkctl init``: scaffold a links repository that validates as it is.

Writes an Instance, a ``.sops.yaml`` for an age recipient, one commented example link per
provider preset (stored with *pending credentials* until a client ID and secret are filled
in), the JSON Schemas the editor modelines point at, and a ``.gitignore``. Nothing existing
is overwritten. A newly generated age identity goes *outside* the repository (appended to
sops's default ``keys.txt``, mode 0600) so it cannot be committed by accident.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.errors import ConfigError, CryptoError

INSTANCE = """\
# yaml-language-server: $schema=schemas/instance.schema.json
# The app instance whose outgoing links live in this repository. Each link's redirect
# URL derives from baseUrl: {base_url}/oauth/callback/<link name>
apiVersion: linkctl.dev/v1
kind: Instance
metadata:
  name: {name}
spec:
  baseUrl: {base_url}
  defaults:
    deletionPolicy: delete     # or retain: a link removed from git is kept in the store
"""

SOPS_CONFIG = """\
# sops and `linkctl secrets encrypt|edit` read this. Only clientSecret values are
# encrypted, so reviews still see every other field. Add a teammate's or CI's age
# recipient to the list (comma-separated) and re-encrypt with `linkctl secrets edit`.
creation_rules:
  - path_regex: links/.*\\.ya?ml$
    age: {recipient}
    encrypted_regex: ^(clientSecret)$
"""

GITIGNORE = """\
# Never commit plaintext secrets, keys or local state.
*.dec.yaml
*.plain.yaml
*.agekey
keys.txt
*.db
*.db-wal
*.db-shm
.linkctl-cache/
"""

LINKS = {
    "google.yaml": """\
# yaml-language-server: $schema=../schemas/outgoing-link.schema.json
# A Google link (e.g. Gmail over IMAP/SMTP). Order of work:
#   1. `linkctl redirect-url {prefix}-google` and register that URL as an authorized
#      redirect URI of an OAuth client (Google Cloud console > APIs & Services > Credentials);
#   2. fill in clientId below and the secret (then `linkctl secrets encrypt --in-place FILE`);
#   3. `linkctl apply .` and authorize once: `linkctl authorize {prefix}-google`.
# The preset sets the endpoints and adds access_type=offline and prompt=consent, without
# which Google issues no refresh token.
apiVersion: linkctl.dev/v1
kind: OutgoingLink
metadata:
  name: {prefix}-google
spec:
  provider: google
  # clientId: 1234567890-abc.apps.googleusercontent.com
  # clientSecret: GOCSPX-…          # encrypted by `linkctl secrets encrypt --in-place`
  scopes:
    - https://mail.google.com/
""",
    "microsoft.yaml": """\
# yaml-language-server: $schema=../schemas/outgoing-link.schema.json
# A Microsoft Entra ID link (e.g. Outlook mail). Register the redirect URL from
# `linkctl redirect-url {prefix}-microsoft` under App registrations > Authentication
# (platform "Web"), then fill in the client ID and a client secret.
# The preset builds the tenant's endpoints and adds offline_access, without which
# Microsoft issues no refresh token.
apiVersion: linkctl.dev/v1
kind: OutgoingLink
metadata:
  name: {prefix}-microsoft
spec:
  provider: microsoft
  tenant: organizations            # or your tenant ID / domain, e.g. contoso.onmicrosoft.com
  # clientId: 00000000-0000-0000-0000-000000000000
  # clientSecret: …                # encrypted by `linkctl secrets encrypt --in-place`
  scopes:
    - https://outlook.office.com/IMAP.AccessAsUser.All
""",
    "custom.yaml": """\
# yaml-language-server: $schema=../schemas/outgoing-link.schema.json
# Any other OAuth 2.0 / OpenID Connect provider: with an issuer, the endpoints come from
# its discovery document; without one, set authorizationEndpoint and tokenEndpoint.
apiVersion: linkctl.dev/v1
kind: OutgoingLink
metadata:
  name: {prefix}-custom
spec:
  provider: custom
  issuer: https://auth.example.com
  # clientId: my-client
  # clientSecret:
  #   fromEnv: CUSTOM_CLIENT_SECRET  # or fromFile: path, or a SOPS-encrypted value
  clientAuth: client_secret_basic
  scopes: [openid, offline_access]
""",
}

_NAME = re.compile(r"[^a-z0-9-]+")


@dataclasses.dataclass(frozen=True)
class Scaffold:
    """What ``init`` wrote."""

    directory: Path
    files: tuple[Path, ...]
    recipient: str
    key_file: Path | None  # where a new identity was written (None: --recipient given)


def instance_name(base_url: str) -> str:
    """A default Instance name from the base URL's host: ``https://wiki.example.com`` → ``wiki``."""
    host = urlsplit(base_url).hostname or "app"
    name = _NAME.sub("-", host.split(".")[0].lower()).strip("-")
    return name or "app"


def _check_base_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(
            f"--base-url {base_url!r} is not an http(s) URL with a host",
            hint="give the address users open the app at, e.g. --base-url https://wiki.example.com",
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"--base-url {base_url!r} must not have a query or fragment")
    return base_url.rstrip("/")


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def _append_identity(key_file: Path, identity_text: str) -> None:
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, identity_text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(key_file, 0o600)


def scaffold(
    directory: Path,
    *,
    base_url: str,
    env: Mapping[str, str],
    name: str | None = None,
    recipient: str | None = None,
    key_file: Path | None = None,
) -> Scaffold:
    """Write a new links repository into ``directory`` (created if absent; nothing is overwritten)."""
    from reconciler.models import json_schemas, render_schema
    from reconciler.sops import age, keys

    base_url = _check_base_url(base_url)
    name = name or instance_name(base_url)
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name):
        raise ConfigError(
            f"instance name {name!r} must be lowercase letters, digits and dashes", hint="pass --name"
        )
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: exists and is not a directory")
    planned: dict[Path, str] = {
        directory / "instance.yaml": INSTANCE.format(name=name, base_url=base_url),
        directory / ".gitignore": GITIGNORE,
    }
    for file_name, text in LINKS.items():
        planned[directory / "links" / file_name] = text.format(prefix=name)
    for file_name, schema in json_schemas().items():
        planned[directory / "schemas" / file_name] = render_schema(schema)
    sops_file = directory / ".sops.yaml"
    existing = [str(path) for path in [*planned, sops_file] if path.exists() or path.is_symlink()]
    if existing:
        raise ConfigError(
            f"{directory} already has {', '.join(existing)}; init never overwrites a file",
            hint="run it in a new or empty directory",
        )
    new_identity = None
    if recipient is None:
        target = key_file or keys.default_keys_file(env)
        if target is None:
            raise CryptoError("no place for the new age identity: set HOME or pass --age-key-file")
        if _inside(target, directory):
            raise ConfigError(
                f"--age-key-file {target} is inside the repository; the private key must stay outside it",
                hint="keep it in ~/.config/sops/age/keys.txt (the default) or another private place",
            )
        new_identity = age.generate_identity()
        recipient, key_file = new_identity.recipient, target
    else:
        age.parse_recipient(recipient)  # a typo fails here, not at the first encrypt
        key_file = None
    planned[sops_file] = SOPS_CONFIG.format(recipient=recipient)
    for path, text in planned.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as handle:  # "x": never over a file made meanwhile
            handle.write(text)
    if new_identity is not None and key_file is not None:
        _append_identity(key_file, f"# public key: {recipient}\n{new_identity.encode()}\n")
    return Scaffold(directory, tuple(planned), recipient, key_file)
