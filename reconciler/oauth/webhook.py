"""The webhook sender: POSTs status notifications (the one other module that imports httpx).

:mod:`reconciler.services.notify` signs a body and hands it here with the target's URL;
:class:`WebhookSender` sends it once and says what came back. It never raises for a
network failure and never puts the URL (which may carry a token, as Slack's do) into a
message: answers name the target by its origin only.
"""

from __future__ import annotations

import dataclasses
import email.utils
import time
from collections.abc import Mapping

import httpx

from reconciler.domain.notify import target_origin
from reconciler.secrets import Secret

__all__ = ["WebhookAnswer", "WebhookSender"]


@dataclasses.dataclass(frozen=True)
class WebhookAnswer:
    """What one POST to a receiver gave: a status code, or the reason there was none."""

    status_code: int | None
    error: str | None = None  # None with a 2xx status: delivered
    retry_after: float | None = None  # seconds the receiver asked us to wait (429/503)

    @property
    def delivered(self) -> bool:
        """True for a 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now, 0.0)


class WebhookSender:
    """One HTTP client for webhook POSTs (no redirects followed: a receiver answers itself)."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        verify: bool | str = True,
    ) -> None:
        self._http = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            verify=verify,
            follow_redirects=False,
            headers={"User-Agent": "linkctl-webhook"},
        )

    def post(self, url: Secret, body: bytes, headers: Mapping[str, str]) -> WebhookAnswer:
        """POST ``body`` to ``url`` once; the answer, never an exception for a network failure."""
        origin = target_origin(url.reveal())
        try:
            response = self._http.post(
                url.reveal(), content=body, headers={"Content-Type": "application/json", **headers}
            )
        except httpx.HTTPError as error:  # its text may quote the URL: only the type is kept
            return WebhookAnswer(None, f"{origin}: {type(error).__name__}")
        if 200 <= response.status_code < 300:
            return WebhookAnswer(response.status_code)
        # The answer's body is not kept: an error page may echo the request path, which is
        # the secret part of a Slack-style URL.
        return WebhookAnswer(
            response.status_code,
            f"{origin} answered HTTP {response.status_code}",
            _retry_after(response.headers.get("Retry-After"), time.time()),
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
