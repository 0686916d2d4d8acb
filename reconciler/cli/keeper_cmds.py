"""``linkctl token`` and ``linkctl keeper``: the command-line edge of the token keeper.

Registered by :mod:`reconciler.cli` (``COMMAND_MODULES``); the work is done by
:mod:`reconciler.keeper` and :mod:`reconciler.services.tokens`. ``token`` must start
fast: this module imports only that standard-library-only service at load time (argparse
only to register or to report a bad value), and a fresh token is printed without importing
httpx at all.

``token`` prints only the access token (or JSON with ``--output json``); this is the one
place where linkctl writes a token to stdout, because that is what the caller asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reconciler.services.tokens import DEFAULT_HTTP_TIMEOUT

if TYPE_CHECKING:
    import argparse

    from reconciler.cli.output import Context
    from reconciler.domain.grants import AccessToken, Grant
    from reconciler.oauth.client import TokenClient
    from reconciler.store.base import Store

DEFAULT_MIN_VALID = 60.0
DEFAULT_WAIT = 60.0


def seconds(text: str) -> float:
    """An argparse type: a finite, non-negative number of seconds (nan, inf, -1 are usage errors)."""
    from reconciler.settings import parse_number

    try:
        return parse_number(text, maximum=None)
    except ValueError as exc:
        import argparse

        raise argparse.ArgumentTypeError(f"seconds {exc}") from None


def timeout_seconds(text: str) -> float:
    """An argparse type: like :func:`seconds`, at most a day (a timeout or interval)."""
    from reconciler.settings import MAX_TIMEOUT_SECONDS, parse_number

    try:
        return parse_number(text, maximum=MAX_TIMEOUT_SECONDS)
    except ValueError as exc:
        import argparse

        raise argparse.ArgumentTypeError(f"seconds {exc}") from None


def count(text: str) -> int:
    """An argparse type: a whole number from 0 to a million (a limit, not an allocation size)."""
    from reconciler.settings import MAX_COUNT, parse_number

    try:
        return int(parse_number(text, maximum=MAX_COUNT, integer=True))
    except ValueError as exc:
        import argparse

        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: Any) -> None:
    """Add ``token`` and ``keeper`` to the ``linkctl`` parser."""
    token = subparsers.add_parser(
        "token",
        help="print a fresh access token of a link",
        description="Print an access token valid for at least --min-valid seconds, refreshing it"
        " through the link's refresh lease if needed (safe to run concurrently).",
    )
    token.add_argument("name", metavar="NAME", help="link name")
    token.add_argument(
        "--min-valid",
        type=seconds,
        default=DEFAULT_MIN_VALID,
        metavar="SECONDS",
        help=f"minimum remaining validity (default {DEFAULT_MIN_VALID:g})",
    )
    token.add_argument("--output", "-o", choices=("text", "json"), default="text")
    token.add_argument(
        "--wait",
        type=seconds,
        default=DEFAULT_WAIT,
        metavar="SECONDS",
        help=f"how long to wait for another process's refresh (default {DEFAULT_WAIT:g})",
    )
    # json_errors: with -o json a failure is a JSON object on stdout (see render_json_error).
    token.set_defaults(handler=token_command, json_errors=True)

    keeper = subparsers.add_parser(
        "keeper",
        help="keep every link's tokens fresh (daemon, or --once from cron)",
        description="Obtain client-credentials tokens and refresh every grant before it expires."
        " Exit status of --once: 0 unless a refresh failed or a link is broken (links that wait"
        " for their first authorization are reported, not failures); --once prints nothing when"
        " nothing happened (no refresh attempted, nothing failed), so cron sends no mail."
        " Stopped by SIGTERM/SIGINT, the daemon drains its in-flight refreshes and exits 0.",
    )
    keeper.add_argument("--once", action="store_true", help="refresh what is due now, then exit")
    keeper.add_argument("--workers", type=count, default=4, metavar="N", help="worker threads (default 4)")
    keeper.add_argument(
        "--lease-ttl",
        type=timeout_seconds,
        default=30.0,
        metavar="S",
        help="refresh lease lifetime; must exceed the HTTP timeout (default 30)",
    )
    keeper.add_argument(
        "--http-timeout",
        type=timeout_seconds,
        default=DEFAULT_HTTP_TIMEOUT,
        metavar="S",
        help=f"token endpoint timeout (default {DEFAULT_HTTP_TIMEOUT:g})",
    )
    keeper.add_argument(
        "--poll-interval",
        type=timeout_seconds,
        default=5.0,
        metavar="S",
        help="longest pause between looks at the store (default 5)",
    )
    keeper.add_argument("--output", "-o", choices=("text", "json"), default="text")
    keeper.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the summary even when nothing happened (by default --once is silent then, for cron)",
    )
    keeper.set_defaults(handler=keeper_command)


def _token_client(
    ctx: Context, timeout: float, *, keepalive: bool = False, connections: int = 32
) -> TokenClient:
    from reconciler.oauth.client import TokenClient

    # Only the keeper keeps connections alive (many refreshes in a row); `linkctl token`
    # sends one request and exits.
    return TokenClient(
        timeout=timeout,
        keepalive=keepalive,
        max_connections=max(connections, 1),
        metadata_cache=ctx.metadata_cache(),
    )


def token_command(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl token NAME``: print an access token valid for at least ``--min-valid`` s."""
    from reconciler.services.tokens import fresh_access_token, ready_access_token, token_json

    token: Grant | AccessToken
    ready = ready_access_token(ctx.settings, args.name, min_valid=args.min_valid, notice=ctx.notice)
    if ready is not None:
        token, now = ready
    else:
        token, now = fresh_access_token(
            ctx.store(),
            args.name,
            min_valid=args.min_valid,
            wait=args.wait,
            client_factory=lambda timeout: _token_client(ctx, timeout),
        )
    assert token.access_token is not None
    if args.output == "json":
        ctx.json(token_json(token, now))
    else:
        ctx.out(token.access_token.reveal())
    return 0


def _counts(report: Any) -> dict[str, int]:
    """A keeper report's counts for a log line (names and messages stay in the per-link lines)."""
    return {
        "refreshed": len(report.refreshed),
        "obtained": len(report.obtained),
        "failed": len(report.failed),
        "broken": len(report.broken),
    }


def keeper_command(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl keeper``: refresh forever (SIGTERM/SIGINT stop it cleanly), or once with --once."""
    import signal
    import threading

    from reconciler import keeper
    from reconciler.errors import EXIT_ERROR, EXIT_OK, ConfigError
    from reconciler.services import notify
    from reconciler.settings import process_actor
    from reconciler.store import open_store

    try:
        policy = keeper.KeeperPolicy(
            lease_ttl=args.lease_ttl, http_timeout=args.http_timeout, poll_interval=args.poll_interval
        )
    except ValueError as error:
        raise ConfigError(str(error), hint="raise --lease-ttl or lower --http-timeout") from None
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    store = ctx.store()
    settings = ctx.settings

    def store_factory() -> Store:
        return open_store(settings, notice=ctx.notice)

    import logging

    from reconciler.cli.logs import configure, log_format_of
    from reconciler.cli.sd_notify import READY, STOPPING, sd_notify

    keeper_log = logging.getLogger("linkctl.keeper")

    notify_policy = notify.NotifyPolicy.from_env(ctx.env)
    client: Any = _token_client(ctx, policy.http_timeout, keepalive=True, connections=args.workers)
    # The daemon logs every attempt; --once (cron) only when a log format is asked for.
    log_format = log_format_of(getattr(args, "log_format", None), ctx.env)
    observe = None
    if log_format is not None or not args.once:
        from reconciler.cli.keeper_log import RefreshLog, TimedClient

        configure(log_format or "text", ctx.stderr)
        client = TimedClient(client)
        observe = RefreshLog(client, store_factory)
    # Status webhooks run beside the refreshes, on their own thread and store connection.
    notifier = None
    if not args.once:
        notifier = notify.NotifierThread(store_factory, actor=process_actor(ctx.env), policy=notify_policy)
    try:
        runner = keeper.Keeper(
            store, client, store_factory=store_factory, workers=args.workers, policy=policy, observe=observe
        )
        if args.once:
            # Look before and after: a change made by this run is told, however rarely cron runs it.
            notify.notify_once(store, actor=process_actor(ctx.env), policy=notify_policy, deliver=False)
            report = runner.run_once()
            notify.notify_once(store, actor=process_actor(ctx.env), policy=notify_policy)
        else:
            assert notifier is not None
            notifier.start()
            stop = threading.Event()

            def on_signal(signum: int, frame: object) -> None:
                ctx.notice(f"linkctl keeper: {signal.Signals(signum).name}: finishing in-flight refreshes")
                sd_notify(STOPPING, ctx.env)
                stop.set()

            previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                ctx.notice(f"linkctl keeper: running with {args.workers} worker(s); SIGTERM stops it")
                keeper_log.info("start", extra={"event": {"workers": args.workers}})
                sd_notify(READY, ctx.env)  # the store is open and the signals are handled
                report = runner.run_forever(stop)
                keeper_log.info("stop", extra={"event": {"drained": True, **_counts(report)}})
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
    finally:
        if notifier is not None:
            notifier.stop()
        client.close()
    if args.output == "json":
        ctx.json(report.as_dict())
    elif report.newsworthy or args.verbose:
        ctx.out(report.summary())
        for name, message in sorted({**report.broken, **report.failed}.items()):
            ctx.notice(f"  {name}: {message}")
    if not args.once:
        # Stopped by SIGTERM/SIGINT after a clean drain: errors recovered from earlier
        # are in the store and the logs, not in the exit status (systemd would mark the
        # unit failed on every stop). An error that stops the keeper raises instead.
        return EXIT_OK
    return EXIT_OK if report.ok else EXIT_ERROR
