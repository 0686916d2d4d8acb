"""The apply use case: lock -> plan -> stale check -> revocations around the write.

:func:`reconciler.apply.apply_plan` stays the core step below (one transaction into
the store); this module holds what surrounds it for ``apply``, ``reconcile`` and
``plan``: the prune and Instance guards, the saved-plan checks and revocation of
deleted links' tokens (network I/O before and after the commit, never inside it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler import strict_json
from reconciler.errors import EXIT_OK, ConfigError, LinkctlError, StalePlan
from reconciler.services.declared import StoredState
from reconciler.services.views import authorized_scopes

if TYPE_CHECKING:
    from reconciler.apply import ApplyResult
    from reconciler.oauth.client import TokenClient
    from reconciler.plan import Plan
    from reconciler.store.base import Store
    from reconciler.validate import ValidationResult

Notice = Callable[[str], None]
MAX_PLAN_BYTES = 16 * 1024 * 1024  # like a declared file: bounded memory and time


def check_prune_inputs(result: ValidationResult, inputs: Sequence[str], *, allow_empty: bool) -> None:
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


def check_instance(
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


def plan_changes(
    store: Store,
    result: ValidationResult,
    *,
    prune: bool,
    inputs: Sequence[str],
    state: StoredState | None = None,
    adopt_store: str | None = None,
    allow_empty_prune: bool = False,
) -> Plan:
    """The plan from the declared state to ``store`` (read now unless ``state`` was read ahead)."""
    from reconciler.errors import InvalidConfiguration
    from reconciler.plan import compute_plan, mark_reauthorization, rename_conflicts

    if prune:
        check_prune_inputs(result, inputs, allow_empty=allow_empty_prune)
    state = state or StoredState.read(store)
    declared = result.instance.metadata.name if result.instance is not None else None
    check_instance(store, inputs, state.instance, declared, adopt_store)
    conflicts = rename_conflicts(result.links, state.links)
    if conflicts:
        raise InvalidConfiguration(list(conflicts))
    names = {link.name for link in result.links}
    deleted = [s for s in state.links if s.name not in names] if prune else []
    revoking: set[str] = set()
    if deleted:  # the revocation rules (and their imports) only when something is deleted
        from reconciler.keeper import revokes_on_delete

        revoking = {s.name for s in deleted if revokes_on_delete(store, s)}
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
    return mark_reauthorization(plan, lambda name: authorized_scopes(store.get_grant(name)))


def check_saved_plan(saved: Plan, plan: Plan) -> None:
    """A saved plan applies only to the Instance, serial and changes it was made for."""
    if saved.instance is not None and saved.instance != plan.instance:  # None: an older plan
        raise ConfigError(
            f"the plan was made for Instance {saved.instance!r} but its files now declare {plan.instance!r}",
            hint="run `linkctl plan --out FILE` again and review it",
        )
    if saved.serial != plan.serial:
        raise StalePlan(
            f"the plan was computed against state serial {saved.serial} but the store is at {plan.serial}",
            hint="run `linkctl plan --out FILE` again",
        )
    if not saved.same_changes(plan):
        raise StalePlan(
            "the declared files changed since the plan was made",
            hint="run `linkctl plan --out FILE` again and review it",
        )


@dataclasses.dataclass(frozen=True)
class ApplyOutcome:
    """What an apply found and did: the plan, the Instance recorded before, the write (if any)."""

    plan: Plan
    recorded_instance: str | None
    applied: ApplyResult | None  # None: nothing to write
    revocation_failed: bool = False

    @property
    def records_instance(self) -> bool:
        """The apply records (or changes) the store's Instance."""
        return self.plan.instance is not None and self.plan.instance != self.recorded_instance


def apply_declared(
    store: Store,
    result: ValidationResult,
    *,
    inputs: Sequence[str],
    prune: bool,
    actor: str,
    lock_timeout: float,
    client_factory: Callable[[], TokenClient],
    notice: Notice,
    saved: Plan | None = None,
    adopt_store: str | None = None,
    allow_empty_prune: bool = False,
) -> ApplyOutcome:
    """Under the apply lock: plan, check a saved plan, and write it with revocations around."""
    from reconciler.apply import apply_plan
    from reconciler.plan import DELETE
    from reconciler.store.base import locked

    with locked(store, operation="apply", timeout=lock_timeout):
        recorded = store.instance_name()
        plan = plan_changes(
            store,
            result,
            prune=prune,
            inputs=inputs,
            adopt_store=adopt_store,
            allow_empty_prune=allow_empty_prune,
        )
        if saved is not None:
            check_saved_plan(saved, plan)
        outcome = ApplyOutcome(plan, recorded, None)
        if not plan.has_changes and not outcome.records_instance:
            store_notify_targets(store, result, actor=actor, notice=notice)
            return outcome
        deleted = [c.link for c in plan.changes if c.action == DELETE]
        with revocations(store, deleted, client_factory=client_factory, notice=notice) as revoke:
            applied = apply_plan(store, plan, result.links, actor=actor, instance=plan.instance)
            store_notify_targets(store, result, actor=actor, notice=notice)
            failed = revoke() != EXIT_OK
    return dataclasses.replace(outcome, applied=applied, revocation_failed=failed)


def store_notify_targets(store: Store, result: ValidationResult, *, actor: str, notice: Notice) -> None:
    """Seal the Instance's ``spec.notify`` targets into the store (files without an Instance: kept)."""
    if result.instance is None:
        return
    import time

    if store.put_notify_targets(result.notify, actor=actor, now=time.time()):
        origins = ", ".join(t.origin for t in result.notify) or "none"
        notice(f"status webhooks stored: {len(result.notify)} target(s) ({origins})")


@contextlib.contextmanager
def revocations(
    store: Store, names: Sequence[str], *, client_factory: Callable[[], TokenClient], notice: Notice
) -> Iterator[Callable[[], int]]:
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

    with client_factory() as client:
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
                notice(f"warning: cannot revoke the tokens of {name} before deleting it: {prepared.error}")
            elif prepared.reason and prepared.reason != "no tokens":
                notice(f"note: {name}: {prepared.reason}; its tokens expire on their own")

        def send() -> int:
            nonlocal failed
            for item in pending:
                outcome = item.send(client)
                if outcome.revoked:
                    kinds = ", ".join(outcome.revoked_tokens)
                    notice(f"revoked the tokens of deleted link {item.name} ({kinds})")
                else:
                    failed += 1
                    notice(
                        f"warning: could not revoke the tokens of deleted link {item.name}: {outcome.error}"
                    )
            pending.clear()
            return 1 if failed else EXIT_OK

        try:
            yield send
        finally:
            for item in pending:  # apply failed before the deletion committed
                item.abandon(store)


def read_saved_plan(path: Path) -> Plan:
    """A plan saved by ``plan --out``: a bounded regular file of strict JSON in the plan format."""
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
