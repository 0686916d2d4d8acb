"""YAML/JSON parsing and emitting the way sops (Go yaml.v3) sees documents.

Owns scalar resolution (YAML 1.2 core as yaml.v3 does it: ``yes``/``on`` are strings,
``0755`` is octal, plain timestamps become :class:`datetime.datetime`), order-keeping
mappings with duplicate and non-string keys refused, and a small block-style emitter
whose output both sops and this module read back identically. Used by
:mod:`reconciler.sops.tree` and :mod:`reconciler.sops.config`.

Comments (``load_all(..., comments=True)``) become :class:`Comment` items placed where sops 3.11
(yaml.v3 plus its YAML store) puts them: a key ``Comment`` with a ``None`` value in mappings, a
``Comment`` element in lists. The placement rules are in
:func:`reconciler.sops.yamlv3.comments.place_comments`; they were taken from the sops 3.11
binary's output (see docs/sops.md, "Comments").

The package: :mod:`.read` (scalars, timestamps, documents), :mod:`.comments` (where comments
go) and :mod:`.emit` (the block-style writer); every name is re-exported here.
"""

from reconciler.sops.yamlv3.comments import Comment, strip_comments
from reconciler.sops.yamlv3.emit import dump_json, dump_yaml, format_float
from reconciler.sops.yamlv3.read import (
    INT64_MAX,
    INT64_MIN,
    UINT64_MAX,
    YAMLError,
    format_time,
    load_all,
    load_json,
    parse_timestamp,
    resolve_plain,
)

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "UINT64_MAX",
    "Comment",
    "YAMLError",
    "dump_json",
    "dump_yaml",
    "format_float",
    "format_time",
    "load_all",
    "load_json",
    "parse_timestamp",
    "resolve_plain",
    "strip_comments",
]
