"""``linkctl authorize`` and ``linkctl doctor``: obtain a link's first tokens, and diagnose links.

A thin edge over :mod:`reconciler.services.authorize` and :mod:`reconciler.services.doctor`:
runs the flow the link's grant asks for (the loopback listener or a pasted URL between
the service's ``start`` and ``finish``) and renders the result. Registered by
:mod:`reconciler.cli`. Never prints a token, code, verifier or secret.
(``token`` and ``keeper`` are registered by the keeper's command module.)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reconciler.cli.keeper_cmds import timeout_seconds
from reconciler.errors import EXIT_ERROR, EXIT_OK

if TYPE_CHECKING:
    from reconciler.cli.output import Context
    from reconciler.oauth.client import ClientConfig, TokenResponse

DEFAULT_TIMEOUT = 300.0


PASTE_TTL = 3600.0  # seconds a pasted redirect may take to come back


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``authorize`` and ``doctor`` to the ``linkctl`` parser."""
    p = subparsers.add_parser(
        "authorize",
        help="consent once (browser or device code) and store the link's first tokens",
        description="Run the link's OAuth flow: authorization code + PKCE (a loopback listener "
        "receives the redirect, or paste the final URL), the device flow with --device, or the "
        "client credentials grant for client_credentials links.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--no-browser", action="store_true", help="print the URL only; do not open a browser")
    p.add_argument("--device", action="store_true", help="use the device authorization flow (RFC 8628)")
    p.add_argument(
        "--timeout",
        type=timeout_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for the consent (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    p.set_defaults(handler=authorize_command)

    p = subparsers.add_parser(
        "doctor",
        help="check links: endpoints, TLS, discovery, redirect URL, refresh token, clock skew",
    )
    p.add_argument("name", metavar="NAME", nargs="?", help="one link (default: every link)")
    p.add_argument("--timeout", type=timeout_seconds, default=10.0, metavar="S", help="per-request timeout")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    p.set_defaults(handler=doctor_command)


# -- authorize -------------------------------------------------------------------------


def _display_available(env: Mapping[str, str]) -> bool:
    """A browser can plausibly be shown (a GUI session, not SSH/CI)."""
    if sys.platform in ("darwin", "win32"):
        return not env.get("SSH_CONNECTION")
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def _open_browser(url: str) -> bool:
    import webbrowser

    try:
        return webbrowser.open(url, new=1)
    except webbrowser.Error:
        return False


def authorize_command(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl authorize NAME``: obtain and store the first tokens of a link."""
    from reconciler.oauth import flows
    from reconciler.oauth.client import TokenClient
    from reconciler.services import authorize
    from reconciler.settings import process_actor

    store = ctx.store()
    actor = process_actor(ctx.env)
    config = authorize.load_client_config(store, args.name)
    with TokenClient(metadata_cache=ctx.metadata_cache()) as client:
        if config.grant == "client_credentials":
            ctx.notice(
                f"link {config.link!r} uses the client credentials grant: no consent is needed "
                "(the keeper obtains tokens by itself); obtaining a token now"
            )
            response = client.client_credentials(config)
        elif args.device or config.grant == "device_code":
            config = dataclasses.replace(config, grant="device_code")
            response = flows.run_device_flow(client, config, announce=ctx.out, timeout=args.timeout)
        else:
            use_browser = not args.no_browser and _display_available(ctx.env)
            # The pending state must outlive the wait: the listener's --timeout (plus the
            # exchange), or for a pasted redirect an hour (it had no limit; codes expire sooner).
            ttl = max(authorize.PENDING_TTL, args.timeout) + 60
            if not (config.redirect_uri and flows.is_loopback_redirect(config.redirect_uri)):
                ttl = max(ttl, PASTE_TTL)
            started = authorize.start(store, client, config, ttl=ttl)
            callback = flows.await_callback(
                started.url,
                started.redirect_uri,
                announce=_url_on_stdout(ctx),
                open_browser=_open_browser if use_browser else None,
                stdin=sys.stdin,
                timeout=args.timeout,
            )
            config, response = authorize.finish(store, client, started.state, callback, actor=actor)
            _report(ctx, args, config, response)
            return EXIT_OK
    authorize.save_tokens(store, config, response, actor=actor)
    _report(ctx, args, config, response)
    return EXIT_OK


def _url_on_stdout(ctx: Context) -> Any:
    """Announce: URLs go to stdout on a line of their own (scripts read them), prose to stderr."""

    def announce(text: str) -> None:
        if text.startswith(("http://", "https://")):
            ctx.out(text)
        else:
            ctx.notice(text)

    return announce


def _report(ctx: Context, args: argparse.Namespace, config: ClientConfig, response: TokenResponse) -> None:
    summary = {
        "link": config.link,
        "grant": config.grant,
        "refresh_token": response.refresh_token is not None,
        "expires_in": response.expires_in,
        "scope": response.scope,
    }
    if getattr(args, "output", "text") == "json":
        ctx.json(summary)
        return
    lifetime = "no stated lifetime" if response.expires_in is None else f"{response.expires_in:g} s"
    refresh = "with a refresh token" if response.refresh_token is not None else "without a refresh token"
    ctx.notice(f"authorized link {config.link!r}: access token ({lifetime}) {refresh}; tokens saved")


# -- doctor ----------------------------------------------------------------------------


def doctor_command(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl doctor [NAME]``: findings with fixes; exit 1 when any finding is an error."""
    from reconciler.oauth.client import TokenClient
    from reconciler.services.doctor import diagnose, doctor_names

    store = ctx.store()
    names = doctor_names(store, args.name)
    with TokenClient(timeout=args.timeout, metadata_cache=ctx.metadata_cache()) as client:
        findings = diagnose(store, client, names)
    if args.output == "json":
        ctx.json([dataclasses.asdict(f) for f in findings])
    else:
        for f in findings:
            ctx.out(f"{f.severity:7} {f.link}: {f.check}: {f.message}")
            if f.fix and f.severity != "ok":
                ctx.out(f"        fix: {f.fix}")
        if not findings:
            ctx.out("no links in the store")
    return EXIT_ERROR if any(f.severity == "error" for f in findings) else EXIT_OK
