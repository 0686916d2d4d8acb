"""Benchmark: the links page of 10,000 links, rendered in process and served by ``linkctl serve``.

A store gets N links in every status the page knows (most healthy; some needing
authorization, pending credentials, in transient or configuration error). Then:

1. in process, the parts of one ``GET /``: the store reads (the floor: no page can be
   faster than reading what it shows), ``linkctl list``'s views of every link (the peer:
   what building every row in full costs), the list data (every link triaged for order,
   filters and counts, the shown rows built: ``services.links_page``), and the HTML of the
   first page (200 rows) — plus all N rows on one page (what an unpaginated list costs);
2. over HTTP, ``GET /`` and ``GET /?status=attention`` with an admin session against a real
   ``linkctl serve`` on the same store (median and worst of the runs).

The page is **paginated** (200 rows a page, links needing attention first, counts over
all links); the budget is 0.5 s for ``GET /`` of 10,000 links. Run::

    python bench/bench_pages.py [--links 10000] [--runs 15]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.domain.grants import FailureRecord, GrantStatus, TokenCommit
from reconciler.domain.tokens import TokenResponse
from reconciler.secrets import Secret
from reconciler.services.links_page import PAGE_SIZE
from reconciler.settings import Settings
from reconciler.store import open_store
from reconciler.store.base import LinkWrite, Store

BUDGET = 0.5  # seconds for GET / of 10,000 links (issue 10)


def _spec(i: int, *, credentials: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "provider": "custom" if i % 3 else "google",
        "scopes": ["read", "offline_access"],
        "grant": "authorization_code",
        "clientAuth": "client_secret_basic",
        "authorizationEndpoint": "https://idp.example/authorize",
        "tokenEndpoint": "https://idp.example/token",
        # Plain http on loopback, as `linkctl serve` is reached here (https would make the
        # session cookie Secure, which a plain-http client never sends back).
        "redirectUri": f"http://127.0.0.1:8080/oauth/callback/link-{i:05d}",
    }
    if credentials:
        spec.update(clientId=f"client-{i}", clientSecret={"$secret": "clientSecret"})
    return spec


def populate(store: Store, n: int, now: float) -> dict[str, int]:
    """N links: 1 in 20 without credentials, 1 in 20 never authorized, 1 in 50 failing; the rest healthy."""
    names = [f"link-{i:05d}" for i in range(n)]
    pending = {name for i, name in enumerate(names) if i % 20 == 7}
    unauthorized = {name for i, name in enumerate(names) if i % 20 == 13}
    with store.write(expected_serial=None, actor="bench") as tx:
        for i, name in enumerate(names):
            credentials = name not in pending
            tx.put_link(
                LinkWrite(
                    name=name,
                    provider="custom" if i % 3 else "google",
                    spec=_spec(i, credentials=credentials),
                    spec_hash=hashlib.sha256(name.encode()).hexdigest(),
                    secrets={"clientSecret": Secret("bench-secret")} if credentials else {},
                    secret_fingerprints={"clientSecret": "fp"} if credentials else {},
                    source_file=f"links/team-{i % 40:02d}.yaml",
                    source_line=1 + 12 * (i // 40),
                )
            )
    answer = TokenResponse(
        access_token=Secret("at"),
        refresh_token=Secret("rt"),
        token_type="Bearer",
        expires_in=3600,
        scope="read offline_access",
        received_at=now,
    )
    authorized = [name for name in names if name not in pending and name not in unauthorized]
    for start in range(0, len(authorized), 500):  # the keeper's own batch writes: fast to fill
        leased = store.acquire_leases(authorized[start : start + 500], owner="bench", ttl=60, now=now)
        commits = [TokenCommit(g.link_name, g.token_version, answer, now + 3000) for g in leased]
        store.commit_tokens_many(commits, owner="bench", now=now)
    failing = authorized[::50]
    leased = store.acquire_leases(failing, owner="bench", ttl=60, now=now)
    records = [
        FailureRecord(
            name=g.link_name,
            expected_version=g.token_version,
            status=GrantStatus.TRANSIENT_ERROR if k % 2 else GrantStatus.CONFIGURATION_ERROR,
            error_class="transient" if k % 2 else "configuration_error",
            message="HTTP 503 from the token endpoint" if k % 2 else "invalid_client: AADSTS7000222",
            retry_at=now + 300 if k % 2 else None,
            lost_response=False,
        )
        for k, g in enumerate(leased)
    ]
    store.record_failures_many(records, owner="bench", now=now)
    return {"links": n, "pending": len(pending), "unauthorized": len(unauthorized), "failing": len(records)}


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """(median, worst) seconds of ``runs`` calls (one warm-up call first)."""
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), max(samples)


def in_process(store: Store, runs: int) -> dict[str, tuple[float, float]]:
    """The parts of GET / timed in this process (no HTTP)."""
    from reconciler.server import html
    from reconciler.services import links_page, views

    def render(page_size: int) -> str:
        data = links_page.links_page(store, page_size=page_size)
        return html.render_text(
            "links.html",
            {
                "title": "Application links",
                "session": None,
                "csrf": "x",
                "data": data,
                "statuses": [(s.value, label) for s, label in links_page.STATUS_LABELS.items()],
                "page_url": lambda page: f"/?page={page}",
            },
        )

    n = len(store.list_links())
    return {
        "store reads (list_links + list_grants)": timed(
            lambda: (store.list_links(), store.list_grants()), runs
        ),
        "linkctl list's views of all links": timed(lambda: views.link_views(store), runs),
        "list data (links_page)": timed(lambda: links_page.links_page(store), runs),
        "first page rendered (200 rows)": timed(lambda: render(links_page.PAGE_SIZE), runs),
        f"all {n} rows on one page": timed(lambda: render(n), max(3, runs // 3)),
    }


def over_http(env: dict[str, str], runs: int) -> dict[str, tuple[float, float]]:
    """GET / through a real linkctl serve with an admin session."""
    from tests.support.pages import Admin
    from tests.support.server import create_key, serve

    key = create_key(env, "--admin", "--links", "*")
    with serve(env) as served, Admin(served.base_url).logged_in(key) as admin:

        def get(path: str) -> None:
            answer = admin.get(path)
            assert answer.status_code == 200 and "link-" in answer.text, answer.status_code

        size = len(admin.get("/").content)
        figures = {
            "GET / (first page)": timed(lambda: get("/"), runs),
            "GET /?status=attention": timed(lambda: get("/?status=attention"), runs),
            "GET /links/link-00042": timed(lambda: get("/links/link-00042"), runs),
        }
        figures[f"(page size {size / 1024:.0f} KiB)"] = (0.0, 0.0)
        return figures


def main() -> None:
    """Populate, measure, print figures and their ratio to the budget."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        key = base64.b64encode(hashlib.sha256(tmp.encode()).digest()).decode()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LINKCTL_", "SOPS_"))}
        env.update(
            HOME=tmp,
            LINKCTL_STATE=f"sqlite:///{Path(tmp) / 'state.db'}",
            LINKCTL_STATE_KEY=key,
            PYTHONPATH=str(Path(__file__).resolve().parent.parent),
        )
        store = open_store(Settings.from_env(env), notice=lambda _: None)
        start = time.perf_counter()
        mix = populate(store, args.links, time.time())
        print(f"populated {mix} in {time.perf_counter() - start:.1f} s")
        rows = {**in_process(store, args.runs), **over_http(env, args.runs)}
        store.close()
    print(f"{'what':40} {'median':>9} {'worst':>9} {'median/budget':>14}")
    for what, (median, worst) in rows.items():
        if median == 0.0:
            print(what)
            continue
        print(f"{what:40} {median * 1000:7.1f}ms {worst * 1000:7.1f}ms {median / BUDGET:13.2f}x")
    print(f"budget: GET / of {args.links} links in {BUDGET:g} s (paginated, {PAGE_SIZE} rows a page)")


if __name__ == "__main__":
    main()
