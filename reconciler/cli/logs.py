"""Event logs of ``keeper`` and ``reconcile``: one line per event on stderr, text or JSON (``--log-format``).

Standard-library :mod:`logging`, configured like ``serve``'s server log (the same
``linkctl`` logger, ``time``/``level``/``logger``/``message`` keys in JSON), with the event's
fields added: ``logger.info("refresh", extra={"event": {...}})`` becomes
``{"time": …, "level": "info", "logger": "linkctl.keeper", "message": "refresh", "link": …}``
or ``info: linkctl.keeper: refresh link=… outcome=…``. Fields are names, outcomes, classes,
durations and times, never a secret: callers pass only those.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from reconciler.errors import UsageError

LOG_FORMATS = ("text", "json")
ENV_LOG_FORMAT = "LINKCTL_LOG_FORMAT"


def log_format_of(flag: str | None, env: Mapping[str, str]) -> str | None:
    """``--log-format``, else ``LINKCTL_LOG_FORMAT``, else None (not asked for); bad values: usage error."""
    chosen = flag or env.get(ENV_LOG_FORMAT) or None
    if chosen is not None and chosen not in LOG_FORMATS:
        raise UsageError(f"{ENV_LOG_FORMAT}={chosen!r}: expected text or json")
    return chosen


class EventFormatter(logging.Formatter):
    """One line per record: JSON with the event's fields, or ``level: logger: message k=v …``."""

    def __init__(self, log_format: str) -> None:
        super().__init__()
        self.json = log_format == "json"

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line (no traceback: errors are logged as their class and fix)."""
        fields: dict[str, Any] = dict(getattr(record, "event", None) or {})
        message = record.getMessage()
        if self.json:
            head = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": message,
            }
            return json.dumps({**head, **fields}, separators=(",", ":"), default=str)
        shown = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items() if value is not None)
        return f"{record.levelname.lower()}: {record.name}: {message}" + (f" {shown}" if shown else "")


def _text_value(value: object) -> str:
    if isinstance(value, Mapping):
        return ",".join(f"{key}:{item}" for key, item in value.items() if item)
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' "=\n')) else text


def configure(log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """Send the ``linkctl`` loggers' info (and up) lines to ``stream`` (stderr) in ``log_format``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(EventFormatter(log_format))
    logger = logging.getLogger("linkctl")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def iso_time(epoch: float | None) -> str | None:
    """An epoch time as RFC 3339 UTC (seconds), or None."""
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
