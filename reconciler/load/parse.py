"""Parsing one file's text into plain documents, with the YAML diagnostics of each.

A JSON file that YAML cannot compose falls back to the strict JSON reader (its
positions then stay at the document).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler import strict_json
from reconciler.diagnostics import ERROR, Diagnostic
from reconciler.load.documents import LoadResult

Parsed = list[tuple[Any, int]]  # (data, first line) per document
ParseOutcome = tuple[Parsed, dict[int, list[Diagnostic]], bool]  # + diagnostics, JSON fallback


def parse_text(display: str, path: Path, text: str, result: LoadResult) -> ParseOutcome | None:
    """Parse a file's documents; None (with diagnostics in ``result``) when it cannot be."""
    # Here, not at the top: a run served from the parse cache never loads YAML (about 9 ms).
    import yaml

    from reconciler.load.yaml_positions import Constructor, NodeLoader

    def fail(
        message: str, line: int | None = None, column: int | None = None, code: str | None = None
    ) -> None:
        result.diagnostics.append(Diagnostic(ERROR, message, display, line, column, (), None, code))

    constructor = Constructor(display, budget=50_000 + len(text))
    json_fallback = False
    parsed: Parsed = []
    per_document: dict[int, list[Diagnostic]] = {}  # constructor diagnostics by document index
    try:
        loader = NodeLoader(text)
        try:
            while loader.check_node():
                node = loader.get_node()
                if node is None:
                    continue
                before = len(constructor.diagnostics)
                parsed.append((constructor.build(node), node.start_mark.line + 1))
                per_document[len(parsed) - 1] = constructor.diagnostics[before:]
                if constructor.exhausted:
                    break
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if path.suffix.lower() == ".json" and not parsed:
            try:
                parsed = [(strict_json.loads(text), 1)]
                json_fallback = True  # YAML cannot compose it: positions stay at the document
            except json.JSONDecodeError as json_exc:
                fail(f"invalid JSON: {json_exc.msg}", json_exc.lineno, json_exc.colno, code="syntax")
                return None
            except ValueError as json_exc:
                fail(f"invalid JSON: {json_exc}", code="syntax")
                return None
        else:
            if mark and _is_indentation_tab(text, mark.line, mark.column):
                problem = "tabs are not allowed for indentation"
            fail(
                f"YAML syntax error: {problem}",
                mark.line + 1 if mark else None,
                mark.column + 1 if mark else None,
                code="syntax",
            )
            return None
    except yaml.reader.ReaderError as exc:
        start = text.rfind("\n", 0, exc.position) + 1
        fail(
            f"character U+{exc.character:04X} is not allowed in YAML or JSON (control character)",
            text.count("\n", 0, exc.position) + 1,
            exc.position - start + 1,
            code="syntax",
        )
        return None
    except yaml.YAMLError as exc:
        fail(f"YAML error: {exc}", code="syntax")
        return None
    if constructor.exhausted:
        result.diagnostics.extend(constructor.diagnostics)
        return None
    return parsed, per_document, json_fallback


def _is_indentation_tab(text: str, line: int, column: int) -> bool:
    """True when the character at (line, column), 0-based, is a tab in the line's leading blanks."""
    lines = text.splitlines()
    if line >= len(lines):
        return False
    leading = lines[line][: column + 1]
    return "\t" in leading and not leading.strip(" \t-")
