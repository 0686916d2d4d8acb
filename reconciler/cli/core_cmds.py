"""Core commands: validate, plan, apply, reconcile, list, show, redirect-url, state, schema.

Each handler parses nothing itself: it calls load → validate → plan → apply and
renders the result. Heavy modules are imported inside handlers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import getpass
import json
import os
import socket
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import strict_json
from reconciler.cli.keeper_cmds import count, timeout_seconds
from reconciler.cli.output import reads_only, write_atomic
from reconciler.domain.clock import iso_time
from reconciler.errors import (
    EXIT_CHANGES,
    EXIT_OK,
    ConfigError,
    LinkctlError,
    StalePlan,
    StateError,
    UsageError,
)

if TYPE_CHECKING:
    from reconciler.cli.output import Context
    from reconciler.plan import Plan
    from reconciler.store.base import Store, StoredLink
    from reconciler.validate import ValidationResult


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


def _output_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")


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
    _output_arg(p)
    p.set_defaults(handler=cmd_validate)

    p = subparsers.add_parser("plan", help="show what apply would change (secrets redacted)")
    _paths_args(p)
    _output_arg(p)
    p.add_argument("--out", metavar="FILE", help="save the plan for `apply --plan FILE`")
    _prune_args(p, "plan deletion of links no longer declared")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when there are changes")
    p.set_defaults(handler=cmd_plan)

    p = subparsers.add_parser("apply", help="apply declared files (or a saved plan) in one transaction")
    _paths_args(p, required=False)
    _output_arg(p)
    _lock_arg(p)
    p.add_argument("--plan", dest="plan_file", metavar="FILE", help="apply a plan saved by `plan --out`")
    _prune_args(p, "delete links no longer declared")
    p.set_defaults(handler=cmd_apply)

    p = subparsers.add_parser(
        "reconcile", help="plan + apply for cron: no prompts, quiet when nothing changed"
    )
    _paths_args(p)
    _output_arg(p)
    _lock_arg(p)
    _prune_args(p, "delete links no longer declared")
    p.set_defaults(handler=cmd_reconcile)

    p = subparsers.add_parser("list", help="list stored links with provider, source, redirect URL, status")
    _output_arg(p)
    p.set_defaults(handler=cmd_list)

    p = subparsers.add_parser("show", help="show one stored link")
    p.add_argument("name")
    _output_arg(p)
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
    _output_arg(s)
    s.set_defaults(handler=cmd_state_show)
    s = state.add_parser("unlock", help="remove a lock left behind (see the lock error for its ID)")
    s.add_argument("lock_id", metavar="ID")
    s.set_defaults(handler=cmd_state_unlock)
    s = state.add_parser("events", help="the audit log, newest first")
    s.add_argument("--link", help="only events of this link")
    s.add_argument("--limit", type=count, default=50)
    _output_arg(s)
    s.set_defaults(handler=cmd_state_events)

    p = subparsers.add_parser("schema", help="print or write the JSON Schemas of the declared kinds")
    p.add_argument("--write", metavar="DIR", help="write *.schema.json files into DIR")
    p.set_defaults(handler=cmd_schema)


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
def _import_core() -> None:
    """Import the planner and the store while files are parsed (declared_state imports the models)."""
    import reconciler.plan
    import reconciler.store.sqlite  # noqa: F401


@dataclasses.dataclass(frozen=True)
class _StoredState:
    """What a plan is computed against: the store's serial, recorded Instance and links."""

    serial: int
    links: list[StoredLink]
    instance: str | None = None

    @classmethod
    def read(cls, store: Store) -> _StoredState:
        """Serial first: an apply in between then makes the plan stale, never wrong."""
        serial = store.state_serial()
        return cls(serial, store.list_links(), store.instance_name())


class _ReadAhead:
    """``meanwhile`` work for plan: import the core, then read the store if that writes nothing."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.state: _StoredState | None = None

    def __call__(self) -> None:
        _import_core()
        store = self._ctx.ready_store()
        if store is None:
            return  # not there yet, or broken: opened (and reported) after validation
        try:
            self.state = _StoredState.read(store)
        except Exception:  # the read after validation raises it where it belongs
            self.state = None


def _validated(
    args: argparse.Namespace,
    ctx: Context,
    paths: Sequence[str],
    meanwhile: Callable[[], object] | None = _import_core,
) -> ValidationResult:
    """Load and validate; print warnings; raise InvalidConfiguration on errors."""
    from reconciler.diagnostics import render_text
    from reconciler.errors import InvalidConfiguration
    from reconciler.validate import declared_state

    result = declared_state(
        paths, env=ctx.env, ignore_mac=getattr(args, "ignore_mac", False), meanwhile=meanwhile
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


def _actor(ctx: Context) -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return ctx.env.get("LINKCTL_ACTOR") or f"{user}@{socket.gethostname()}"


def _check_prune_inputs(result: ValidationResult, inputs: Sequence[str], *, allow_empty: bool) -> None:
    """Refuse ``--prune`` over inputs that declare nothing: an empty or broken checkout looks so."""
    if allow_empty or (result.instance is not None and result.links):
        return
    missing = "no Instance" if result.instance is None else "no link"
    raise ConfigError(
        f"refusing to prune: the inputs declare {missing}, so every stored link would be deleted"
        f" ({len(result.files)} file(s) read)",
        file=" ".join(inputs),
        hint="check the paths (an empty or partial checkout?); to delete every stored link on purpose,"
        " add --allow-empty-prune",
    )


def _check_instance(
    store: Store, inputs: Sequence[str], recorded: str | None, declared: str | None, adopt: str | None
) -> None:
    """A store belongs to the Instance it was applied from; another one must adopt it explicitly."""
    if adopt is not None:
        if adopt != recorded:
            raise ConfigError(
                f"--adopt-store {adopt}: the store {store.url} records Instance {recorded!r}, not {adopt!r}"
                if recorded is not None
                else f"--adopt-store {adopt}: the store {store.url} records no Instance yet",
                file=" ".join(inputs),
                hint="name the Instance the store records (see the error without --adopt-store)"
                if recorded is not None
                else "drop --adopt-store: the next apply records the declared Instance",
            )
        return
    if recorded is None or declared is None or recorded == declared:
        return
    raise ConfigError(
        f"the store {store.url} belongs to Instance {recorded!r}, but these files declare Instance"
        f" {declared!r}; its links would show as orphans and --prune would delete them",
        file=" ".join(inputs),
        hint=f"use the store of {declared!r} (--state or $LINKCTL_STATE), or take this one over"
        f" with --adopt-store {recorded}",
    )


def _compute(
    ctx: Context,
    result: ValidationResult,
    *,
    prune: bool,
    inputs: Sequence[str],
    state: _StoredState | None = None,
    adopt_store: str | None = None,
    allow_empty_prune: bool = False,
) -> Plan:
    from reconciler.errors import InvalidConfiguration
    from reconciler.keeper import revokes_on_delete
    from reconciler.plan import compute_plan, mark_reauthorization, rename_conflicts

    if prune:
        _check_prune_inputs(result, inputs, allow_empty=allow_empty_prune)
    store = ctx.store()
    state = state or _StoredState.read(store)
    declared = result.instance.metadata.name if result.instance is not None else None
    _check_instance(store, inputs, state.instance, declared, adopt_store)
    conflicts = rename_conflicts(result.links, state.links)
    if conflicts:
        raise InvalidConfiguration(list(conflicts))
    names = {link.name for link in result.links}
    revoking = (
        {s.name for s in state.links if s.name not in names and revokes_on_delete(store, s)}
        if prune
        else set()
    )
    plan = compute_plan(
        result.links,
        state.links,
        serial=state.serial,
        fingerprint_key=store.fingerprint_key(),
        prune=prune,
        inputs=[os.path.abspath(p) for p in inputs],
        revoking=revoking,
        instance=declared,
        adopt_store=adopt_store,
        allow_empty_prune=allow_empty_prune,
    )
    return mark_reauthorization(plan, lambda name: _authorized_scopes(store.get_grant(name)))


def _authorized_scopes(grant: Any) -> Any:
    """The scopes a grant was consented to, as recorded at authorization (None: unknown)."""
    return None if grant is None else grant.details.get("authorized_scopes")


def _print_plan(ctx: Context, plan: Plan, *, output: str, verbose: bool) -> None:
    from reconciler.render import render_text

    if output == "json":
        ctx.json(plan.to_json())
    else:
        ctx.stdout.write(render_text(plan, verbose=verbose))


# -- commands ----------------------------------------------------------------------------
@reads_only
@_batch
def cmd_validate(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl validate PATHS``."""
    from reconciler.diagnostics import has_errors, render_text
    from reconciler.validate import declared_state

    result = declared_state(args.paths, env=ctx.env, ignore_mac=args.ignore_mac)
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
                "links": sorted(link.name for link in result.links),
                "skipped": result.skipped,
                "diagnostics": [d.to_json() for d in sorted(result.diagnostics, key=sort_key)],
            }
        )
    else:
        if args.verbose:
            for skipped in result.skipped:
                ctx.notice(f"skipped {skipped}")
        ctx.stderr.write(render_text(result.diagnostics))
        if errors:
            ctx.stderr.write(f"{errors} error(s), {warnings} warning(s) in {len(result.files)} file(s)\n")
        else:
            ctx.out(f"OK: {len(result.links)} link(s) in {len(result.files)} file(s), {warnings} warning(s)")
    from reconciler.errors import EXIT_INVALID

    return EXIT_INVALID if has_errors(result.diagnostics) else EXIT_OK


@reads_only(writes_when="out")
@_batch
def cmd_plan(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl plan PATHS``."""
    ahead = _ReadAhead(ctx)
    result = _validated(args, ctx, args.paths, ahead)
    plan = _compute(
        ctx,
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
    """``linkctl reconcile PATHS``: plan + apply, quiet when nothing changed."""
    args.plan_file = None
    return _apply(args, ctx, quiet=True)


def _apply(args: argparse.Namespace, ctx: Context, *, quiet: bool) -> int:
    from reconciler.apply import apply_plan
    from reconciler.plan import DELETE
    from reconciler.render import render_text
    from reconciler.store.base import locked

    saved: Plan | None = None
    paths: Sequence[str] = args.paths
    prune = args.prune
    adopt_store, allow_empty_prune = args.adopt_store, args.allow_empty_prune
    if args.plan_file:
        saved = _read_plan(Path(args.plan_file))
        paths, prune = saved.inputs, saved.prune
        adopt_store = adopt_store or saved.adopt_store
        allow_empty_prune = allow_empty_prune or saved.allow_empty_prune
    result = _validated(args, ctx, paths)
    store = ctx.store()
    with locked(store, operation="apply", timeout=ctx.settings.lock_timeout):
        recorded = store.instance_name()
        plan = _compute(
            ctx,
            result,
            prune=prune,
            inputs=paths,
            adopt_store=adopt_store,
            allow_empty_prune=allow_empty_prune,
        )
        if saved is not None:
            if saved.instance is not None and saved.instance != plan.instance:  # None: an older plan
                raise ConfigError(
                    f"the plan was made for Instance {saved.instance!r}"
                    f" but its files now declare {plan.instance!r}",
                    hint="run `linkctl plan --out FILE` again and review it",
                )
            if saved.serial != plan.serial:
                raise StalePlan(
                    f"the plan was computed against state serial {saved.serial}"
                    f" but the store is at {plan.serial}",
                    hint="run `linkctl plan --out FILE` again",
                )
            if not saved.same_changes(plan):
                raise StalePlan(
                    "the declared files changed since the plan was made",
                    hint="run `linkctl plan --out FILE` again and review it",
                )
        records_instance = plan.instance is not None and plan.instance != recorded
        if not plan.has_changes and not records_instance:
            if not quiet or args.verbose:  # cron wants silence unless something changed
                _print_plan(ctx, plan, output=args.output, verbose=args.verbose)
            return EXIT_OK
        with _revocations(ctx, [c.link for c in plan.changes if c.action == DELETE]) as revoke:
            applied = apply_plan(store, plan, result.links, actor=_actor(ctx), instance=plan.instance)
            revoked = revoke()
    if args.output == "json":
        ctx.json({**plan.to_json(), "applied": True, "new_serial": applied.serial})
    else:
        ctx.stdout.write(render_text(plan, verbose=args.verbose))
        if records_instance:
            ctx.out(
                f"The store now belongs to Instance {plan.instance!r}"
                + (f" (was {recorded!r})." if recorded is not None else ".")
            )
        ctx.out(f"Applied: state serial is now {applied.serial}.")
    return revoked


@contextlib.contextmanager
def _revocations(ctx: Context, names: Sequence[str]) -> Iterator[Callable[[], int]]:
    """Revocation around apply's deletions (RFC 7009).

    Before the transaction: take each deleted link's refresh lease and read its tokens.
    After the commit: revoke them at the provider (the caller calls the yielded function)
    and report failures — exit code 1 then, never hidden. If apply fails, the leases are
    given back and every grant is as it was.
    """
    if not names:
        yield lambda: EXIT_OK
        return
    from reconciler.keeper import RevocationResult, prepare_revocation
    from reconciler.oauth.client import TokenClient

    store = ctx.store()
    with TokenClient(metadata_cache=ctx.metadata_cache()) as client:
        pending = []
        failed = 0
        for name in names:
            link = store.get_link(name)
            if link is None or not link.spec.get("revokeOnDelete", True):
                continue
            prepared = prepare_revocation(store, name, client)
            if not isinstance(prepared, RevocationResult):
                pending.append(prepared)
            elif prepared.failed:
                failed += 1
                ctx.notice(
                    f"warning: cannot revoke the tokens of {name} before deleting it: {prepared.error}"
                )
            elif prepared.reason and prepared.reason != "no tokens":
                ctx.notice(f"note: {name}: {prepared.reason}; its tokens expire on their own")

        def send() -> int:
            nonlocal failed
            for item in pending:
                result = item.send(client)
                if result.revoked:
                    kinds = ", ".join(result.revoked_tokens)
                    ctx.notice(f"revoked the tokens of deleted link {item.name} ({kinds})")
                else:
                    failed += 1
                    ctx.notice(
                        f"warning: could not revoke the tokens of deleted link {item.name}: {result.error}"
                    )
            pending.clear()
            return 1 if failed else EXIT_OK

        try:
            yield send
        finally:
            for item in pending:  # apply failed before the deletion committed
                item.abandon(store)


MAX_PLAN_BYTES = 16 * 1024 * 1024  # like a declared file: bounded memory and time


def _read_plan(path: Path) -> Plan:
    from reconciler.plan import Plan, PlanFormatError

    hint = "create one with `linkctl plan --out FILE`"
    try:
        # O_NONBLOCK and fstat: a FIFO or device given as FILE must not block or stream forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(
                    "plan file is not a regular file (a FIFO, socket or device)", file=str(path), hint=hint
                )
            if st.st_size > MAX_PLAN_BYTES:
                raise ConfigError(
                    f"plan file is {st.st_size} bytes, over the {MAX_PLAN_BYTES} byte limit",
                    file=str(path),
                    hint=hint,
                )
            raw = handle.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise LinkctlError(f"cannot read plan file {path}: {exc.strerror}") from None
    if len(raw) > MAX_PLAN_BYTES:  # grew after the fstat
        raise ConfigError(f"plan file is over the {MAX_PLAN_BYTES} byte limit", file=str(path), hint=hint)
    try:
        data = strict_json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"plan file is not UTF-8 text ({exc.reason} at byte {exc.start})", file=str(path), hint=hint
        ) from None
    except ValueError as exc:
        raise ConfigError(f"plan file is not valid JSON ({exc})", file=str(path), hint=hint) from None
    try:
        return Plan.from_json(data)
    except PlanFormatError as exc:
        raise ConfigError(
            f"not a linkctl plan file: {exc.path} {exc.problem}", file=str(path), path=exc.path, hint=hint
        ) from None


def _iso(ts: float | None) -> str | None:
    return iso_time(ts, zulu=True)


SEALED = "(stored, encrypted)"


def _sealed_view(value: Any) -> Any:
    """A spec value as shown: each ``{"$secret": field}`` marker says it is sealed, never the value."""
    if isinstance(value, dict):
        return SEALED if "$secret" in value else {k: _sealed_view(v) for k, v in value.items()}
    return value


def _link_view(link: Any, grant: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "name": link.name,
        "provider": link.provider,
        "status": grant.status if grant else "unknown",
        "source": f"{link.source_file}:{link.source_line}" if link.source_file else None,
        "redirect_url": link.spec.get("redirectUri"),
        "grant": link.spec.get("grant"),
        "client_id": _sealed_view(link.spec.get("clientId")),
        "scopes": list(link.spec.get("scopes") or ()),
        "generation": link.generation,
        "updated_at": _iso(link.updated_at),
    }
    if grant is not None:
        view.update(
            {
                "last_refresh_at": _iso(grant.last_refresh_at),
                "access_token_expires_at": _iso(grant.access_expires_at),
                "next_refresh_at": _iso(grant.next_refresh_at),
                "retry_at": _iso(grant.retry_at),
                "has_refresh_token": grant.has_refresh_token,
                "last_error": grant.last_error,
                "error_class": grant.error_class,
            }
        )
    from reconciler.plan import missing_scopes

    # The grant keeps working with what was consented; new scopes need a new consent.
    view["reauthorize_scopes"] = list(missing_scopes(view["scopes"], _authorized_scopes(grant)))
    return view


@reads_only
def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl list``."""
    store = ctx.store()
    grants = {g.link_name: g for g in store.list_grants()}
    views = [_link_view(link, grants.get(link.name)) for link in store.list_links()]
    if args.output == "json":
        ctx.json({"links": views})
        return EXIT_OK
    if not views:
        ctx.out("No links stored. Declare some and run `linkctl apply PATH`.")
        return EXIT_OK
    headers = ("NAME", "PROVIDER", "STATUS", "SOURCE", "REDIRECT URL")
    rows = [
        (v["name"], v["provider"], _status_text(v), v["source"] or "-", v["redirect_url"] or "-")
        for v in views
    ]
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        ctx.out("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def _status_text(view: dict[str, Any]) -> str:
    """The status column: the grant's status, and new scopes that need a new consent."""
    missing = view.get("reauthorize_scopes")
    if missing:
        return f"{view['status']}; needs re-authorization for new scopes: {', '.join(missing)}"
    return str(view["status"])


def _stored(ctx: Context, name: str) -> Any:
    link = ctx.store().get_link(name)
    if link is None:
        known = [link.name for link in ctx.store().list_links()]
        import difflib

        close = difflib.get_close_matches(name, known, n=1)
        raise LinkctlError(
            f"no stored link named {name!r}",
            hint=f"did you mean {close[0]!r}?" if close else "see `linkctl list`",
        )
    return link


@reads_only
def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl show NAME``."""
    link = _stored(ctx, args.name)
    view = _link_view(link, ctx.store().get_grant(link.name))
    spec = {k: _sealed_view(v) for k, v in link.spec.items() if k not in ("clientSecret", "presetAdded")}
    spec["clientSecret"] = SEALED if link.secret_fingerprints.get("clientSecret") else None
    view["spec"] = spec
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

        result = _validated(args, ctx, args.from_paths)
        if result.instance is None:
            raise LinkctlError("no Instance document with spec.baseUrl in those files")
        if args.name not in {link.name for link in result.links}:
            raise LinkctlError(f"no link named {args.name!r} is declared in those files")
        ctx.out(redirect_url(result.instance.spec.baseUrl, args.name))
        return EXIT_OK
    link = _stored(ctx, args.name)
    url = link.spec.get("redirectUri")
    if not url:
        raise LinkctlError(f"link {args.name!r} has no redirect URL (grant {link.spec.get('grant')})")
    ctx.out(url)
    return EXIT_OK


@reads_only
def cmd_state_show(args: argparse.Namespace, ctx: Context) -> int:
    """``linkctl state show``."""
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
            "since": _iso(lock.since),
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
            f" since {_iso(lock.since)}"
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
    events = ctx.store().list_events(link=args.link, limit=args.limit)
    if args.output == "json":
        ctx.json(
            {
                "events": [
                    {
                        "id": e.id,
                        "at": _iso(e.at),
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
        ctx.out(f"{_iso(e.at)}  {e.action:<22} {e.link or '-':<24} {e.actor}  {json.dumps(dict(e.detail))}")
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


__all__ = ["register", "sys"]
