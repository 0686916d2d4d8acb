"""Core commands: validate, plan, apply, reconcile.

Each handler parses nothing itself: it calls the services (declared state, plan,
apply) and renders the result. Heavy modules are imported inside handlers.
Inspection commands (list, show, state, ...) live in :mod:`reconciler.cli.inspect_cmds`.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.cli.keeper_cmds import timeout_seconds
from reconciler.cli.output import reads_only, write_atomic
from reconciler.errors import EXIT_CHANGES, EXIT_OK, UsageError

if TYPE_CHECKING:
    from reconciler.cli.output import Context
    from reconciler.oauth.client import TokenClient
    from reconciler.plan import Plan
    from reconciler.validate import ValidationResult
    from reconciler.validate.unopened import NotChecked


def _paths_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "paths",
        nargs="+" if required else "*",
        metavar="PATH",
        help="files or directories (*.yaml, *.yml, *.json; recursive)",
    )
    parser.add_argument(
        "--ignore-mac",
        action="store_true",
        help="decrypt SOPS files even when their MAC does not match (like sops)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also list skipped documents and unchanged links"
    )


def output_arg(parser: argparse.ArgumentParser, *, markdown: bool = False) -> None:
    choices = ("text", "json", "markdown") if markdown else ("text", "json")
    help_text = "output format (markdown: a pull-request comment)" if markdown else "output format"
    parser.add_argument("-o", "--output", choices=choices, default="text", help=help_text)


def _lock_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock-timeout",
        type=timeout_seconds,
        metavar="SECONDS",
        help="how long to wait for the state lock (default 60, $LINKCTL_LOCK_TIMEOUT)",
    )


def _prune_args(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--prune", action="store_true", help=help_text)
    parser.add_argument(
        "--allow-empty-prune",
        action="store_true",
        help="prune even when the inputs declare no Instance or no link (deletes every stored link)",
    )
    parser.add_argument(
        "--adopt-store",
        metavar="OLD_INSTANCE",
        help="use a store applied from Instance OLD_INSTANCE for the Instance these files declare",
    )


def register(subparsers: Any) -> None:
    """Add the core subcommands."""
    p = subparsers.add_parser("validate", help="check declared files; report every problem with file:line")
    _paths_args(p)
    p.add_argument(
        "--no-decrypt",
        action="store_true",
        help="check without decrypting SOPS files (no age key needed, e.g. pull requests from forks):"
        " their metadata and MAC presence are checked, encrypted values count as present, and"
        " what could not be checked is listed",
    )
    output_arg(p)
    p.set_defaults(handler=cmd_validate)

    p = subparsers.add_parser("plan", help="show what apply would change (secrets redacted)")
    _paths_args(p)
    output_arg(p, markdown=True)
    p.add_argument("--out", metavar="FILE", help="save the plan for `apply --plan FILE`")
    _prune_args(p, "plan deletion of links no longer declared")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when there are changes")
    p.set_defaults(handler=cmd_plan)

    p = subparsers.add_parser("apply", help="apply declared files (or a saved plan) in one transaction")
    _paths_args(p, required=False)
    output_arg(p)
    _lock_arg(p)
    p.add_argument("--plan", dest="plan_file", metavar="FILE", help="apply a plan saved by `plan --out`")
    _prune_args(p, "delete links no longer declared")
    p.set_defaults(handler=cmd_apply)

    p = subparsers.add_parser(
        "reconcile", help="plan + apply for cron: no prompts, quiet when nothing changed"
    )
    _paths_args(p)
    output_arg(p)
    _lock_arg(p)
    _prune_args(p, "delete links no longer declared")
    p.set_defaults(handler=cmd_reconcile)


def _batch(handler: Any) -> Any:
    """Pause the cyclic GC for a batch command.

    Loading 10,000 links allocates millions of short-lived, acyclic objects; the
    collector's repeated full scans cost more than the work itself (4.4 s vs 1.3 s),
    and the process exits right after.
    """

    @functools.wraps(handler)
    def wrapper(args: argparse.Namespace, ctx: Context) -> int:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return int(handler(args, ctx))
        finally:
            if enabled:
                gc.enable()

    return wrapper


# -- shared steps ------------------------------------------------------------------------
def validated(
    args: argparse.Namespace,
    ctx: Context,
    paths: Sequence[str],
    meanwhile: Callable[[], object] | None = None,
) -> ValidationResult:
    """Load and validate; print warnings; raise InvalidConfiguration on errors."""
    from reconciler.diagnostics import render_text
    from reconciler.errors import InvalidConfiguration
    from reconciler.services.declared import declared_state, import_core

    result = declared_state(
        paths, env=ctx.env, ignore_mac=getattr(args, "ignore_mac", False), meanwhile=meanwhile or import_core
    )
    if getattr(args, "verbose", False):
        for skipped in result.skipped:
            ctx.notice(f"skipped {skipped}")
    if not result.ok:
        raise InvalidConfiguration(list(result.diagnostics))
    warnings = [d for d in result.diagnostics if not d.is_error]
    if warnings:
        ctx.stderr.write(render_text(warnings))
    return result


def _print_plan(ctx: Context, plan: Plan, *, output: str, verbose: bool) -> None:
    from reconciler.render import render_text

    if output == "json":
        ctx.json(plan.to_json())
    elif output == "markdown":
        from reconciler.render import render_markdown

        ctx.stdout.write(render_markdown(plan, verbose=verbose))
    else:
        ctx.stdout.write(render_text(plan, verbose=verbose))


# -- commands ----------------------------------------------------------------------------
@reads_only
@_batch
def cmd_validate(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl validate PATHS``."""
    from reconciler.diagnostics import has_errors, render_text
    from reconciler.services.declared import declared_state

    not_checked: list[NotChecked] | None = None
    if args.no_decrypt:
        if args.ignore_mac:
            raise UsageError(
                "--ignore-mac has no effect with --no-decrypt (the MAC cannot be verified without a key)"
            )
        from reconciler.validate.unopened import validate_without_decryption

        # Not declared_state: nothing is cached from a run that did not see the values.
        unopened = validate_without_decryption(args.paths, env=ctx.env)
        result, not_checked, link_names = unopened.result, unopened.not_checked, unopened.link_names
    else:
        result = declared_state(
            args.paths, env=ctx.env, ignore_mac=args.ignore_mac, meanwhile=None, secret_values=False
        )
        link_names = sorted(link.name for link in result.links)
    errors = sum(1 for d in result.diagnostics if d.is_error)
    warnings = len(result.diagnostics) - errors
    if args.output == "json":
        from reconciler.diagnostics import sort_key

        ctx.json(
            {
                "valid": not errors,
                "error_count": errors,
                "warning_count": warnings,
                "files": result.files,
                "links": link_names,
                "skipped": result.skipped,
                "diagnostics": [d.to_json() for d in sorted(result.diagnostics, key=sort_key)],
                "decrypted": not_checked is None,
                "not_checked": [note.to_json() for note in not_checked or ()],
            }
        )
    else:
        if args.verbose:
            for skipped in result.skipped:
                ctx.notice(f"skipped {skipped}")
        ctx.stderr.write(render_text(result.diagnostics))
        for note in not_checked or ():
            ctx.stderr.write(note.render() + "\n")
        unchecked = f", {len(not_checked)} item(s) not checked without decryption" if not_checked else ""
        if errors:
            ctx.stderr.write(
                f"{errors} error(s), {warnings} warning(s) in {len(result.files)} file(s){unchecked}\n"
            )
        else:
            ctx.out(
                f"OK: {len(link_names)} link(s) in {len(result.files)} file(s), {warnings} warning(s)"
                + unchecked
            )
    from reconciler.errors import EXIT_INVALID

    return EXIT_INVALID if has_errors(result.diagnostics) else EXIT_OK


@reads_only(writes_when="out")
@_batch
def cmd_plan(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl plan PATHS``."""
    from reconciler.services.apply import check_prune_inputs, plan_changes
    from reconciler.services.declared import ReadAhead

    ahead = ReadAhead(ctx.ready_store)
    result = validated(args, ctx, args.paths, ahead)
    if args.prune:  # before the store opens: its notices and errors come after this refusal
        check_prune_inputs(result, args.paths, allow_empty=args.allow_empty_prune)
    plan = plan_changes(
        ctx.store(),
        result,
        prune=args.prune,
        inputs=args.paths,
        state=ahead.state,
        adopt_store=args.adopt_store,
        allow_empty_prune=args.allow_empty_prune,
    )
    if args.out:
        plan_text = json.dumps(plan.to_json(), indent=2, sort_keys=True) + "\n"
        write_atomic(args.out, plan_text, new_mode=0o644)  # a plan holds no secret
    _print_plan(ctx, plan, output=args.output, verbose=args.verbose)
    if args.out and args.output == "text":
        ctx.notice(f"plan saved to {args.out}; apply it with `linkctl apply --plan {args.out}`")
    return EXIT_CHANGES if (args.detailed_exitcode and plan.has_changes) else EXIT_OK


@_batch
def cmd_apply(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl apply PATHS | --plan FILE``."""
    if bool(args.paths) == bool(args.plan_file):
        raise UsageError(
            "give either PATHS or --plan FILE",
            hint="linkctl apply links/  or  linkctl apply --plan plan.json",
        )
    return _apply(args, ctx, quiet=False)


@_batch
def cmd_reconcile(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl reconcile PATHS``: plan + apply, quiet when unchanged (one log event with --log-format)."""
    import logging
    import time

    from reconciler.cli.logs import configure, log_format_of
    from reconciler.errors import LinkctlError

    args.plan_file = None
    log_format = log_format_of(getattr(args, "log_format", None), ctx.env)
    if log_format is None:
        return _apply(args, ctx, quiet=True)
    configure(log_format, ctx.stderr)
    log = logging.getLogger("linkctl.reconcile")
    started = time.monotonic()
    event: dict[str, Any] = {}
    try:
        code = _apply(args, ctx, quiet=True, event=event)
    except LinkctlError as error:
        # The error is still rendered once at the CLI edge; the log line carries its class and fix.
        log.error("reconcile", extra={"event": {"outcome": "error", "error_class": error.error_code,
                                                "exit_code": error.exit_code, "fix": error.hint,
                                                "duration_ms": _ms(started)}})  # fmt: skip
        raise
    log.info("reconcile", extra={"event": {**event, "exit_code": code, "duration_ms": _ms(started)}})
    return code


def _ms(started: float) -> float:
    import time

    return round((time.monotonic() - started) * 1000, 1)


def _apply(
    args: argparse.Namespace, ctx: Context, *, quiet: bool, event: dict[str, Any] | None = None
) -> int:
    from reconciler.render import render_text
    from reconciler.services.apply import apply_declared, read_saved_plan
    from reconciler.settings import process_actor

    saved: Plan | None = None
    paths: Sequence[str] = args.paths
    prune = args.prune
    adopt_store, allow_empty_prune = args.adopt_store, args.allow_empty_prune
    if args.plan_file:
        saved = read_saved_plan(Path(args.plan_file))
        paths, prune = saved.inputs, saved.prune
        adopt_store = adopt_store or saved.adopt_store
        allow_empty_prune = allow_empty_prune or saved.allow_empty_prune
    result = validated(args, ctx, paths)
    outcome = apply_declared(
        ctx.store(),
        result,
        inputs=paths,
        prune=prune,
        actor=process_actor(ctx.env),
        lock_timeout=ctx.settings.lock_timeout,
        client_factory=lambda: _token_client(ctx),
        notice=ctx.notice,
        saved=saved,
        adopt_store=adopt_store,
        allow_empty_prune=allow_empty_prune,
    )
    plan, recorded = outcome.plan, outcome.recorded_instance
    if event is not None:
        summary = plan.to_json().get("summary")
        event.update(outcome="unchanged" if outcome.applied is None else "applied", changes=summary)
        if outcome.applied is not None:
            event["serial"] = outcome.applied.serial
    if outcome.applied is None:
        if args.output == "json" and quiet:  # asked for data: an unchanged run is data too
            ctx.json({**plan.to_json(), "applied": False})
        elif not quiet or args.verbose:  # cron wants silence unless something changed
            _print_plan(ctx, plan, output=args.output, verbose=args.verbose)
        return EXIT_OK
    if args.output == "json":
        ctx.json({**plan.to_json(), "applied": True, "new_serial": outcome.applied.serial})
    else:
        ctx.stdout.write(render_text(plan, verbose=args.verbose))
        if outcome.records_instance:
            ctx.out(
                f"The store now belongs to Instance {plan.instance!r}"
                + (f" (was {recorded!r})." if recorded is not None else ".")
            )
        ctx.out(f"Applied: state serial is now {outcome.applied.serial}.")
    return 1 if outcome.revocation_failed else EXIT_OK


def _token_client(ctx: Context) -> TokenClient:
    from reconciler.oauth.client import TokenClient

    return TokenClient(metadata_cache=ctx.metadata_cache())
