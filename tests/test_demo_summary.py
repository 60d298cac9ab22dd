"""The README's demo figures are the committed demo summary's Markdown (no demo number is typed by hand), and the
summary judges each claim on its intervals."""

from __future__ import annotations

import json
from pathlib import Path

from tffkit.demo.summary import _claims, readme_block, summary_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_readme_demo_figures_are_the_committed_summary():
    summary = json.loads((ROOT / "docs" / "demo_summary.json").read_text())
    assert readme_block((ROOT / "README.md").read_text()) == summary_markdown(summary)


def _sets(change: tuple[float, float], share: tuple[float, float]) -> dict:
    return {"median_change_pp": {"estimate": sum(change) / 2, "low": change[0], "high": change[1]},
            "conditional_effect_pct": {"estimate": sum(share) / 2, "low": share[0], "high": share[1]}}


def test_a_claim_holds_only_where_every_interval_is_on_its_side():
    uni = {"train": _sets((-90, -80), (70, 90)), "a": _sets((-80, -60), (60, 80)), "b": _sets((-30, 5), (40, 60))}
    cr = {"train": _sets((-5, 0), (10, 30)), "a": _sets((-20, -10), (20, 50)), "b": _sets((-10, 0), (65, 80))}
    claims = _claims({"universal": {"sets": uni}, "colour_robust": {"sets": cr}}, "train")
    falls, less, shares = claims
    assert falls["per_set"] == {"a": True, "b": None} and falls["holds"] == "not shown"  # b's interval includes 0
    assert less["per_set"] == {"a": True, "b": None} and less["holds"] == "not shown"  # b's intervals overlap
    assert shares["per_set"] == {"train": True, "a": True, "b": False} and shares["holds"] == "no"  # b: CR above
    only_a = _claims({"universal": {"sets": {"a": uni["a"]}}, "colour_robust": {"sets": {"a": cr["a"]}}}, "train")
    assert [c["holds"] for c in only_a] == ["yes", "yes", "yes"]
    missing = _claims({"universal": {"sets": {"a": {}}}, "colour_robust": {"sets": {}}}, "train")
    assert [c["holds"] for c in missing] == ["not shown"] * 3
