"""Rules across documents: a link name declared once, and renames that can be applied.

Shared by the validator and by a replay from the validation cache (no pydantic here):
both depend on every file, so neither is ever cached.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.load import Document
from reconciler.validate.results import Reporter


def remember_name(report: Reporter, seen: dict[str, Document], doc: Document, name: str) -> bool:
    """False (with an error) when ``name`` was declared by another document already."""
    first = seen.get(name)
    if first is not None and first is not doc:
        line, col = first.locate(("metadata", "name"))
        report.error(
            doc,
            f"link {name!r} is declared twice (also at {first.file}:{line}:{col})",
            ("metadata", "name"),
            hint="link names must be unique across all files",
            code="duplicate-name",
        )
        return False
    seen[name] = doc
    return True


def check_renames(report: Reporter, links: Sequence[tuple[Document, str, str | None]]) -> None:
    """Each ``renamedFrom`` names a link no longer declared, claimed by one link only."""
    names = {name for _, name, _ in links}
    claimed: dict[str, tuple[Document, str]] = {}
    for doc, name, old in links:
        if old is None:
            continue
        if old == name:
            report.error(
                doc,
                "renamedFrom equals the link's own name",
                ("metadata", "renamedFrom"),
                hint="remove renamedFrom once the rename is applied",
                code="bad-rename",
            )
        elif old in names:
            report.error(
                doc,
                f"renamedFrom {old!r} is still declared as a link",
                ("metadata", "renamedFrom"),
                hint="remove the old document when renaming",
                code="bad-rename",
            )
        elif old in claimed:
            first_doc, first_name = claimed[old]
            report.error(
                doc,
                f"renamedFrom {old!r} is also claimed by link {first_name!r}"
                f" ({first_doc.file}:{first_doc.line}); one link can be renamed only once",
                ("metadata", "renamedFrom"),
                hint=f"keep renamedFrom: {old} on one of the two links",
                code="bad-rename",
            )
        else:
            claimed[old] = (doc, name)
