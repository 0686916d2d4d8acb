"""What validation hands to planning, and the reporter every rule writes its problems to."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

from reconciler.diagnostics import Diagnostic, has_errors
from reconciler.domain.links import DesiredLink
from reconciler.domain.notify import NotifyTargetDecl
from reconciler.load import Document


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _BaseUrl(Protocol):
    @property
    def baseUrl(self) -> str: ...


class InstanceView(Protocol):
    """What planning and applying read of the Instance: the pydantic model, or a cache replay's copy."""

    @property
    def metadata(self) -> _Named: ...

    @property
    def spec(self) -> _BaseUrl: ...


@dataclasses.dataclass
class ValidationResult:
    """What validation found: diagnostics, the instance, and the desired links."""

    diagnostics: list[Diagnostic]
    instance: InstanceView | None
    links: list[DesiredLink]
    skipped: list[str]
    files: list[str]
    notify: list[NotifyTargetDecl] = dataclasses.field(default_factory=list)  # the Instance's webhooks

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings allowed)."""
        return not has_errors(self.diagnostics)


class Reporter(Protocol):
    """Where a rule reports what it found in a document (the validator counts the errors)."""

    def error(self, doc: Document, message: str, path: Sequence[str | int] = (), **kw: Any) -> None:
        """Report an error at ``path`` in ``doc``."""

    def warn(self, doc: Document, message: str, path: Sequence[str | int] = (), **kw: Any) -> None:
        """Report a warning at ``path`` in ``doc``."""
