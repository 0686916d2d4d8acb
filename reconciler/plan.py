"""Plan: desired links vs stored links → an ordered, typed list of changes.

A plan is data (``Plan`` → ``Change`` → ``FieldChange``) with a versioned JSON
form; rendering lives in :mod:`reconciler.render`. It records the state serial it
was computed against so apply can refuse it once the store has moved on.
Secret values never enter a plan: a secret change shows as its field name with
``sensitive: true`` and no values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from reconciler.diagnostics import Diagnostic
from reconciler.domain.links import DesiredLink
from reconciler.domain.records import record_builder
from reconciler.store.base import StoredLink

FORMAT_VERSION = "1"
_T = TypeVar("_T")

CREATE = "create"
UPDATE = "update"
DELETE = "delete"
RENAME = "rename"
DRIFT = "drift"  # the store was changed outside git; apply restores the declared state
UNCHANGED = "unchanged"
ORPHAN = "orphan"  # stored, no longer declared, not pruned (no --prune)
RETAIN = "retain"  # stored, no longer declared, deletionPolicy: retain
MUTATING = (CREATE, UPDATE, DELETE, RENAME, DRIFT)
_HIDDEN_FIELDS = ("presetAdded",)


@dataclasses.dataclass(frozen=True, slots=True)  # slots: a plan of 10,000 new links holds 200,000
class FieldChange:
    """One field of one link changes from ``old`` to ``new`` (values omitted when sensitive)."""

    path: str
    old: Any
    new: Any
    sensitive: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON form; sensitive changes carry no values."""
        if self.sensitive:
            return {"path": self.path, "sensitive": True}
        return {"path": self.path, "old": self.old, "new": self.new, "sensitive": False}


@dataclasses.dataclass(frozen=True)
class Change:
    """What happens to one link."""

    action: str
    link: str
    provider: str
    fields: tuple[FieldChange, ...] = ()
    source: str | None = None  # file:line of the declaring document
    renamed_from: str | None = None
    preset_added: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    digest: str | None = None  # hash of the desired state; lets apply --plan detect edited files
    reauthorize_scopes: tuple[str, ...] = ()  # declared scopes the stored grant was not consented to
    revokes_tokens: bool | None = None  # delete only: revoke at the provider, or delete locally only

    def to_json(self) -> dict[str, Any]:
        """JSON form (see docs/plan-format.md)."""
        extra = {"revokes_tokens": bool(self.revokes_tokens)} if self.action == DELETE else {}
        return {
            "reauthorize_scopes": list(self.reauthorize_scopes),
            "action": self.action,
            "link": self.link,
            "provider": self.provider,
            "fields": [f.to_json() for f in self.fields],
            "source": self.source,
            "renamed_from": self.renamed_from,
            "preset_added": dict(self.preset_added),
            "digest": self.digest,
            **extra,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "$") -> Change:
        """Inverse of :meth:`to_json`; raises :class:`PlanFormatError` naming the bad field."""
        obj = _object(data, where)
        fields = []
        for i, item in enumerate(_optional(obj, "fields", list, where) or ()):
            f = _object(item, f"{where}.fields[{i}]")
            fields.append(
                FieldChange(
                    _required(f, "path", str, f"{where}.fields[{i}]"),
                    f.get("old"),
                    f.get("new"),
                    bool(_optional(f, "sensitive", bool, f"{where}.fields[{i}]")),
                )
            )
        action = _required(obj, "action", str, where)
        if action not in _ACTIONS:
            raise PlanFormatError(f"{where}.action", f"unknown action {action!r}")
        return cls(
            action=action,
            link=_required(obj, "link", str, where),
            provider=_optional(obj, "provider", str, where) or "",
            fields=tuple(fields),
            source=_optional(obj, "source", str, where),
            renamed_from=_optional(obj, "renamed_from", str, where),
            preset_added=_optional(obj, "preset_added", dict, where) or {},
            digest=_optional(obj, "digest", str, where),
            reauthorize_scopes=_strings(obj, "reauthorize_scopes", where),
            revokes_tokens=_optional(obj, "revokes_tokens", bool, where),
        )


@dataclasses.dataclass(frozen=True)
class Plan:
    """An ordered list of changes computed against state serial ``serial``."""

    serial: int
    changes: tuple[Change, ...]
    prune: bool
    inputs: tuple[str, ...] = ()
    created_at: float = dataclasses.field(default_factory=time.time)
    format_version: str = FORMAT_VERSION
    instance: str | None = None  # the declared Instance's metadata.name
    adopt_store: str | None = None  # the recorded Instance this plan takes the store over from
    allow_empty_prune: bool = False  # prune although the inputs declare no Instance or no link

    @property
    def has_changes(self) -> bool:
        """True when applying would change the store."""
        return any(c.action in MUTATING for c in self.changes)

    def count(self, action: str) -> int:
        """How many changes have ``action``."""
        return sum(1 for c in self.changes if c.action == action)

    def summary(self) -> dict[str, int]:
        """Counts per action."""
        actions = (CREATE, UPDATE, RENAME, DRIFT, DELETE, UNCHANGED, ORPHAN, RETAIN)
        return {action: self.count(action) for action in actions}

    def to_json(self) -> dict[str, Any]:
        """The documented, versioned JSON form (``--output json`` and ``--out FILE``)."""
        return {
            "format_version": self.format_version,
            "serial": self.serial,
            "prune": self.prune,
            "inputs": list(self.inputs),
            "instance": self.instance,
            "adopt_store": self.adopt_store,
            "allow_empty_prune": self.allow_empty_prune,
            "created_at": self.created_at,
            "has_changes": self.has_changes,
            "summary": self.summary(),
            "changes": [c.to_json() for c in self.changes],
        }

    @classmethod
    def from_json(cls, data: Any) -> Plan:
        """Read a saved plan; raises :class:`PlanFormatError` naming the first bad field."""
        obj = _object(data, "$")
        version = obj.get("format_version")
        if version != FORMAT_VERSION:
            raise PlanFormatError("$.format_version", f"unsupported plan format_version {version!r}")
        serial = _required(obj, "serial", int, "$")
        if serial < 0:
            raise PlanFormatError("$.serial", "must not be negative")
        created_at = _optional(obj, "created_at", float, "$") or 0.0
        if not math.isfinite(created_at):
            raise PlanFormatError("$.created_at", "must be a finite number")
        return cls(
            serial=serial,
            changes=tuple(
                Change.from_json(c, f"$.changes[{i}]")
                for i, c in enumerate(_required(obj, "changes", list, "$"))
            ),
            prune=bool(_optional(obj, "prune", bool, "$")),
            inputs=_strings(obj, "inputs", "$"),
            created_at=float(created_at),
            instance=_optional(obj, "instance", str, "$"),
            adopt_store=_optional(obj, "adopt_store", str, "$"),
            allow_empty_prune=bool(_optional(obj, "allow_empty_prune", bool, "$")),
        )

    def same_changes(self, other: Plan) -> bool:
        """True when both plans would make exactly the same writes."""

        def key(plan: Plan) -> list[tuple[str, str, str | None]]:
            return [(c.action, c.link, c.digest) for c in plan.changes if c.action in MUTATING]

        return key(self) == key(other)


class PlanFormatError(ValueError):
    """A saved plan file's JSON does not have the documented shape; ``path`` is the bad field."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


_ACTIONS = frozenset({CREATE, UPDATE, DELETE, RENAME, DRIFT, UNCHANGED, ORPHAN, RETAIN})
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "an object",
}


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PlanFormatError(where, f"must be an object, not {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind in (bool, int, float, str, list, dict):  # bool first: True is an int in Python
        if isinstance(value, kind):
            return _TYPE_NAMES[kind]
    return type(value).__name__


def _matches(value: Any, kind: type) -> bool:
    # JSON has one number type and booleans are not numbers; Python disagrees on both.
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _required(obj: Mapping[str, Any], key: str, kind: type[_T], where: str) -> _T:
    if key not in obj:
        raise PlanFormatError(f"{where}.{key}", "is missing")
    value = _optional(obj, key, kind, where)
    if value is None:
        raise PlanFormatError(f"{where}.{key}", f"must be {_TYPE_NAMES[kind]}, not null")
    return value


def _optional(obj: Mapping[str, Any], key: str, kind: type[_T], where: str) -> _T | None:
    value = obj.get(key)
    if value is None:
        return None
    if not _matches(value, kind):
        raise PlanFormatError(f"{where}.{key}", f"must be {_TYPE_NAMES[kind]}, not {_json_type(value)}")
    return value  # type: ignore[no-any-return]


def _strings(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    items = _optional(obj, key, list, where) or []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise PlanFormatError(f"{where}.{key}[{i}]", f"must be a string, not {_json_type(item)}")
    return tuple(items)


def spec_hash(spec: Mapping[str, Any], fingerprints: Mapping[str, str]) -> str:
    """Hash of a link's stored state: detects drift and edited files."""
    blob = json.dumps([spec, fingerprints], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def fingerprints(link: DesiredLink, key: bytes) -> dict[str, str]:
    """Keyed fingerprints of a desired link's secrets (never the values)."""
    return {field: secret.fingerprint(key, field) for field, secret in sorted(link.secrets.items())}


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    # The top level is always walked: an empty spec (the "old" of a create) has no fields,
    # not one field named "" whose value is {}.
    if isinstance(value, Mapping) and (value or not prefix) and "$secret" not in value:
        for key in value:
            _flatten(value[key], f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def _is_marker(value: Any) -> bool:
    """A ``{"$secret": field}`` marker: the value is sealed in the store."""
    return isinstance(value, Mapping) and "$secret" in value


def diff_specs(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    old_fps: Mapping[str, str],
    new_fps: Mapping[str, str],
    *,
    sensitive: Iterable[str] = (),
) -> tuple[FieldChange, ...]:
    """Field-level differences between two specs; secrets compared by fingerprint."""
    flat_old: dict[str, Any] = {}
    flat_new: dict[str, Any] = {}
    _flatten({k: v for k, v in old.items() if k not in _HIDDEN_FIELDS}, "", flat_old)
    _flatten({k: v for k, v in new.items() if k not in _HIDDEN_FIELDS}, "", flat_new)
    hidden = set(sensitive) | {"clientSecret"}
    changes: list[FieldChange] = []
    for path in sorted(set(flat_old) | set(flat_new)):
        before, after = flat_old.get(path), flat_new.get(path)
        if before == after:
            continue
        if (
            _is_marker(before)
            or _is_marker(after)
            or any(path == h or path.startswith(h + ".") for h in hidden)
        ):
            changes.append(FieldChange(path, None, None, sensitive=True))
        else:
            changes.append(FieldChange(path, before, after))
    for field in sorted(set(old_fps) | set(new_fps)):
        if old_fps.get(field) != new_fps.get(field) and field in old_fps and field in new_fps:
            # Added/removed secrets already show through their {"$secret": ...} marker field.
            changes.append(FieldChange(field, None, None, sensitive=True))
    return tuple(changes)


_unchanged = record_builder(Change)  # all fields, in order: one per declared link of a no-op plan


def compute_plan(
    desired: Sequence[DesiredLink],
    stored: Sequence[StoredLink],
    *,
    serial: int,
    fingerprint_key: bytes,
    prune: bool,
    inputs: Sequence[str] = (),
    revoking: Collection[str] = (),
    instance: str | None = None,
    adopt_store: str | None = None,
    allow_empty_prune: bool = False,
) -> Plan:
    """Diff desired against stored state into a plan (no I/O); ``revoking``: links with tokens to revoke."""
    by_name = {link.name: link for link in stored}
    claimed: set[str] = set()
    changes: list[Change] = []
    for link in sorted(desired, key=lambda d: d.name):
        fps = fingerprints(link, fingerprint_key)
        source = f"{link.source_file}:{link.source_line}"
        added = {k: v for k, v in (link.spec.get("presetAdded") or {}).items() if v}
        current = by_name.get(link.name)
        current_spec = current.fresh_spec() if current is not None else {}
        if current is not None and current_spec == link.spec and current.secret_fingerprints == fps:
            # The store already holds the declared state: nothing to write, whatever its history
            # (hashing only where something differs keeps a no-op plan of 10,000 links fast).
            claimed.add(current.name)
            unchanged = (UNCHANGED, link.name, link.provider, (), source, None, added, None, (), None)
            changes.append(_unchanged(unchanged))
            continue
        digest = spec_hash(link.spec, fps)
        if current is None and link.renamed_from and link.renamed_from in by_name:
            old = by_name[link.renamed_from]
            claimed.add(old.name)
            fields = diff_specs(
                old.fresh_spec(), link.spec, old.secret_fingerprints, fps, sensitive=link.sensitive_fields
            )
            changes.append(Change(RENAME, link.name, link.provider, fields, source, old.name, added, digest))
            continue
        if current is None:
            fields = diff_specs({}, link.spec, {}, fps, sensitive=link.sensitive_fields)
            changes.append(Change(CREATE, link.name, link.provider, fields, source, None, added, digest))
            continue
        claimed.add(current.name)
        drifted = current.spec_hash != spec_hash(current_spec, current.secret_fingerprints)
        fields = diff_specs(
            current_spec, link.spec, current.secret_fingerprints, fps, sensitive=link.sensitive_fields
        )
        action = DRIFT if drifted else UPDATE
        changes.append(Change(action, link.name, link.provider, fields, source, None, added, digest))
    declared = {d.name for d in desired}
    for old in sorted(stored, key=lambda s: s.name):
        if old.name in claimed or old.name in declared:
            continue
        if old.deletion_policy == "retain":
            changes.append(Change(RETAIN, old.name, old.provider))
        elif prune:
            changes.append(Change(DELETE, old.name, old.provider, revokes_tokens=old.name in revoking))
        else:
            changes.append(Change(ORPHAN, old.name, old.provider))
    return Plan(
        serial=serial,
        changes=tuple(changes),
        prune=prune,
        inputs=tuple(inputs),
        instance=instance,
        adopt_store=adopt_store,
        allow_empty_prune=allow_empty_prune,
    )


def rename_conflicts(desired: Sequence[DesiredLink], stored: Sequence[StoredLink]) -> list[Diagnostic]:
    """Renames the store cannot honour: both the old and the new name are already stored.

    The plan would update the new name and leave the old one to ``--prune``, deleting it (and
    its grant) although the file says it is the same link.
    """
    names = {link.name for link in stored}
    problems: list[Diagnostic] = []
    for link in desired:
        old = link.renamed_from
        if old is None or link.renamed_from_at is None or old not in names or link.name not in names:
            continue
        problems.append(
            dataclasses.replace(
                link.renamed_from_at,
                message=f"renamedFrom {old!r}: both {old!r} and {link.name!r} are already stored,"
                " so the rename cannot move one onto the other",
                hint=f"remove renamedFrom to keep both, or delete {link.name!r} first"
                f" (`linkctl apply --prune` without it declared) and apply the rename again",
                code="bad-rename",
            )
        )
    return problems


def missing_scopes(declared: Any, authorized: Any) -> tuple[str, ...]:
    """Declared scopes that a grant authorized for ``authorized`` lacks (nothing if unknown)."""
    if not isinstance(authorized, list | tuple) or not isinstance(declared, list | tuple):
        return ()
    return tuple(str(scope) for scope in declared if scope not in authorized)


def mark_reauthorization(plan: Plan, authorized_scopes: Callable[[str], Any]) -> Plan:
    """Flag changes that add scopes the link's stored grant was not authorized for.

    ``authorized_scopes(name)`` returns the scopes consented to at the last authorization
    (None when unknown or never authorized). Only changes of the ``scopes`` field look.
    """
    changes: list[Change] = []
    for change in plan.changes:
        if not change.fields:  # an unchanged link (most of a plan): no scopes change to look at
            changes.append(change)
            continue
        scopes = next((f for f in change.fields if f.path == "scopes"), None)
        if scopes is not None and change.action in (UPDATE, DRIFT, RENAME):
            missing = missing_scopes(scopes.new, authorized_scopes(change.renamed_from or change.link))
            if missing:
                change = dataclasses.replace(change, reauthorize_scopes=missing)
        changes.append(change)
    return dataclasses.replace(plan, changes=tuple(changes))
