"""``linkctl init [DIR]``: scaffold a links repository (a thin edge over services.scaffold)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.cli.output import Context


def register(subparsers: Any) -> None:
    """Add ``init``."""
    p = subparsers.add_parser(
        "init",
        help="scaffold a links repository: Instance, .sops.yaml with a new age key, example links",
        description="Create a links repository in DIR (default: the current directory): an Instance"
        " for --base-url, a .sops.yaml for an age recipient, one commented example link per provider"
        " (google, microsoft, custom), the JSON Schemas the files' editor modelines name, and a"
        " .gitignore. A new age identity is appended to sops's keys.txt outside the repository"
        " (mode 0600) unless --recipient names an existing one. Existing files are never overwritten.",
    )
    p.add_argument("directory", nargs="?", default=".", metavar="DIR", help="where to create it (default .)")
    p.add_argument(
        "--base-url", required=True, metavar="URL", help="the app's address (redirect URLs derive from it)"
    )
    p.add_argument("--name", metavar="NAME", help="the Instance name (default: the first label of the host)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--recipient", metavar="AGE_RECIPIENT", help="use this age recipient; generate no key")
    group.add_argument(
        "--age-key-file",
        metavar="PATH",
        help="append the new identity here (default: $XDG_CONFIG_HOME/sops/age/keys.txt, as sops reads it)",
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    p.set_defaults(handler=init_command)


def init_command(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl init [DIR] --base-url URL``."""
    from reconciler.services.scaffold import scaffold

    made = scaffold(
        Path(args.directory),
        base_url=args.base_url,
        env=ctx.env,
        name=args.name,
        recipient=args.recipient,
        key_file=Path(args.age_key_file).expanduser() if args.age_key_file else None,
    )
    if args.output == "json":
        ctx.json(
            {
                "directory": str(made.directory),
                "files": [str(path) for path in made.files],
                "recipient": made.recipient,
                "age_key_file": str(made.key_file) if made.key_file else None,
            }
        )
        return 0
    for path in made.files:
        ctx.out(f"created {path}")
    if made.key_file is not None:
        ctx.out(
            f"age identity for {made.recipient} appended to {made.key_file} (mode 0600; keep it out of git)"
        )
    where = made.directory
    ctx.out(
        f"next: `linkctl validate {where}`, then `linkctl redirect-url <link> --from {where}` and register"
        " that URL at the provider"
    )
    return 0
