"""services.views: link views show sealed fields as sealed, never a value."""

from __future__ import annotations

import pytest

from reconciler.domain.clock import iso_time
from reconciler.errors import LinkctlError
from reconciler.services import views
from reconciler.store.base import Store


def test_views_show_secrets_as_sealed_and_the_grant_status(store: Store) -> None:
    [view] = views.link_views(store)
    assert view["name"] == "crm" and view["status"] == "needs_authorization"
    assert view["source"] == "links/crm.yaml:1" and view["reauthorize_scopes"] == []
    detailed = views.detailed_view(store, views.stored_link(store, "crm"))
    assert detailed["spec"]["clientSecret"] == views.SEALED
    assert "client-secret-canary" not in repr(detailed)


def test_an_unknown_name_suggests_the_closest_link(store: Store) -> None:
    with pytest.raises(LinkctlError, match="no stored link named 'crn'") as info:
        views.stored_link(store, "crn")
    assert info.value.hint == "did you mean 'crm'?"


def test_status_text_names_scopes_that_need_a_new_consent() -> None:
    view = {"status": "healthy", "reauthorize_scopes": ["write"]}
    assert views.status_text(view) == "healthy; needs re-authorization for new scopes: write"
    assert iso_time(0.0, zulu=True) == "1970-01-01T00:00:00Z" and iso_time(None, zulu=True) is None
