"""Render plans for humans (text); the JSON form is ``Plan.to_json``.

Sensitive fields render as ``(sensitive value changed)`` and never carry values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from reconciler import plan as plans

_SYMBOLS = {
    plans.CREATE: "+",
    plans.UPDATE: "~",
    plans.RENAME: ">",
    plans.DRIFT: "!",
    plans.DELETE: "-",
    plans.ORPHAN: "?",
    plans.RETAIN: "=",
}
_NOTES = {
    plans.DRIFT: "changed outside git; apply restores the declared state",
    plans.ORPHAN: "stored but no longer declared; `apply --prune` deletes it",
    plans.RETAIN: "no longer declared; kept (deletionPolicy: retain)",
}


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def render_field(field: plans.FieldChange, action: str) -> str:
    """One field line of a change."""
    if field.sensitive:
        return (
            f"{field.path}: (sensitive value changed)"
            if action != plans.CREATE
            else (f"{field.path}: (sensitive value)")
        )
    if action == plans.CREATE:
        return f"{field.path}: {_value(field.new)}"
    return f"{field.path}: {_value(field.old)} → {_value(field.new)}"


def describe_preset_added(added: Mapping[str, Any]) -> str:
    """``scopes offline_access; prompt=consent``: what a preset added to a link, or ""."""
    parts = [f"scopes {', '.join(added['scopes'])}"] if added.get("scopes") else []
    parts += [f"{k}={v}" for k, v in (added.get("authorizeParams") or {}).items()]
    return "; ".join(parts)


def render_text(plan: plans.Plan, *, verbose: bool = False) -> str:
    """The human form of a plan."""
    lines: list[str] = []
    summary = plan.summary()
    for change in plan.changes:
        if change.action == plans.UNCHANGED and not verbose:
            continue
        symbol = _SYMBOLS.get(change.action, " ")
        head = f"  {symbol} {change.action} {change.link} ({change.provider})"
        if change.renamed_from:
            head += f" from {change.renamed_from}"
        if change.source:
            head += f"  {change.source}"
        lines.append(head)
        if change.action in _NOTES:
            lines.append(f"      {_NOTES[change.action]}")
        if change.action == plans.DELETE:
            lines.append(
                "      revokes its tokens at the provider, then deletes it"
                if change.revokes_tokens
                else "      deletes it locally only (no tokens to revoke at the provider)"
            )
        for field in change.fields:
            if change.action == plans.CREATE and field.new in (None, {}, []) and not field.sensitive:
                continue
            lines.append("      " + render_field(field, change.action))
        if change.reauthorize_scopes:
            lines.append(
                f"      needs re-authorization for new scopes: {', '.join(change.reauthorize_scopes)}"
                f" (after apply, run `linkctl authorize {change.link}`; the current grant keeps working)"
            )
        added = describe_preset_added(change.preset_added)
        if added and change.action in (plans.CREATE, plans.UPDATE, plans.RENAME, plans.DRIFT):
            lines.append(f"      (the {change.provider} preset adds: {added})")
    header = (
        f"Plan: {summary['create']} to create, {summary['update'] + summary['drift']} to update"
        f" ({summary['drift']} drifted), {summary['rename']} to rename, {summary['delete']} to delete,"
        f" {summary['unchanged']} unchanged (state serial {plan.serial})."
    )
    if not plan.has_changes:
        header = f"No changes. {summary['unchanged']} link(s) up to date (state serial {plan.serial})."
    tail: list[str] = []
    if summary["orphan"]:
        tail.append(
            f"{summary['orphan']} stored link(s) are no longer declared;"
            " run apply with --prune to delete them."
        )
    return "\n".join([header, *lines, *tail]) + "\n"
