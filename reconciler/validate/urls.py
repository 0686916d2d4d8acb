"""URL rules: https only (plain http for loopback on request), hosts that compare safely, redirect URLs."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from reconciler.load import Document
from reconciler.validate.results import Reporter

REDIRECT_PATH = "/oauth/callback/{name}"


def redirect_url(base_url: str, name: str) -> str:
    """The redirect URL of a link: a pure function of the base URL and the link name."""
    return base_url.rstrip("/") + REDIRECT_PATH.format(name=name)


_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_BAD_HOST_CHARS = re.compile(r"[\x00-\x20\x7f<>\"{}|\\^`%]")


def url_problem(url: str, *, endpoint: bool) -> tuple[str, str] | None:
    """What makes an absolute URL unsafe to compare or send to (message, fix), or None."""
    # Browsers read a backslash as a slash, Python's urlsplit does not: the two would disagree
    # on the host.
    if "\\" in url or _BAD_HOST_CHARS.search(url.replace("%", "")):
        return (
            "contains a space, backslash or character not allowed in a URL",
            "percent-encode it or remove it",
        )
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or _BAD_HOST_CHARS.search(host):
        return (
            "has an invalid host or port (ports are 1-65535)",
            "write the host name and a port from 1 to 65535",
        )
    if host.endswith("."):
        return f"host {host!r} ends with a dot", f"write {host.rstrip('.')!r}"
    if host.startswith("[") or ":" in host:
        try:
            mapped = ipaddress.IPv6Address(host.strip("[]")).ipv4_mapped
        except ValueError:
            return f"host {host!r} is not a valid IPv6 address", "write the address in canonical form"
        if mapped is not None:
            return f"host {host!r} is an IPv4-mapped IPv6 address", f"write {str(mapped)!r}"
    elif all(_NUMERIC_LABEL.fullmatch(label) for label in host.split(".")):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return (
                f"host {host!r} is a non-canonical numeric address (resolvers read it as an IPv4 address)",
                "write the address as four decimal numbers, e.g. 127.0.0.1",
            )
    if endpoint and (parts.fragment or url.endswith("#")):
        return "must not have a fragment (RFC 6749 §3.1, §3.2)", "remove the #... part"
    return None


def is_loopback_host(host: str | None) -> bool:
    """True for localhost names and loopback IP addresses."""
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@functools.cache
def base_host(base_url: str) -> str | None:
    """The host of an Instance's baseUrl (cached: every link asks)."""
    return urlsplit(base_url).hostname


@functools.cache
def is_private_ip(host: str | None) -> bool:
    """True for private, loopback and link-local addresses (and ``localhost``)."""
    try:
        address = ipaddress.ip_address((host or "").strip("[]"))
    except ValueError:
        return host == "localhost"
    return address.is_private or address.is_loopback or address.is_link_local


def check_url(
    report: Reporter,
    doc: Document,
    url: str,
    path: Sequence[str | int],
    *,
    what: str,
    allow_loopback: bool,
    base: bool = False,
) -> bool:
    """Report what makes ``url`` unusable as ``what`` (https, host, loopback rules); True if none."""
    if not check_url_credentials(report, doc, url, path, what=what):
        return False
    parts = urlsplit(url)
    encrypted = tuple(path) in doc.encrypted_paths  # checked, never quoted
    if parts.scheme not in ("https", "http") or not parts.hostname:
        shown = "an encrypted value" if encrypted else repr(url)
        report.error(doc, f"{what} must be an absolute https:// URL, got {shown}", path, code="bad-url")
        return False
    problem = url_problem(url, endpoint=not base)
    if problem:
        message, hint = problem
        report.error(doc, f"{what} {message}", path, hint=hint, code="bad-url")
        return False
    if parts.scheme == "http":
        if not is_loopback_host(parts.hostname):
            report.error(
                doc,
                f"{what} must use https (plain http is allowed only for loopback hosts)",
                path,
                hint="use https://" if encrypted else f"use {url.replace('http://', 'https://', 1)}",
                code="insecure-url",
            )
            return False
        if not allow_loopback:
            report.error(
                doc,
                f"{what} uses plain http on a loopback host",
                path,
                hint="for local testing set spec.allowInsecureLoopback: true in the Instance document",
                code="insecure-url",
            )
            return False
    if base and (parts.query or parts.fragment):
        report.error(doc, "baseUrl must not have a query or fragment", path, code="bad-url")
        return False
    return True


def check_url_credentials(
    report: Reporter, doc: Document, url: str, path: Sequence[str | int], *, what: str
) -> bool:
    """Report a user:password@ in ``url`` (never quoting it); True when there is none."""
    # Checked before anything that quotes the URL: a password in it must never be echoed.
    # The authority ends where a browser ends it: backslashes count as slashes there.
    authority = re.split(r"[/\\?#]", url.partition("://")[2], maxsplit=1)[0]
    if "@" not in authority:
        return True
    report.error(
        doc,
        f"{what} must not contain credentials (user:password@)",
        path,
        hint="remove them from the URL; a client secret belongs in clientSecret",
        code="url-credentials",
    )
    return False
