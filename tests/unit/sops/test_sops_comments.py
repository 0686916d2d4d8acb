"""YAML comments: where the loader puts them (as sops 3.11 does), how they are written back,
encrypted (``type:comment``, AAD = enclosing path) and kept out of the MAC.

The expected texts below are what the sops 3.11 binary printed for the same inputs
(``sops encrypt`` then ``sops decrypt``); the interop tests run the binary itself."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from reconciler import sops
from reconciler.sops import age, keys, tree, yamlv3
from reconciler.sops.data_key import recover_data_key
from reconciler.sops.yamlv3 import Comment

IDENTITY = age.generate_identity()
ENV = {"SOPS_AGE_KEY": IDENTITY.encode(), "HOME": "/nonexistent"}
CANARY = "CANARY-c0mment-s3cr3t"

LINK = f"""\
# yaml-language-server: $schema=https://linkctl.dev/schema/link.json
# Support mailbox link.

apiVersion: linkctl.dev/v1 # the only version
kind: OutgoingLink
# who owns it
metadata:
  # the name is the link id
  name: support-gmail # stable
spec:
  provider: google
  scopes:
    # read and send
    - https://mail.google.com/ # full access
    # nothing else
  clientId: 1234-abc.apps.googleusercontent.com
  # rotate yearly
  clientSecret: {CANARY}
# end of link
"""

LINK_OUT = f"""\
# yaml-language-server: $schema=https://linkctl.dev/schema/link.json
# Support mailbox link.
# the only version
apiVersion: linkctl.dev/v1
kind: OutgoingLink
# who owns it
metadata:
    # the name is the link id
    # stable
    name: support-gmail
spec:
    provider: google
    scopes:
        # read and send
        # full access
        - https://mail.google.com/
        # nothing else
    clientId: 1234-abc.apps.googleusercontent.com
    # rotate yearly
    clientSecret: {CANARY}
# end of link
"""

# Inputs and what sops 3.11 prints for them after encrypt + decrypt (comment positions).
POSITIONS: dict[str, tuple[str, str]] = {
    "foot comments by indentation": (
        "a:\n  b:\n    c:\n      d: 1\n      # at 6\n    # at 4\n  # at 2\n# at 0\n"
        "e:\n  f: 1\n   # at 3\n  g: 2\n        # at 8\n  h: 3\n # at 1\ni: x\n",
        "a:\n    b:\n        c:\n            d: 1\n            # at 6\n        # at 4\n    # at 2\n"
        "# at 0\ne:\n    f: 1\n    # at 3\n    g: 2\n    # at 8\n    h: 3\n    # at 1\ni: x\n",
    ),
    "a shallower comment ends the run": (
        "a:\n  b: 1\n  # at 2\n# at 0\nc:\n  d: 1\n# first at 0\n  # then at 2\ne: 1\n",
        "a:\n    b: 1\n    # at 2\n# at 0\nc:\n    d: 1\n# first at 0\n# then at 2\ne: 1\n",
    ),
    "lists": (
        "j:\n  - 1\n  # after item\nk:\n- 1\n# in unindented list\n- 2\n# after unindented list\nl: 2\n",
        "j:\n    - 1\n    # after item\nk:\n    - 1\n    # in unindented list\n    - 2\n"
        "# after unindented list\nl: 2\n",
    ),
    "inline comments move above": (
        "m: # on a map key\n  n: 1\nr: [1, 2] # on a flow list\nt: {a: 1} # on a flow map\n"
        "s: |  # on a block scalar\n  text\n  # not a comment\nv: 'q' # on a quoted value\n"
        "h: # on a list key\n  - 1\n",
        '# on a map key\nm:\n    "n": 1\nr:\n    # on a flow list\n    - 1\n    - 2\nt:\n'
        "    # on a flow map\n    a: 1\n# on a block scalar\ns: |\n    text\n    # not a comment\n"
        "# on a quoted value\nv: q\n# on a list key\nh:\n    - 1\n",
    ),
    "list items": (
        "q:\n  - name: x # first key\n    # between keys\n    val: y # second key\n"
        "  - # on the dash\n    name: z\n  -\n    # after a bare dash\n    name: w\n"
        "  - - 1 # nested\n    - 2\n  - [3] # flow item\n  - # on a scalar's dash\n    s\n",
        'q:\n    # first key\n    - name: x\n      # between keys\n      # second key\n      val: "y"\n'
        "    # on the dash\n    - name: z\n    # after a bare dash\n    - name: w\n"
        "    # nested\n    - - 1\n      - 2\n    # flow item\n    - - 3\n    # on a scalar's dash\n    - s\n",
    ),
    "empty collections": (
        "a: [] # kept after\nb: {} # lost by sops\no:\n  # only a comment\np: 1\n",
        "a: []\n# kept after\nb: {}\no: null\n# only a comment\np: 1\n",
    ),
    "text kept": (
        "#nospace\n#\n#   \n# trailing   \nx: 1 #\n",
        "#nospace\n#\n#   \n# trailing   \n#\nx: 1\n",
    ),
    "documents": (
        "# head 1\n\na: 1\n# foot 1\n---\n# head 2\nb: 2\n# foot 2\n",
        "# head 1\na: 1\n# foot 1\n---\n# head 2\nb: 2\n# foot 2\n",
    ),
    "nested list maps are indented like yaml.v3": (
        "c:\n  - k:\n      # first\n      z:\n        y: 1\n    w: 2\n  - - k:\n        z: 1\n",
        'c:\n    - k:\n        # first\n        z:\n            "y": 1\n      w: 2\n'
        "    - - k:\n            z: 1\n",
    ),
    "anchors and flow collections": (
        (
            "base: &b # anchor\n  # in anchored\n  x: 1\nuse: *b # alias\n"
            "u: [\n  # own in flow\n  1, # after 1\n  2\n]\n"
            "fm: {a: 1, # in flow map\n  b: 2}\n"
        ),
        (
            "base:\n    # in anchored\n    # anchor\n    x: 1\n# alias\nuse:\n"
            "    # in anchored\n    # anchor\n    x: 1\nu:\n"
            "    # own in flow\n    # after 1\n    - 1\n    - 2\nfm:\n"
            "    # in flow map\n    a: 1\n    b: 2\n"
        ),
    ),
    "crlf": (
        "# crlf\r\na: 1 # in\r\nb:\r\n  - x\r\n  # foot\r\n",
        "# crlf\n# in\na: 1\nb:\n    - x\n    # foot\n",
    ),
}


def _comments(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in ([k.text] if isinstance(k, Comment) else _comments(v))]
    if isinstance(value, list):
        return [t for v in value for t in ([v.text] if isinstance(v, Comment) else _comments(v))]
    return []


@pytest.mark.parametrize("name", sorted(POSITIONS))
def test_positions_match_sops(name: str) -> None:
    text, expected = POSITIONS[name]
    docs = yamlv3.load_all(text, comments=True)
    assert yamlv3.dump_yaml(docs) == expected
    # What we print reads back to the same text (sops's output is a fixed point).
    assert yamlv3.dump_yaml(yamlv3.load_all(expected, comments=True)) == expected
    # Without comments the data is what it always was.
    assert [yamlv3.strip_comments(d) for d in docs] == yamlv3.load_all(text)


def test_link_tree_positions() -> None:
    doc = yamlv3.load_all(LINK, comments=True)[0]
    keys_ = list(doc)
    assert [k.text for k in keys_[:3]] == [
        " yaml-language-server: $schema=https://linkctl.dev/schema/link.json",
        " Support mailbox link.",
        " the only version",
    ]
    assert keys_[3] == "apiVersion" and isinstance(keys_[-1], Comment) and keys_[-1].text == " end of link"
    scopes = doc["spec"]["scopes"]
    assert [type(x).__name__ for x in scopes] == ["Comment", "Comment", "str", "Comment"]
    assert yamlv3.dump_yaml([doc]) == LINK_OUT


def _open(token: str, key: bytes, aad: str) -> bytes:
    m = re.fullmatch(r"ENC\[AES256_GCM,data:([^,]*),iv:([^,]*),tag:([^,]*),type:comment\]", token)
    assert m, token
    data, iv, tag = (base64.b64decode(x) for x in m.groups())
    return AESGCM(key).decrypt(iv, data + tag, aad.encode())


def _data_key(enc: str) -> bytes:
    meta = yamlv3.load_all(enc)[0]["sops"]
    return recover_data_key(meta, "x", keys.load_keyring(ENV))


def test_link_default_rule_keeps_comments_plaintext() -> None:
    enc = sops.encrypt_text(LINK, filename="link.yaml", fmt="yaml", env=ENV, recipients=[IDENTITY.recipient])
    assert enc.startswith("# yaml-language-server: $schema=https://linkctl.dev/schema/link.json\n")
    assert "    # rotate yearly\n    clientSecret: ENC[AES256_GCM," in enc
    assert "# end of link\nsops:\n" in enc and CANARY not in enc
    out = sops.decrypt_text(enc, filename="link.yaml", fmt="yaml", env=ENV, comments=True)
    assert yamlv3.dump_yaml(out) == LINK_OUT
    # The API the loader uses still returns plain data.
    assert sops.decrypt_text(enc, filename="link.yaml", fmt="yaml", env=ENV) == yamlv3.load_all(LINK)


def test_unencrypted_suffix_encrypts_comments_with_their_path() -> None:
    rule = sops.EncryptionRule(unencrypted_suffix="_unencrypted")
    enc = sops.encrypt_text(
        LINK, filename="link.yaml", fmt="yaml", env=ENV, recipients=[IDENTITY.recipient], rule=rule
    )
    assert "yaml-language-server" not in enc and "rotate" not in enc
    key = _data_key(enc)
    lines = enc.splitlines()
    # A top-level comment has AAD ":"; one in a mapping the mapping's path.
    assert (
        _open(lines[0][1:], key, ":")
        == b" yaml-language-server: $schema=https://linkctl.dev/schema/link.json"
    )
    meta_comment = next(line.strip() for line in lines if line.startswith("    #ENC["))
    assert _open(meta_comment[1:], key, "metadata:") == b" the name is the link id"
    # In a list sops writes an encrypted comment as a list value (AAD: the list's path).
    scope_items = [line.strip()[2:] for line in lines if line.startswith("        - ")]
    assert scope_items[0].endswith(",type:comment]") and sops.is_encrypted_comment(scope_items[0])
    assert _open(scope_items[0], key, "spec:scopes:") == b" read and send"
    out = sops.decrypt_text(enc, filename="link.yaml", fmt="yaml", env=ENV, comments=True)
    assert yamlv3.dump_yaml(out) == LINK_OUT
    plain = sops.decrypt_text(enc, filename="link.yaml", fmt="yaml", env=ENV)
    assert plain == yamlv3.load_all(LINK) and plain[0]["spec"]["scopes"] == ["https://mail.google.com/"]


def test_comments_are_not_in_the_mac() -> None:
    bare = "a: 1\nl:\n  - x\n"
    with_comments = "# top\na: 1 # inline\nl:\n  # in list\n  - x\n# foot\n"
    for rule in (sops.EncryptionRule(), sops.EncryptionRule(encrypted_regex="^a$")):
        docs_bare = yamlv3.load_all(bare, comments=True)
        docs_comments = yamlv3.load_all(with_comments, comments=True)
        w1 = tree._Walker("x", b"k" * 32, tree.Selector(rule), encrypting=True)
        w2 = tree._Walker("x", b"k" * 32, tree.Selector(rule), encrypting=True)
        for d in docs_bare:
            w1.walk(d, ())
        for d in docs_comments:
            w2.walk(d, ())
        assert w1.digest() == w2.digest()
    # Editing a plaintext comment of an encrypted file does not break it (sops: same).
    enc = sops.encrypt_text(
        with_comments,
        filename="x.yaml",
        fmt="yaml",
        env=ENV,
        recipients=[IDENTITY.recipient],
        rule=sops.EncryptionRule(encrypted_regex="^a$"),
    )
    edited = enc.replace("# foot", "# another foot")
    out = sops.decrypt_text(edited, filename="x.yaml", fmt="yaml", env=ENV, comments=True)
    assert _comments(out[0]) == [" top", " inline", " in list", " another foot"]


def test_undecryptable_comment_is_kept_as_is() -> None:
    """Files from before sops encrypted comments have plaintext ones on encrypted paths."""
    enc = sops.encrypt_text("a: 1\n", filename="x.yaml", fmt="yaml", env=ENV, recipients=[IDENTITY.recipient])
    old = (
        "# old plaintext comment\n#ENC[AES256_GCM,data:AAAA,iv:"
        + "A" * 43
        + "=,tag:"
        + "A" * 22
        + "==,type:comment]\n"
    )
    out = sops.decrypt_text(old + enc, filename="x.yaml", fmt="yaml", env=ENV, comments=True)
    assert _comments(out[0])[0] == " old plaintext comment"
    assert _comments(out[0])[1].startswith("ENC[AES256_GCM,data:AAAA,")


def test_empty_comment_in_an_encrypted_list_becomes_an_empty_string() -> None:
    """sops 3.11 writes it as ``- ""`` (and then reads it back as a value); we match it."""
    enc = sops.encrypt_text(
        "l:\n  - x\n  #\n  - y\n", filename="x.yaml", fmt="yaml", env=ENV, recipients=[IDENTITY.recipient]
    )
    assert '\n    - ""\n' in enc
    assert sops.decrypt_text(enc, filename="x.yaml", fmt="yaml", env=ENV) == [{"l": ["x", "", "y"]}]


def test_json_has_no_comments() -> None:
    enc = sops.encrypt_text(
        '{"a": "b"}', filename="x.json", fmt="json", env=ENV, recipients=[IDENTITY.recipient]
    )
    assert sops.decrypt_text(enc, filename="x.json", fmt="json", env=ENV, comments=True) == [{"a": "b"}]
