"""Round trips, tamper detection, redaction canaries and yaml.v3 scalar resolution."""

from __future__ import annotations

import math
import re
import traceback
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import sops
from reconciler.errors import CryptoError
from reconciler.sops import age, keys, shamir, tree, yamlv3
from reconciler.sops.data_key import recover_data_key
from reconciler.sops.values import go_float

IDENTITY = age.generate_identity()
OTHER = age.generate_identity()
ENV = {"SOPS_AGE_KEY": IDENTITY.encode(), "HOME": "/nonexistent"}
CANARY = "CANARY-s3cr3t-7f9c2e"

LINK = f"""\
apiVersion: linkctl.dev/v1
kind: OutgoingLink
metadata:
  name: support-gmail
spec:
  provider: google
  clientId: 1234-abc.apps.googleusercontent.com
  clientSecret: {CANARY}
  other: also-secret-{CANARY}
  scopes: [https://mail.google.com/]
"""


def _enc(text: str, **kw: Any) -> str:
    kw.setdefault("recipients", [IDENTITY.recipient])
    return sops.encrypt_text(text, filename="link.yaml", fmt=kw.pop("fmt", "yaml"), env=ENV, **kw)


def _dec(text: str, **kw: Any) -> list[Any]:
    return sops.decrypt_text(
        text, filename="link.yaml", fmt=kw.pop("fmt", "yaml"), env=kw.pop("env", ENV), **kw
    )


def test_link_default_encrypts_only_client_secret() -> None:
    out = _enc(LINK)
    assert "clientSecret: ENC[AES256_GCM," in out
    assert "clientId: 1234-abc.apps.googleusercontent.com" in out
    assert f"other: also-secret-{CANARY}" in out
    assert "encrypted_regex: ^(clientSecret)$" in out
    assert re.search(r'^    lastmodified: "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"$', out, re.M)
    assert "    version: 3.11.0" in out
    assert _dec(out) == yamlv3.load_all(LINK)


def test_non_link_default_is_unencrypted_suffix() -> None:
    out = _enc("a: 1\nb_unencrypted: 2\n")
    assert "unencrypted_suffix: _unencrypted" in out and "b_unencrypted: 2" in out


def _tamper_cases(enc: str) -> dict[str, str]:
    lines = enc.splitlines(keepends=True)

    def replace(prefix: str, fn: Any) -> str:
        return "".join(fn(line) if line.lstrip().startswith(prefix) else line for line in lines)

    def flip(line: str) -> str:
        m = re.search(r"data:([A-Za-z0-9+/]+)", line)
        assert m
        data = m.group(1)
        swapped = ("B" if data[0] == "A" else "A") + data[1:]
        return line.replace("data:" + data, "data:" + swapped)

    secret_line = next(line for line in lines if "clientSecret:" in line)
    enc_value = secret_line.split(": ", 1)[1]
    return {
        "flipped ciphertext byte": replace("clientSecret:", flip),
        "edited plaintext value": replace("clientId:", lambda line: line.replace("1234", "9999")),
        "removed MAC": "".join(line for line in lines if not line.lstrip().startswith("mac:")),
        "value moved to another key": replace("provider:", lambda line: "    provider: " + enc_value),
    }


@pytest.mark.parametrize(
    "case", ["flipped ciphertext byte", "edited plaintext value", "removed MAC", "value moved to another key"]
)
def test_tampering_is_rejected_and_names_the_file(case: str) -> None:
    enc = _enc(LINK, rule=sops.EncryptionRule(encrypted_regex="^(clientSecret|provider)$"))
    bad = _tamper_cases(enc)[case]
    assert bad != enc
    with pytest.raises(CryptoError) as info:
        _dec(bad)
    message = str(info.value) + (info.value.hint or "")
    assert "link.yaml" in message
    assert CANARY not in message
    doc = yamlv3.load_all(enc)[0]
    data_key = recover_data_key(doc["sops"], "x", keys.load_keyring(ENV))
    assert data_key.hex() not in message.lower()


def test_a_value_moved_to_another_key_fails_by_its_path_not_only_by_the_mac() -> None:
    # The MAC would catch the move too; with it ignored, the key path bound to each value
    # (the AEAD's additional data) must still refuse it.
    enc = _enc(LINK, rule=sops.EncryptionRule(encrypted_regex="^(clientSecret|provider)$"))
    with pytest.raises(CryptoError, match="moved from another key path"):
        _dec(_tamper_cases(enc)["value moved to another key"], ignore_mac=True)


def test_a_retyped_value_fails_without_keeping_the_plaintext_in_the_exception() -> None:
    # The type tag is not authenticated: str -> float decrypts, then cannot be parsed. Python
    # keeps the parse error as __context__ unless the CryptoError is raised outside it.
    retyped = _enc(LINK).replace(",type:str]", ",type:float]", 1)
    with pytest.raises(CryptoError, match="is not a valid 'float'") as info:
        _dec(retyped, ignore_mac=True)
    assert info.value.__context__ is None
    assert CANARY not in "".join(traceback.format_exception(info.value))


def test_bad_sops_metadata_names_the_field_once() -> None:
    enc = _enc(LINK).replace("    version:", "    unencrypted_suffix: 5\n    version:", 1)
    with pytest.raises(CryptoError) as info:
        _dec(enc)
    assert str(info.value).count("link.yaml") == 1 and "unencrypted_suffix" in str(info.value)


def test_wrong_identity_lists_recipients_and_tried_keys() -> None:
    enc = _enc(LINK)
    with pytest.raises(CryptoError) as info:
        _dec(enc, env={"SOPS_AGE_KEY": OTHER.encode()})
    text = str(info.value)
    assert "no key can open this file" in text
    assert IDENTITY.recipient in text and OTHER.recipient in text
    assert OTHER.encode() not in text and IDENTITY.encode() not in text


def test_canary_never_in_reprs_or_errors() -> None:
    ring = keys.load_keyring(ENV)
    for obj in (ring, IDENTITY, ring.identities):
        assert IDENTITY.encode() not in repr(obj) and IDENTITY.encode() not in str(obj)
    enc = _enc(LINK)
    broken = enc.replace("clientSecret: ENC[AES256_GCM,data:", "clientSecret: ENC[AES256_GCM,data:AAAA")
    with pytest.raises(CryptoError) as info:
        _dec(broken)
    assert CANARY not in str(info.value) and CANARY not in repr(info.value)


def test_ignore_mac() -> None:
    enc = _enc(LINK)
    edited = enc.replace("provider: google", "provider: microsoft")
    with pytest.raises(CryptoError, match="MAC mismatch"):
        _dec(edited)
    assert _dec(edited, ignore_mac=True)[0]["spec"]["provider"] == "microsoft"


def test_multidoc_and_json() -> None:
    text = "a: 1\n---\nb: [x, {c: true}]\n"
    out = _enc(text)
    assert out.count("sops:") == 2 and out.count("\n---\n") == 1
    assert _dec(out) == [{"a": 1}, {"b": ["x", {"c": True}]}]
    jtext = '{"z": 1, "a": {"s": "v", "n": null, "l": [1.5, "", false]}}'
    jout = _enc(jtext, fmt="json")
    assert jout.startswith('{\n\t"z": "ENC[')
    assert _dec(jout, fmt="json") == [{"z": 1, "a": {"s": "v", "n": None, "l": [1.5, "", False]}}]


def test_shamir_roundtrip_and_threshold() -> None:
    third = age.generate_identity()
    plan = tree.KeyPlan(((IDENTITY.recipient,), (OTHER.recipient,), (third.recipient,)), 2)
    docs = tree.encrypt_documents([{"k": CANARY}], filename="f", plan=plan, rule=sops.EncryptionRule())
    text = yamlv3.dump_yaml(docs)
    assert "shamir_threshold: 2" in text
    two = {"SOPS_AGE_KEY": OTHER.encode() + "\n" + third.encode()}
    assert sops.decrypt_text(text, filename="f", fmt="yaml", env=two) == [{"k": CANARY}]
    with pytest.raises(CryptoError, match="1 of the 2 needed"):
        sops.decrypt_text(text, filename="f", fmt="yaml", env={"SOPS_AGE_KEY": third.encode()})


def test_shamir_split_combine() -> None:
    secret = bytes(range(32))
    shares = shamir.split(secret, 5, 3)
    assert all(len(s) == 33 for s in shares)
    assert shamir.combine(shares[1:4]) == secret
    assert shamir.combine([shares[4], shares[0], shares[2]]) == secret
    assert shamir.combine(shares[:2]) != secret


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("yes", "yes"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("true", True),
        ("False", False),
        ("~", None),
        ("null", None),
        ("", None),
        ("0755", 493),
        ("0o17", 15),
        ("0x1F", 31),
        ("0b101", 5),
        ("1_000", 1000),
        ("-7", -7),
        ("+1", 1),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("3.", 3.0),
        ("9223372036854775807", 2**63 - 1),
        ("2001-12-14 21:59:43.10 -5", "2001-12-14 21:59:43.10 -5"),
        ("1.2.3", "1.2.3"),
        ("<<", "<<"),
        ("08", 8.0),
        ("0o8", "0o8"),
        ("2024-02-30", "2024-02-30"),
        ("12:30", "12:30"),
    ],
)
def test_yaml_v3_resolution(text: str, value: Any) -> None:
    got = yamlv3.resolve_plain(text)
    assert got == value and type(got) is type(value)


def test_yaml_special_cases() -> None:
    assert math.isinf(yamlv3.resolve_plain("-.Inf"))
    assert math.isnan(yamlv3.resolve_plain(".NaN"))
    assert yamlv3.format_time(yamlv3.resolve_plain("2024-01-01")) == "2024-01-01T00:00:00Z"
    assert (
        yamlv3.format_time(yamlv3.resolve_plain("2024-1-2t1:2:3.50+02:00")) == "2024-01-02T01:02:03.5+02:00"
    )
    assert yamlv3.load_all("lastmodified: '2024-01-01T00:00:00Z'\n") == [
        {"lastmodified": "2024-01-01T00:00:00Z"}
    ]
    assert yamlv3.load_all("a: &x {k: v}\nb:\n  <<: *x\n") == [{"a": {"k": "v"}, "b": {"<<": {"k": "v"}}}]
    with pytest.raises(yamlv3.YAMLError, match="duplicate key"):
        yamlv3.load_all("a: 1\na: 2\n")
    with pytest.raises(yamlv3.YAMLError, match="non-string key"):
        yamlv3.load_all("1: x\n")
    with pytest.raises(yamlv3.YAMLError, match="duplicate key"):
        yamlv3.load_json('{"a": 1, "a": 2}')


def test_go_float_format() -> None:
    cases = {
        1.0: "1",
        1e3: "1000",
        3.14: "3.14",
        1e21: "1000000000000000000000",
        1.5e-7: "0.00000015",
        -0.5: "-0.5",
        math.inf: "+Inf",
        -math.inf: "-Inf",
    }
    for value, text in cases.items():
        assert go_float(value) == text
    assert go_float(math.nan) == "NaN"


def test_refuses_already_encrypted_and_bad_documents() -> None:
    with pytest.raises(CryptoError, match="already encrypted"):
        _enc(_enc(LINK))
    with pytest.raises(CryptoError, match="not a mapping"):
        _enc("- a\n- b\n")
    with pytest.raises(CryptoError, match="int64"):
        _enc("big: 18446744073709551615\n")


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_KEYS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
_SCALARS = (
    _TEXT
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.none()
)
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=12,
)
_DOCS = st.dictionaries(_KEYS.filter(lambda k: k != "sops"), _TREES, max_size=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_DOCS, fmt=st.sampled_from(["yaml", "json"]))
def test_property_roundtrip(doc: dict[str, Any], fmt: str) -> None:
    text = yamlv3.dump_json(doc) if fmt == "json" else yamlv3.dump_yaml([doc])
    assert (
        (yamlv3.load_json(text) if fmt == "json" else yamlv3.load_all(text)) == [doc]
        if fmt == "yaml"
        else True
    )
    out = sops.encrypt_text(text, filename="p." + fmt, fmt=fmt, env=ENV, recipients=[IDENTITY.recipient])
    assert sops.decrypt_text(out, filename="p." + fmt, fmt=fmt, env=ENV) == [doc]
