"""No secret in plaintext outside memory (DESIGN.md §5 invariant 1), checked with canaries.

Links take a unique canary secret from ``fromEnv``, ``fromFile`` and a SOPS-encrypted file;
every command (including failing ones) runs as a subprocess, and the canary must appear in
no stdout/stderr, no plan file, and not in the bytes of the SQLite file or its -wal/-shm.
``secrets decrypt`` is left out: it prints plaintext by design.

The matrix test (slow, with the real oidc-provider) adds SOPS-encrypted clientId and tokenParams,
refresh and access tokens, and the success and failure paths of apply, keeper, token and doctor
(the keeper and reconcile also with their event logs, ``--log-format json`` and ``text``).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from reconciler import keeper
from reconciler.oauth.client import TokenClient
from reconciler.services.notify import verify
from tests.conftest import require
from tests.support.cli import INSTANCE, Linkctl, Result, link_doc
from tests.support.fakes import response
from tests.support.oracle import OidcServer, OracleClient, start_oidc_server
from tests.support.oracle_links import authorize, open_store
from tests.support.server import serve
from tests.support.webhooks import Receiver


class Recorder:
    """Runs linkctl and keeps every result, so all output can be searched for the canary."""

    def __init__(self, linkctl: Linkctl) -> None:
        self.linkctl = linkctl
        self.results: list[Result] = []

    def __call__(self, *args: str, **kw: object) -> Result:
        result = self.linkctl(*args, **kw)  # type: ignore[arg-type]
        self.results.append(result)
        return result


def _stored_secret(linkctl: Linkctl, name: str) -> str | None:
    """Read a stored secret back through the store API (proves it was stored at all)."""
    code = (
        "import os, sys\n"
        "from reconciler.settings import Settings\n"
        "from reconciler.store import open_store\n"
        "s = open_store(Settings.from_env(os.environ))\n"
        "v = s.read_secret(sys.argv[1], 'clientSecret')\n"
        "sys.stdout.write('<none>' if v is None else v.reveal())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, name],
        env=linkctl.env,
        cwd=linkctl.cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return None if out == "<none>" else out


def _sops_available(run: Recorder) -> bool:
    help_text = run("secrets", "encrypt", "--help", expect=None)
    return help_text.returncode == 0 and "--age" in help_text.stdout


def test_canary_secret_never_leaves_memory(linkctl: Linkctl) -> None:
    marker = f"canary-{uuid.uuid4().hex}"
    secrets = {
        "env": f"{marker}-env-1",
        "file": f"{marker}-file-1",
        "sops": f"{marker}-sops-1",
    }
    run = Recorder(linkctl)
    work = linkctl.cwd
    links = work / "links"
    links.mkdir()
    # A status webhook whose signing key is a canary; its URL path is one of outputs and the store
    # (a Slack-style URL is a credential: sealed, shown by origin), not of the plaintext file's parse cache.
    url_marker = f"hookpath-{uuid.uuid4().hex}"
    receiving = Receiver().running()
    receiver = receiving.__enter__()
    hook_key = f"{marker}-hook-1"
    linkctl.env["CANARY_HOOK"] = hook_key
    (links / "instance.yaml").write_text(
        INSTANCE
        + f"  allowInsecureLoopback: true\n  notify:\n  - url: {receiver.url}/{url_marker}\n"
        + "    secret: {fromEnv: CANARY_HOOK}\n",
        encoding="utf-8",
    )
    (links / "env.yaml").write_text(link_doc("canary-env", secret_env="CANARY_SECRET"), encoding="utf-8")
    secret_dir = work / "secret-files"  # outside links/: only the link file reads it
    secret_dir.mkdir()
    (secret_dir / "client-secret.txt").write_text(secrets["file"] + "\n", encoding="utf-8")
    (links / "file.yaml").write_text(
        link_doc("canary-file", provider="microsoft", scopes=["https://graph.microsoft.com/Mail.Read"])
        + "  clientSecret:\n    fromFile: ../secret-files/client-secret.txt\n",
        encoding="utf-8",
    )
    linkctl.env["CANARY_SECRET"] = secrets["env"]
    linkctl.env["LINKCTL_SECRET_DIRS"] = str(secret_dir)  # like a /run/secrets mount outside the tree

    names = ["canary-env", "canary-file"]
    sops = _sops_available(run)
    # A missing SOPS path fails under CI instead of silently dropping the SOPS canary.
    require(sops, "`linkctl secrets encrypt --age` is unavailable, the SOPS canary cannot run")
    if sops:
        run("keygen", "-o", str(work / "age-key.txt"))
        recipient = re.search(r"age1[0-9a-z]+", (work / "age-key.txt").read_text()).group(0)  # type: ignore[union-attr]
        plain = link_doc("canary-sops").replace("  scopes:", f"  clientSecret: {secrets['sops']}\n  scopes:")
        (links / "sops.yaml").write_text(plain, encoding="utf-8")
        run("secrets", "encrypt", "--age", recipient, "--in-place", "links/sops.yaml")
        encrypted = (links / "sops.yaml").read_text(encoding="utf-8")
        assert marker not in encrypted and "ENC[AES256_GCM," in encrypted
        linkctl.env["SOPS_AGE_KEY_FILE"] = str(work / "age-key.txt")
        names.append("canary-sops")

    # Keep a connection open so the WAL survives between runs and its bytes can be inspected.
    db = linkctl.state_db
    run("state", "show")  # a read-only command: it creates nothing ...
    assert not db.exists()
    run("plan", "--out", str(work / "plan-0.json"), str(links))  # ... a saved plan creates the store
    keep_open = sqlite3.connect(db)
    keep_open.execute("SELECT count(*) FROM links").fetchone()
    plan_files: list[Path] = []

    try:
        run("validate", "links")
        run("validate", "-v", "-o", "json", "links")
        run("plan", "links")
        run("plan", "-v", "links")
        run("plan", "-o", "json", "links")
        plan_files.append(work / "plan1.json")
        run("plan", "--out", str(plan_files[-1]), "links")
        run("apply", "--plan", str(plan_files[-1]))
        run("apply", "links")
        run("apply", "-o", "json", "links")
        run("reconcile", "links")
        run("reconcile", "-o", "json", "links")
        # The secrets were stored (encrypted), so the checks below are not vacuous.
        for name in names:
            assert _stored_secret(linkctl, name) == secrets[name.split("-")[1]]

        # Change every secret: the plan says so without any value.
        secrets = {k: v.replace("-1", "-2") for k, v in secrets.items()}
        linkctl.env["CANARY_SECRET"] = secrets["env"]
        (secret_dir / "client-secret.txt").write_text(secrets["file"] + "\n", encoding="utf-8")
        if sops:
            (links / "sops.yaml").write_text(
                link_doc("canary-sops").replace("  scopes:", f"  clientSecret: {secrets['sops']}\n  scopes:"),
                encoding="utf-8",
            )
            run("secrets", "encrypt", "--age", recipient, "--in-place", "links/sops.yaml")
        changed = run("plan", "--detailed-exitcode", "links", expect=2)
        for name in names:
            assert f"~ update {name} " in changed.stdout
        assert changed.stdout.count("clientSecret: (sensitive value changed)") == len(names), changed
        as_json = run("plan", "-o", "json", "links").json()
        for change in as_json["changes"]:
            assert change["fields"] == [{"path": "clientSecret", "sensitive": True}], change
        plan_files.append(work / "plan2.json")
        run("plan", "--out", str(plan_files[-1]), "links")
        run("apply", "--plan", str(plan_files[-1]))
        for name in names:
            assert _stored_secret(linkctl, name) == secrets[name.split("-")[1]]

        for cmd in (["list"], ["list", "-o", "json"], ["state", "show"], ["state", "show", "-o", "json"]):
            run(*cmd)
        run("state", "events", "--limit", "500")
        run("state", "events", "--limit", "500", "-o", "json")
        for name in names:
            run("show", name)
            run("show", "-o", "json", name)
            run("redirect-url", name)
            run("redirect-url", name, "--from", "links")
            run("state", "events", "--link", name)

        # Failing commands: a stale plan, and bad files that hold a canary in odd places.
        plan_files.append(work / "stale.json")
        run("plan", "--out", str(plan_files[-1]), "links")
        linkctl.env["CANARY_SECRET"] = secrets["env"].replace("-2", "-3")
        run("apply", "links")
        run("apply", "--plan", str(plan_files[-1]), expect=4)
        bad_files = {
            "plaintext.yaml": link_doc("bad-plain").replace(
                "  scopes:", f"  clientSecret: {marker}-plain\n  scopes:"
            ),
            "list.yaml": link_doc("bad-list").replace(
                "  scopes:", f"  clientSecret: [{marker}-list]\n  scopes:"
            ),
            "typo.yaml": link_doc("bad-typo").replace(
                "  scopes:", f"  clientSecret:\n    fromEnvv: {marker}-typo\n  scopes:"
            ),
            "syntax.yaml": link_doc("bad-syntax").replace(
                "  scopes:", f'  clientSecret: "{marker}-syntax\n  scopes:'
            ),
            "mapping.yaml": link_doc("bad-map").replace(
                "  scopes:", f"  clientSecret: {{{marker}: x}}\n  scopes:"
            ),
            "tagged.yaml": link_doc("bad-tag").replace(
                "  scopes:", f"  clientSecret: !secret {marker}-tag\n  scopes:"
            ),
            "yaml11.yaml": link_doc("bad-yaml11").replace(
                "  scopes:", f"  clientId: {marker}\n  clientId: on\n  scopes:"
            ),
        }
        for file_name, text in bad_files.items():
            bad = work / "bad" / file_name
            bad.parent.mkdir(exist_ok=True)
            bad.write_text(INSTANCE + "---\n" + text, encoding="utf-8")
            run("validate", str(bad), expect=3)
            run("validate", "-o", "json", str(bad), expect=3)
            run("plan", str(bad), expect=3)
            run("--debug", "apply", str(bad), expect=3)
        run("apply", "links", env={"SOPS_AGE_KEY_FILE": str(work / "nope.txt")}, expect=3 if sops else 0)
        run("validate", "links", env={"CANARY_SECRET": ""}, expect=3)

        told = "status webhooks stored: 1 target(s) (http://127.0.0.1:"
        stored = [r for r in run.results if told in r.stderr]
        assert len(stored) == 1, "apply stores the webhook target once, shown by its origin"
        # A status change (authorized: needs_authorization -> healthy) announced by `keeper --once`.
        run("keeper", "--once", expect=None)
        store = open_store(linkctl.env)
        try:
            store.save_authorization(
                "canary-env", response(f"{marker}-at", f"{marker}-rt", at=time.time()), clock_now=time.time()
            )
        finally:
            store.close()
        run("keeper", "--once", expect=None)
        (post,) = receiver.wait_for(1)
        assert post.json["link"] == "canary-env" and post.json["new_status"] == "healthy"
        sent = json.dumps(post.headers) + post.body.decode()
        assert marker not in sent, "a canary in a webhook's headers or body"
        assert verify(
            hook_key,
            post.headers["X-Linkctl-Timestamp"],
            post.body,
            post.headers["X-Linkctl-Signature"],
            now=time.time(),
        )
        run("state", "events", "--limit", "500", "-o", "json")
        # The operations endpoints of `linkctl serve` on this store: no canary in any answer.
        with serve({**linkctl.env, "LINKCTL_NOTIFY_INTERVAL": "60"}) as served:
            answers = [served.get(path) for path in ("/healthz", "/readyz", "/metrics")]
            served_log = served.log()
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert 'linkctl_link_status{link="canary-env",status="healthy"} 1.0' in answers[2].text
        for text in [*(a.text for a in answers), served_log]:
            assert marker not in text and url_marker not in text, "a canary in serve's answers or log"

        wal = Path(str(db) + "-wal")
        assert wal.exists() and wal.stat().st_size > 0, "the WAL should hold recent commits"
        stores = {p: p.read_bytes() for p in (db, wal, Path(str(db) + "-shm")) if p.exists()}
    finally:
        keep_open.close()
        receiving.__exit__(None, None, None)

    leaks = [str(r) for r in run.results if marker in r.output or url_marker in r.output]
    assert not leaks, "canary printed by:\n" + "\n".join(leaks)
    for path in plan_files:
        text = path.read_text(encoding="utf-8")
        json.loads(text)
        assert marker not in text, path
    for path, data in stores.items():
        assert marker.encode() not in data, f"canary in plaintext in {path}"
        assert url_marker.encode() not in data, f"webhook URL in plaintext in {path}"
        assert marker.encode("utf-16-le") not in data, f"canary (UTF-16) in {path}"
    # Nothing else linkctl wrote (key file, state dir, anything under HOME) holds it either.
    for root, _dirs, files in os.walk(linkctl.env["HOME"]):
        for file_name in files:
            path = Path(root, file_name)
            assert marker.encode() not in path.read_bytes(), f"canary in {path}"
    # The final store is readable after the WAL checkpoint too.
    final = db.read_bytes()
    assert marker.encode() not in final


# --- The server's pages: no client secret, token, API key or session id on any page -----------


def test_pages_never_show_a_secret(tmp_path: Path) -> None:
    """Every page an admin can reach (list, link, errors, refusals, callback outcomes) and the log."""
    from tests.support.oracle_links import state_env
    from tests.support.pages import Admin, hosted_links
    from tests.support.server import create_key, serve

    env = state_env(tmp_path)
    admin_key = create_key(env, "--admin", "--links", "*")
    link_key = create_key(env, "--links", "*")
    with start_oidc_server() as server, serve(env) as served:
        with open_store(env) as store:
            registered = hosted_links(server, store, served.base_url, ["canary-one", "canary-two"])
        assert registered.client_secret is not None
        secrets = {registered.client_secret.reveal(), admin_key, link_key}
        bodies: list[str] = []

        def seen(answer: httpx.Response, *, to_provider: bool = False) -> httpx.Response:
            # Set-Cookie carries the session id by design, and Authorize's Location the state
            # the provider must get: every other header, and every body, is searched.
            skip = {"set-cookie", "location"} if to_provider else {"set-cookie"}
            headers = [f"{k}: {v}" for k, v in answer.headers.items() if k not in skip]
            bodies.append(answer.text + "\n".join(headers))
            return answer

        def tokens() -> None:
            with open_store(env) as store:
                for name in ("canary-one", "canary-two"):
                    grant = store.get_grant(name, with_tokens=True)
                    for token in (grant.access_token, grant.refresh_token) if grant else ():
                        if token is not None:
                            secrets.add(token.reveal())

        with Admin(served.base_url) as admin:
            seen(admin.login(link_key))  # refused: a link key is not an admin key
            seen(admin.login(admin_key))
            secrets.add(admin.http.cookies["linkctl_session"])
            started = seen(admin.press("canary-one", "authorize"), to_provider=True)
            callback = server.login_and_consent(started.headers["location"])
            path = callback[len(served.base_url) :]
            secrets.update(v for k, v in httpx.URL(callback).params.multi_items() if k in ("code", "state"))
            with Admin(served.base_url).logged_in(admin_key) as intruder:
                seen(intruder.get(path))  # another session: refused
            seen(admin.get(path.replace("canary-one?", "canary-two?")))  # another link: refused
            seen(admin.get(path))
            seen(admin.get(path))  # replayed
            tokens()
            seen(admin.press("canary-one", "refresh"))
            tokens()
            for page in ("/", "/?status=healthy", "/links/canary-one", "/links/canary-two", "/logout"):
                seen(admin.get(page))
            seen(admin.get("/links/canary-one?done=refreshed"))
            seen(admin.post("/links/canary-one/refresh", {"csrf_token": "forged"}))
            seen(admin.press("canary-one", "revoke"))
            seen(admin.get("/links/canary-one?done=revoked"))
        log = served.log()
    assert len(secrets) >= 8
    for number, secret in enumerate(sorted(secrets)):
        pages = [i for i, body in enumerate(bodies) if secret in body]
        assert not pages, f"secret #{number} on the pages (answers {pages})"  # never print it
        in_log = secret in log
        assert not in_log, f"secret #{number} in the server's log"


def test_canary_stays_secret_on_postgresql_and_through_export_and_import(linkctl: Linkctl) -> None:
    """The PostgreSQL store and the state file: no client secret, and no password of the URL, in plaintext."""
    from tests.support.postgres import fresh_url

    marker = f"canary-{uuid.uuid4().hex}"
    # Trust authentication ignores the password, so a canary can stand in the URL itself.
    url = fresh_url().replace("postgresql://postgres@", f"postgresql://postgres:{marker}-pw@")
    run = Recorder(linkctl)
    links = linkctl.cwd / "links"
    links.mkdir()
    (links / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    (links / "env.yaml").write_text(link_doc("canary-env", secret_env="CANARY_SECRET"), encoding="utf-8")
    linkctl.env["CANARY_SECRET"] = f"{marker}-env"
    pg = {"LINKCTL_STATE": url}
    run("state", "migrate", env=pg)
    run("apply", "links", env=pg)
    assert _stored_secret(Linkctl({**linkctl.env, **pg}, linkctl.cwd), "canary-env") == f"{marker}-env"
    for cmd in (["list"], ["state", "show", "-o", "json"]):
        run(*cmd, env=pg)
    run("state", "events", "-o", "json", env=pg)
    state_file = linkctl.cwd / "state.jsonl"
    run("state", "export", str(state_file), env=pg)
    run("state", "export", str(state_file), env=pg, expect=1)  # exists: refused
    run("state", "import", str(state_file))  # into the default SQLite store
    assert _stored_secret(linkctl, "canary-env") == f"{marker}-env"
    broken = linkctl.cwd / "broken.jsonl"
    # A sealed column holding plaintext is refused without echoing it.
    broken.write_text(re.sub(r'"ciphertext":\{[^}]*\}', f'"ciphertext":"{marker}"', state_file.read_text()))
    run("state", "import", str(broken), env=pg, expect=3)
    run("--state", url.replace("/linkctl_test", "/nonexistent_db"), "state", "show", expect=1)

    leaks = [str(r) for r in run.results if marker in r.output]
    assert not leaks, "canary printed by:\n" + "\n".join(leaks)
    assert marker.encode() not in state_file.read_bytes()
    assert marker.encode() not in linkctl.state_db.read_bytes()
    import psycopg

    from reconciler.store.postgres_url import parse_url

    with psycopg.connect(parse_url(url).conninfo) as conn:
        listed = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        tables = [r[0] for r in listed]
        for table in tables:
            rows = conn.execute(f"SELECT t::text FROM {table} t").fetchall()
            assert not [r for r in rows if marker in r[0] or marker.encode().hex() in r[0]], table


# --- The matrix: every kind of secret through apply, keeper, token and doctor ------------------

SOURCES = ("env", "file", "sops")  # where each link's client secret comes from


def _oracle_link(name: str, server: OidcServer, client_id: str, secret_lines: str, extra: str = "") -> str:
    return (
        "apiVersion: linkctl.dev/v1\nkind: OutgoingLink\nmetadata:\n"
        f"  name: {name}\nspec:\n  provider: custom\n  clientAuth: client_secret_basic\n"
        f"  clientId: {client_id}\n{secret_lines}"
        f"  tokenEndpoint: {server.token_endpoint}\n"
        f"  authorizationEndpoint: {server.issuer}/auth\n"
        f"  revocationEndpoint: {server.issuer}/token/revocation\n"
        "  scopes: [openid, offline_access, 'api:read']\n"
        "  authorizeParams: {prompt: consent}\n"
        f"{extra}"
    )


class _Secrets:
    """Every secret value of the run; access tokens may appear only on a successful `token`'s stdout."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.access_tokens: set[str] = set()

    def collect_tokens(self, env: dict[str, str], names: list[str]) -> None:
        store = open_store(env)
        try:
            for name in names:
                grant = store.get_grant(name, with_tokens=True)
                if grant is not None and grant.refresh_token is not None:
                    self.values.add(grant.refresh_token.reveal())
                if grant is not None and grant.access_token is not None:
                    self.access_tokens.add(grant.access_token.reveal())
        finally:
            store.close()

    def found_in(self, text: str, *, may_hold_access_token: bool = False) -> list[str]:
        kinds = [("a secret", self.values)]
        if not may_hold_access_token:
            kinds.append(("an access token", self.access_tokens))
        return [f"{kind} ({value[:6]}…)" for kind, values in kinds for value in values if value in text]


class _Served:
    """What the server phase saw: API answers (token answers apart) and the server's whole log."""

    def __init__(self) -> None:
        self.answers: list[str] = []
        self.token_answers: list[str] = []
        self.log = ""


def _serve_phase(linkctl: Linkctl, names: list[str], secrets: _Secrets, server: OidcServer) -> _Served:
    """``serve --keeper --log-format json``: API keys, tokens (fresh, refreshed, provider down), status."""
    from tests.support.server import create_key, serve

    seen = _Served()
    key = create_key(linkctl.env, "--links", "m-*", "--name", "canary")  # printed once, by design
    admin = create_key(linkctl.env, "--links", "*", "--admin")
    secrets.values.update({key, admin})
    with serve(linkctl.env, "--keeper", "--log-format", "json") as running:

        def call(path: str, presented: str | None, *, token: bool = False) -> None:
            answer = running.get(path, key=presented)
            (seen.token_answers if token and answer.status_code == 200 else seen.answers).append(
                answer.text + json.dumps(dict(answer.headers))
            )

        for name in names:
            call(f"/v1/links/{name}/token?min_valid=1", key, token=True)
            call(f"/v1/links/{name}/token?min_valid=59.9&code=x", key)  # refused, logged scrubbed
            call(f"/v1/links/{name}/token?min_valid=59.9", key, token=True)  # refreshed first
            call(f"/v1/links/{name}/token", admin)
            call(f"/v1/links/{name}", key)
            secrets.collect_tokens(linkctl.env, names)
        call("/v1/links", key)
        call("/v1/links/m-env/token", key[:-2] + "xx")
        call("/v1/links/nope/token", key)
        call("/openapi.json", None)
        server.fault("unavailable", times=1000)
        for name in names:
            call(f"/v1/links/{name}/token?min_valid=59.99", key)
        server.reset()
    seen.log = running.log()
    assert '"status":503' in seen.log and '"status":200' in seen.log, seen.log[-2000:]
    assert len(seen.token_answers) >= 2 * len(names), seen.answers
    return seen


def _make_due(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("UPDATE grants SET next_refresh_at = 0, retry_at = NULL")
    finally:
        conn.close()


def _revoke(server: OidcServer, registered: OracleClient, token: str) -> None:
    assert registered.client_secret is not None
    answer = httpx.post(
        f"{server.issuer}/token/revocation",
        data={"token": token, "token_type_hint": "refresh_token"},
        auth=(registered.client_id, registered.client_secret.reveal()),
        timeout=10,
    )
    answer.raise_for_status()


@pytest.mark.slow
def test_every_secret_kind_stays_secret_through_apply_keeper_token_and_doctor(
    linkctl: Linkctl, tmp_path: Path
) -> None:
    """Client secrets (fromEnv, fromFile, SOPS), SOPS clientId/tokenParams, refresh and access tokens.

    Success and failure paths (provider down, invalid client, revoked grant) of apply, keeper,
    token and doctor, each with and without --debug, against the real oidc-provider; then
    stdout, stderr, the store (+ -wal, -shm), plan files, the parse cache, TMPDIR and every
    file under the working directory and HOME are searched for every secret.
    """
    with start_oidc_server() as server:
        _run_matrix(linkctl, tmp_path, server)


def _run_matrix(linkctl: Linkctl, tmp_path: Path, server: OidcServer) -> None:
    marker = f"canary-{uuid.uuid4().hex}"
    secrets = _Secrets()
    work = linkctl.cwd
    links = work / "links"
    links.mkdir()
    (links / "instance.yaml").write_text(
        INSTANCE.rstrip("\n") + "\n  allowInsecureLoopback: true\n", encoding="utf-8"
    )
    secret_dir = tmp_path / "secret-files"  # plaintext by design: outside cwd, not scanned
    secret_dir.mkdir()
    temp = tmp_path / "tmp"
    temp.mkdir()
    linkctl.env.update(
        {
            "LINKCTL_SECRET_DIRS": str(secret_dir),
            "TMPDIR": str(temp),
            "LINKCTL_STATE": f"sqlite:///{linkctl.state_db}",
        }
    )
    names = [f"m-{source}" for source in SOURCES]
    registered = {
        name: server.register_client(redirect_uris=[f"https://wiki.example.com/oauth/callback/{name}"])
        for name in names
    }
    for client in registered.values():
        assert client.client_secret is not None
        secrets.values.add(client.client_secret.reveal())
    sops_id = registered["m-sops"].client_id
    secrets.values.add(sops_id)  # SOPS-encrypted: a secret too
    trace = f"{marker}-token-param"
    secrets.values.add(trace)

    def secret_of(name: str) -> str:
        value = registered[name].client_secret
        assert value is not None
        return value.reveal()

    linkctl.env["CANARY_ENV_SECRET"] = secret_of("m-env")
    (secret_dir / "m-file.txt").write_text(secret_of("m-file") + "\n", encoding="utf-8")
    (links / "m-env.yaml").write_text(
        _oracle_link(
            "m-env", server, registered["m-env"].client_id, "  clientSecret: {fromEnv: CANARY_ENV_SECRET}\n"
        ),
        encoding="utf-8",
    )
    (links / "m-file.yaml").write_text(
        _oracle_link(
            "m-file",
            server,
            registered["m-file"].client_id,
            f"  clientSecret: {{fromFile: {secret_dir}/m-file.txt}}\n",
        ),
        encoding="utf-8",
    )
    run = Recorder(linkctl)
    run("keygen", "-o", str(work / "age-key.txt"))
    recipient = re.search(r"age1[0-9a-z]+", (work / "age-key.txt").read_text(encoding="utf-8"))
    assert recipient is not None
    linkctl.env["SOPS_AGE_KEY_FILE"] = str(work / "age-key.txt")
    sops_file = links / "m-sops.yaml"
    sops_file.write_text(
        _oracle_link(
            "m-sops",
            server,
            sops_id,
            f"  clientSecret: {secret_of('m-sops')}\n",
            f"  tokenParams: {{x_trace: {trace}}}\n",
        ),
        encoding="utf-8",
    )
    regex = "^(clientId|clientSecret|x_trace)$"
    run("secrets", "encrypt", "--age", recipient.group(0), "--encrypted-regex", regex, "-i", str(sops_file))
    assert not secrets.found_in(sops_file.read_text(encoding="utf-8")), "sops left a value readable"

    db = linkctl.state_db
    plan_files = [work / "plan-1.json", work / "plan-2.json"]
    token_stdouts: list[Result] = []

    def token(name: str, *flags: str, expect: int | None = 0) -> Result:
        result = linkctl(*flags, "token", name, "--min-valid", "60", expect=expect)
        if result.returncode == 0:
            token_stdouts.append(result)  # its stdout is the access token, by design
            run.results.append(Result(result.args, result.returncode, "", result.stderr))
        else:
            run.results.append(result)
        return result

    # apply (plan file and direct), then authorize every link in-process (a browser's part).
    run("plan", "--out", str(plan_files[0]), "links")
    run("apply", "--plan", str(plan_files[0]))
    run("--debug", "apply", "links")
    store = open_store(linkctl.env)
    try:
        with TokenClient(timeout=10) as http:
            for name in names:
                link = store.get_link(name)
                assert link is not None
                response = authorize(server, http, keeper.client_config(store, link))
                store.save_authorization(name, response, clock_now=response.received_at)
    finally:
        store.close()
    secrets.collect_tokens(linkctl.env, names)
    keep_open = sqlite3.connect(db)  # the WAL survives every run, so its bytes are searched too
    try:
        keep_open.execute("SELECT count(*) FROM links").fetchone()

        # Success: token refreshes (with the SOPS clientId, secret and tokenParams), keeper, doctor.
        for name in names:
            token(name)
            token(name, "--debug")
            secrets.collect_tokens(linkctl.env, names)
        _make_due(db)
        run("keeper", "--once", "--log-format", "json")  # one event line per refresh
        secrets.collect_tokens(linkctl.env, names)
        _make_due(db)
        run("--debug", "keeper", "--once", "-o", "json", "--log-format", "text")
        run("--log-format", "json", "reconcile", "links")
        secrets.collect_tokens(linkctl.env, names)
        run("doctor", expect=None)
        run("--debug", "doctor", "-o", "json", expect=None)
        for args in (["list"], ["list", "-o", "json"], ["state", "events", "--limit", "500"]):
            run(*args)
        for name in names:
            run("show", name)
            run("show", "-o", "json", name)
        served = _serve_phase(linkctl, names, secrets, server)

        # Failure 1: the provider is down.
        server.fault("unavailable", times=1000)
        for name in names:
            assert token(name, expect=None).returncode != 0
            assert token(name, "--debug", expect=None).returncode != 0
        _make_due(db)
        run("keeper", "--once", "--log-format", "json", expect=None)
        _make_due(db)
        run("--debug", "keeper", "--once", "--log-format", "text", expect=None)
        run("doctor", expect=None)
        run("--debug", "doctor", expect=None)
        server.reset()

        # Failure 2: an invalid client (a wrong client secret from the environment).
        wrong = f"{marker}-wrong-client-secret"
        secrets.values.add(wrong)
        run("apply", "links", env={"CANARY_ENV_SECRET": wrong})
        assert token("m-env", expect=None).returncode != 0
        assert token("m-env", "--debug", expect=None).returncode != 0
        _make_due(db)
        run("--debug", "keeper", "--once", "--log-format", "json", expect=None)
        run("doctor", "m-env", expect=None)
        run("--debug", "doctor", "m-env", expect=None)
        run("show", "m-env")
        run("apply", "links")  # the right secret again

        # Failure 3: a revoked grant (invalid_grant at the oracle).
        store = open_store(linkctl.env)
        try:
            grant = store.get_grant("m-file", with_tokens=True)
            assert grant is not None and grant.refresh_token is not None
            _revoke(server, registered["m-file"], grant.refresh_token.reveal())
        finally:
            store.close()
        assert token("m-file", expect=None).returncode != 0
        assert token("m-file", "--debug", expect=None).returncode != 0
        _make_due(db)
        run("keeper", "--once", "--log-format", "json", expect=None)
        run("--debug", "doctor", "m-file", expect=None)
        run("show", "-o", "json", "m-file")
        secrets.collect_tokens(linkctl.env, names)

        # apply's failure paths: SOPS key missing; prune whose revocation meets a provider that is down.
        run("apply", "links", env={"SOPS_AGE_KEY_FILE": str(work / "nope.txt")}, expect=3)
        run("--debug", "apply", "links", env={"SOPS_AGE_KEY_FILE": str(work / "nope.txt")}, expect=3)
        no_key = {"SOPS_AGE_KEY_FILE": str(work / "nope.txt")}
        run("--debug", "reconcile", "links", "--log-format", "json", env=no_key, expect=3)
        sops_file.rename(work / "m-sops.yaml.removed")
        server.fault("unavailable", target="revocation", times=1000)
        run("plan", "--prune", "--out", str(plan_files[1]), "links")
        run("--debug", "apply", "--plan", str(plan_files[1]), expect=None)
        server.reset()
        run("state", "events", "--limit", "500", "-o", "json")

        stores = {p: p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()}
    finally:
        keep_open.close()
    stores[db] = db.read_bytes()

    assert secrets.access_tokens and len(secrets.values) > 6, (
        "no token was ever stored: the checks prove nothing"
    )
    assert len(token_stdouts) == 2 * len(names), [str(r) for r in token_stdouts]
    leaks = [f"{r.args}: {found}" for r in run.results if (found := secrets.found_in(r.output))]
    leaks += [
        f"{r.args} (stdout): {found}"
        for r in token_stdouts
        if (found := secrets.found_in(r.stdout, may_hold_access_token=True))
    ]
    leaks += [
        f"serve answer {i}: {found}"
        for i, text in enumerate(served.answers)
        if (found := secrets.found_in(text))
    ]
    leaks += [
        f"serve token answer {i}: {found}"
        for i, text in enumerate(served.token_answers)
        if (found := secrets.found_in(text, may_hold_access_token=True))
    ]
    leaks += [f"serve log: {found}" for found in secrets.found_in(served.log)]
    assert not leaks, "secrets printed:\n" + "\n".join(leaks)
    for path, data in stores.items():
        text = data.decode("latin-1")
        assert not secrets.found_in(text), f"a secret in plaintext in {path}"
    for path in plan_files:
        assert not secrets.found_in(path.read_text(encoding="utf-8")), path
    # Every file linkctl may have written: cwd, HOME (key, store, parse cache), TMPDIR.
    scanned = 0
    for root in (work, Path(linkctl.env["HOME"]), temp):
        for path in root.rglob("*"):
            if path.is_file():
                scanned += 1
                assert not secrets.found_in(path.read_bytes().decode("latin-1")), f"a secret in {path}"
    assert scanned > 5
