"""services.links_page: attention first, filters, pages, and a link's detail with doctor's fix.

Runs on the real SQLite store with links in each status (failures written through the
lease API, as the keeper writes them), and over the same population as the benchmark.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import Any

import pytest

from reconciler.domain.grants import GrantStatus
from reconciler.errors import LinkctlError, UsageError
from reconciler.services import links_page
from reconciler.store.base import Store
from tests.conftest import ROOT


def _bench_populate() -> Any:
    """The benchmark's own population (its mix of statuses), loaded from bench/bench_pages.py."""
    spec = importlib.util.spec_from_file_location("bench_pages", ROOT / "bench" / "bench_pages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.populate


@pytest.fixture
def filled(open_: Callable[[], Store]) -> Store:
    store = open_()
    _bench_populate()(store, 120, time.time())
    return store


def test_links_needing_attention_come_first_in_urgency_order(filled: Store) -> None:
    data = links_page.links_page(filled, page_size=1000)
    ranks = [row["rank"] for row in data.rows if row["attention"]]
    assert ranks == sorted(ranks) and data.rows[0]["status"] == GrantStatus.CONFIGURATION_ERROR
    first_calm = next(i for i, row in enumerate(data.rows) if not row["attention"])
    assert all(row["attention"] for row in data.rows[:first_calm])
    assert not any(row["attention"] for row in data.rows[first_calm:])
    assert data.attention == first_calm and data.all_links == 120
    assert sum(data.counts.values()) == 120 and data.counts["pending_credentials"] == 6
    transient = next(row for row in data.rows if row["status"] == "transient_error")
    assert transient["status_label"].startswith("transient error, next retry 20")


def test_filters_and_pages(filled: Store) -> None:
    page = links_page.links_page(filled, status="needs_authorization", provider="google")
    assert page.rows and all(
        r["status"] == "needs_authorization" and r["provider"] == "google" for r in page.rows
    )
    attention = links_page.links_page(filled, status="attention")
    assert attention.total == links_page.links_page(filled).attention
    two = links_page.links_page(filled, page=2, page_size=50)
    assert two.pages == 3 and len(two.rows) == 50 and two.total == 120
    with pytest.raises(UsageError, match="page 4 does not exist"):
        links_page.links_page(filled, page=4, page_size=50)
    with pytest.raises(UsageError, match="unknown status 'bogus'") as info:
        links_page.links_page(filled, status="bogus")
    assert info.value.hint and "healthy" in info.value.hint
    with pytest.raises(UsageError, match="unknown provider"):
        links_page.links_page(filled, provider="yahoo")


def test_the_detail_gives_the_fix_doctor_gives(filled: Store) -> None:
    broken = next(r["name"] for r in links_page.links_page(filled, status="configuration_error").rows)
    detail = links_page.link_page(filled, broken)
    assert "AADSTS7000222" in detail["last_error"]
    assert detail["next_step"] and "fix the client registration" in detail["next_step"]
    assert detail["can_refresh"] and detail["has_client_secret"]
    assert ("token endpoint", "https://idp.example/token") in detail["endpoints"]
    assert detail["events"] == [] or all("at" in e for e in detail["events"])
    pending = next(r["name"] for r in links_page.links_page(filled, status="pending_credentials").rows)
    step = links_page.link_page(filled, pending)["next_step"]
    assert "register the redirect URL" in step and "client ID and secret" in step
    with pytest.raises(LinkctlError, match="no stored link named 'nope'"):
        links_page.link_page(filled, "nope")


def test_no_secret_in_any_row(filled: Store) -> None:
    text = repr(links_page.links_page(filled, page_size=1000)) + repr(
        links_page.link_page(filled, "link-00001")
    )
    assert "bench-secret" not in text and "'rt'" not in text and "'at'" not in text


def test_the_instance_base_url_comes_from_the_redirect_urls(
    filled: Store, open_: Callable[[], Store]
) -> None:
    assert links_page.instance_base_url(filled) == "http://127.0.0.1:8080"
    assert links_page.instance_base_url(open_()) == "http://127.0.0.1:8080"  # same file
