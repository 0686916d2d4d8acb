"""``linkctl state export|import|migrate``: a whole state as one file, and the schema brought up to date.

The file (docs/postgresql.md, "Moving a state") is JSON lines, UTF-8:

* line 1, the header: ``{"format": "linkctl-state", "version": 1, "schema_version": N,
  "backend": "sqlite"|"postgresql", "serial": N, "instance": str|null, "key_check": BASE64,
  "meta": {key: str}, "exported_at": ISO-8601}`` (``meta``: the store's other meta rows,
  such as the declared webhook targets, whose URLs and keys are sealed);
* one line per row: ``{"table": NAME, "row": {column: value}}``, tables in foreign-key
  order; sealed bytes as ``{"$base64": "…"}`` (still sealed: the file holds no plaintext
  secret, but it holds everything the state key opens, so it is written 0600);
* the last line, the trailer: ``{"end": true, "rows": {table: count}}`` — a truncated file
  is refused.

Reading refuses anything else with ``FILE:LINE: error: …`` and exit 3, before the store
is touched; the import itself is one transaction into an empty store, under the apply lock.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from reconciler.domain.clock import iso_time
from reconciler.errors import ConfigError, StateError
from reconciler.store.base import locked
from reconciler.store.transfer import BINARY_COLUMNS, OWN_META, TABLES, StateHeader

if TYPE_CHECKING:
    from reconciler.store.base import Store

FORMAT = "linkctl-state"
VERSION = 1
MAX_LINE_BYTES = 4 * 1024 * 1024  # one row; a larger line is not something linkctl wrote
_B64 = "$base64"


def export_state(store: Store, path: Path, *, force: bool = False) -> dict[str, int]:
    """Write the whole state of ``store`` to ``path`` (0600, atomically); the rows per table."""
    if path.exists() and not force:
        raise StateError(f"{path} exists", hint="choose a new file name, or pass --force to replace it")
    header = store.export_header()
    counts = dict.fromkeys(TABLES, 0)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise StateError(
            f"cannot write {path}: {exc.strerror}", hint=f"make {path.parent} writable"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            _line(
                out,
                {
                    "format": FORMAT,
                    "version": VERSION,
                    "schema_version": header.schema_version,
                    "backend": header.backend,
                    "serial": header.serial,
                    "instance": header.instance,
                    "key_check": base64.b64encode(header.key_check).decode("ascii"),
                    "meta": dict(header.meta),
                    "exported_at": iso_time(time.time(), zulu=True),
                },
            )
            for table, row in store.export_rows():
                counts[table] += 1
                _line(out, {"table": table, "row": {k: _encode(v) for k, v in row.items()}})
            _line(out, {"end": True, "rows": counts})
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return counts


def _line(out: IO[str], data: Mapping[str, Any]) -> None:
    out.write(json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n")


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {_B64: base64.b64encode(bytes(value)).decode("ascii")}
    return value


def read_state_file(path: Path) -> tuple[StateHeader, list[tuple[str, dict[str, Any]]]]:
    """Parse and check an export file completely; ``ConfigError`` with its line for anything wrong."""
    name = str(path)

    def bad(line: int | None, message: str, column: int | None = None) -> ConfigError:
        return ConfigError(
            message,
            file=name,
            line=line,
            column=column,
            hint="the file must be one written by `linkctl state export` (docs/postgresql.md);"
            " nothing was imported",
        )

    try:
        handle = path.open("rb")
    except OSError as exc:
        raise bad(None, f"cannot read the file: {exc.strerror}") from None
    header: StateHeader | None = None
    rows: list[tuple[str, dict[str, Any]]] = []
    counts = dict.fromkeys(TABLES, 0)
    ended = False
    last_table = 0
    with handle:
        for number, raw in enumerate(_lines(handle, bad), start=1):
            if ended:
                raise bad(number, "text after the end line (the file was appended to?)")
            try:
                data = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise bad(number, f"not UTF-8 (byte {exc.start + 1})") from None
            except json.JSONDecodeError as exc:
                raise bad(number, f"not JSON: {exc.msg}", exc.colno) from None
            if not isinstance(data, dict):
                raise bad(number, f"expected a JSON object, found {type(data).__name__}")
            if number == 1:
                header = _header(data, functools.partial(bad, 1))
                continue
            if data.get("end") is True:
                _check_trailer(data, counts, functools.partial(bad, number))
                ended = True
                continue
            table, row = _row(data, functools.partial(bad, number))
            index = TABLES.index(table)
            if index < last_table:
                raise bad(
                    number, f"a {table} row after rows of {TABLES[last_table]} (tables are in a fixed order)"
                )
            last_table = index
            counts[table] += 1
            rows.append((table, row))
    if header is None:
        raise bad(None, "the file is empty")
    if not ended:
        raise bad(None, "the file ends without its end line (truncated?)")
    return header, rows


def _lines(handle: IO[bytes], bad: Callable[..., ConfigError]) -> Iterator[bytes]:
    number = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise bad(number, f"a line longer than {MAX_LINE_BYTES} bytes")
        if not raw.endswith(b"\n"):
            raise bad(number, "the last line has no newline (truncated?)")
        yield raw


def _header(data: Mapping[str, Any], bad: Callable[[str], ConfigError]) -> StateHeader:
    if data.get("format") != FORMAT:
        raise bad(f"not a linkctl state export (format {data.get('format')!r}, expected {FORMAT!r})")
    if data.get("version") != VERSION:
        raise bad(
            f"export format version {data.get('version')!r} is not supported (this linkctl reads {VERSION})"
        )
    for key, kind in (("schema_version", int), ("serial", int), ("key_check", str), ("backend", str)):
        value = data.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(f"header field {key!r} must be a {kind.__name__}")
    if data["serial"] < 0 or data["schema_version"] < 1:
        raise bad("header fields 'serial' and 'schema_version' must not be negative")
    instance = data.get("instance")
    if instance is not None and not isinstance(instance, str):
        raise bad("header field 'instance' must be a string or null")
    try:
        key_check = base64.b64decode(data["key_check"], validate=True)
    except (binascii.Error, ValueError):
        raise bad("header field 'key_check' is not base64") from None
    meta = data.get("meta", {})
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k not in OWN_META for k, v in meta.items()
    ):
        raise bad("header field 'meta' must map other meta keys to strings")
    return StateHeader(data["schema_version"], data["serial"], instance, key_check, data["backend"], meta)


def _row(data: Mapping[str, Any], bad: Callable[[str], ConfigError]) -> tuple[str, dict[str, Any]]:
    table, row = data.get("table"), data.get("row")
    if set(data) != {"table", "row"}:
        raise bad("a row line holds exactly 'table' and 'row'")
    if table not in TABLES:
        raise bad(f"unknown table {table!r} (known: {', '.join(TABLES)})")
    if not isinstance(row, dict) or not row:
        raise bad(f"the {table} row must be a non-empty JSON object")
    out: dict[str, Any] = {}
    binary = BINARY_COLUMNS.get(table, frozenset())
    for column, value in row.items():
        if not column.replace("_", "").isalnum() or not column.isascii():
            raise bad(f"{table}: the column name {column!r} is not a column")
        if isinstance(value, dict):
            if column not in binary or set(value) != {_B64} or not isinstance(value[_B64], str):
                raise bad(
                    f"{table}.{column}: an object value is only allowed as {{{_B64!r}: …}} for sealed columns"
                )
            try:
                out[column] = base64.b64decode(value[_B64], validate=True)
            except (binascii.Error, ValueError):
                raise bad(f"{table}.{column}: not base64") from None
        elif value is None or (isinstance(value, str | int | float) and not isinstance(value, bool)):
            if column in binary and value is not None:
                raise bad(f"{table}.{column} holds sealed bytes and must be {{{_B64!r}: …}}")
            out[column] = value
        else:
            raise bad(f"{table}.{column}: a value of type {type(value).__name__} is not allowed")
    return table, out


def _check_trailer(
    data: Mapping[str, Any], counts: Mapping[str, int], bad: Callable[[str], ConfigError]
) -> None:
    stated = data.get("rows")
    if not isinstance(stated, dict):
        raise bad("the end line must hold 'rows': {table: count}")
    for table in TABLES:
        if stated.get(table, 0) != counts[table]:
            raise bad(
                f"the end line counts {stated.get(table, 0)} {table} row(s), the file holds {counts[table]}"
            )


def schema_version(store: Store) -> int:
    """The schema version of an open (hence migrated) store."""
    return store.export_header().schema_version


def import_state(store: Store, path: Path, *, lock_timeout: float) -> dict[str, int]:
    """Read ``path`` completely, then write it into the empty ``store`` in one transaction."""
    header, rows = read_state_file(path)
    with locked(store, operation="import", timeout=lock_timeout):
        store.import_state(header, rows)
    counts = dict.fromkeys(TABLES, 0)
    for table, _ in rows:
        counts[table] += 1
    return counts
