"""What a keeper run did: one :class:`Outcome` per attempted link, summed up in a :class:`KeeperReport`."""

from __future__ import annotations

import dataclasses

from reconciler.domain.grants import GrantStatus

__all__ = ["FAILED", "OBTAINED", "REFRESHED", "SKIPPED", "KeeperReport", "Outcome"]

# Outcomes of one attempt on one link.
REFRESHED = "refreshed"
OBTAINED = "obtained"  # client credentials: tokens without a human step
FAILED = "failed"
SKIPPED = "skipped"  # lease held elsewhere, or no longer due


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one link in one attempt."""

    name: str
    result: str  # refreshed | obtained | failed | skipped
    status: GrantStatus | None = None
    message: str | None = None


@dataclasses.dataclass
class KeeperReport:
    """Counts and names of one keeper run (``linkctl keeper --once`` prints it)."""

    refreshed: list[str] = dataclasses.field(default_factory=list)
    obtained: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> status message
    skipped: list[str] = dataclasses.field(default_factory=list)
    waiting_for_authorization: list[str] = dataclasses.field(default_factory=list)  # never authorized
    broken: dict[str, str] = dataclasses.field(default_factory=dict)  # needs re-authorization / config

    @property
    def ok(self) -> bool:
        """False when a refresh failed now or a link is broken; waiting links are not failures."""
        return not self.failed and not self.broken

    @property
    def newsworthy(self) -> bool:
        """True when a refresh was attempted or something is broken (cron mails only for news).

        A link that merely waits for its first authorization, or whose lease another
        keeper held, is not news: ``keeper --once`` from cron stays silent then.
        """
        return bool(self.refreshed or self.obtained or self.failed or self.broken)

    def add(self, outcome: Outcome) -> None:
        """Count one outcome."""
        if outcome.result == REFRESHED:
            self.refreshed.append(outcome.name)
        elif outcome.result == OBTAINED:
            self.obtained.append(outcome.name)
        elif outcome.result == FAILED:
            self.failed[outcome.name] = outcome.message or outcome.status or "failed"
        else:
            self.skipped.append(outcome.name)

    def summary(self) -> str:
        """One line for humans."""
        return (
            f"refreshed {len(self.refreshed)}, obtained {len(self.obtained)}, failed {len(self.failed)},"
            f" skipped {len(self.skipped)}, waiting for authorization {len(self.waiting_for_authorization)},"
            f" broken {len(self.broken)}"
        )

    def as_dict(self) -> dict[str, object]:
        """JSON form (``--output json``); names and status messages only, never tokens."""
        return {
            "ok": self.ok,
            "refreshed": sorted(self.refreshed),
            "obtained": sorted(self.obtained),
            "failed": dict(sorted(self.failed.items())),
            "skipped": sorted(self.skipped),
            "waiting_for_authorization": sorted(self.waiting_for_authorization),
            "broken": dict(sorted(self.broken.items())),
        }
