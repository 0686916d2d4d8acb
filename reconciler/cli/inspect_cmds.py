"""Inspection commands: list, show, redirect-url, state show/unlock/events/migrate/export/import, schema.

Each handler reads through :mod:`reconciler.services.views` (or the store) and renders;
registered after :mod:`reconciler.cli.core_cmds`, so ``linkctl --help`` keeps its order.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.cli.core_cmds import output_arg, validated
from reconciler.cli.keeper_cmds import count
from reconciler.cli.output import reads_only
from reconciler.errors import EXIT_OK, LinkctlError, StateError

if TYPE_CHECKING:
    from reconciler.cli.output import Context


def register(subparsers: Any) -> None:
    """Add the inspection subcommands."""
    p = subparsers.add_parser("list", help="list stored links with provider, source, redirect URL, status")
    output_arg(p)
    p.set_defaults(handler=cmd_list)

    p = subparsers.add_parser("show", help="show one stored link")
    p.add_argument("name")
    output_arg(p)
    p.set_defaults(handler=cmd_show)

    p = subparsers.add_parser(
        "redirect-url", help="print a link's redirect URL (works before clientId/clientSecret exist)"
    )
    p.add_argument("name")
    p.add_argument(
        "-f",
        "--from",
        dest="from_paths",
        nargs="+",
        metavar="PATH",
        help="compute it from declared files instead of the store",
    )
    p.set_defaults(handler=cmd_redirect_url)

    p = subparsers.add_parser("state", help="inspect the store and its lock")
    state = p.add_subparsers(dest="state_command", metavar="ACTION", required=True)
    s = state.add_parser("show", help="state URL, serial, lock holder, counts")
    output_arg(s)
    s.set_defaults(handler=cmd_state_show)
    s = state.add_parser("unlock", help="remove a lock left behind (see the lock error for its ID)")
    s.add_argument("lock_id", metavar="ID")
    s.set_defaults(handler=cmd_state_unlock)
    s = state.add_parser("events", help="the audit log, newest first")
    s.add_argument("--link", help="only events of this link")
    s.add_argument("--limit", type=count, default=50)
    output_arg(s)
    s.set_defaults(handler=cmd_state_events)
    _register_transfer(state)

    p = subparsers.add_parser("schema", help="print or write the JSON Schemas of the declared kinds")
    p.add_argument("--write", metavar="DIR", help="write *.schema.json files into DIR")
    p.set_defaults(handler=cmd_schema)


@reads_only
def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl list``."""
    from reconciler.services.views import link_views, status_text

    views = link_views(ctx.store())
    if args.output == "json":
        ctx.json({"links": views})
        return EXIT_OK
    if not views:
        ctx.out("No links stored. Declare some and run `linkctl apply PATH`.")
        return EXIT_OK
    headers = ("NAME", "PROVIDER", "STATUS", "SOURCE", "REDIRECT URL")
    rows = [
        (v["name"], v["provider"], status_text(v), v["source"] or "-", v["redirect_url"] or "-")
        for v in views
    ]
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        ctx.out("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


@reads_only
def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl show NAME``."""
    from reconciler.services.views import detailed_view, stored_link

    link = stored_link(ctx.store(), args.name)
    view = detailed_view(ctx.store(), link)
    spec = view["spec"]
    if args.output == "json":
        ctx.json(view)
        return EXIT_OK
    for key in (
        "name",
        "provider",
        "status",
        "source",
        "redirect_url",
        "grant",
        "client_id",
        "scopes",
        "generation",
        "updated_at",
        "last_refresh_at",
        "access_token_expires_at",
        "next_refresh_at",
        "retry_at",
        "last_error",
        "reauthorize_scopes",
    ):
        if key in view and view[key] not in (None, [], ""):
            value = view[key]
            ctx.out(f"{key.replace('_', ' ')}: {', '.join(value) if isinstance(value, list) else value}")
    ctx.out("spec:")
    for key in sorted(spec):
        value = spec[key]
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
        if value not in (None, {}, []):
            ctx.out(f"  {key}: {json.dumps(value, ensure_ascii=False)}")
    from reconciler.render import describe_preset_added

    added = describe_preset_added(link.spec.get("presetAdded") or {})
    if added:
        ctx.out(f"  (added by the {link.provider} preset: {added})")
    return EXIT_OK


@reads_only
def cmd_redirect_url(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl redirect-url NAME``: the URL to register at the provider."""
    if args.from_paths:
        from reconciler.validate import redirect_url

        result = validated(args, ctx, args.from_paths)
        if result.instance is None:
            raise LinkctlError("no Instance document with spec.baseUrl in those files")
        if args.name not in {link.name for link in result.links}:
            raise LinkctlError(f"no link named {args.name!r} is declared in those files")
        ctx.out(redirect_url(result.instance.spec.baseUrl, args.name))
        return EXIT_OK
    from reconciler.services.views import stored_link

    link = stored_link(ctx.store(), args.name)
    url = link.spec.get("redirectUri")
    if not url:
        raise LinkctlError(f"link {args.name!r} has no redirect URL (grant {link.spec.get('grant')})")
    ctx.out(url)
    return EXIT_OK


@reads_only
def cmd_state_show(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl state show``."""
    from reconciler.domain.clock import iso_time

    store = ctx.store()
    lock = store.current_lock()
    info = {
        "state_url": store.url,
        "serial": store.state_serial(),
        "links": len(store.list_links()),
        "lock": None
        if lock is None
        else {
            "id": lock.id,
            "operation": lock.operation,
            "host": lock.host,
            "pid": lock.pid,
            "user": lock.user,
            "since": iso_time(lock.since, zulu=True),
        },
    }
    if args.output == "json":
        ctx.json(info)
    else:
        shown = str(info["state_url"])
        if shown.startswith("sqlite:///") and not shown.startswith("sqlite:////"):
            from reconciler.store.sqlite import sqlite_path

            shown += f" ({sqlite_path(shown)})"  # what a relative URL resolved to
        ctx.out(f"state: {shown}\nserial: {info['serial']}\nlinks: {info['links']}")
        ctx.out(
            "lock: none"
            if lock is None
            else f"lock: {lock.id} held by {lock.user} on {lock.host} (pid {lock.pid}) for {lock.operation}"
            f" since {iso_time(lock.since, zulu=True)}"
        )
    return EXIT_OK


def cmd_state_unlock(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl state unlock ID``."""
    info = ctx.store().force_unlock(args.lock_id)
    ctx.out(f"removed lock {info.id} ({info.operation} by {info.user} on {info.host}, pid {info.pid})")
    return EXIT_OK


@reads_only
def cmd_state_events(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl state events``."""
    from reconciler.domain.clock import iso_time

    events = ctx.store().list_events(link=args.link, limit=args.limit)
    if args.output == "json":
        ctx.json(
            {
                "events": [
                    {
                        "id": e.id,
                        "at": iso_time(e.at, zulu=True),
                        "action": e.action,
                        "link": e.link,
                        "actor": e.actor,
                        "detail": dict(e.detail),
                    }
                    for e in events
                ]
            }
        )
        return EXIT_OK
    for e in events:
        at = iso_time(e.at, zulu=True)
        ctx.out(f"{at}  {e.action:<22} {e.link or '-':<24} {e.actor}  {json.dumps(dict(e.detail))}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl schema [--write DIR]``."""
    from reconciler.models import json_schemas, render_schema

    schemas = json_schemas()
    if not args.write:
        ctx.stdout.write(render_schema(schemas["linkctl.schema.json"]))
        for name in ("outgoing-link.schema.json", "instance.schema.json"):
            ctx.stdout.write(render_schema(schemas[name]))
        return EXIT_OK
    target = Path(args.write)
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name, schema in schemas.items():
            (target / name).write_text(render_schema(schema), encoding="utf-8")
    except OSError as exc:
        raise StateError(f"cannot write schemas to {target}: {exc.strerror}") from None
    ctx.notice(f"wrote {len(schemas)} schema file(s) to {target}")
    return EXIT_OK


def _register_transfer(state: Any) -> None:
    """``state migrate``, ``state export FILE``, ``state import FILE``."""
    from reconciler.cli.keeper_cmds import timeout_seconds

    s = state.add_parser("migrate", help="bring the store's schema up to date (apply does it too)")
    s.set_defaults(handler=cmd_state_migrate)
    s = state.add_parser("export", help="write the whole state to FILE (sealed values stay sealed)")
    s.add_argument("file", metavar="FILE", type=Path)
    s.add_argument("--force", action="store_true", help="replace FILE if it exists")
    s.set_defaults(handler=cmd_state_export)
    s = state.add_parser("import", help="load a state written by `state export` into an empty store")
    s.add_argument("file", metavar="FILE", type=Path)
    s.add_argument(
        "--lock-timeout",
        type=timeout_seconds,
        metavar="SECONDS",
        help="how long to wait for the state lock (default 60, $LINKCTL_LOCK_TIMEOUT)",
    )
    s.set_defaults(handler=cmd_state_import)


def cmd_state_migrate(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl state migrate``."""
    from reconciler.services.state_transfer import schema_version

    store = ctx.store()  # opening migrates (and says from which version)
    ctx.out(f"state: {store.url}\nschema version: {schema_version(store)} (up to date)")
    return EXIT_OK


@reads_only
def cmd_state_export(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl state export FILE``."""
    from reconciler.services.state_transfer import export_state

    counts = export_state(ctx.store(), args.file, force=args.force)
    ctx.out(f"exported {_counted(counts)} to {args.file}")
    return EXIT_OK


def cmd_state_import(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl state import FILE``."""
    from reconciler.services.state_transfer import import_state, read_state_file

    read_state_file(args.file)  # a bad file is refused before the store is created or touched
    counts = import_state(ctx.store(), args.file, lock_timeout=ctx.settings.lock_timeout)
    ctx.out(f"imported {_counted(counts)} from {args.file} into {ctx.store().url}")
    return EXIT_OK


def _counted(counts: dict[str, int]) -> str:
    shown = [f"{n} {table}" for table, n in counts.items() if n]
    return ", ".join(shown) if shown else "an empty state"
