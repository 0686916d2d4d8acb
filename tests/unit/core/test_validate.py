"""Validation: structural errors with hints, semantic rules, desired-link assembly."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.load import load_paths
from reconciler.validate import validate

INSTANCE = """apiVersion: linkctl.dev/v1
kind: Instance
metadata: {name: wiki}
spec:
  baseUrl: https://wiki.example.com
"""


def _link(spec: str, name: str = "l1") -> str:
    return f"apiVersion: linkctl.dev/v1\nkind: OutgoingLink\nmetadata:\n  name: {name}\nspec:\n{spec}"


def _validate(tmp_path: Path, *docs: str, env: dict[str, str] | None = None, instance: str = INSTANCE):
    text = "---\n".join([instance, *docs]) if instance else "---\n".join(docs)
    (tmp_path / "links.yaml").write_text(text, encoding="utf-8")
    return validate(load_paths([str(tmp_path)], env=env or {}), env=env or {"S": "secret-value"})


GOOGLE = "  provider: google\n  clientId: abc\n  clientSecret: {fromEnv: S}\n  scopes: [openid]\n"


def codes(result) -> list[str]:
    return [d.code for d in result.diagnostics if d.is_error]


def test_google_preset_fills_endpoints_and_params(tmp_path: Path) -> None:
    result = _validate(tmp_path, _link(GOOGLE), env={"S": "canary-7f3a"})
    assert result.ok, result.diagnostics
    (link,) = result.links
    assert link.spec["tokenEndpoint"] == "https://oauth2.googleapis.com/token"
    assert link.spec["authorizeParams"] == {"access_type": "offline", "prompt": "consent"}
    assert link.spec["presetAdded"]["authorizeParams"] == {"access_type": "offline", "prompt": "consent"}
    assert link.spec["redirectUri"] == "https://wiki.example.com/oauth/callback/l1"
    assert link.spec["clientSecret"] == {"$secret": "clientSecret"}
    assert link.secrets["clientSecret"].reveal() == "canary-7f3a"
    assert "canary-7f3a" not in repr(link)


def test_microsoft_adds_offline_access_but_not_for_client_credentials(tmp_path: Path) -> None:
    spec = (
        "  provider: microsoft\n  tenant: t1\n  clientId: a\n  clientSecret: {fromEnv: S}\n"
        "  scopes: [User.Read]\n"
    )
    cc = spec.replace(
        "scopes: [User.Read]", "scopes: [https://graph.microsoft.com/.default]\n  grant: client_credentials"
    )
    result = _validate(tmp_path, _link(spec), _link(cc, "l2"), env={"S": "x"})
    assert result.ok, result.diagnostics
    interactive, daemon = result.links
    assert interactive.spec["scopes"] == ["User.Read", "offline_access"]
    assert interactive.spec["tokenEndpoint"] == "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
    assert daemon.spec["scopes"] == ["https://graph.microsoft.com/.default"]
    assert daemon.spec["presetAdded"]["scopes"] == []


@pytest.mark.parametrize(
    ("spec", "code", "path"),
    [
        ("  provider: google\n  scopes: [a]\n  clientSecrett: x\n", "unknown-field", "spec.clientSecrett"),
        ("  provider: google\n  scopes: [a]\n  clientId: 5\n", "wrong-type", "spec.clientId"),
        ("  provider: github\n  scopes: [a]\n", "literal-error", "spec.provider"),
        ("  provider: google\n", "no-scopes", "spec"),
        ("  provider: google\n  scopes: [a]\n  tenant: x\n", "provider-field", "spec.tenant"),
        (
            "  provider: google\n  scopes: [a]\n  grant: client_credentials\n",
            "unsupported-grant",
            "spec.grant",
        ),
        (
            "  provider: google\n  scopes: [a]\n  authorizeParams: {prompt: none}\n",
            "no-refresh-token",
            "spec.authorizeParams.prompt",
        ),
        ("  provider: custom\n  scopes: [offline_access]\n", "no-endpoints", "spec"),
        (
            "  provider: custom\n  scopes: [offline_access]\n  issuer: http://auth.example.com\n",
            "insecure-url",
            "spec.issuer",
        ),
        (
            "  provider: custom\n  scopes: [offline_access]\n  issuer: http://127.0.0.1:9000\n",
            "insecure-url",
            "spec.issuer",
        ),
        (
            "  provider: custom\n  scopes: [a]\n  issuer: https://id.example.com\n",
            "no-refresh-token",
            "spec.scopes",
        ),
        (
            "  provider: custom\n  scopes: [offline_access]\n  authorizationEndpoint: https://accounts.google.com/x\n"
            "  tokenEndpoint: https://oauth2.googleapis.com/token\n",
            "custom-preset-host",
            "spec.authorizationEndpoint",
        ),
        (
            "  provider: google\n  scopes: [a]\n  clientId: a\n  clientSecret: plain\n",
            "plaintext-secret",
            "spec.clientSecret",
        ),
        (
            "  provider: google\n  scopes: [a]\n  clientId: a\n  clientSecret: {fromEnv: NOPE}\n",
            "secret-unresolved",
            "spec.clientSecret.fromEnv",
        ),
        (
            "  provider: google\n  scopes: [a]\n  clientId: a\n  clientSecret: {fromFile: nope.txt}\n",
            "secret-unresolved",
            "spec.clientSecret.fromFile",
        ),
        (
            "  provider: google\n  scopes: [a]\n  clientId: a\n  clientSecret: {fromEnvv: S}\n",
            "secret-source",
            "spec.clientSecret",
        ),
        (
            '  provider: google\n  scopes: [a, "openid email"]\n'
            "  clientId: a\n  clientSecret: {fromEnv: S}\n",
            "bad-scope",
            "spec.scopes[1]",
        ),
        (
            '  provider: google\n  scopes: [""]\n  clientId: a\n  clientSecret: {fromEnv: S}\n',
            "string-too-short",  # the model refuses an empty scope
            "spec.scopes[0]",
        ),
        (
            '  provider: google\n  scopes: ["a\\x01"]\n  clientId: a\n  clientSecret: {fromEnv: S}\n',
            "bad-scope",
            "spec.scopes[0]",
        ),
    ],
)
def test_rules(tmp_path: Path, spec: str, code: str, path: str) -> None:
    result = _validate(tmp_path, _link(spec), env={"S": "x"})
    errors = [d for d in result.diagnostics if d.is_error]
    assert [d.code for d in errors] == [code], [d.render() for d in errors]
    from reconciler.diagnostics import format_path

    assert format_path(errors[0].path) == path
    assert errors[0].line is not None and errors[0].line > 5
    assert not result.ok


def test_did_you_mean(tmp_path: Path) -> None:
    result = _validate(tmp_path, _link("  provider: google\n  scope: [a]\n"))
    unknown = next(d for d in result.diagnostics if d.code == "unknown-field")
    assert unknown.hint == "did you mean 'scopes'?"
    assert (unknown.line, unknown.column) == (13, 3)


def test_duplicate_names_show_both_places(tmp_path: Path) -> None:
    result = _validate(tmp_path, _link(GOOGLE), _link(GOOGLE), env={"S": "x"})
    (dup,) = [d for d in result.diagnostics if d.code == "duplicate-name"]
    assert "also at" in dup.message and "links.yaml:10:9" in dup.message and dup.line == 20


def test_loopback_allowed_only_with_instance_flag(tmp_path: Path) -> None:
    instance = INSTANCE.replace("https://wiki.example.com", "http://127.0.0.1:8080")
    spec = (
        "  provider: custom\n  scopes: [offline_access]\n  clientId: a\n  clientSecret: {fromEnv: S}\n"
        "  authorizationEndpoint: http://127.0.0.1:9000/auth\n  tokenEndpoint: http://localhost:9000/token\n"
    )
    refused = _validate(tmp_path, _link(spec), env={"S": "x"}, instance=instance)
    assert set(codes(refused)) == {"insecure-url"}
    allowed = _validate(
        tmp_path, _link(spec), env={"S": "x"}, instance=instance + "  allowInsecureLoopback: true\n"
    )
    assert allowed.ok, allowed.diagnostics


def test_google_refuses_private_redirect(tmp_path: Path) -> None:
    instance = INSTANCE.replace("https://wiki.example.com", "https://10.1.2.3")
    result = _validate(tmp_path, _link(GOOGLE), env={"S": "x"}, instance=instance)
    assert codes(result) == ["redirect-private-ip"]


def test_pending_credentials_is_a_warning(tmp_path: Path) -> None:
    result = _validate(tmp_path, _link("  provider: microsoft\n  scopes: [User.Read]\n"))
    assert result.ok
    assert [d.code for d in result.diagnostics] == ["pending-credentials"]
    assert result.links[0].pending_credentials


def test_no_instance(tmp_path: Path) -> None:
    result = _validate(tmp_path, _link(GOOGLE), env={"S": "x"}, instance="")
    assert codes(result) == ["no-instance"]


def test_all_problems_reported_not_only_the_first(tmp_path: Path) -> None:
    bad = _link("  provider: google\n  scopes: [a]\n  tenant: x\n  grant: client_credentials\n")
    result = _validate(tmp_path, bad, _link("  provider: custom\n  scopes: [a]\n", "l2"))
    assert sorted(codes(result)) == [
        "no-endpoints",
        "no-refresh-token",
        "provider-field",
        "unsupported-grant",
    ]


def test_renamed_from_rules(tmp_path: Path) -> None:
    same = _link(GOOGLE).replace("  name: l1\n", "  name: l1\n  renamedFrom: l1\n")
    result = _validate(tmp_path, same, env={"S": "x"})
    assert codes(result) == ["bad-rename"]


def test_a_secret_file_that_is_not_utf8_is_an_error_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(b"caf\xe9\n")
    result = _validate(tmp_path, _link(GOOGLE.replace("{fromEnv: S}", "{fromFile: secret.bin}")))
    assert codes(result) == ["secret-unresolved"]
    assert "is not UTF-8 text" in result.diagnostics[0].message


def test_union_member_names_elsewhere_are_not_taken_for_client_secret(tmp_path: Path) -> None:
    # pydantic names union members (str, FromEnv, FromFile) in error locations; only under
    # clientSecret do they mean "a secret source"; tokenParams may have a key called str.
    result = _validate(tmp_path, _link(GOOGLE + "  tokenParams: {str: [1]}\n"))
    assert codes(result) == ["wrong-type"]
    assert "clientSecret" not in result.diagnostics[0].message


def test_a_plaintext_secret_that_looks_like_a_number_is_not_repeated(tmp_path: Path) -> None:
    instance = INSTANCE.replace(
        "baseUrl: https://wiki.example.com",
        "baseUrl: https://wiki.example.com\n  allowPlaintextSecrets: true",
    )
    result = _validate(
        tmp_path,
        _link(GOOGLE.replace("{fromEnv: S}", "0755123401").replace("clientId: abc", "clientId: 0755")),
        instance=instance,
    )
    rendered = " ".join(d.render() for d in result.diagnostics)
    assert "0755123401" not in rendered and "this unquoted value is an octal number" in rendered
    assert "unquoted `0755` is an octal number" in rendered  # other fields still say which value


def test_documents_do_not_show_their_data_in_repr(tmp_path: Path) -> None:
    (tmp_path / "links.yaml").write_text(_link(GOOGLE.replace("{fromEnv: S}", "repr-canary-1")))
    (doc,) = load_paths([str(tmp_path)], env={}).documents
    assert "repr-canary-1" not in repr(doc)


def test_secret_files_inside_the_input_tree_or_linkctl_secret_dirs_are_read(tmp_path: Path) -> None:
    repo, mounted = tmp_path / "repo", tmp_path / "run-secrets"
    repo.mkdir()
    mounted.mkdir()
    (repo / "real.txt").write_text("in-tree-secret\n", encoding="utf-8")
    (repo / "alias.txt").symlink_to("real.txt")  # a symlink that stays inside the tree is fine
    (mounted / "s").write_text("mounted-secret\n", encoding="utf-8")
    env = {"LINKCTL_SECRET_DIRS": f"relative/ignored:{mounted}"}
    result = _validate(
        repo,
        _link(GOOGLE.replace("{fromEnv: S}", "{fromFile: alias.txt}")),
        _link(GOOGLE.replace("{fromEnv: S}", f"{{fromFile: {mounted / 's'}}}"), "l2"),
        env=env,
    )
    assert result.ok, [d.render() for d in result.diagnostics]
    assert [link.secrets["clientSecret"].reveal() for link in result.links] == [
        "in-tree-secret",
        "mounted-secret",
    ]
    refused = _validate(repo, _link(GOOGLE.replace("{fromEnv: S}", f"{{fromFile: {mounted / 's'}}}")))
    assert codes(refused) == ["secret-file-refused"]


@pytest.mark.parametrize(
    "key", ["client_secret", "client_assertion", "Password", "refresh_token", "assertion", "apiToken"]
)
def test_a_plaintext_secret_looking_param_is_an_error_that_never_repeats_it(tmp_path: Path, key: str) -> None:
    spec = GOOGLE + f"  tokenParams: {{audience: api, {key}: param-canary-91}}\n"
    result = _validate(tmp_path, _link(spec), env={"S": "x"})
    (error,) = [d for d in result.diagnostics if d.is_error]
    assert error.code == "plaintext-secret" and error.path == ("spec", "tokenParams", key)
    assert "param-canary-91" not in error.render()
    authorize = _validate(tmp_path, _link(GOOGLE + f"  authorizeParams: {{{key}: v}}\n"), env={"S": "x"})
    assert codes(authorize) == ["plaintext-secret"]


def test_plaintext_secret_params_are_allowed_with_allow_plaintext_secrets(tmp_path: Path) -> None:
    instance = INSTANCE + "  allowPlaintextSecrets: true\n"
    spec = GOOGLE + "  tokenParams: {client_assertion: a.b.c}\n"
    result = _validate(tmp_path, _link(spec), env={"S": "x"}, instance=instance)
    assert result.ok, [d.render() for d in result.diagnostics]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("https://auth.example.com:0/token", "invalid host or port"),
        ("https://auth.example.com:70000/token", "invalid host or port"),
        ("https://auth example.com/token", "character not allowed"),
        ("https://auth.example.com\\@evil.example/token", "backslash"),
        ("https://auth.example.com/token#x", "must not have a fragment"),
        ("https://auth.example.com./token", "ends with a dot"),
        ("https://127.1/token", "non-canonical numeric address"),
        ("https://0x7f000001/token", "non-canonical numeric address"),
        ("https://2130706433/token", "non-canonical numeric address"),
        ("https://[::ffff:127.0.0.1]/token", "IPv4-mapped"),
    ],
)
def test_hostile_endpoint_urls(tmp_path: Path, url: str, fragment: str) -> None:
    spec = (
        "  provider: custom\n  clientId: a\n  clientSecret: {fromEnv: S}\n  scopes: [offline_access]\n"
        f"  authorizationEndpoint: https://auth.example.com/authorize\n  tokenEndpoint: '{url}'\n"
    )
    result = _validate(tmp_path, _link(spec), env={"S": "x"})
    errors = [d for d in result.diagnostics if d.is_error]
    assert [d.code for d in errors] == ["bad-url"], [d.render() for d in errors]
    assert fragment in errors[0].message
    assert errors[0].path == ("spec", "tokenEndpoint") and errors[0].column == 18
