"""The ``postgresql://`` state URL: libpq's connection string, linkctl's ``pool_size``, and the URL as shown.

:func:`parse_url` splits a URL into the libpq connection string and linkctl's own query
parameters and refuses malformed ones; :func:`redact` gives the URL without its password,
for every message, ``state show`` and the logs.
"""

from __future__ import annotations

import dataclasses
import urllib.parse

import psycopg
import psycopg.conninfo

from reconciler.errors import StateError

CONNECT_TIMEOUT = 5  # seconds, per connection attempt (libpq connect_timeout)
DEFAULT_POOL_SIZE = 10
_OWN_PARAMS = ("pool_size",)


@dataclasses.dataclass(frozen=True)
class PgURL:
    """A parsed ``postgresql://`` state URL."""

    conninfo: str  # for libpq (linkctl's own parameters removed)
    shown: str  # the URL without its password, for messages and ``state show``
    pool_size: int
    target: str  # host:port/dbname, for messages


def parse_url(url: str) -> PgURL:
    """Split a state URL into libpq's part and linkctl's (``pool_size``); refuse malformed ones."""
    scheme, sep, rest = url.partition("://")
    if not sep or not (
        scheme.lower() in ("postgresql", "postgres") or scheme.lower().startswith("postgresql+")
    ):
        raise StateError(
            f"not a PostgreSQL state URL: {redact(url)!r}", hint="use postgresql://user@host/dbname"
        )
    base, _, query = rest.partition("?")
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    own = {k: v for k, v in pairs if k in _OWN_PARAMS}
    libpq_query = urllib.parse.urlencode([(k, v) for k, v in pairs if k not in _OWN_PARAMS])
    conninfo = "postgresql://" + base + ("?" + libpq_query if libpq_query else "")
    pool_size = DEFAULT_POOL_SIZE
    if "pool_size" in own:
        raw = own["pool_size"]
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise StateError(
                f"the state URL's pool_size must be a whole number from 1 to 1000 (got {raw!r})",
                hint="e.g. postgresql://linkctl@db.example/linkctl?pool_size=10",
            )
        pool_size = int(raw)
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise StateError(
            f"the PostgreSQL state URL {redact(url)!r} is malformed: {first_line(exc)}",
            hint="see https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING"
            " (linkctl adds only pool_size)",
        ) from None
    params.setdefault("application_name", "linkctl")
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
    host = str(params.get("host") or "localhost")
    target = f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"
    return PgURL(psycopg.conninfo.make_conninfo("", **params), redact(url), pool_size, target)


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (in the authority and in a ``password=`` parameter)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        userinfo, _, hostpart = authority.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        authority = f"{userinfo}@{hostpart}"
    if "?" in tail:
        path, _, query = tail.partition("?")
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{k}={'***' if k == 'password' else v}" for k, v in pairs)
        tail = f"{path}?{query}"
    return f"{scheme}{sep}{authority}{slash}{tail}"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libpq's are multi-line)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
