"""``plan -o markdown``: summary first, deletions called out, secrets redacted, cut with a count."""

from __future__ import annotations

import dataclasses

from reconciler import plan as plans
from reconciler.render import code, render_markdown
from tests.unit.core.test_plan import compute, desired, stored


def test_summary_first_then_a_section_per_change_with_secrets_redacted() -> None:
    old = desired("a")
    plan = compute([desired("a", secret="other-canary", scopes=["a", "b"]), desired("b")], [stored(old)])
    text = render_markdown(plan)
    first = text.splitlines()[0]
    assert first.startswith("**Plan:** 1 to create, 1 to update") and "(state serial 7)" in first
    assert "### create: `b` (`google`)" in text and "### update: `a` (`google`)" in text
    assert '- scopes: ["a"]' in text and '+ scopes: ["a", "b"]' in text
    assert "~ clientSecret: (sensitive value changed)" in text
    assert "canary" not in text and "WARNING" not in text


def test_deletions_and_revocations_are_called_out_before_the_sections() -> None:
    gone, local = desired("gone"), desired("local")
    plan = compute([], [stored(gone), stored(local)], prune=True)
    changes = tuple(dataclasses.replace(c, revokes_tokens=c.link == "gone") for c in plan.changes)
    text = render_markdown(dataclasses.replace(plan, changes=changes))
    warning = text.index("> [!WARNING]")
    assert warning < text.index("### 🗑 delete: `gone`")
    assert "**deletes 2 link(s)**: `gone`, `local`" in text
    assert "**revokes the tokens of 1** at the provider: `gone`" in text
    assert "**Revokes its tokens at the provider**" in text and "Deletes the link locally only" in text


def test_no_changes_is_one_line_and_unchanged_links_only_with_verbose() -> None:
    a = desired("a")
    plan = compute([a], [stored(a)])
    assert render_markdown(plan) == "**No changes.** 1 link(s) up to date (state serial 7).\n"
    assert "- unchanged: `a`" in render_markdown(plan, verbose=True)


def test_a_long_plan_is_cut_at_whole_sections_and_says_how_many_are_left_out() -> None:
    plan = compute([desired(f"link-{i:03d}", scopes=["s"] * 20) for i in range(200)], [])
    text = render_markdown(plan, limit=5_000)
    assert len(text) <= 5_000
    shown = text.count("### create:")
    assert 0 < shown < 200
    assert f"… and {200 - shown} more change(s) not shown" in text
    assert text.rstrip().endswith("for the full plan._")
    assert "more change(s) not shown" not in render_markdown(plan)  # 200 links fit the default limit


def test_values_cannot_break_out_of_their_code_spans_or_blocks() -> None:
    assert code("a`b") == "``a`b``" and code("`x") == "`` `x ``"
    hostile = "``` <script>alert(1)</script>\n### injected"
    plan = compute([desired("a", clientId=hostile)], [])
    text = render_markdown(plan)
    fence = next(line for line in text.splitlines() if line.endswith("diff"))
    assert fence == "````diff"  # longer than the value's own backtick run
    assert "\n### injected" not in text  # the newline stays escaped inside the JSON value
    assert plans.CREATE in text
