"""The structural pass: a document against its kind's pydantic model, errors made readable.

pydantic's error locations and types become one diagnostic each, with a "did you mean"
for unknown fields and the clientSecret union reported once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from reconciler.load import Document
from reconciler.models import MODELS
from reconciler.validate.paths import MISSING, lookup
from reconciler.validate.results import Reporter

# pydantic names the members of the clientSecret union in error locations.
_UNION_MEMBERS = {"str", "FromEnv", "FromFile"}


def check_structure(report: Reporter, doc: Document) -> BaseModel | None:
    """The document as its kind's pydantic model, or None with each problem reported."""
    model = MODELS[doc.kind or ""]
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        _report(report, doc, exc, model)
        return None


def _report(report: Reporter, doc: Document, exc: ValidationError, model: type[BaseModel]) -> None:
    reported: set[tuple[Any, ...]] = set()
    for err in exc.errors(include_url=False, include_input=False):
        raw_loc = tuple(err["loc"])
        cut = next(
            (
                i
                for i, p in enumerate(raw_loc)
                if i and raw_loc[i - 1] == "clientSecret" and isinstance(p, str) and p in _UNION_MEMBERS
            ),
            None,
        )
        union = cut is not None
        loc = raw_loc[:cut] if cut is not None else raw_loc
        kind = err["type"]
        if union:
            key = (loc, "union")
            if key in reported:
                continue
            reported.add(key)
            typo = next(
                (
                    str(e["loc"][-1])
                    for e in exc.errors()
                    if e["type"] == "extra_forbidden" and tuple(e["loc"][: len(loc)]) == loc
                ),
                None,
            )
            close = difflib.get_close_matches(typo, ["fromEnv", "fromFile"], n=1) if typo else []
            report.error(
                doc,
                "clientSecret must be an encrypted string, {fromEnv: NAME} or {fromFile: PATH}",
                loc,
                hint=f"did you mean {close[0]!r}?"
                if close
                else "encrypt it with `linkctl secrets encrypt --in-place FILE`, or reference it",
                code="secret-source",
            )
            continue
        if (loc, kind) in reported:
            continue
        reported.add((loc, kind))
        if kind == "extra_forbidden":
            field = str(loc[-1])
            known = _known_fields(model, loc[:-1])
            close = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else (f"known fields here: {', '.join(sorted(known))}" if known else None)
            )
            report.error(doc, f"unknown field {field!r}", loc, hint=hint, code="unknown-field", key=True)
        elif kind == "missing":
            report.error(doc, f"required field {loc[-1]!r} is missing", loc, code="missing-field")
        elif kind in ("string_type", "int_type", "bool_type", "dict_type", "list_type", "model_type"):
            expected = kind.split("_")[0].replace("dict", "mapping").replace("model", "mapping")
            hint = "quote the value" if expected == "string" else None
            report.error(
                doc,
                f"expected a {expected}, got {_type_name(doc, loc)}",
                loc,
                hint=hint,
                code="wrong-type",
            )
        elif kind == "string_pattern_mismatch" and loc[:1] == ("metadata",):
            value = _value_at(doc, loc)
            suggestion = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-") if value else ""
            report.error(
                doc,
                f"{loc[-1]} {value!r} is not a DNS label: use lowercase letters, digits and '-',"
                " starting and ending with a letter or digit",
                loc,
                hint=f"for example {suggestion!r}" if suggestion else None,
                code="bad-name",
            )
        else:
            report.error(doc, err["msg"], loc, code=kind.replace("_", "-"))


def _known_fields(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _value_at(doc: Document, loc: Sequence[Any]) -> str:
    value = lookup(doc, loc)
    return value if isinstance(value, str) else ""


def _type_name(doc: Document, loc: Sequence[Any]) -> str:
    value = lookup(doc, loc)
    if value is MISSING:
        return "something else"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        type(None): "null",
    }.get(type(value), type(value).__name__)
