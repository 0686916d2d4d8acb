"""``linkctl serve`` and ``linkctl apikey``: the command-line edge of the HTTP server.

``serve`` first binds the address itself (so a taken port is a clear error, and
``--listen HOST:0`` picks a free port that it prints), then runs granian (one worker
process, ASGI) on the application factory ``reconciler.server.app:app_from_environment``
given as an import string: this edge may not import the server edge, and the worker
builds the app from its options in the environment. ``apikey`` creates, lists and revokes API keys through
:mod:`reconciler.services.apikeys`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.cli.output import Context

DEFAULT_LISTEN = "127.0.0.1:8080"
APP_FACTORY = "reconciler.server.app:app_from_environment"

SERVE_DESCRIPTION = """\
Serve the links pages, the hosted OAuth callback ({baseUrl}/oauth/callback/{name}), the token
API (/v1/links/{name}/token, described at /openapi.json), /healthz, /readyz and /metrics.

One serve process is one event loop on one core. Everything a request needs is in the store
(API keys, sessions, pending authorizations), so to use more cores or machines run more
`linkctl serve` processes on the same store behind a load balancer. --workers sets the
keeper's worker threads (like `linkctl keeper --workers`) and needs --keeper.

An API key revoked with `linkctl apikey revoke` is refused by every serve process within
1 second (each process re-reads a key it has seen at most that long after).
"""


def listen_address(text: str) -> tuple[str, int]:
    """An argparse type: ``HOST:PORT`` (``[::1]:8080`` for IPv6; port 0 picks a free one)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. 127.0.0.1:8080, not {text[:60]!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def days(text: str) -> float:
    """An argparse type: a number of days from over 0 up to ten years."""
    from reconciler.services.apikeys import MAX_EXPIRY_DAYS
    from reconciler.settings import parse_number

    try:
        value = parse_number(text, maximum=MAX_EXPIRY_DAYS)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"days {exc}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("days must be more than 0")
    return value


def register(subparsers: Any) -> None:
    """Add ``serve`` and ``apikey`` to the ``linkctl`` parser."""
    from reconciler.cli.keeper_cmds import count

    serve = subparsers.add_parser(
        "serve",
        help="run the HTTP server: pages, OAuth callback, token API, metrics",
        description=SERVE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--listen",
        type=listen_address,
        default=listen_address(DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )
    serve.add_argument("--keeper", action="store_true", help="also run the token keeper in this process")
    serve.add_argument(
        "--workers",
        type=count,
        default=None,
        metavar="N",
        help="keeper worker threads with --keeper (default 4)",
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="access and server log lines on stderr (default text, $LINKCTL_LOG_FORMAT)",
    )
    serve.set_defaults(handler=serve_command)

    apikey = subparsers.add_parser(
        "apikey",
        help="create, list and revoke API keys of the token API and the pages",
        description="API keys for the token API (a key reads the links its --links patterns name)"
        " and, with --admin, for logging in to the pages. Only a hash of a key is stored.",
    )
    actions = apikey.add_subparsers(dest="apikey_action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="create a key; it is printed once, as the last line of stdout",
        description="Create an API key and print it once, as the last line of stdout (it is never"
        " shown again: only its SHA-256 is stored). A key reads only the links its patterns name;"
        " an --admin key logs in to the pages and is refused by the token API.",
    )
    create.add_argument(
        "--links",
        action="append",
        required=True,
        metavar="PATTERN",
        help="glob over link names, e.g. 'ci-*' (repeat, or separate with commas)",
    )
    create.add_argument("--name", metavar="LABEL", help="a label to recognize the key by")
    create.add_argument("--expires", type=days, metavar="DAYS", help="expire after this many days")
    create.add_argument("--admin", action="store_true", help="a key for the pages' log-in, not the token API")
    create.set_defaults(handler=apikey_create)
    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--output", "-o", choices=("text", "json"), default="text")
    listing.set_defaults(handler=apikey_list)
    revoke = actions.add_parser("revoke", help="revoke a key (and end its sessions)")
    revoke.add_argument("id", metavar="ID", help="the key's id (see `linkctl apikey list`)")
    revoke.set_defaults(handler=apikey_revoke)


def apikey_create(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl apikey create``: make a key and print it once."""
    from reconciler.domain.clock import iso_time
    from reconciler.services import apikeys

    patterns = apikeys.split_patterns(args.links)  # before opening (and maybe creating) the store
    record, key = apikeys.create(
        ctx.store(), patterns=patterns, label=args.name, expires_days=args.expires, admin=args.admin
    )
    kind = "admin key (pages only)" if record.admin else "key"
    expiry = f", expires {iso_time(record.expires_at, zulu=True)}" if record.expires_at else ""
    ctx.notice(f"created API {kind} {record.id} for links {', '.join(record.patterns)}{expiry}")
    ctx.notice("it is shown only now, on stdout; store it where its user reads it")
    ctx.out(key.reveal())
    return 0


def apikey_list(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl apikey list``: keys with their patterns and times, never a key."""
    from reconciler.services import apikeys

    views = apikeys.list_views(ctx.store())
    if args.output == "json":
        ctx.json(views)
        return 0
    if not views:
        ctx.notice("no API keys; create one with `linkctl apikey create --links PATTERN`")
        return 0
    header = ("ID", "LABEL", "LINKS", "KIND", "STATE", "CREATED", "LAST USED", "EXPIRES")
    rows = [
        (
            v["id"],
            v["label"] or "-",
            ",".join(v["patterns"]),
            "admin" if v["admin"] else "link",
            v["state"],
            v["created_at"],
            v["last_used_at"] or "never",
            v["expires_at"] or "never",
        )
        for v in views
    ]
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        ctx.out("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def apikey_revoke(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl apikey revoke ID``: refuse the key from now on (within a second on every server)."""
    from reconciler.services import apikeys

    record = apikeys.revoke(ctx.store(), args.id)
    ctx.notice(f"revoked API key {record.id}; servers refuse it within 1 s, and its sessions end")
    return 0


def serve_command(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl serve``: check the address, then run granian on the app factory until SIGTERM/SIGINT."""
    import json
    import os
    import socket

    from reconciler.cli.logs import log_format_of
    from reconciler.errors import EXIT_OK, LinkctlError, UsageError

    if args.workers is not None and not args.keeper:
        raise UsageError("--workers sets the keeper's worker threads and needs --keeper")
    workers = 4 if args.workers is None else args.workers
    if args.keeper and workers < 1:
        raise UsageError("--workers must be at least 1")
    settings = ctx.settings
    ctx.store()  # opens (creates, migrates) the store here, so a wrong key is an error before binding
    ctx.close()
    from reconciler.services.notify import NotifyPolicy

    NotifyPolicy.from_env(ctx.env)  # a bad LINKCTL_NOTIFY_* is a usage error before binding, too
    host, port = args.listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise LinkctlError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint="choose another --listen HOST:PORT (port 0 picks a free one)",
        ) from None
    bound_port = sock.getsockname()[1]
    # granian binds again (in Rust, with SO_REUSEADDR): checking here makes a taken port a
    # clear error and turns port 0 into a free port; another process could take it in between.
    sock.close()
    os.environ["LINKCTL_STATE"] = settings.state_url
    os.environ["LINKCTL_SERVE_OPTIONS"] = json.dumps(
        {
            "keeper": args.keeper,
            "keeper_workers": workers,
            "log_format": log_format_of(args.log_format, ctx.env) or "text",
        }
    )
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    shown = f"[{host}]" if family == socket.AF_INET6 else host
    keeper_note = f", keeper with {workers} worker(s)" if args.keeper else ""
    ctx.notice(f"linkctl serve: listening on http://{shown}:{bound_port}{keeper_note}; SIGTERM stops it")
    ctx.stderr.flush()
    server = Granian(
        APP_FACTORY,
        address=host,
        port=bound_port,
        interface=Interfaces.ASGI,
        workers=1,
        factory=True,
        backlog=2048,
        log_enabled=True,
        log_level=LogLevels.warning,  # granian's own notes; requests go to our access log
        log_access=False,  # ours never shows a query value (reconciler.server.access_log)
        respawn_failed_workers=False,
    )
    if ctx.env.get("NOTIFY_SOCKET"):
        _notify_when_ready(host, bound_port, ctx.env)
    server.serve()
    from reconciler.cli.sd_notify import STOPPING, sd_notify

    sd_notify(STOPPING, ctx.env)  # granian drained its workers: what remains is exiting
    return EXIT_OK


def _notify_when_ready(host: str, port: int, env: Mapping[str, str]) -> None:
    """Send READY=1 once ``/healthz`` answers 200 (the app started, its keeper too), from a thread.

    granian serves from this process (systemd's main PID), but gives no hook once it
    listens: asking the server itself is the one signal that cannot come too early.
    """
    import http.client
    import threading
    import time

    from reconciler.cli.sd_notify import READY, sd_notify

    def wait_then_notify() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection(host, port, timeout=2)
                try:
                    connection.request("GET", "/healthz")
                    if connection.getresponse().status == 200:
                        sd_notify(READY, env)
                        return
                finally:
                    connection.close()
            except OSError:
                pass
            time.sleep(0.05)

    threading.Thread(target=wait_then_notify, name="sd-notify-ready", daemon=True).start()
