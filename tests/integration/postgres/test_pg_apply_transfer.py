"""Concurrent applies on one PostgreSQL store, and a state's round trip SQLite → PostgreSQL → SQLite.

* Four ``linkctl apply --prune`` processes at once, each declaring a different set of links
  (two wait for the lock, two give up at once): every one either applies or is refused
  with exit 4 naming the holder; the serial grew by exactly the number applied; the store
  holds exactly what the apply with the highest serial declared.
* ``state export`` of an SQLite store with authorized links → ``state import`` into
  PostgreSQL → export → import into a new SQLite file: links, secrets, grants (tokens,
  versions) and the serial are equal in all three stores, and every grant of the last one
  still refreshes at the oracle.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from reconciler import keeper
from reconciler.oauth.client import TokenClient
from reconciler.store.base import Store
from tests.conftest import ROOT
from tests.support.cli import INSTANCE, link_doc
from tests.support.cluster import authorized_links, open_env_store
from tests.support.oracle import OidcServer
from tests.support.oracle_links import run, state_env

APPLIERS = 4
APPLY = (sys.executable, "-m", "reconciler", "apply", "--prune", "--allow-empty-prune")


def _declare(directory: Path, names: list[str], client_id: str) -> None:
    directory.mkdir(parents=True)
    (directory / "instance.yaml").write_text(INSTANCE, encoding="utf-8")
    docs = [link_doc(name, client_id=client_id, secret_env="LINK_SECRET") for name in names]
    (directory / "links.yaml").write_text("---\n".join(docs), encoding="utf-8")


def _apply(env: dict[str, str], directory: Path, lock_timeout: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*APPLY, "--lock-timeout", lock_timeout, "-o", "json", str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )


def _declared_state(store: Store) -> dict[str, str | None]:
    return {link.name: link.spec.get("clientId") for link in store.list_links()}


def test_four_concurrent_applies_are_serialized_and_the_last_one_wins(
    state_url: Callable[[str], str], tmp_path: Path
) -> None:
    env = {**state_env(tmp_path), "LINKCTL_STATE": state_url("postgresql"), "LINK_SECRET": "s3cret-apply"}
    declared = {}
    for i in range(APPLIERS):
        names = [f"shared-{j}" for j in range(3)] + [f"own-{i}-{j}" for j in range(2 + i)]
        _declare(tmp_path / f"repo-{i}", names, f"client-{i}")
        declared[i] = dict.fromkeys(names, f"client-{i}")
    first = _apply(env, tmp_path / "repo-0", "60")
    assert first.returncode == 0, first.stderr
    start_serial = json.loads(first.stdout)["new_serial"]
    outcomes: dict[int, tuple[int, int | None, str]] = {}
    for _round in range(2):
        with ThreadPoolExecutor(max_workers=APPLIERS) as pool:
            # Two wait for the lock as long as it takes; two give up at once.
            results = list(
                pool.map(
                    lambda i: _apply(env, tmp_path / f"repo-{i}", "60" if i % 2 else "0"), range(APPLIERS)
                )
            )
        for i, result in enumerate(results):
            # An apply that found the store already equal to its files changes nothing (no serial).
            serial = json.loads(result.stdout).get("new_serial", 0) if result.returncode == 0 else None
            outcomes[len(outcomes)] = (i, serial, result.stderr)
            assert result.returncode in (0, 4), result.stderr
            if result.returncode == 4:
                # The holder is named (host, pid, since) once its lock row is written; in the
                # instant between its advisory lock and that row the refusal says so instead.
                assert "apply lock" in result.stderr, result.stderr
                assert "pid" in result.stderr or "just taking it" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
    applied = [(serial, i) for i, serial, _ in outcomes.values() if serial]
    refused = [i for i, serial, _ in outcomes.values() if serial is None]
    serials = sorted(serial for serial, _ in applied)
    assert serials == list(range(start_serial + 1, start_serial + 1 + len(applied))), serials
    store = open_env_store(env)
    try:
        final_serial = store.state_serial()
        final = _declared_state(store)
    finally:
        store.close()
    last = max(applied)[1]
    unchanged = sum(1 for _, serial, _ in outcomes.values() if serial == 0)
    print(f"CONCURRENT-APPLY applied={len(applied)} unchanged={unchanged} refused={len(refused)}")
    assert applied and final_serial == serials[-1]
    assert final == declared[last]


def _snapshot(store: Store) -> dict[str, Any]:
    """Everything a state move must keep (secrets and tokens compared by value, never printed)."""
    links = {}
    for link in store.list_links():
        secret = store.read_secret(link.name, "clientSecret")
        links[link.name] = (
            link.uid,
            link.spec_json,
            link.spec_hash,
            dict(link.secret_fingerprints),
            link.generation,
            None if secret is None else secret.fingerprint(store.fingerprint_key()),
        )
    grants = {}
    for summary in store.list_grants():
        grant = store.get_grant(summary.link_name, with_tokens=True)
        assert grant is not None
        key = store.fingerprint_key()
        grants[grant.link_name] = (
            grant.token_version,
            grant.status,
            None if grant.access_token is None else grant.access_token.fingerprint(key),
            None if grant.refresh_token is None else grant.refresh_token.fingerprint(key),
            grant.access_expires_at is None or round(grant.access_expires_at),
            grant.lease_owner,
        )
    return {"serial": store.state_serial(), "links": links, "grants": grants}


def test_state_moves_sqlite_to_postgresql_and_back_without_losing_a_grant(
    oracle: OidcServer, state_url: Callable[[str], str], tmp_path: Path
) -> None:
    env = state_env(tmp_path)
    first_url, pg_url, last_url = state_url("sqlite"), state_url("postgresql"), state_url("sqlite")
    names = [f"move-{i}" for i in range(6)]
    with TokenClient(timeout=10) as client:
        store = open_env_store({**env, "LINKCTL_STATE": first_url})
        authorized_links(oracle, store, names, client)
        before = _snapshot(store)
        store.close()
    hops = [(first_url, tmp_path / "a.json", pg_url), (pg_url, tmp_path / "b.json", last_url)]
    for source, file, target in hops:
        exported = run({**env, "LINKCTL_STATE": source}, "state", "export", str(file))
        assert exported.returncode == 0, exported.stderr
        imported = run({**env, "LINKCTL_STATE": target}, "state", "import", str(file))
        assert imported.returncode == 0, imported.stderr
    snapshots = []
    for url in (pg_url, last_url):
        store = open_env_store({**env, "LINKCTL_STATE": url})
        try:
            snapshots.append(_snapshot(store))
        finally:
            store.close()
    assert snapshots[0] == before
    assert snapshots[1] == before
    store = open_env_store({**env, "LINKCTL_STATE": last_url})
    try:
        with TokenClient(timeout=10) as client:
            for name in names:
                outcome = keeper.refresh_link(
                    store,
                    client,
                    name,
                    owner=keeper.new_owner("test"),
                    policy=keeper.KeeperPolicy(),
                    clock=time.time,
                    rng=random.Random(1),
                    force=True,
                )
                assert outcome.result == keeper.REFRESHED, outcome
            after = {g.link_name: g.token_version for g in store.list_grants()}
            assert after == {name: before["grants"][name][0] + 1 for name in names}
    finally:
        store.close()
    refreshes = [r for r in oracle.requests() if r["grant_type"] == "refresh_token"]
    assert [r["status"] for r in refreshes] == [200] * len(names)
    assert oracle.events() == []
