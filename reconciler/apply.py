"""Apply: write a plan to the store in one transaction, or not at all.

Called by the CLI (``apply``, ``reconcile``). The transaction checks the state
serial the plan was computed against (a stale plan is refused) and writes links,
secrets and audit events together; a crash at any point leaves the store at the
old or the new state. Revocation of deleted links' tokens is network I/O and is
not done here: the caller collects tokens before and revokes after the commit,
so a failed apply never loses a grant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from reconciler import plan as plans
from reconciler.domain.links import DesiredLink
from reconciler.store.base import Event, LinkWrite, Store

_EVENT = {
    plans.CREATE: "link.created",
    plans.UPDATE: "link.updated",
    plans.DRIFT: "link.drift_corrected",
    plans.RENAME: "link.renamed",
    plans.DELETE: "link.deleted",
}


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    """What an apply wrote."""

    serial: int  # the new state serial
    applied: tuple[plans.Change, ...]

    def count(self, action: str) -> int:
        """How many applied changes have ``action``."""
        return sum(1 for c in self.applied if c.action == action)


def link_write(link: DesiredLink, *, fingerprint_key: bytes, stored_fields: Iterable[str] = ()) -> LinkWrite:
    """The store record for a desired link; sealed ``stored_fields`` it no longer declares are removed."""
    fps = plans.fingerprints(link, fingerprint_key)
    secrets = dict(link.secrets)
    for field in ("clientSecret", *stored_fields):
        secrets.setdefault(field, None)  # type: ignore[arg-type]
    return LinkWrite(
        name=link.name,
        provider=link.provider,
        spec=link.spec,
        spec_hash=plans.spec_hash(link.spec, fps),
        secrets=secrets,
        secret_fingerprints=fps,
        source_file=link.source_file,
        source_line=link.source_line,
        deletion_policy=link.deletion_policy,
    )


def apply_plan(
    store: Store,
    plan: plans.Plan,
    desired: Sequence[DesiredLink],
    *,
    actor: str,
    instance: str | None = None,
) -> ApplyResult:
    """Write every mutating change of ``plan`` atomically; ``StalePlan`` if the store moved on.

    ``instance`` (the declared Instance's name) is recorded in the store when it differs.
    """
    by_name: Mapping[str, DesiredLink] = {link.name: link for link in desired}
    key = store.fingerprint_key()
    applied: list[plans.Change] = []
    with store.write(expected_serial=plan.serial, actor=actor) as tx:
        for change in plan.changes:
            if change.action not in plans.MUTATING:
                continue
            detail = {
                "fields": [f.path for f in change.fields],
                "source": change.source,
            }
            if change.action == plans.DELETE:
                tx.delete_link(change.link)
            else:
                # A field that is no longer encrypted in the file must not stay sealed in the store.
                previous = (
                    store.get_link(change.renamed_from or change.link)
                    if change.action != plans.CREATE
                    else None
                )
                stored_fields = previous.secret_fingerprints if previous is not None else ()
                if change.action == plans.RENAME and change.renamed_from:
                    tx.rename_link(change.renamed_from, change.link)
                    detail["from"] = change.renamed_from
                tx.put_link(
                    link_write(by_name[change.link], fingerprint_key=key, stored_fields=stored_fields)
                )
            tx.add_event(Event(action=_EVENT[change.action], link=change.link, actor=actor, detail=detail))
            applied.append(change)
        recorded = store.instance_name()
        if instance is not None and instance != recorded:
            tx.set_instance(instance)
            tx.add_event(
                Event(
                    action="store.instance_recorded" if recorded is None else "store.adopted",
                    link=None,
                    actor=actor,
                    detail={"instance": instance, **({"from": recorded} if recorded else {})},
                )
            )
        if applied:
            tx.add_event(
                Event(
                    action="apply",
                    link=None,
                    actor=actor,
                    detail={k: v for k, v in plan.summary().items() if v},
                )
            )
    return ApplyResult(serial=plan.serial + 1, applied=tuple(applied))
