"""Bad declared input never changes the store, and every error says file:line:col and what to do.

"Bad input never corrupts" (docs/testing.md). A good baseline is applied once per
module; every case then runs ``linkctl apply`` on the baseline files plus (or with) one
bad file and must exit 3, name the exact location, say something specific, print no
traceback and leave the store (``list -o json``, ``state show`` serial, audit log)
exactly as it was.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from reconciler import sops
from reconciler.sops import age
from tests.support.cli import INSTANCE, TRACEBACK, Linkctl, link_doc, make_linkctl

GOOD_SECRET = "good-secret-value-1"
LINK_HEAD = """\
apiVersion: linkctl.dev/v1
kind: OutgoingLink
metadata:
  name: bad
spec:
"""
# Line numbers below count from 1 in the texts as written; LINK_HEAD is lines 1-5.


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: files of the case directory (None deletes a baseline file) and expectations."""

    id: str
    files: Mapping[str, str | bytes | Callable[[Path], None] | None]
    where: str  # "FILE:LINE:COL", "FILE:LINE" or "FILE" (relative to the case directory)
    message: str  # a distinctive part of the error message
    also: tuple[str, ...] = ()  # more fragments of stderr ({dir} = the case directory)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _spec(body: str) -> str:
    return LINK_HEAD + body


def _from_file(path: str) -> str:
    return _spec(f"  provider: google\n  clientId: a\n  clientSecret:\n    fromFile: {path}\n  scopes: [x]\n")


def _huge(path: Path) -> None:
    with path.open("wb") as f:  # sparse: instant, and over the 16 MiB limit by one byte
        f.truncate(16 * 1024 * 1024 + 1)


def _linked_dir(files: Mapping[str, str]) -> Callable[[Path], None]:
    """A symlink to a directory outside the case directory holding ``files``."""

    def make(path: Path) -> None:
        target = path.parent.parent / f"{path.parent.name}-linked"
        target.mkdir()
        for name, text in files.items():
            (target / name).write_text(text, encoding="utf-8")
        path.symlink_to(target, target_is_directory=True)

    return make


def _unreadable_dir(path: Path) -> None:
    path.mkdir()
    (path / "bad.yaml").write_text(PLAIN_LINK, encoding="utf-8")
    path.chmod(0)


BOMB = "apiVersion: linkctl.dev/v1\nkind: OutgoingLink\nmetadata:\n  name: bomb\n  annotations:\n"
BOMB += '    a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
for _i in range(1, 10):
    BOMB += f"    a{_i}: &a{_i} [{','.join([f'*a{_i - 1}'] * 10)}]\n"

_AGE = age.generate_identity()  # decrypts the cases encrypted with _encrypt_to


def _encrypt_to(path: Path, text: str, regex: str) -> None:
    """Write ``text`` SOPS-encrypted for ``_AGE``, values matching ``regex`` only."""
    rule = sops.EncryptionRule(encrypted_regex=regex)
    encrypted = sops.encrypt_text(
        text, filename=str(path), fmt="yaml", env={}, recipients=[_AGE.recipient], rule=rule
    )
    path.write_text(encrypted, encoding="utf-8")


INSTANCE_HEAD = """\
apiVersion: linkctl.dev/v1
kind: Instance
metadata:
  name: wiki
spec:
"""
PLAIN_LINK = link_doc("bad")

CASES = [
    Case(
        "yaml-syntax",
        {"bad.yaml": _spec("  provider: google\n  scopes: [a, b\n")},
        "bad.yaml:8:1",
        "YAML syntax error: did not find expected ',' or ']'",
    ),
    Case(
        "yaml-indentation",
        {"bad.yaml": LINK_HEAD[:-6] + " spec:\n  provider: google\n"},
        "bad.yaml:5:2",
        "YAML syntax error: did not find expected key",
    ),
    Case(
        "duplicate-key",
        {"bad.yaml": _spec("  provider: google\n  clientId: a\n  clientId: b\n  scopes: [x]\n")},
        "bad.yaml:8:3",
        "duplicate key 'clientId' (first defined at line 7)",
    ),
    Case(
        "unknown-field",
        {"bad.yaml": _spec("  provider: google\n  clientId: a\n  scope: [x]\n")},
        "bad.yaml:8:3",
        "unknown field 'scope'",
        ("hint: did you mean 'scopes'?",),
    ),
    Case(
        "number-for-client-id",
        {"bad.yaml": _spec("  provider: google\n  clientId: 12345\n  scopes: [x]\n")},
        "bad.yaml:7:13",
        "expected a string, got a number (at spec.clientId)",
        ("hint: quote the value",),
    ),
    Case(
        "unquoted-on",
        {"bad.yaml": _spec("  provider: google\n  clientId: on\n  scopes: [x]\n")},
        "bad.yaml:7:13",
        "unquoted `on` is a boolean to YAML 1.1 tools",
        ('quote it ("on")',),
    ),
    Case(
        "unquoted-no",
        {"bad.yaml": _spec("  provider: google\n  clientId: no\n  scopes: [x]\n")},
        "bad.yaml:7:13",
        "unquoted `no` is a boolean to YAML 1.1 tools",
    ),
    Case(
        "unquoted-octal",
        {"bad.yaml": _spec("  provider: google\n  clientId: 0755\n  scopes: [x]\n")},
        "bad.yaml:7:13",
        "unquoted `0755` is an octal number",
    ),
    Case(
        "unquoted-date",
        {"bad.yaml": _spec("  provider: google\n  clientId: 2026-11-29\n  scopes: [x]\n")},
        "bad.yaml:7:13",
        "unquoted `2026-11-29` is a date",
    ),
    Case("alias-bomb", {"bad.yaml": BOMB}, "bad.yaml:", "alias/anchor expansion bomb"),
    Case("file-too-large", {"huge.yaml": _huge}, "huge.yaml", "over the 16777216 byte limit"),
    Case(
        "duplicate-name-across-files",
        {"a.yaml": link_doc("twice"), "b.yaml": link_doc("twice")},
        "b.yaml:4:9",
        "link 'twice' is declared twice",
        ("also at {dir}/a.yaml:4:9",),
    ),
    Case(
        "http-endpoint",
        {
            "bad.yaml": _spec(
                "  provider: custom\n  clientId: a\n  scopes: [offline_access]\n"
                "  authorizationEndpoint: https://auth.example.com/authorize\n"
                "  tokenEndpoint: http://auth.example.com/token\n"
            )
        },
        "bad.yaml:10:18",
        "tokenEndpoint must use https",
        ("hint: use https://auth.example.com/token",),
    ),
    Case(
        "ftp-endpoint",
        {
            "bad.yaml": _spec(
                "  provider: custom\n  clientId: a\n  scopes: [offline_access]\n"
                "  authorizationEndpoint: ftp://auth.example.com/authorize\n"
                "  tokenEndpoint: https://auth.example.com/token\n"
            )
        },
        "bad.yaml:9:26",
        "authorizationEndpoint must be an absolute https:// URL",
    ),
    Case(
        "http-loopback-without-allow",
        {
            "bad.yaml": _spec(
                "  provider: custom\n  clientId: a\n  scopes: [offline_access]\n"
                "  authorizationEndpoint: https://auth.example.com/authorize\n"
                "  tokenEndpoint: http://127.0.0.1:8080/token\n"
            )
        },
        "bad.yaml:10:18",
        "tokenEndpoint uses plain http on a loopback host",
        ("allowInsecureLoopback: true",),
    ),
    Case(
        "http-base-url",
        {"instance.yaml": INSTANCE_HEAD + "  baseUrl: http://wiki.example.com\n"},
        "instance.yaml:6:12",
        "baseUrl must use https",
        ("hint: use https://wiki.example.com",),
    ),
    Case(
        "google-private-ip-redirect",
        {"instance.yaml": INSTANCE_HEAD + "  baseUrl: https://10.0.0.5\n", "bad.yaml": PLAIN_LINK},
        "bad.yaml:1:1",
        "Google refuses redirect URLs on private or loopback addresses (10.0.0.5)",
        ("public host name",),
    ),
    Case(
        "scopes-missing",
        {"bad.yaml": _spec("  provider: google\n  clientId: a\n")},
        "bad.yaml:6:3",
        "scopes are missing",
        ("spec.scopes",),
    ),
    Case(
        "custom-with-google-endpoints",
        {
            "bad.yaml": _spec(
                "  provider: custom\n  clientId: a\n  scopes: [offline_access, email]\n"
                "  authorizationEndpoint: https://accounts.google.com/o/oauth2/v2/auth\n"
                "  tokenEndpoint: https://oauth2.googleapis.com/token\n"
            )
        },
        "bad.yaml:9:26",
        "points at Google (accounts.google.com) but provider is custom",
        ("hint: use provider: google",),
    ),
    Case(
        "custom-without-offline-access",
        {
            "bad.yaml": _spec(
                "  provider: custom\n  clientId: a\n  scopes: [openid, email]\n"
                "  issuer: https://id.example.com\n"
            )
        },
        "bad.yaml:8:11",
        "no refresh token will be issued without the offline_access scope",
        ("add offline_access to spec.scopes",),
    ),
    Case(
        "custom-without-endpoints",
        {"bad.yaml": _spec("  provider: custom\n  clientId: a\n  scopes: [offline_access]\n")},
        "bad.yaml:6:3",
        "needs authorizationEndpoint and tokenEndpoint, or issuer for discovery",
    ),
    Case(
        "tenant-on-google",
        {"bad.yaml": _spec("  provider: google\n  clientId: a\n  tenant: contoso\n  scopes: [x]\n")},
        "bad.yaml:8:11",
        "tenant applies only to provider microsoft",
    ),
    Case(
        "google-client-credentials",
        {
            "bad.yaml": _spec(
                "  provider: google\n  clientId: a\n  grant: client_credentials\n  scopes: [x]\n"
            )
        },
        "bad.yaml:8:10",
        "Google does not support the client_credentials grant",
    ),
    Case(
        "plaintext-secret",
        {
            "bad.yaml": _spec(
                "  provider: google\n  clientId: a\n  clientSecret: hunter2-plain\n  scopes: [x]\n"
            )
        },
        "bad.yaml:8:17",
        "clientSecret is in plaintext",
        ("linkctl secrets encrypt --in-place FILE", "fromEnv"),
    ),
    Case(
        "from-env-unset",
        {
            "bad.yaml": _spec(
                "  provider: google\n  clientId: a\n  clientSecret:\n    fromEnv: E2E_UNSET_VAR\n"
                "  scopes: [x]\n"
            )
        },
        "bad.yaml:9:14",
        "environment variable E2E_UNSET_VAR is not set",
        ("export E2E_UNSET_VAR=",),
    ),
    Case(
        "from-file-missing",
        {
            "bad.yaml": _spec(
                "  provider: google\n  clientId: a\n  clientSecret:\n    fromFile: nope/missing.txt\n"
                "  scopes: [x]\n"
            )
        },
        "bad.yaml:9:15",
        "cannot read secret file",
        ("relative to the declaring file",),
    ),
    Case(
        "unknown-kind",
        {"bad.yaml": "apiVersion: linkctl.dev/v1\nkind: IncomingLink\nmetadata:\n  name: bad\n"},
        "bad.yaml:2:7",
        "unknown kind 'IncomingLink'",
        ("use one of: OutgoingLink, Instance",),
    ),
    Case(
        "unknown-api-version",
        {"bad.yaml": "apiVersion: linkctl.dev/v2\nkind: OutgoingLink\nmetadata:\n  name: bad\n"},
        "bad.yaml:1:13",
        "unknown apiVersion 'linkctl.dev/v2'",
        ("linkctl.dev/v1",),
    ),
    Case(
        "uppercase-name",
        {"bad.yaml": link_doc("Support")},
        "bad.yaml:4:9",
        "name 'Support' is not a DNS label",
        ("for example 'support'",),
    ),
    Case(
        "invalid-grant",
        {"bad.yaml": _spec("  provider: google\n  clientId: a\n  grant: implicit\n  scopes: [x]\n")},
        "bad.yaml:8:10",
        "'authorization_code', 'device_code' or 'client_credentials'",
    ),
    Case(
        "two-instances",
        {"zz-second.yaml": INSTANCE_HEAD + "  baseUrl: https://other.example.com\n"},
        "zz-second.yaml:1:1",
        "a second Instance document (the first is at {dir}/instance.yaml:1)",
    ),
    Case(
        "no-instance",
        {"instance.yaml": None, "bad.yaml": PLAIN_LINK},
        "bad.yaml:1:1",
        "no Instance document declares spec.baseUrl",
        ("kind: Instance",),
    ),
    Case(
        "renamed-from-itself",
        {"bad.yaml": link_doc("bad", metadata_extra="renamedFrom: bad")},
        "bad.yaml:5:16",
        "renamedFrom equals the link's own name",
    ),
    Case(
        "google-prompt-none",
        {
            "bad.yaml": _spec(
                "  provider: google\n  clientId: a\n  scopes: [x]\n  authorizeParams:\n    prompt: none\n"
            )
        },
        "bad.yaml:10:13",
        "Google issues no refresh token unless prompt=consent",
    ),
    Case(
        "not-utf8",
        {"bad.yaml": b"apiVersion: linkctl.dev/v1\nkind: OutgoingLink\nmetadata:\n  name: caf\xe9\n"},
        "bad.yaml:4:12",
        "file is not UTF-8 text",
    ),
    Case(
        "list-of-documents",
        {"bad.yaml": "- " + PLAIN_LINK.replace("\n", "\n  ").rstrip() + "\n"},
        "bad.yaml:1:1",
        "a document must be a mapping",
        ("separate them with ---",),
    ),
    Case(
        "merge-key",
        {"bad.yaml": _spec("  <<: {provider: google}\n  clientId: a\n  scopes: [x]\n")},
        "bad.yaml:6:3",
        "YAML merge keys (<<) are not supported",
    ),
    Case(
        "custom-tag",
        {"bad.yaml": PLAIN_LINK + "  tokenParams:\n    audience: !vault secret/data/x\n"},
        "bad.yaml:11:15",
        "custom YAML tag '!vault' is not allowed",
    ),
    Case(
        "spec-not-a-mapping",
        {"bad.yaml": LINK_HEAD.rstrip() + " just-a-string\n"},
        "bad.yaml:5:7",
        "expected a mapping, got a string (at spec)",
    ),
    Case(
        "json-duplicate-key",
        {"bad.json": '{"apiVersion": "linkctl.dev/v1",\n "apiVersion": "linkctl.dev/v1"}\n'},
        "bad.json:2:2",
        "duplicate key 'apiVersion'",
    ),
    # -- prune safety: the directory scan and renamedFrom (a skipped file or an ignored rename
    # -- would make --prune delete links that are still declared) --------------------------
    Case(
        "upper-case-extension",
        {"bad.YAML": _spec("  provider: google\n  scopes: [a, b\n")},
        "bad.YAML:8:1",
        "YAML syntax error: did not find expected ',' or ']'",
    ),
    Case(
        "symlinked-directory",
        {"team": _linked_dir({"bad.yaml": _spec("  provider: google\n  scopes: [a, b\n")})},
        "team/bad.yaml:8:1",
        "YAML syntax error: did not find expected ',' or ']'",
    ),
    Case(
        "symlink-loop",
        {"loop": lambda path: path.symlink_to(path.name)},
        "loop",
        "cannot read: Too many levels of symbolic links",
    ),
    Case(
        "unreadable-directory",
        {"team": _unreadable_dir},
        "team",
        "cannot read directory: Permission denied",
    ),
    Case(
        "vanished-file",  # listed by the scan, gone when read: a dangling link is the same case
        {"gone.yaml": lambda path: path.symlink_to("deleted.yaml")},
        "gone.yaml",
        "cannot read file: No such file or directory",
    ),
    Case(
        "renamed-from-still-declared",
        {"bad.yaml": link_doc("bad", metadata_extra="renamedFrom: good")},
        "bad.yaml:5:16",
        "renamedFrom 'good' is still declared as a link",
    ),
    Case(
        "renamed-from-twice",
        {
            "bad.yaml": link_doc("bad", metadata_extra="renamedFrom: old"),
            "bad2.yaml": link_doc("bad-two", metadata_extra="renamedFrom: old"),
        },
        "bad2.yaml:5:16",
        "renamedFrom 'old' is also claimed by link 'bad' ({dir}/bad.yaml:1)",
        ("one link can be renamed only once",),
    ),
    Case(
        "missing-file-argument",
        {},
        "",  # checked by the extra argument below
        "no such file or directory",
    ),
    # -- secrets encrypted outside clientSecret: checked like plain values, never quoted --
    Case(
        "encrypted-endpoint-not-https",
        {
            "bad.yaml": lambda path: _encrypt_to(
                path,
                _spec(
                    "  provider: custom\n  clientId: a\n  grant: client_credentials\n"
                    "  tokenEndpoint: ftp://hunter2-plain.example/token\n"
                ),
                "^tokenEndpoint$",
            )
        },
        "bad.yaml:9:20",
        "tokenEndpoint must be an absolute https:// URL, got an encrypted value",
        env={"SOPS_AGE_KEY": _AGE.encode()},
    ),
    # --- secret sources (issue 8 §3): fromEnv names linkctl/SOPS settings or a pasted secret ---
    Case(
        "from-env-linkctl-own-variable",
        {
            "bad.yaml": _spec(
                "  provider: google\n  clientId: a\n  clientSecret:\n    fromEnv: LINKCTL_STATE_KEY\n"
                "  scopes: [x]\n"
            )
        },
        "bad.yaml:9:14",
        "fromEnv LINKCTL_STATE_KEY is one of linkctl's or SOPS's own variables",
        ("not its value",),
        env={"LINKCTL_STATE_KEY": "e2e-state-key-canary"},
    ),
    Case(
        "from-env-sops-own-variable",
        {
            "bad.yaml": _spec(
                "  provider: google\n  clientId: a\n  clientSecret:\n    fromEnv: SOPS_AGE_KEY\n"
                "  scopes: [x]\n"
            )
        },
        "bad.yaml:9:14",
        "fromEnv SOPS_AGE_KEY is one of linkctl's or SOPS's own variables",
    ),
    Case(
        "from-env-pasted-secret",
        {
            "bad.yaml": _spec(
                "  provider: google\n  clientId: a\n  clientSecret:\n    fromEnv: GOCSPX-e2e-pasted-canary\n"
                "  scopes: [x]\n"
            )
        },
        "bad.yaml:9:14",
        "fromEnv is not a valid environment variable name (is it the secret itself?)",
    ),
    # --- credentials in URLs (issue 8 §3): refused without echoing the password ---
    Case(
        "url-credentials-base-url",
        {
            "instance.yaml": INSTANCE.replace(
                "https://wiki.example.com", "https://admin:e2e-pasted-canary@wiki.example.com"
            )
        },
        "instance.yaml:6:12",
        "baseUrl must not contain credentials (user:password@)",
    ),
    Case(
        "url-credentials-token-endpoint",
        {
            "bad.yaml": _spec(
                "  provider: custom\n  clientId: a\n  grant: client_credentials\n  scopes: [x]\n"
                "  tokenEndpoint: https://u:e2e-pasted-canary@idp.example.com/token\n"
            )
        },
        "bad.yaml:10:18",
        "tokenEndpoint must not contain credentials (user:password@)",
    ),
    # --- fromFile (issue 8 §3): regular files inside the input tree or LINKCTL_SECRET_DIRS ---
    Case(
        "from-file-outside-input",
        {"bad.yaml": _from_file("../../baseline/good.yaml")},
        "bad.yaml:9:15",
        "fromFile '../../baseline/good.yaml' resolves outside the directories given as input",
        ("LINKCTL_SECRET_DIRS",),
    ),
    Case(
        "from-file-symlink-outside",
        {"bad.yaml": _from_file("environ"), "environ": lambda p: p.symlink_to("/proc/self/environ")},
        "bad.yaml:9:15",
        "fromFile 'environ' resolves outside the directories given as input",
    ),
    Case(
        "from-file-absolute",
        {"bad.yaml": _from_file("/proc/self/environ")},
        "bad.yaml:9:15",
        "fromFile '/proc/self/environ' is an absolute path outside LINKCTL_SECRET_DIRS",
        ("e.g. /run/secrets",),
    ),
    Case(
        "from-file-dev-zero",
        {"bad.yaml": _from_file("/dev/zero")},
        "bad.yaml:9:15",
        "secret file '/dev/zero' is not a regular file (a device)",
        env={"LINKCTL_SECRET_DIRS": "/run/secrets:/dev"},
    ),
    Case(
        "from-file-dev-urandom",
        {"bad.yaml": _from_file("/dev/urandom")},
        "bad.yaml:9:15",
        "secret file '/dev/urandom' is not a regular file (a device)",
        env={"LINKCTL_SECRET_DIRS": "/dev"},
    ),
    Case(
        "from-file-fifo",
        {"bad.yaml": _from_file("secret.fifo"), "secret.fifo": lambda p: os.mkfifo(p)},
        "bad.yaml:9:15",
        "secret.fifo' is not a regular file (a FIFO)",
    ),
    Case(
        "from-file-directory",
        {"bad.yaml": _from_file(".")},
        "bad.yaml:9:15",
        "is not a regular file (a directory)",
    ),
    Case(
        "from-file-too-large",
        {"bad.yaml": _from_file("big.txt"), "big.txt": lambda p: p.write_bytes(b"x" * (64 * 1024 + 1))},
        "bad.yaml:9:15",
        "big.txt' is over the 65536 byte limit",
    ),
    # --- plaintext secret-looking parameters (issue 8 §3): an error, the value never echoed ---
    Case(
        "plaintext-token-param-secret",
        {
            "bad.yaml": _spec(
                "  provider: custom\n  clientId: a\n  grant: client_credentials\n  scopes: [x]\n"
                "  tokenEndpoint: https://idp.example.com/token\n"
                "  tokenParams:\n    client_assertion: hunter2-plain\n"
            )
        },
        "bad.yaml:12:23",
        "tokenParams.client_assertion looks like a secret and is in plaintext",
        ("--encrypted-regex",),
    ),
    # --- hostile input (issue 8 §4): scope tokens ---
    Case(
        "scope-with-space",
        {"bad.yaml": _spec('  provider: google\n  clientId: a\n  scopes: [openid, "email profile"]\n')},
        "bad.yaml:8:20",
        "is not a single scope token (RFC 6749 §3.3",
    ),
    Case(
        "numeric-host-endpoint",
        {
            "bad.yaml": _spec(
                "  provider: custom\n  clientId: a\n  scopes: [offline_access]\n"
                "  authorizationEndpoint: https://auth.example.com/authorize\n"
                "  tokenEndpoint: https://0x7f000001/token\n"
            )
        },
        "bad.yaml:10:18",
        "is a non-canonical numeric address",
    ),
    # --- hostile input (issue 8 §4): loader limits ---
    Case(
        "yaml-deep-nesting",
        {"bad.yaml": _spec("  provider: google\n  clientId: a\n  scopes: " + "[" * 500 + "]" * 500 + "\n")},
        "bad.yaml:8:73",
        "nesting deeper than 64 levels",
    ),
    Case(
        "json-deep-nesting",
        {"bad.json": '{"apiVersion": "linkctl.dev/v1", "x": ' + "[" * 10_000 + "]" * 10_000 + "}"},
        "bad.json:1:102",
        "nesting deeper than 64 levels",
    ),
    Case(
        "integer-thousands-of-digits",
        {"bad.yaml": _spec("  provider: google\n  clientId: " + "9" * 5000 + "\n")},
        "bad.yaml:7:13",
        "not a usable integer (5000 characters)",
    ),
    Case(
        "python-object-tag-on-mapping",
        {"bad.yaml": _spec("  provider: google\n  tokenParams: !!python/object:os.system {a: b}\n")},
        "bad.yaml:7:16",
        "custom YAML tag 'tag:yaml.org,2002:python/object:os.system' is not allowed",
    ),
    Case(
        "custom-tag-on-sequence",
        {"bad.yaml": _spec("  provider: google\n  scopes: !bar [openid]\n")},
        "bad.yaml:7:11",
        "custom YAML tag '!bar' is not allowed",
    ),
    Case(
        "custom-tag-on-quoted-scalar",
        {"bad.yaml": _spec('  provider: google\n  clientId: !foo "a"\n')},
        "bad.yaml:7:13",
        "custom YAML tag '!foo' is not allowed",
    ),
    Case(
        "nul-byte",
        {"bad.yaml": _spec("  provider: goo\0gle\n").encode()},
        "bad.yaml:6:16",
        "character U+0000 is not allowed",
    ),
    Case(
        "tab-indentation",
        {"bad.yaml": _spec("  provider: google\n\tclientId: a\n")},
        "bad.yaml:7:1",
        "tabs are not allowed for indentation",
    ),
    Case(
        "fifo-inside-a-scanned-directory",
        {"bad.yaml": lambda path: os.mkfifo(path)},
        "bad.yaml",
        "not a regular file",
    ),
]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Linkctl, dict[str, Any], int]:
    """A store with one applied link; the snapshot and event count every case must leave alone."""
    tmp = tmp_path_factory.mktemp("bad-inputs")
    home = tmp / "home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / ".local/state"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "GOOD_SECRET": GOOD_SECRET,
    }
    cli = make_linkctl(env, tmp)
    base = cli.cwd / "baseline"
    base.mkdir()
    (base / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    (base / "good.yaml").write_text(link_doc("good", secret_env="GOOD_SECRET"), encoding="utf-8")
    cli("apply", "baseline")
    snapshot = cli.snapshot()
    assert snapshot["serial"] == 1 and [link["name"] for link in snapshot["links"]] == ["good"]
    events = len(cli("state", "events", "--limit", "1000", "-o", "json").json()["events"])
    assert events >= 1
    return cli, snapshot, events


def _materialize(cli: Linkctl, case: Case) -> str:
    directory = cli.cwd / "cases" / case.id
    directory.mkdir(parents=True)
    files: dict[str, Any] = {
        "instance.yaml": INSTANCE,
        "good.yaml": link_doc("good", secret_env="GOOD_SECRET"),
    }
    files.update(case.files)
    for name, content in files.items():
        path = directory / name
        if content is None:
            continue
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return f"cases/{case.id}"


def test_there_are_at_least_30_cases() -> None:
    assert len({case.id for case in CASES}) == len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_and_store_unchanged(
    baseline: tuple[Linkctl, dict[str, Any], int], case: Case
) -> None:
    cli, before, events_before = baseline
    if case.id == "unreadable-directory" and os.geteuid() == 0:
        # Root reads a 0000 directory; tests/unit/test_scan.py covers the same error as root.
        pytest.skip("running as root: a directory with mode 0000 stays readable")
    directory = _materialize(cli, case)
    args = ["apply", directory]
    if case.id == "missing-file-argument":
        args.append(f"{directory}/does-not-exist.yaml")
    started = time.monotonic()
    result = cli(*args, env=case.env, expect=3, timeout=60)
    elapsed = time.monotonic() - started

    where = f"{directory}/{case.where}" if case.where else f"{directory}/does-not-exist.yaml"
    # The location is followed directly by ": error: ".
    if where.endswith(":"):  # the exact line:col depends on where expansion stopped
        assert re.search(rf"(?m)^{re.escape(where)}\d+:\d+: error: ", result.stderr), str(result)
    else:
        assert f"{where}: error: " in result.stderr, str(result)
    assert case.message.format(dir=directory) in result.stderr, str(result)
    for fragment in case.also:
        assert fragment.format(dir=directory) in result.stderr, str(result)
    assert TRACEBACK not in result.output
    assert "hunter2-plain" not in result.output, "a plaintext secret was repeated"
    assert "e2e-pasted-canary" not in result.output, "a secret pasted as a variable name was echoed"
    assert "e2e-state-key-canary" not in result.output, "linkctl's own state key was exposed"
    assert "error(s) in the declared configuration" in result.stderr
    assert result.stdout == "", "a refused apply prints no plan"
    if case.id == "alias-bomb" or case.id.startswith("from-file-"):
        assert elapsed < 5, f"{case.id} took {elapsed:.1f} s to refuse"

    assert cli.snapshot() == before, "a failed validation changed the store"
    events = cli("state", "events", "--limit", "1000", "-o", "json").json()["events"]
    assert len(events) == events_before, "a failed validation wrote audit events"


def test_other_tools_documents_are_skipped(linkctl: Linkctl) -> None:
    """A Kubernetes Secret next to a link is skipped (listed with --verbose), quirks and all."""
    (linkctl.cwd / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    (linkctl.cwd / "mixed.yaml").write_text(
        "apiVersion: v1\n"
        "kind: Secret\n"
        "metadata:\n"
        "  name: Not_A_DNS_Label\n"
        "stringData:\n"
        "  enabled: on\n"  # a YAML 1.1 boolean: an error in our documents, not in theirs
        "  mode: 0755\n"
        "---\n" + link_doc("mixed", secret_env="MIXED_SECRET"),
        encoding="utf-8",
    )
    env = {"MIXED_SECRET": "s3cret-mixed"}
    result = linkctl("validate", "--verbose", "instance.yaml", "mixed.yaml", env=env)
    assert "skipped mixed.yaml#0: apiVersion 'v1' is not linkctl.dev" in result.stderr
    assert "OK: 1 link(s) in 2 file(s)" in result.stdout
    assert "error" not in result.stderr
    quiet = linkctl("validate", "instance.yaml", "mixed.yaml", env=env)
    assert "skipped" not in quiet.stderr
    linkctl("apply", "instance.yaml", "mixed.yaml", env=env)
    assert [link["name"] for link in linkctl("list", "-o", "json").json()["links"]] == ["mixed"]


def test_fifo_or_device_argument_is_refused_without_blocking(linkctl: Linkctl) -> None:
    """Hostile input (issue 8 §4): a FIFO nobody writes to, or /dev/zero, named as an argument."""
    (linkctl.cwd / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    os.mkfifo(linkctl.cwd / "pipe.yaml")
    started = time.monotonic()
    result = linkctl("validate", "instance.yaml", "pipe.yaml", "/dev/zero", expect=3, timeout=30)
    assert time.monotonic() - started < 20
    assert "pipe.yaml: error: not a regular file (a FIFO, socket or device)" in result.stderr
    assert "/dev/zero: error: not a regular file (a FIFO, socket or device)" in result.stderr
    assert TRACEBACK not in result.output


@pytest.mark.parametrize("api_version", ["linkctl.io/v1", "Linkctl.dev/v1", "linkctl/v1"])
def test_near_miss_api_version_is_a_warning(linkctl: Linkctl, api_version: str) -> None:
    """Hostile input (issue 8 §4): an apiVersion close to ours is not skipped silently."""
    (linkctl.cwd / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    (linkctl.cwd / "typo.yaml").write_text(
        link_doc("typo").replace("apiVersion: linkctl.dev/v1", f"apiVersion: {api_version}", 1),
        encoding="utf-8",
    )
    result = linkctl("validate", "instance.yaml", "typo.yaml")
    assert f"typo.yaml:1:13: warning: apiVersion '{api_version}' looks like linkctl's" in result.stderr
    assert TRACEBACK not in result.output
