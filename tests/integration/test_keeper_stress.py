"""Slow reliability tests of the keeper against oidc-provider: concurrency soak and kill -9.

Both print their measured counts (``KEEPER-RELIABILITY {...}``); docs/reliability.md
records a run. Durations: LINKCTL_SOAK_SECONDS (default 120), LINKCTL_CRASH_KILLS (default 50).
"""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reconciler import keeper
from reconciler.domain.grants import GrantStatus
from reconciler.oauth.client import TokenClient
from reconciler.store.base import Store
from tests.support.oracle import OidcServer, start_oidc_server
from tests.support.oracle_links import (
    add_authorized_links,
    authorize,
    open_store,
    run,
    spawn,
    state_env,
)

pytestmark = pytest.mark.slow

KEEPER_ARGS = (
    "keeper",
    "--workers",
    "2",
    "--lease-ttl",
    "4",
    "--http-timeout",
    "2",
    "--poll-interval",
    "0.1",
)


@pytest.fixture(scope="module")
def short_ttl_server() -> Iterator[OidcServer]:
    """An oracle whose access tokens live 3 s, so refreshes happen all the time."""
    with start_oidc_server(ORACLE_ACCESS_TOKEN_TTL="3") as server:
        yield server


def _report(kind: str, counts: dict[str, object]) -> None:
    record = {
        "test": kind,
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        **counts,
    }
    print(f"KEEPER-RELIABILITY {json.dumps(record, sort_keys=True)}")


def _stop(processes: list[subprocess.Popen[str]]) -> list[int]:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=30))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    return codes


TOKEN_LIFETIME = 3.0  # ORACLE_ACCESS_TOKEN_TTL of short_ttl_server
# A keeper refreshes a link when due: at >= 0.75 x the lifetime after its last refresh
# (grants.next_refresh_time); 0.7 leaves room for the request's latency in received_at.
KEEPER_REFRESH_SPACING = 0.7 * TOKEN_LIFETIME
HELD_ANSWER_SECONDS = 1.5
CALLERS_IN_A_CLUMP = 12


def _token_versions(env: dict[str, str], names: list[str]) -> dict[str, int]:
    store = open_store(env)
    try:
        return {g.link_name: g.token_version for g in store.list_grants() if g.link_name in names}
    finally:
        store.close()


def _clump_of_callers_needing_a_full_lifetime(server: OidcServer, env: dict[str, str], name: str) -> int:
    """Refreshes made by a clump of `token --min-valid 3` calls while every answer is held."""
    before = _token_versions(env, [name])[name]
    server.fault("delay_after", times=100_000, delay_ms=int(HELD_ANSWER_SECONDS * 1000))
    try:
        with ThreadPoolExecutor(max_workers=CALLERS_IN_A_CLUMP) as pool:
            args = ("token", name, "--min-valid", str(TOKEN_LIFETIME))
            results = list(pool.map(lambda _: run(env, *args, timeout=120), range(CALLERS_IN_A_CLUMP)))
    finally:
        server.reset()
    assert all(r.returncode == 0 for r in results), [r.stderr[-300:] for r in results if r.returncode]
    return _token_versions(env, [name])[name] - before


# Soaks saturate both cores for minutes: two at once would each prove less (docs/testing.md).
@pytest.mark.xdist_group("soak")
def test_four_keepers_and_token_bursts_never_double_refresh(
    short_ttl_server: OidcServer, tmp_path: Path
) -> None:
    server = short_ttl_server
    server.reset()
    env = state_env(tmp_path)
    names = ["soak-a", "soak-b", "soak-c"]
    with TokenClient(timeout=5) as client:
        store = open_store(env)
        add_authorized_links(server, store, names, client)
        store.close()
    server.reset()
    duration = float(os.environ.get("LINKCTL_SOAK_SECONDS", "120"))
    versions_before = _token_versions(env, names)
    started = time.monotonic()
    keepers = [spawn(env, *KEEPER_ARGS) for _ in range(4)]
    rng = random.Random(4)
    calls = failures = bursts = 0
    calls_per_link = dict.fromkeys(names, 0)
    failure_samples: list[str] = []
    deadline = time.monotonic() + duration
    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            while time.monotonic() < deadline:
                # A burst of 50 concurrent `linkctl token` calls; some demand more validity
                # than a 3 s token has, forcing refreshes through the lease.
                chosen = [rng.choice(names) for _ in range(50)]
                jobs = [
                    pool.submit(run, env, "token", name, "--min-valid", rng.choice(["0.5", "2", "3"]))
                    for name in chosen
                ]
                for name in chosen:
                    calls_per_link[name] += 1
                for job in jobs:
                    result = job.result()
                    calls += 1
                    if result.returncode != 0:
                        failures += 1
                        failure_samples.append(result.stderr[-300:])
                bursts += 1
    finally:
        codes = _stop(keepers)
    elapsed = time.monotonic() - started
    requests = server.requests()
    refreshes = sum(1 for r in requests if r["grant_type"] == "refresh_token" and r["status"] == 200)
    refused = [r for r in requests if r["grant_type"] == "refresh_token" and r["status"] != 200]
    events = server.events()
    versions_after = _token_versions(env, names)
    per_link = {name: versions_after[name] - versions_before[name] for name in names}
    # Upper bound per link over the run: every refresh is made either by a keeper, which
    # refreshes a link only when due, >= 0.7 x 3 s = 2.1 s after the link's last refresh
    # (so at most elapsed / 2.1 s + 1 of them), or by a `token` call, which refreshes at
    # most once. A refresh loop or a keeper refreshing before its time breaks it.
    upper = {name: elapsed / KEEPER_REFRESH_SPACING + 1 + calls_per_link[name] for name in names}
    # The "refreshed meanwhile" rule of fresh_token: 12 `token --min-valid 3` calls at once,
    # each answer held 1.5 s after the provider rotated (no keeper runs now). A caller
    # that reads the grant while a refresh is in flight waits on the lease, then must
    # accept the token committed meanwhile: its 3 s lifetime covers --min-valid 3, though
    # only ~1.5 s of it is left. So one refresh serves every caller that read the grant
    # during its 1.5 s; the 12 callers (Python start-up: ~1-3 s apart on a loaded
    # 2-core machine) read within <= 3 such windows: <= 4 refreshes; allowed: 12 / 2 = 6.
    # Without the rule every caller refreshes once more: 12.
    clump = _clump_of_callers_needing_a_full_lifetime(server, env, names[0])
    store = open_store(env)
    alive = 0
    with TokenClient(timeout=5) as client:
        for name in names:
            grant = keeper.fresh_token(store, name, min_valid=3, client=client)  # one more rotation works
            alive += grant.access_token is not None
    statuses = {g.link_name: g.status for g in store.list_grants()}
    store.close()
    _report(
        "soak",
        {
            "seconds": duration,
            "keepers": 4,
            "bursts": bursts,
            "token_calls": calls,
            "token_failures": failures,
            "refreshes": refreshes,
            "refreshes_per_link": per_link,
            "refreshes_per_link_upper_bound": {name: round(upper[name], 1) for name in names},
            "clump_callers": CALLERS_IN_A_CLUMP,
            "clump_refreshes": clump,
            "refused_refreshes": len(refused),
            "grant_errors": len(events),
            "links_alive": alive,
            "links": len(names),
        },
    )
    assert failures == 0, failure_samples[:3]
    assert refused == [] and events == [], f"a refresh token was reused: {events[:3]}"
    assert alive == len(names) and set(statuses.values()) == {GrantStatus.HEALTHY}
    assert all(code == 0 for code in codes), codes
    assert refreshes >= len(names)  # every link rotated at least once (more on longer runs)
    assert sum(per_link.values()) == refreshes, (per_link, refreshes)
    assert all(per_link[name] <= upper[name] for name in names), (per_link, upper)
    assert 1 <= clump <= CALLERS_IN_A_CLUMP // 2, (
        f"{clump} refreshes for {CALLERS_IN_A_CLUMP} callers that could share one token"
    )


def _wait_for_a_new_refresh(store: Store, seen: set[tuple[str, float | None]], *, timeout: float) -> None:
    """Return once a grant shows a refresh in flight that is not in ``seen`` (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        in_flight = {(g.link_name, g.in_flight_since) for g in store.list_grants() if g.in_flight_since}
        if in_flight - seen:
            return
        time.sleep(0.02)


def test_kill_9_during_refreshes_leaves_every_link_refreshable_or_precisely_flagged(
    short_ttl_server: OidcServer, tmp_path: Path
) -> None:
    server = short_ttl_server
    server.reset()
    env = state_env(tmp_path)
    names = ["crash-a", "crash-b", "crash-c", "crash-d"]
    kills_wanted = int(os.environ.get("LINKCTL_CRASH_KILLS", "50"))
    rng = random.Random(9)
    client = TokenClient(timeout=5)
    store = open_store(env)
    add_authorized_links(server, store, names, client)
    # Hold every token answer 250 ms after the server rotated: kills land in that window often.
    server.fault("delay_after", times=100_000, delay_ms=250)
    kills = kills_in_flight = reauthorized = 0
    seen_in_flight: set[tuple[str, float | None]] = set()
    flagged_messages: list[str] = []
    unexplained: list[str] = []
    try:
        for round_number in range(kills_wanted):
            process = spawn(env, *KEEPER_ARGS)
            if round_number % 3 == 2:
                # Every third kill aims at a refresh: a loaded host can start a keeper more
                # slowly than any random moment (CI once saw 0 of 50 kills in flight).
                _wait_for_a_new_refresh(store, seen_in_flight, timeout=10)
                time.sleep(rng.uniform(0, 0.2))  # inside the 250 ms the answer is held
            else:
                time.sleep(rng.uniform(0.6, 2.5))
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
            kills += 1
            # Refreshes this kill interrupted: marked in flight and not seen before.
            interrupted = {(g.link_name, g.in_flight_since) for g in store.list_grants() if g.in_flight_since}
            kills_in_flight += len(interrupted - seen_in_flight)
            seen_in_flight |= interrupted
            for grant in store.list_grants():
                if grant.status == GrantStatus.NEEDS_AUTHORIZATION:
                    # Flagged by a later attempt: must name the lost response precisely.
                    if "probably consumed by a lost response (sent at" in (grant.last_error or ""):
                        flagged_messages.append(grant.last_error or "")
                    else:
                        unexplained.append(f"{grant.link_name}: {grant.last_error}")
                    link = store.get_link(grant.link_name)
                    assert link is not None
                    server.reset()
                    response = authorize(server, client, keeper.client_config(store, link))
                    server.fault("delay_after", times=100_000, delay_ms=250)
                    store.save_authorization(grant.link_name, response, clock_now=response.received_at)
                    reauthorized += 1
                elif grant.status not in (
                    GrantStatus.HEALTHY,
                    GrantStatus.REFRESHING,
                    GrantStatus.TRANSIENT_ERROR,
                ):
                    unexplained.append(f"{grant.link_name}: {grant.status} {grant.last_error}")
        server.reset()  # no more delays
        time.sleep(4.5)  # every lease of a killed keeper has expired
        final = run(env, "keeper", "--once", "--output", "json")
        store.close()
        store = open_store(env)
        final_alive = final_flagged = 0
        for grant in store.list_grants():
            if grant.status == GrantStatus.HEALTHY:
                # Alive means one more rotation commits: a newer token version, a token that works.
                fresh = keeper.fresh_token(store, grant.link_name, min_valid=3, client=client)
                final_alive += fresh.access_token is not None and fresh.token_version > grant.token_version
            elif "probably consumed by a lost response (sent at" in (grant.last_error or ""):
                final_flagged += 1
            else:
                unexplained.append(f"{grant.link_name}: {grant.status} {grant.last_error}")
    finally:
        client.close()
        store.close()
    _report(
        "kill-9",
        {
            "kills": kills,
            "kills_during_refresh": kills_in_flight,
            "flagged_lost_response": len(flagged_messages) + final_flagged,
            "reauthorized": reauthorized,
            "links": len(names),
            "final_alive": final_alive,
            "final_flagged": final_flagged,
            "unexplained": len(unexplained),
        },
    )
    assert kills >= kills_wanted
    assert kills_in_flight > 0, "no kill landed while a refresh was in flight: the test proved nothing"
    assert unexplained == [], unexplained[:5]
    assert final_alive + final_flagged == len(names)
    assert final.returncode == (1 if final_flagged else 0), final.stderr
    # A link is only ever flagged after a kill that landed while a refresh was in flight.
    assert len(flagged_messages) + final_flagged <= kills_in_flight
