"""services.apply: the guards around the write, without the CLI."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from reconciler.errors import ConfigError, StalePlan
from reconciler.services import apply
from reconciler.store.base import Store


@dataclasses.dataclass
class _Declared:
    instance: Any = None
    links: list[Any] = dataclasses.field(default_factory=list)
    files: list[str] = dataclasses.field(default_factory=lambda: ["a.yaml"])


def test_prune_over_inputs_that_declare_nothing_is_refused() -> None:
    with pytest.raises(ConfigError, match="declare no Instance"):
        apply.check_prune_inputs(_Declared(), ["links/"], allow_empty=False)  # type: ignore[arg-type]
    apply.check_prune_inputs(_Declared(), ["links/"], allow_empty=True)  # type: ignore[arg-type]


def test_a_store_of_another_instance_must_be_adopted(store: Store) -> None:
    with pytest.raises(ConfigError, match="belongs to Instance 'prod'") as info:
        apply.check_instance(store, ["links/"], "prod", "staging", None)
    assert info.value.hint and "--adopt-store prod" in info.value.hint
    apply.check_instance(store, ["links/"], "prod", "staging", "prod")
    with pytest.raises(ConfigError, match="records no Instance yet"):
        apply.check_instance(store, ["links/"], None, "staging", "prod")


def test_a_saved_plan_is_refused_once_the_store_moved_on() -> None:
    @dataclasses.dataclass
    class _Plan:
        serial: int
        instance: str | None = "prod"

        def same_changes(self, other: Any) -> bool:
            return True

    with pytest.raises(StalePlan, match="state serial 1 but the store is at 2"):
        apply.check_saved_plan(_Plan(1), _Plan(2))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="made for Instance 'prod'"):
        apply.check_saved_plan(_Plan(2), _Plan(2, "staging"))  # type: ignore[arg-type]
    apply.check_saved_plan(_Plan(2), _Plan(2))  # type: ignore[arg-type]


def test_no_deletion_needs_no_token_client(store: Store) -> None:
    def no_client() -> Any:
        raise AssertionError("a client was built")

    with apply.revocations(store, [], client_factory=no_client, notice=print) as revoke:
        assert revoke() == 0
