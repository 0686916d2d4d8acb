"""Diagnostics: one problem found in the declared files, with where and how to fix it.

Produced by ``load`` and ``validate``; rendered by the CLI as
``FILE:LINE:COL: error: MESSAGE (at JSON.PATH)`` plus an indented hint, or as JSON.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

ERROR = "error"
WARNING = "warning"

PathPart = str | int
Path = tuple[PathPart, ...]


def format_path(path: Sequence[PathPart]) -> str:
    """``("spec", "scopes", 0)`` → ``spec.scopes[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclasses.dataclass(frozen=True)
class Diagnostic:
    """One error or warning about the declared configuration."""

    severity: str
    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    path: Path = ()
    hint: str | None = None
    code: str | None = None  # short stable identifier, e.g. "duplicate-key"

    @property
    def is_error(self) -> bool:
        """True for errors, False for warnings."""
        return self.severity == ERROR

    def render(self) -> str:
        """The one-line text form plus an optional hint line."""
        where = self.file or "<input>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.severity}: {self.message}"
        if self.path:
            text += f" (at {format_path(self.path)})"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def to_json(self) -> dict[str, Any]:
        """The documented JSON form (stable keys)."""
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": format_path(self.path) if self.path else None,
            "hint": self.hint,
        }


def sort_key(d: Diagnostic) -> tuple[str, int, int, str]:
    """Order diagnostics by file, line, column."""
    return (d.file or "", d.line or 0, d.column or 0, d.message)


def render_text(diagnostics: Iterable[object]) -> str:
    """All diagnostics as text, one per line (hints indented), sorted by location."""
    items = [d for d in diagnostics if isinstance(d, Diagnostic)]
    return "".join(d.render() + "\n" for d in sorted(items, key=sort_key))


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    """True when any diagnostic is an error."""
    return any(d.is_error for d in diagnostics)
