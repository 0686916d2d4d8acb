"""The core CLI flows, end to end: validate, plan, apply, saved plans, prune, rename, locks, drift.

Every test runs ``python -m reconciler`` as a subprocess with its own HOME/XDG dirs, so the
default SQLite store and key file live in tmp_path.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import INSTANCE, Linkctl, link_doc

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SECRETS = {"ALPHA_SECRET": "alpha-secret-1", "BETA_SECRET": "beta-secret-1"}


def _links(linkctl: Linkctl, *docs: str) -> str:
    """Write instance.yaml + links.yaml into links/ and return the directory argument."""
    directory = linkctl.cwd / "links"
    directory.mkdir(exist_ok=True)
    (directory / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    (directory / "links.yaml").write_text("---\n".join(docs), encoding="utf-8")
    return "links"


def _alpha(**kw: object) -> str:
    return link_doc("alpha", secret_env="ALPHA_SECRET", **kw)  # type: ignore[arg-type]


def _beta(**kw: object) -> str:
    return link_doc("beta", secret_env="BETA_SECRET", **kw)  # type: ignore[arg-type]


def _names(linkctl: Linkctl) -> list[str]:
    return [link["name"] for link in linkctl("list", "-o", "json").json()["links"]]


def _row(linkctl: Linkctl, name: str) -> tuple[str, int] | None:
    conn = sqlite3.connect(linkctl.state_db)
    try:
        row = conn.execute("SELECT uid, generation FROM links WHERE name = ?", (name,)).fetchone()
    finally:
        conn.close()
    return None if row is None else (row[0], row[1])


@pytest.fixture
def cli(linkctl: Linkctl) -> Linkctl:
    linkctl.env.update(SECRETS)
    return linkctl


def test_validate_examples(cli: Linkctl) -> None:
    examples = cli.cwd / "examples"
    shutil.copytree(EXAMPLES, examples)
    env = {"TRACKER_CLIENT_SECRET": "tracker-secret"}
    key = examples / "keys" / "demo-age-key.txt"
    if key.exists():  # the SOPS-encrypted example decrypts with the demo age key
        env["SOPS_AGE_KEY_FILE"] = str(key)
    result = cli("validate", "examples", env=env)
    assert result.stdout.startswith("OK: 4 link(s) in "), result
    assert " error" not in result.stderr
    as_json = cli("validate", "-o", "json", "examples", env=env).json()
    assert as_json["valid"] is True and as_json["error_count"] == 0
    assert as_json["links"] == ["contoso-calendar", "contoso-mail", "support-gmail", "tracker"]
    # Without the secret the examples need, validation fails and names the variable.
    without = {k: v for k, v in env.items() if k != "TRACKER_CLIENT_SECRET"}
    missing = cli("validate", "examples", env=without, expect=3)
    assert "examples/links/custom-tracker.yaml:" in missing.stderr
    assert "TRACKER_CLIENT_SECRET is not set" in missing.stderr


def test_plan_apply_then_no_op(cli: Linkctl) -> None:
    links = _links(cli, _alpha(), _beta())
    first = cli("plan", "--detailed-exitcode", links, expect=2)
    assert "Plan: 2 to create" in first.stdout and "state serial 0" in first.stdout
    assert cli.snapshot()["serial"] == 0, "plan must not write"
    applied = cli("apply", links)
    assert "Applied: state serial is now 1." in applied.stdout
    assert _names(cli) == ["alpha", "beta"]

    noop = cli("plan", "--detailed-exitcode", links, expect=0)
    assert noop.stdout.startswith("No changes. 2 link(s) up to date (state serial 1)."), noop
    assert cli("apply", links).stdout.startswith("No changes."), "a no-op apply must not bump the serial"
    assert cli.snapshot()["serial"] == 1

    _links(cli, _alpha(scopes=["https://mail.google.com/", "openid"]), _beta())
    changed = cli("plan", "--detailed-exitcode", links, expect=2)
    assert "~ update alpha (google)" in changed.stdout
    assert 'scopes: ["https://mail.google.com/"] → ["https://mail.google.com/", "openid"]' in changed.stdout
    markdown = cli("plan", "-o", "markdown", "--out", "plan.json", links)
    assert markdown.stdout.startswith("**Plan:** 0 to create, 1 to update"), markdown
    assert "### update: `alpha` (`google`)" in markdown.stdout and "alpha-secret-1" not in markdown.stdout
    assert (cli.cwd / "plan.json").exists() and "plan saved" not in markdown.stderr + markdown.stdout
    as_json = cli("plan", "-o", "json", links).json()
    assert as_json["summary"]["update"] == 1 and as_json["summary"]["unchanged"] == 1
    cli("apply", links)
    assert cli("plan", "--detailed-exitcode", links, expect=0).stdout.startswith("No changes.")


def test_plan_reads_the_store_ahead_but_never_creates_one(cli: Linkctl) -> None:
    # plan reads the store while it parses; on a fresh machine with a broken file that must
    # leave no store and no key behind, and the configuration error comes first.
    links = _links(cli, _alpha().replace("provider: google", "provider: gogle"))
    bad = cli("plan", links, expect=3)
    assert "provider" in bad.stderr and "state" not in bad.stderr
    state_dir = Path(cli.env["XDG_STATE_HOME"]) / "linkctl"
    assert not state_dir.exists() or not any(state_dir.iterdir())
    # Fixed, the same plan still creates nothing (a read-only command, issue 8 §2); the first
    # apply creates the store and its key, and the next plan reads it ahead.
    _links(cli, _alpha())
    first = cli("plan", "--detailed-exitcode", links, expect=2)
    assert "created state encryption key" not in first.stderr and "Plan: 1 to create" in first.stdout
    assert not state_dir.exists() or not any(state_dir.iterdir())
    assert "created state encryption key" in cli("apply", links).stderr
    again = cli("plan", "--detailed-exitcode", links, expect=0)
    assert again.stderr == "" and again.stdout.startswith(
        "No changes. 1 link(s) up to date (state serial 1)."
    )

    # What opening the store has to say is said only once the input is valid, as before.
    cli.state_db.chmod(0o644)
    _links(cli, _alpha().replace("provider: google", "provider: gogle"))
    assert "accessible by other users" not in cli("plan", links, expect=3).stderr
    _links(cli, _alpha())
    assert cli("plan", links).stderr.count("accessible by other users") == 1


def test_saved_plan_applies_and_is_refused_when_stale(cli: Linkctl) -> None:
    links = _links(cli, _alpha())
    cli("plan", "--out", "p1.json", links)
    saved = json.loads((cli.cwd / "p1.json").read_text())
    assert saved["serial"] == 0 and saved["summary"]["create"] == 1
    applied = cli("apply", "--plan", "p1.json")
    assert "Applied: state serial is now 1." in applied.stdout
    assert _names(cli) == ["alpha"]

    # Another apply moves the serial: the saved plan is stale (exit 4) and nothing is written.
    _links(cli, _alpha(), _beta())
    cli("plan", "--out", "p2.json", links)
    _links(cli, _alpha(), _beta(), link_doc("gamma", secret_env="BETA_SECRET"))
    cli("apply", links)
    before = cli.snapshot()
    stale = cli("apply", "--plan", "p2.json", expect=4)
    assert "the plan was computed against state serial 1 but the store is at 2" in stale.stderr
    assert cli.snapshot() == before

    # The declared files changed since the plan (same serial): refused too.
    _links(cli, _alpha(scopes=["openid"]), _beta(), link_doc("gamma", secret_env="BETA_SECRET"))
    cli("plan", "--out", "p3.json", links)
    _links(cli, _alpha(scopes=["email"]), _beta(), link_doc("gamma", secret_env="BETA_SECRET"))
    edited = cli("apply", "--plan", "p3.json", expect=4)
    assert "the declared files changed since the plan was made" in edited.stderr
    # ... and so is a plan made before a secret changed (values never in the plan: digests are).
    _links(cli, _alpha(scopes=["openid"]), _beta(), link_doc("gamma", secret_env="BETA_SECRET"))
    cli("plan", "--out", "p4.json", links)
    secret_changed = cli("apply", "--plan", "p4.json", env={"ALPHA_SECRET": "rotated"}, expect=4)
    assert "the declared files changed since the plan was made" in secret_changed.stderr
    assert cli.snapshot() == before
    cli("apply", "--plan", "p4.json")
    assert cli.snapshot()["serial"] == 3


def test_orphans_and_prune(cli: Linkctl) -> None:
    links = _links(cli, _alpha(), _beta())
    cli("apply", links)
    _links(cli, _alpha())
    plan = cli("plan", links)
    assert "? orphan beta (google)" in plan.stdout
    assert "run apply with --prune to delete them" in plan.stdout
    assert cli("plan", "--detailed-exitcode", links, expect=0)  # orphans alone are no change
    kept = cli("apply", links)
    assert "? orphan beta" in kept.stdout
    assert _names(cli) == ["alpha", "beta"]
    assert cli.snapshot()["serial"] == 1

    pruned_plan = cli("plan", "--prune", "--detailed-exitcode", links, expect=2)
    assert "- delete beta (google)" in pruned_plan.stdout
    cli("apply", "--prune", links)
    assert _names(cli) == ["alpha"]
    events = cli("state", "events", "-o", "json").json()["events"]
    assert any(e["action"] == "link.deleted" and e["link"] == "beta" for e in events)


def test_deletion_policy_retain_is_never_deleted(cli: Linkctl) -> None:
    links = _links(cli, _alpha(), _beta(extra="deletionPolicy: retain"))
    cli("apply", links)
    _links(cli, _alpha())
    plan = cli("plan", "--prune", links)
    assert "= retain beta (google)" in plan.stdout
    assert "delete beta" not in plan.stdout
    cli("apply", "--prune", links)
    assert _names(cli) == ["alpha", "beta"]
    cli("reconcile", "--prune", links)
    assert _names(cli) == ["alpha", "beta"]


def test_rename_keeps_identity(cli: Linkctl) -> None:
    links = _links(cli, _alpha())
    cli("apply", links)
    uid, generation = _row(cli, "alpha") or ("", 0)
    renamed = link_doc("alpha-two", secret_env="ALPHA_SECRET", metadata_extra="renamedFrom: alpha")
    _links(cli, renamed)
    plan = cli("plan", "--prune", "-o", "json", links).json()
    assert plan["summary"]["rename"] == 1
    assert plan["summary"]["create"] == 0 and plan["summary"]["delete"] == 0
    text = cli("plan", "--prune", links).stdout
    assert "> rename alpha-two (google) from alpha" in text
    assert "redirectUri" in text  # the redirect URL derives from the name: it changes too
    cli("apply", "--prune", links)
    assert _names(cli) == ["alpha-two"]
    new_uid, new_generation = _row(cli, "alpha-two") or ("", 0)
    assert new_uid == uid, "a rename must keep the stored link (and its grant), not recreate it"
    assert new_generation > generation
    shown = cli("show", "-o", "json", "alpha-two").json()
    assert shown["name"] == "alpha-two"
    assert shown["redirect_url"] == "https://wiki.example.com/oauth/callback/alpha-two"
    assert shown["generation"] == new_generation
    missing = cli("show", "alpha", expect=1)
    assert "no stored link named 'alpha'" in missing.stderr
    events = cli("state", "events", "-o", "json").json()["events"]
    assert any(e["action"] == "link.renamed" and e["detail"].get("from") == "alpha" for e in events)
    # Keeping renamedFrom after the rename is harmless: nothing more to do.
    assert cli("plan", "--prune", "--detailed-exitcode", links, expect=0)


def test_redirect_url_without_client_id(cli: Linkctl) -> None:
    links = _links(cli, link_doc("pending", client_id=None))
    before = cli("redirect-url", "pending", "--from", links)
    assert before.stdout == "https://wiki.example.com/oauth/callback/pending\n"
    assert "pending credentials" in before.stderr  # the warning, not an error
    cli("apply", links)
    stored = cli("redirect-url", "pending")
    assert stored.stdout == "https://wiki.example.com/oauth/callback/pending\n"
    view = cli("show", "-o", "json", "pending").json()
    assert view["client_id"] is None and view["status"] == "pending_credentials"
    unknown = cli("redirect-url", "pendin", expect=1)
    assert "did you mean 'pending'?" in unknown.stderr


def test_list_and_show_json_fields(cli: Linkctl) -> None:
    links = _links(cli, _alpha(), _beta(extra="deletionPolicy: retain"))
    cli("apply", links)
    listed = cli("list", "-o", "json").json()["links"]
    alpha = listed[0]
    for field in (
        "name",
        "provider",
        "status",
        "source",
        "redirect_url",
        "grant",
        "client_id",
        "scopes",
        "generation",
        "updated_at",
    ):
        assert field in alpha, field
    assert alpha["name"] == "alpha" and alpha["provider"] == "google"
    assert alpha["source"] == "links/links.yaml:1"
    assert alpha["redirect_url"] == "https://wiki.example.com/oauth/callback/alpha"
    assert alpha["client_id"] == "client-1" and alpha["generation"] == 1
    assert alpha["scopes"] == ["https://mail.google.com/"]
    assert alpha["grant"] == "authorization_code"
    shown = cli("show", "-o", "json", "beta").json()
    assert shown["spec"]["clientSecret"] == "(stored, encrypted)"
    assert shown["spec"]["deletionPolicy"] == "retain"
    assert shown["spec"]["authorizeParams"] == {"access_type": "offline", "prompt": "consent"}
    assert shown["source"] == "links/links.yaml:" + str(link_doc("alpha", secret_env="x").count("\n") + 2)
    text = cli("list").stdout.splitlines()
    assert text[0].split() == ["NAME", "PROVIDER", "STATUS", "SOURCE", "REDIRECT", "URL"]
    assert text[1].startswith("alpha") and text[2].startswith("beta")


HOLDER = """
import os, sys, time
from reconciler.settings import Settings
from reconciler.store import open_store
store = open_store(Settings.from_env(os.environ))
lock = store.acquire_lock(operation="e2e-holder", timeout=5)
print(lock.id, os.getpid(), flush=True)
time.sleep(120)
"""


def test_lock_contention_and_unlock(cli: Linkctl) -> None:
    links = _links(cli, _alpha())
    cli("apply", links)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        env=cli.env,
        cwd=cli.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        lock_id, pid = holder.stdout.readline().split()
        _links(cli, _alpha(), _beta())
        refused = cli("apply", "--lock-timeout", "1", links, expect=4)
        assert f"the apply lock is held by pid {pid} on host {socket.gethostname()}" in refused.stderr
        assert f"linkctl state unlock {lock_id}" in refused.stderr
        assert _names(cli) == ["alpha"]
        state = cli("state", "show", "-o", "json").json()
        assert state["lock"]["id"] == lock_id and state["lock"]["pid"] == int(pid)
        assert state["lock"]["operation"] == "e2e-holder"
        removed = cli("state", "unlock", lock_id)
        assert f"removed lock {lock_id}" in removed.stdout
        assert cli("state", "show", "-o", "json").json()["lock"] is None
        cli("apply", "--lock-timeout", "1", links)
        assert _names(cli) == ["alpha", "beta"]
        assert "no apply lock with id" in cli("state", "unlock", lock_id, expect=1).stderr
    finally:
        holder.kill()
        holder.wait()


def test_drift_is_shown_and_repaired(cli: Linkctl) -> None:
    links = _links(cli, _alpha(), _beta())
    cli("apply", links)
    conn = sqlite3.connect(cli.state_db)
    with conn:
        conn.execute(
            "UPDATE links SET spec_json = json_set(spec_json, '$.scopes', json('[\"evil\"]'))"
            " WHERE name = 'alpha'"
        )
    conn.close()
    assert cli("show", "-o", "json", "alpha").json()["scopes"] == ["evil"]
    plan = cli("plan", "--detailed-exitcode", links, expect=2)
    assert "! drift alpha (google)" in plan.stdout
    assert "changed outside git; apply restores the declared state" in plan.stdout
    assert 'scopes: ["evil"] → ["https://mail.google.com/"]' in plan.stdout
    assert "(1 drifted)" in plan.stdout
    cli("apply", links)
    assert cli("show", "-o", "json", "alpha").json()["scopes"] == ["https://mail.google.com/"]
    assert cli("plan", "--detailed-exitcode", links, expect=0)
    events = cli("state", "events", "-o", "json").json()["events"]
    assert any(e["action"] == "link.drift_corrected" and e["link"] == "alpha" for e in events)


def test_reconcile_is_quiet_when_nothing_changed(cli: Linkctl) -> None:
    links = _links(cli, _alpha())
    first = cli("reconcile", links)
    assert "+ create alpha" in first.stdout and "Applied: state serial is now 1." in first.stdout
    quiet = cli("reconcile", links)
    assert quiet.stdout == "" and quiet.stderr == "", quiet
    assert cli.snapshot()["serial"] == 1
    _links(cli, _alpha(scopes=["openid"]))
    again = cli("reconcile", links)
    assert "~ update alpha" in again.stdout
    assert cli("reconcile", links).stdout == ""


def test_encrypt_in_place_writes_through_a_symlink_and_warns_on_a_plaintext_client_secret(
    linkctl: Linkctl,
) -> None:
    """As sops does: the link's target gets the ciphertext and the link stays a link."""
    work = linkctl.cwd
    linkctl("keygen", "-o", str(work / "age-key.txt"))
    recipient = next(
        line.split()[-1] for line in (work / "age-key.txt").read_text().splitlines() if "public key" in line
    )
    plain = link_doc("sym").replace("  scopes:", "  clientSecret: symlink-canary-5c1\n  scopes:")
    (work / "real").mkdir()
    (work / "real" / "link.yaml").write_text(plain, encoding="utf-8")
    (work / "link.yaml").symlink_to("real/link.yaml")
    result = linkctl("secrets", "encrypt", "--age", recipient, "--in-place", "link.yaml")
    assert "warning" not in result.stderr
    assert (work / "link.yaml").is_symlink()
    target = (work / "real" / "link.yaml").read_text(encoding="utf-8")
    assert "symlink-canary-5c1" not in target and "ENC[AES256_GCM," in target
    assert not [p for p in (work / "real").iterdir() if p.name != "link.yaml"], "a temporary file was left"

    (work / ".sops.yaml").write_text(
        f"creation_rules:\n  - encrypted_regex: '^(tokenParams)$'\n    age: {recipient}\n", encoding="utf-8"
    )
    (work / "loose.yaml").write_text(plain, encoding="utf-8")
    warned = linkctl("secrets", "encrypt", "loose.yaml")
    assert "clientSecret is left unencrypted" in warned.stderr
    assert "symlink-canary-5c1" not in warned.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux-only")
def test_a_blocked_linkctl_holding_secrets_writes_no_core_dump(cli: Linkctl) -> None:
    """`ulimit -c unlimited`, then kill -SEGV while apply (secrets decrypted) waits on the lock."""
    import resource
    import signal
    import time

    links = _links(cli, _alpha())
    cli("apply", links)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], env=cli.env, cwd=cli.cwd, stdout=subprocess.PIPE, text=True
    )
    blocked = None
    try:
        assert holder.stdout is not None
        holder.stdout.readline()
        _links(cli, _alpha(), _beta())
        blocked = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply", "--lock-timeout", "60", links],
            env=cli.env,
            cwd=cli.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: resource.setrlimit(
                resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            ),
        )
        limits = Path(f"/proc/{blocked.pid}/limits")
        deadline = time.monotonic() + 30
        core_limit: list[str] = []
        while time.monotonic() < deadline and blocked.poll() is None:
            core_limit = [
                line for line in limits.read_text().splitlines() if line.startswith("Max core file size")
            ]
            if core_limit and core_limit[0].split()[4:6] == ["0", "0"]:
                break
            time.sleep(0.05)
        assert blocked.poll() is None, "apply did not wait on the lock"
        assert core_limit and core_limit[0].split()[4:6] == ["0", "0"], core_limit
        time.sleep(1)  # well into the lock wait, after validation resolved the secrets
        blocked.send_signal(signal.SIGSEGV)
        assert blocked.wait(timeout=30) == -signal.SIGSEGV
        assert not list(cli.cwd.glob("core*")), "a core file was written"
        assert _names(cli) == ["alpha"]
    finally:
        for proc in (blocked, holder):
            if proc is not None:
                proc.kill()
                proc.wait()
