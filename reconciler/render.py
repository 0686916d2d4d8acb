"""Render plans for humans: text, and Markdown for a pull-request comment; the JSON form is ``Plan.to_json``.

Sensitive fields render as ``(sensitive value changed)`` and never carry values.
The Markdown form (``plan -o markdown``) puts a summary line first, calls out
deletions and token revocations, then gives one section per change. Review
comments have a size limit (GitHub: 65,536 characters), so a long plan is cut at
whole sections and the cut is said with a count — never silently.
"""

from __future__ import annotations

import json
import re
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
    # JSON keeps each value on one line (a newline inside must not start a new diff line).
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


# -- Markdown ---------------------------------------------------------------------------
COMMENT_LIMIT = 60_000  # below GitHub's 65,536 with room for a CI job's own header

_TITLES = {
    plans.CREATE: "create",
    plans.UPDATE: "update",
    plans.RENAME: "rename",
    plans.DRIFT: "restore (changed outside git)",
    plans.DELETE: "delete",
    plans.ORPHAN: "no longer declared (kept until `apply --prune`)",
    plans.RETAIN: "no longer declared (kept: deletionPolicy retain)",
}
_MARKS = {plans.DELETE: "🗑", plans.DRIFT: "⚠", plans.ORPHAN: "❔"}
_BACKTICKS = re.compile(r"`+")


def code(text: str) -> str:
    """``text`` as inline code that no backtick, pipe or HTML inside can break out of."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _block(lines: list[str]) -> list[str]:
    body = "\n".join(lines)
    longest = max((len(run) for run in _BACKTICKS.findall(body)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}diff", *lines, fence]


def _field_lines(change: plans.Change) -> list[str]:
    out: list[str] = []
    for field in change.fields:
        if field.sensitive:
            changed = "" if change.action == plans.CREATE else " changed"
            out.append(f"~ {field.path}: (sensitive value{changed})")
        elif change.action == plans.CREATE:
            if field.new in (None, {}, []):
                continue
            out.append(f"+ {field.path}: {_value(field.new)}")
        else:
            out.append(f"- {field.path}: {_value(field.old)}")
            out.append(f"+ {field.path}: {_value(field.new)}")
    return out


def _section(change: plans.Change) -> str:
    title = _TITLES.get(change.action, change.action)
    mark = _MARKS.get(change.action, "")
    head = f"### {mark + ' ' if mark else ''}{title}: {code(change.link)} ({code(change.provider)})"
    lines = [head, ""]
    facts: list[str] = []
    if change.renamed_from:
        facts.append(f"renamed from {code(change.renamed_from)}")
    if change.source:
        facts.append(f"declared at {code(change.source)}")
    if facts:
        lines += ["; ".join(facts), ""]
    if change.action == plans.DELETE:
        lines += [
            (
                "**Revokes its tokens at the provider**, then deletes the link."
                if change.revokes_tokens
                else "Deletes the link locally only (no tokens to revoke at the provider)."
            ),
            "",
        ]
    if change.reauthorize_scopes:
        scopes = ", ".join(code(s) for s in change.reauthorize_scopes)
        lines += [
            f"Needs re-authorization for new scopes {scopes}: after apply, run"
            f" {code('linkctl authorize ' + change.link)} (the current grant keeps working).",
            "",
        ]
    added = describe_preset_added(change.preset_added)
    if added and change.action in (plans.CREATE, plans.UPDATE, plans.RENAME, plans.DRIFT):
        lines += [f"The {code(change.provider)} preset adds: {code(added)}", ""]
    fields = _field_lines(change)
    if fields:
        lines += [*_block(fields), ""]
    return "\n".join(lines)


def summary_line(plan: plans.Plan) -> str:
    """The first line: counts per action, or "No changes"."""
    s = plan.summary()
    if not plan.has_changes:
        line = f"**No changes.** {s['unchanged']} link(s) up to date (state serial {plan.serial})."
    else:
        line = (
            f"**Plan:** {s['create']} to create, {s['update'] + s['drift']} to update"
            f" ({s['drift']} drifted), {s['rename']} to rename, {s['delete']} to delete,"
            f" {s['unchanged']} unchanged (state serial {plan.serial})."
        )
    if s["orphan"]:
        line += f" {s['orphan']} stored link(s) no longer declared (kept until `apply --prune`)."
    return line


def _callouts(plan: plans.Plan) -> list[str]:
    deletes = [c for c in plan.changes if c.action == plans.DELETE]
    if not deletes:
        return []
    revoking = [c for c in deletes if c.revokes_tokens]
    names = ", ".join(code(c.link) for c in deletes)
    lines = ["> [!WARNING]", f"> This plan **deletes {len(deletes)} link(s)**: {names}"]
    if revoking:
        lines.append(
            f"> and **revokes the tokens of {len(revoking)}** at the provider: "
            + ", ".join(code(c.link) for c in revoking)
            + ". Apps using them lose access."
        )
    return [*lines, ""]


def render_markdown(plan: plans.Plan, *, verbose: bool = False, limit: int = COMMENT_LIMIT) -> str:
    """The Markdown form of a plan, at most ``limit`` characters (cut at sections, with a count)."""
    head = [summary_line(plan), "", *_callouts(plan)]
    shown = [c for c in plan.changes if verbose or c.action != plans.UNCHANGED]
    text = "\n".join(head)
    for index, change in enumerate(shown):
        unchanged = change.action == plans.UNCHANGED
        section = f"- unchanged: {code(change.link)}\n" if unchanged else _section(change)
        left = len(shown) - index
        # Always keep room for the note that says how many sections were left out.
        note = (
            f"\n_… and {left} more change(s) not shown: the comment would exceed {limit:,} characters."
            " Run `linkctl plan` for the full plan._\n"
        )
        if len(text) + len(section) + 1 + (len(note) if left > 1 else 0) > limit:
            return text + note
        text += "\n" + section
    return text.rstrip("\n") + "\n"
