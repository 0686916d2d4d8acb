"""Many keeper processes against one store and the rotating oracle: the multi-machine harness.

Used by tests/integration/postgres/ (and runnable against SQLite, the same code):

- :func:`authorized_links` creates ``count`` links at the oracle, one registered client
  each (so the oracle's request log names the link of every refused refresh), authorized
  concurrently and stored through the store interface;
- :class:`KeeperProcess` is one ``linkctl keeper`` process of a "machine" (a group label,
  its own process and connection pool), optionally with its clock shifted by libfaketime;
  its stderr goes to a file with the keeper's own log lines (``…: name: refreshed (token
  version N)``, in the daemon's text event log), from which :func:`commits` reads who
  committed which token version;
- :func:`token_burst` runs concurrent ``linkctl token`` calls;
- :func:`in_flight_by` / :func:`leases_by` read what a process holds from the store.

Needs libfaketime for skewed keepers (:func:`faketime_env`): skipped locally without
it, a failure under CI=true.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reconciler.domain.grants import Grant
from reconciler.keeper import client_config
from reconciler.oauth.client import TokenClient
from reconciler.settings import Settings
from reconciler.store import open_store
from reconciler.store.base import LinkWrite, Store
from tests.conftest import ROOT, require
from tests.support.oracle import OidcServer, OracleClient
from tests.support.oracle_links import authorize, link_for, linkctl

# The backends of the long runs (see tests/integration/postgres/conftest.py).
CLUSTER_BACKENDS = [b for b in os.environ.get("LINKCTL_CLUSTER_BACKENDS", "postgresql").split(",") if b]
# A keeper process whose INFO log lines (every committed refresh) go to stderr, with the
# moment each was written; otherwise exactly `linkctl keeper …`.
# Under libfaketime, Python's time.sleep (clock_nanosleep with an absolute deadline) fails
# with EINVAL or hangs; a skewed keeper sleeps through Event.wait instead (skew tests only).
_BOOT = (
    "import logging, os, sys, threading, time;"
    "time.sleep = (lambda s: threading.Event().wait(s) and None)"
    " if os.environ.get('FAKETIME') else time.sleep;"
    "logging.basicConfig(level=logging.INFO, stream=sys.stderr,"
    " format='%(created).3f %(levelname)s %(message)s');"
    "from reconciler.cli import main; sys.exit(main(sys.argv[1:]))"
)
# The keeper's own commit line, in its text event log (``info: linkctl.keeper: NAME: refreshed
# (token version N)``) or through the root logger of _BOOT (``TIME INFO NAME: ...``).
_COMMIT = re.compile(
    r"(?:^\S+ INFO |: )(?P<link>[^\s:]+): (?:refreshed|obtained) \(token version (?P<version>\d+)\)$"
)


def open_env_store(env: dict[str, str]) -> Store:
    """Open the store that ``env`` names (any backend, by URL, as linkctl does)."""
    return open_store(Settings.from_env(env), notice=lambda _: None)


def faketime_env(offset_seconds: float) -> dict[str, str]:
    """Environment running a process with its wall clock ``offset_seconds`` off (libfaketime, preloaded).

    Preloaded rather than through the ``faketime`` wrapper, which forks: signals sent to
    the wrapper (SIGSTOP, SIGKILL) would miss the keeper itself.
    """
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    require(found, "libfaketime is not installed (Debian package faketime)")
    return {
        "LD_PRELOAD": found[0],
        "FAKETIME": f"{offset_seconds:+g}s",
        # The wall clock is what differs between machines; monotonic timers stay real.
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


@dataclasses.dataclass
class KeeperProcess:
    """One ``linkctl keeper`` process of a group (a "machine"), possibly with a skewed clock."""

    name: str
    group: str
    skew: float
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The keeper's pid."""
        return self.process.pid

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal (SIGSTOP, SIGCONT, SIGKILL, SIGTERM)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def log(self) -> str:
        """Its stderr so far."""
        return self.log_path.read_text(errors="replace")

    def commits(self) -> list[tuple[str, int]]:
        """``(link, token version)`` of every refresh this keeper committed, in order."""
        return [
            (m["link"], int(m["version"])) for line in self.log().splitlines() if (m := _COMMIT.search(line))
        ]


def start_keeper(
    env: dict[str, str], args: Sequence[str], *, name: str, group: str, skew: float, logs: Path
) -> KeeperProcess:
    """Start ``linkctl keeper ARGS`` as process ``name`` of ``group`` (its clock ``skew`` s off)."""
    child_env = {**env, **(faketime_env(skew) if skew else {})}
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, "keeper", *args],
            env=child_env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=ROOT,
        )
    return KeeperProcess(name, group, skew, process, log_path)


def stop_keepers(keepers: Iterable[KeeperProcess], *, timeout: float = 30) -> dict[str, int]:
    """SIGTERM (after SIGCONT) every live keeper and wait; exit code by keeper name."""
    keepers = list(keepers)
    for keeper in keepers:
        keeper.signal(signal.SIGCONT)
        keeper.signal(signal.SIGTERM)
    codes = {}
    for keeper in keepers:
        try:
            codes[keeper.name] = keeper.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            keeper.process.kill()
            codes[keeper.name] = keeper.process.wait()
    return codes


def _link(server: OidcServer, registered: OracleClient, name: str) -> LinkWrite:
    return link_for(server, registered, name)


def authorized_links(
    server: OidcServer, store: Store, names: Sequence[str], client: TokenClient, *, parallel: int = 8
) -> dict[str, str]:
    """Create and authorize ``names`` at the oracle, one client each; ``{client_id: link}``."""
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        clients = list(pool.map(lambda _: server.register_client(), names))
    with store.write(expected_serial=None, actor="test") as tx:
        for name, registered in zip(names, clients, strict=True):
            tx.put_link(_link(server, registered, name))
    configs = []
    for name in names:
        link = store.get_link(name)
        assert link is not None
        configs.append(client_config(store, link))  # the store stays in this thread
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        responses = list(pool.map(lambda config: authorize(server, client, config), configs))
    for name, response in zip(names, responses, strict=True):
        assert response.refresh_token is not None
        store.save_authorization(name, response, clock_now=response.received_at)
    return {registered.client_id: name for name, registered in zip(names, clients, strict=True)}


def run_token(env: dict[str, str], name: str, min_valid: str) -> subprocess.CompletedProcess[str]:
    """One ``linkctl token NAME --min-valid S`` (stdout captured, never printed)."""
    return subprocess.run(
        linkctl("token", name, "--min-valid", min_valid),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def token_burst(
    env: dict[str, str], names: Sequence[str], min_valids: Sequence[str]
) -> list[subprocess.CompletedProcess[str]]:
    """Concurrent ``linkctl token`` calls, one per ``(name, min_valid)`` pair."""
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        return list(pool.map(lambda pair: run_token(env, *pair), zip(names, min_valids, strict=True)))


def held_by(grants: Iterable[Grant], pids: Iterable[int], *, in_flight: bool) -> dict[str, int]:
    """Links whose lease a process of ``pids`` holds (only those marked in flight, if asked): version."""
    marks = {f":{pid}:" for pid in pids}
    out = {}
    for grant in grants:
        owner = grant.lease_owner or ""
        if any(mark in owner for mark in marks) and (grant.in_flight_since is not None or not in_flight):
            out[grant.link_name] = grant.token_version
    return out


def versions(store: Store) -> dict[str, int]:
    """Token version of every grant."""
    return {g.link_name: g.token_version for g in store.list_grants()}
