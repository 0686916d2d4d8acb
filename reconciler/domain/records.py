"""Building many frozen dataclass records quickly (the rows of a 10,000-link plan).

A frozen dataclass's generated ``__init__`` sets each field through ``object.__setattr__``
(frozen classes refuse plain assignment): for the 13 fields of a stored link that is about
half the cost of building one. :func:`record_builder` fills the new instance's ``__dict__``
at once, which is all those calls amount to, for classes where nothing else happens in
``__init__`` (checked once per class).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

_R = TypeVar("_R")


def record_fields(cls: type) -> tuple[str, ...]:
    """The field names of ``cls`` in order, after checking that :func:`record_builder` may build it."""
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} is not a frozen dataclass")
    if "__slots__" in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has slots or a __post_init__: build it with its __init__")
    fields = dataclasses.fields(cls)
    if any(not f.init for f in fields):
        raise TypeError(f"{cls.__name__} has a field outside __init__")
    return tuple(f.name for f in fields)


def record_builder(cls: type[_R]) -> Callable[[Sequence[Any]], _R]:
    """A function building ``cls`` from a value for each field, in order: ``cls(*values)``, faster."""
    names = record_fields(cls)
    new = object.__new__

    def build(values: Sequence[Any]) -> _R:
        if len(values) != len(names):
            raise TypeError(f"{cls.__name__} needs {len(names)} values ({', '.join(names)})")
        record: _R = new(cls)
        record.__dict__.update(zip(names, values, strict=True))
        return record

    return build
