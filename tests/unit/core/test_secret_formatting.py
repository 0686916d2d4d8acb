"""No plaintext secret: every way Python turns a ``Secret`` into text gives the redaction."""

from __future__ import annotations

import logging

import pytest

from reconciler.errors import LinkctlError
from reconciler.secrets import REDACTED, Secret

CANARY = "canary-0f9e8d7c-plaintext"


def test_secret_never_formats_its_plaintext(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret(CANARY)
    texts = [
        str(secret),
        repr(secret),
        f"{secret}",
        f"{secret!s}",
        f"{secret:>40}",
        "%s" % secret,  # noqa: UP031 - the old formatting path is exactly what is tested
        "{}".format(secret),  # noqa: UP032
        str([secret]),
        str({"k": secret}),
        str(LinkctlError(f"refresh failed with {secret}")),
    ]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("reconciler.test").warning("token %s in %r", secret, [secret])
    texts.append(caplog.text)
    assert all(CANARY not in text for text in texts), [t for t in texts if CANARY in t]
    assert str(secret) == REDACTED and f"{secret}" == REDACTED
    assert secret.reveal() == CANARY
