"""Eight keepers on two "machines" sharing one store, in ONE run that covers several claims.

Against the rotating oracle (3 s access tokens, every refresh rotates the refresh token and a
reused one revokes the grant), for LINKCTL_CLUSTER_SECONDS (default 120) on
LINKCTL_CLUSTER_LINKS (default 200) links, with bursts of concurrent ``linkctl token``:

* 8 keeper processes in groups ``machine-a`` (k0-k3) and ``machine-b`` (k4-k7), each its own
  process and connection pool; k1's clock runs 90 s ahead and k5's 90 s behind (libfaketime);
* at 12 % of the run k2 is frozen (SIGSTOP) while it holds leases it has not yet sent
  anything for, kept frozen past its lease, then continued (SIGCONT);
* at 40 % (PostgreSQL only) the server is restarted once (``pg_ctlcluster … restart``);
* at 50 % half the keepers (k0, k3, k6, k7) are killed with SIGKILL, frozen first so that the
  moment is one where none of them has a request in flight (a kill during a request consumes
  a rotated refresh token whose answer dies with the process — the lost-response case that
  tests/integration/test_keeper_stress.py proves is flagged precisely).

Claims checked: zero refresh-token reuse at the oracle; every successful refresh at the
oracle is committed (nothing lost); no token version committed twice (the frozen keeper
committed nothing stale); others took over the frozen and the killed keepers' leases within
the lease time; the run recovered from the restart by itself; every grant is alive at the
end (one more rotation works); every keeper did part of the work. The figures are printed
as ``KEEPER-CLUSTER {...}``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from reconciler import keeper
from reconciler.domain.grants import Grant, GrantStatus
from reconciler.errors import LinkctlError
from reconciler.oauth.client import TokenClient
from tests.conftest import require
from tests.support.cluster import (
    CLUSTER_BACKENDS,
    KeeperProcess,
    authorized_links,
    held_by,
    open_env_store,
    start_keeper,
    stop_keepers,
    token_burst,
    versions,
)
from tests.support.oracle import OidcServer
from tests.support.oracle_links import state_env

pytestmark = pytest.mark.slow

# The lease outlasts the HTTP timeout by a commit margin ((24 - 8) / 2 = 8 s) longer than a
# PostgreSQL restart, so an answer received just before the restart is still committed by
# its keeper, never taken over as a lost response; 8 s of HTTP timeout, because a timed-out
# refresh is a lost response (its rotated token may be consumed) and the shared 2-core
# machine sometimes makes the local oracle answer after seconds.
LEASE_TTL = 24.0
KEEPER_ARGS = ("--workers", "2", "--lease-ttl", f"{LEASE_TTL:g}", "--http-timeout", "8")
KEEPER_ARGS += ("--poll-interval", "1")
SKEWS = {"k1": 90.0, "k5": -90.0}  # only on PostgreSQL: on SQLite every process shares one clock
KEEPERS = [(f"k{i}", "machine-a" if i < 4 else "machine-b", SKEWS.get(f"k{i}", 0.0)) for i in range(8)]
FROZEN = "k2"
KILLED = ("k0", "k3", "k6", "k7")
BURST = 10
# A statement a keeper sent just before its SIGSTOP finishes in its backend within this.
SETTLE = 0.15


def _pg_restart() -> tuple[float, float]:
    """Restart the local PostgreSQL once; (seconds the command took, when it returned)."""
    require(shutil.which("pg_ctlcluster"), "`pg_ctlcluster` is not on PATH (Debian's postgresql-common)")
    versions_dir = Path("/etc/postgresql")
    require(versions_dir.is_dir(), "/etc/postgresql is missing: not a Debian PostgreSQL cluster")
    version = sorted(p.name for p in versions_dir.iterdir())[0]
    began = time.monotonic()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return time.monotonic() - began, time.monotonic()


class _Bursts(threading.Thread):
    """Bursts of concurrent `linkctl token` calls until stopped; results with their moments."""

    def __init__(self, env: dict[str, str], names: list[str]) -> None:
        super().__init__(daemon=True)
        self.env, self.names = env, names
        self.stop = threading.Event()
        self.calls = 0
        # (burst began, burst ended, stderr): a burst's calls run together, so each failure is
        # placed in its burst's span, not at the moment the slowest call of the burst returned.
        self.failures: list[tuple[float, float, str]] = []
        self.rng = random.Random(11)

    def run(self) -> None:
        while not self.stop.is_set():
            chosen = [self.rng.choice(self.names) for _ in range(BURST)]
            valid = [self.rng.choice(["0.5", "2", "3"]) for _ in chosen]
            began = time.monotonic()
            results = token_burst(self.env, chosen, valid)
            ended = time.monotonic()
            for result in results:
                self.calls += 1
                if result.returncode != 0:
                    self.failures.append((began, ended, result.stderr[-300:]))
            self.stop.wait(0.5)


def _freeze_between_lease_and_send(
    store_env: dict[str, str], victims: list[KeeperProcess], *, need_leases: bool, tries: int = 200
) -> tuple[dict[str, int], dict[str, float | None], int]:
    """SIGSTOP ``victims`` at a moment none has a request in flight (and, if asked, some hold leases).

    Returns the leases they hold ``{link: version}``, when those leases end (the store's clock)
    and how many tries it took; the victims stay stopped. A stopped process cannot send, but a
    statement it sent just before the stop still runs in its PostgreSQL backend (a release, a
    mark in flight): the store is read only once it has settled — two reads ``SETTLE`` apart
    that agree — so what it shows then is final.
    """
    rng = random.Random(5)
    store = open_env_store(store_env)
    pids = [v.pid for v in victims]

    def snapshot() -> tuple[dict[str, int], dict[str, int], dict[str, float | None]]:
        everything = store.list_grants()
        held = held_by(everything, pids, in_flight=False)
        return held, held_by(everything, pids, in_flight=True), _ends(everything, held)

    try:
        for attempt in range(1, tries + 1):
            for victim in victims:
                victim.signal(signal.SIGSTOP)
            time.sleep(SETTLE)
            first = snapshot()
            time.sleep(SETTLE)
            held, in_flight, ends = snapshot()
            settled = first == (held, in_flight, ends)
            if settled and not in_flight and (held or not need_leases or attempt > tries // 2):
                return held, ends, attempt
            for victim in victims:
                victim.signal(signal.SIGCONT)
            time.sleep(rng.uniform(0.005, 0.06))
        raise AssertionError(f"no settled moment without a request in flight in {tries} tries")
    finally:
        store.close()


def _takeover_seconds(
    store_env: dict[str, str], held: dict[str, int], pids: list[int], since: float, limit: float
) -> tuple[float, float, float]:
    """From ``since``: seconds until every held link's lease went to another process, until each
    has a newer token version (inf when not within ``limit``), and the largest backlog seen."""
    store = open_env_store(store_env)
    leased = float("inf")
    backlog = 0.0
    marks = [f":{pid}:" for pid in pids]
    try:
        while time.monotonic() - since <= limit:
            everything = store.list_grants()
            due = [g.next_refresh_at for g in everything if g.next_refresh_at and not g.lease_owner]
            if due:
                backlog = max(backlog, time.time() - min(due))
            grants = {g.link_name: g for g in everything if g.link_name in held}
            now = time.monotonic() - since
            if leased == float("inf") and all(
                g.token_version > held[n] or not any(m in (g.lease_owner or "") for m in marks)
                for n, g in grants.items()
            ):
                leased = now
            if all(g.token_version > held[n] for n, g in grants.items()):
                return min(leased, now), now, backlog
            time.sleep(0.1)
        return leased, float("inf"), backlog
    finally:
        store.close()


def _ends(grants: Iterable[Grant], names: Iterable[str]) -> dict[str, float | None]:
    """When the leases of ``names`` end, as the store records them (the database's clock)."""
    wanted = set(names)
    return {g.link_name: g.lease_expires_at for g in grants if g.link_name in wanted}


@pytest.mark.parametrize("backend", CLUSTER_BACKENDS)
def test_eight_keepers_on_two_machines_skew_freeze_restart_kill(
    backend: str, short_ttl_oracle: OidcServer, state_url: Callable[[str], str], tmp_path: Path
) -> None:
    server = short_ttl_oracle
    server.reset()
    postgres = backend == "postgresql"
    env = state_env(tmp_path)
    env["LINKCTL_STATE"] = state_url(backend)
    duration = float(os.environ.get("LINKCTL_CLUSTER_SECONDS", "120"))
    count = int(os.environ.get("LINKCTL_CLUSTER_LINKS", "200"))
    names = [f"cl-{i:03d}" for i in range(count)]
    setup_began = time.monotonic()
    with TokenClient(timeout=10) as client:
        store = open_env_store(env)
        link_of_client = authorized_links(server, store, names, client)
        store.close()
    setup_seconds = time.monotonic() - setup_began
    server.reset()
    store = open_env_store(env)
    before = versions(store)
    store.close()
    logs = tmp_path / "logs"
    logs.mkdir()
    keepers = {
        name: start_keeper(
            env, KEEPER_ARGS, name=name, group=group, skew=skew if postgres else 0.0, logs=logs
        )
        for name, group, skew in KEEPERS
    }
    bursts = _Bursts(env, names)
    started = time.monotonic()
    bursts.start()
    figures: dict[str, object] = {}
    restart_window: tuple[float, float] | None = None
    try:
        # -- a keeper paused past its lease (SIGSTOP), then continued -----------------------
        time.sleep(max(0.0, started + 0.12 * duration - time.monotonic()))
        frozen = keepers[FROZEN]
        held, held_until, tries = _freeze_between_lease_and_send(env, [frozen], need_leases=True)
        stopped_at, stopped_wall = time.monotonic(), time.time()
        released, takeover, backlog = _takeover_seconds(
            env, held, [frozen.pid], stopped_at, limit=LEASE_TTL + 40
        )
        time.sleep(max(0.0, stopped_at + LEASE_TTL + 1.5 - time.monotonic()))
        frozen.signal(signal.SIGCONT)
        figures["freeze"] = {
            "held_leases": len(held),
            "tries": tries,
            "frozen_seconds": round(time.monotonic() - stopped_at, 1),
            "lease_free_seconds": round(released, 2),
            "takeover_seconds": round(takeover, 2),
            "max_backlog_seconds": round(backlog, 2),
        }
        # -- PostgreSQL restarted under the running keepers ---------------------------------
        if postgres:
            time.sleep(max(0.0, started + 0.4 * duration - time.monotonic()))
            commits_before = {k.name: len(k.commits()) for k in keepers.values()}
            began = time.monotonic()
            took, ended = _pg_restart()
            restart_window = (began, ended)
            store = open_env_store(env)
            total = sum(versions(store).values())
            while sum(versions(store).values()) == total and time.monotonic() - ended < 30:
                time.sleep(0.05)
            figures["restart"] = {
                "restart_command_seconds": round(took, 2),
                "first_commit_after_restart_seconds": round(time.monotonic() - ended, 2),
            }
            store.close()
        # -- kill -9 of half the keepers ---------------------------------------------------
        time.sleep(max(0.0, started + 0.5 * duration - time.monotonic()))
        victims = [keepers[name] for name in KILLED]
        killed_held, killed_until, kill_tries = _freeze_between_lease_and_send(env, victims, need_leases=True)
        killed_at, killed_wall = time.monotonic(), time.time()
        for victim in victims:
            victim.signal(signal.SIGKILL)
            victim.signal(signal.SIGCONT)
            victim.process.wait()
        kill_released, kill_takeover, kill_backlog = _takeover_seconds(
            env, killed_held, [v.pid for v in victims], killed_at, limit=LEASE_TTL + 40
        )
        figures["kill"] = {
            "killed": len(victims),
            "held_leases": len(killed_held),
            "tries": kill_tries,
            "lease_free_seconds": round(kill_released, 2),
            "max_backlog_seconds": round(kill_backlog, 2),
            "takeover_seconds": round(kill_takeover, 2),
        }
        time.sleep(max(0.0, started + duration - time.monotonic()))
    finally:
        bursts.stop.set()
        bursts.join(timeout=120)
        codes = stop_keepers(keepers.values())
    elapsed = time.monotonic() - started
    requests = server.requests()
    refreshes = [r for r in requests if r["grant_type"] == "refresh_token"]
    ok = sum(1 for r in refreshes if r["status"] == 200)
    refused = sorted({link_of_client.get(r["client_id"], "?") for r in refreshes if r["status"] != 200})
    reuse_events = server.events()
    store = open_env_store(env)
    after = versions(store)
    committed = sum(after[name] - before[name] for name in names)
    commits = {name: k.commits() for name, k in keepers.items()}
    seen: dict[tuple[str, int], str] = {}
    twice = []
    for name, pairs in commits.items():
        for pair in pairs:
            if pair in seen:
                twice.append((pair, seen[pair], name))
            seen[pair] = name
    frozen_stale = [pair for pair in commits[FROZEN] if pair[0] in held and pair[1] == held[pair[0]] + 1]
    survivors = [n for n in keepers if n not in KILLED]
    after_restart = {}
    if postgres:
        after_restart = {n: len(commits[n]) - commits_before[n] for n in survivors}
    # Every grant alive: one more rotation of each works, through the store, at the oracle.
    alive, dead = 0, {}
    with TokenClient(timeout=10) as client:
        for name in names:
            try:
                fresh = keeper.fresh_token(store, name, min_valid=3, client=client)
            except LinkctlError as error:
                dead[name] = error.message
                continue
            alive += fresh.access_token is not None and fresh.token_version > after[name]
    statuses = {g.status for g in store.list_grants()}
    store.close()
    token_failures_outside_restart = [
        message
        for began, ended, message in bursts.failures
        if restart_window is None or not (began <= restart_window[1] + 5 and ended >= restart_window[0] - 1)
    ]
    split = {n: (k, commits[n]) for n, k in keepers.items()}
    figures.update(
        backend=backend,
        links=count,
        seconds=round(elapsed, 1),
        setup_seconds=round(setup_seconds, 1),
        keepers={n: {"group": k.group, "skew": k.skew, "commits": len(c)} for n, (k, c) in split.items()},
        token_calls=bursts.calls,
        token_failures=len(bursts.failures),
        token_failure_samples=[message for _, _, message in bursts.failures[:3]],
        refreshes_at_oracle=ok,
        token_versions_committed=committed,
        refused_refreshes=len(refused),
        reuse_events=len(reuse_events),
        committed_twice=len(twice),
        commits_after_restart=after_restart,
        alive=alive,
        dead=dict(list(dead.items())[:5]),
        exit_codes=codes,
        cpus=os.cpu_count(),
        load=os.getloadavg(),
    )
    print(f"KEEPER-CLUSTER {json.dumps(figures, sort_keys=True)}")
    assert refused == [] and reuse_events == [], f"refresh tokens reused: {refused[:5]} {reuse_events[:3]}"
    assert ok == committed, f"{ok} refreshes at the oracle, {committed} committed: a rotation was lost"
    assert twice == [] and frozen_stale == [], (twice[:5], frozen_stale[:5])
    # Every lease of the frozen and the killed keepers ends within the lease time (judged by
    # the database's clock; read here in this process's); then the links go to the others,
    # at the latest once the keepers caught up with what became due before them (backlog).
    assert held
    assert all(end is not None and end <= stopped_wall + LEASE_TTL + 1 for end in held_until.values()), (
        stopped_wall,
        held_until,
    )
    assert all(end is not None and end <= killed_wall + LEASE_TTL + 1 for end in killed_until.values()), (
        killed_wall,
        killed_until,
    )
    assert released <= LEASE_TTL + backlog + 5, figures["freeze"]
    assert kill_released <= LEASE_TTL + kill_backlog + 5, figures["kill"]
    assert alive == count and statuses == {GrantStatus.HEALTHY}
    assert all(len(commits[n]) > 0 for n in keepers), {n: len(c) for n, c in commits.items()}
    assert all(codes[n] == 0 for n in survivors), {n: keepers[n].log()[-600:] for n in survivors if codes[n]}
    assert not token_failures_outside_restart, token_failures_outside_restart[:3]
    if postgres:
        assert all(count > 0 for count in after_restart.values()), after_restart
        assert bursts.failures == [], bursts.failures[:3]
