"""``linkctl secrets encrypt|decrypt|edit|check`` and ``linkctl keygen``: SOPS files and age identities.

A thin edge over :mod:`reconciler.sops`; registered by :mod:`reconciler.cli`. Flags are
named like sops's so muscle memory carries over. Heavy modules load inside handlers.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.cli.output import write_atomic
from reconciler.errors import ConfigError, CryptoError, LinkctlError

if TYPE_CHECKING:
    from reconciler.cli.output import Context


def register(subparsers: Any) -> None:
    """Add ``secrets`` (encrypt/decrypt) and ``keygen`` to the CLI."""
    secrets = subparsers.add_parser(
        "secrets", help="encrypt/decrypt SOPS files (age recipients), compatible with sops"
    )
    sub = secrets.add_subparsers(dest="secrets_command", metavar="SUBCOMMAND")
    secrets.set_defaults(handler=_help(secrets))

    enc = sub.add_parser("encrypt", help="encrypt a YAML/JSON file for age recipients (to stdout)")
    enc.add_argument("--age", action="append", metavar="RECIPIENT[,…]", help="age recipient(s); repeatable")
    group = enc.add_mutually_exclusive_group()
    group.add_argument(
        "--encrypted-regex", metavar="RE", help="encrypt only values whose key path matches RE"
    )
    group.add_argument("--unencrypted-regex", metavar="RE", help="leave values whose key path matches RE")
    group.add_argument("--encrypted-suffix", metavar="S", help="encrypt only keys ending with S (and below)")
    group.add_argument("--unencrypted-suffix", metavar="S", help="leave keys ending with S (and below)")
    enc.add_argument("--mac-only-encrypted", action="store_true", help="MAC covers encrypted values only")
    enc.add_argument("--in-place", "-i", action="store_true", help="replace FILE (atomically, mode kept)")
    enc.add_argument("--config", metavar="PATH", help="the .sops.yaml to use (default: search from CWD up)")
    enc.add_argument("file", metavar="FILE")
    enc.set_defaults(handler=_encrypt)

    dec = sub.add_parser("decrypt", help="decrypt a SOPS file (plaintext to stdout, like `sops decrypt`)")
    dec.add_argument("--in-place", "-i", action="store_true", help="replace FILE with its plaintext")
    dec.add_argument("--ignore-mac", action="store_true", help="do not verify the MAC (like sops)")
    dec.add_argument("file", metavar="FILE")
    dec.set_defaults(handler=_decrypt)

    edit = sub.add_parser(
        "edit",
        help="edit a SOPS file's plaintext in $EDITOR, then encrypt it again (like `sops edit`)",
        description="Decrypt FILE to a private temporary file (0600, in /dev/shm where it exists), open"
        " $VISUAL or $EDITOR on it, and encrypt the result again for the same recipients and with the"
        " same rule. The plaintext copy is removed whatever happens: the editor fails or is killed,"
        " linkctl is stopped, or the text no longer parses (then FILE is left unchanged).",
    )
    edit.add_argument("file", metavar="FILE")
    edit.set_defaults(handler=_edit)

    check = sub.add_parser(
        "check",
        help="fail when a link file holds a secret in plaintext (no key needed; the pre-commit hook)",
        description="Report every clientSecret, webhook secret or secret-looking token/authorize"
        " parameter (client_assertion, password, ...) written in plaintext instead of SOPS-encrypted:"
        " the rule `validate` applies, run without decrypting anything. Other problems are left to"
        " `validate`. Exit 3 when a plaintext secret is found.",
    )
    check.add_argument("paths", nargs="+", metavar="PATH", help="files or directories (yaml, yml, json)")
    check.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    check.set_defaults(handler=_check)

    keygen = subparsers.add_parser("keygen", help="generate an age X25519 identity (like age-keygen)")
    keygen.add_argument("-o", "--output", metavar="FILE", help="write the identity to FILE (mode 0600)")
    keygen.set_defaults(handler=_keygen)


def _help(parser: argparse.ArgumentParser) -> Any:
    def handler(args: argparse.Namespace, ctx: Context) -> int:
        parser.print_help(ctx.stdout)
        return 0

    return handler


def _edit(args: argparse.Namespace, ctx: Context) -> int:
    from reconciler.cli.secrets_edit import edit_command

    return edit_command(args, ctx)


def _check(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl secrets check PATHS``: the plaintext-secret findings of ``validate --no-decrypt``."""
    from reconciler.diagnostics import render_text, sort_key
    from reconciler.errors import EXIT_INVALID
    from reconciler.validate.unopened import PLAINTEXT_SECRET, validate_without_decryption

    checked = validate_without_decryption(args.paths, env=ctx.env)
    found = sorted((d for d in checked.result.diagnostics if d.code == PLAINTEXT_SECRET), key=sort_key)
    files = checked.result.files
    if args.output == "json":
        ctx.json({"ok": not found, "files": files, "diagnostics": [d.to_json() for d in found]})
    elif found:
        ctx.stderr.write(render_text(found))
        ctx.stderr.write(f"{len(found)} plaintext secret(s) in {len({d.file for d in found})} file(s)\n")
    else:
        ctx.out(f"OK: no plaintext secret in {len(files)} file(s)")
    return EXIT_INVALID if found else 0


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {type(exc).__name__}") from None


def _encrypt(args: argparse.Namespace, ctx: Context) -> int:
    from reconciler import sops

    text = _read(args.file)
    rule = sops.EncryptionRule(
        encrypted_regex=args.encrypted_regex,
        unencrypted_regex=args.unencrypted_regex,
        encrypted_suffix=args.encrypted_suffix,
        unencrypted_suffix=args.unencrypted_suffix,
        mac_only_encrypted=args.mac_only_encrypted,
    )
    out = sops.encrypt_text(
        text,
        filename=args.file,
        fmt=sops.detect_format(args.file, text),
        env=ctx.env,
        recipients=args.age,
        rule=rule,
        config_path=args.config,
    )
    if _plaintext_client_secrets(out):
        ctx.stderr.write(
            f"warning: {args.file}: clientSecret is left unencrypted: the .sops.yaml creation rule "
            "(or the --*-regex/--*-suffix flags) does not cover it; add clientSecret to encrypted_regex\n"
        )
    if args.in_place:
        write_atomic(os.path.realpath(args.file), out)  # through a symlink, as sops does
    else:
        ctx.stdout.write(out)
    return 0


def _plaintext_client_secrets(text: str) -> int:
    """How many ``clientSecret`` string values in an encrypted file are not ``ENC[...]``."""
    import yaml

    def count(node: Any) -> int:
        if isinstance(node, dict):
            return sum(
                1
                if key == "clientSecret" and isinstance(value, str) and not value.startswith("ENC[")
                else count(value)
                for key, value in node.items()
            )
        if isinstance(node, list):
            return sum(count(item) for item in node)
        return 0

    try:
        return sum(count(doc) for doc in yaml.safe_load_all(text))
    except yaml.YAMLError:
        return 0


def _decrypt(args: argparse.Namespace, ctx: Context) -> int:
    from reconciler import sops

    text = _read(args.file)
    fmt = sops.detect_format(args.file, text)
    docs = sops.decrypt_text(
        text, filename=args.file, fmt=fmt, env=ctx.env, ignore_mac=args.ignore_mac, comments=True
    )
    out = sops.dump_documents(docs, fmt=fmt, yaml_indent=_indent(ctx, fmt))
    if args.in_place:
        write_atomic(os.path.realpath(args.file), out)
    else:
        ctx.stdout.write(out)
    return 0


def _indent(ctx: Context, fmt: str) -> int:
    from reconciler.sops import config

    try:
        cfg = config.load_config(config.find_config(env=ctx.env, cwd=os.getcwd()))
    except LinkctlError:
        return 4
    return cfg.yaml_indent


def _keygen(args: argparse.Namespace, ctx: Context) -> int:
    import datetime as dt

    from reconciler.sops import age

    identity = age.generate_identity()
    created = dt.datetime.now().astimezone().replace(microsecond=0).isoformat()
    text = f"# created: {created}\n# public key: {identity.recipient}\n{identity.encode()}\n"
    if args.output and args.output != "-":
        try:
            fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise CryptoError(
                f"{args.output}: already exists; refusing to overwrite an identity file"
            ) from None
        except OSError as exc:
            raise ConfigError(f"{args.output}: cannot create: {exc.strerror}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(args.output, 0o600)
    else:
        ctx.stdout.write(text)
    ctx.notice(f"Public key: {identity.recipient}")
    return 0
