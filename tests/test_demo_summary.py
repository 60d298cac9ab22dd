"""The demo figures of the README and docs/demo.md are the committed demo summary's Markdown (no demo number is
typed by hand), and the summary judges each claim on its intervals."""

from __future__ import annotations

import html
import json
from pathlib import Path

from tffkit.analysis.replicates import color_claims
from tffkit.demo.summary import claims_markdown, marked_block, summary_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_readme_demo_figures_are_the_committed_summary():
    """The README shows the claims, docs/demo.md every figure: both the committed summary's Markdown."""
    summary = json.loads((ROOT / "docs" / "demo_summary.json").read_text())
    assert marked_block((ROOT / "README.md").read_text()) == claims_markdown(summary)
    assert marked_block((ROOT / "docs" / "demo.md").read_text()) == summary_markdown(summary)
    assert summary_markdown(summary).startswith(claims_markdown(summary))


def _sets(change: tuple[float, float], less: tuple[float, float], more: tuple[float, float]) -> dict:
    def iv(pair: tuple[float, float]) -> dict:
        return {"estimate": sum(pair) / 2, "low": pair[0], "high": pair[1]}
    return {"universal:change": iv(change), "change_difference": iv(less), "share_difference": iv(more)}


def test_a_claim_holds_only_where_every_interval_is_on_its_side():
    sets = {"train": _sets((-90, -80), (70, 90), (10, 30)), "a": _sets((-80, -60), (20, 50), (5, 20)),
            "b": _sets((-30, 5), (-10, 20), (-30, -5))}
    falls, less, shares = color_claims(sets, ["train"])
    assert falls["per_set"] == {"a": True, "b": None} and falls["holds"] == "not shown"  # b's interval includes 0
    assert less["per_set"] == {"a": True, "b": None} and less["holds"] == "not shown"
    assert shares["per_set"] == {"train": True, "a": True, "b": False} and shares["holds"] == "no"  # b: CR above
    assert [c["holds"] for c in color_claims({"a": sets["a"]}, ["train"])] == ["yes", "yes", "yes"]
    assert [c["holds"] for c in color_claims({"a": {}}, ["train"])] == ["not shown"] * 3


def test_the_report_shows_each_claim_per_replicate(tmp_path):
    """``replicates.json`` (as the demo writes it) becomes the report's first section: every claim with its verdict
    over the seeds and in each seed, every statistic per seed and over seeds."""
    from tffkit.demo.summary import report_replicates
    from tffkit.report.section_replicates import section_replicates
    from tffkit.results import write_json

    summary = json.loads((ROOT / "docs" / "demo_summary.json").read_text())
    write_json(tmp_path / "replicates.json", report_replicates(summary))
    section = section_replicates(tmp_path)
    seeds = [f"seed {s}" for s in summary["seeds"]]
    for claim in summary["claims"]:
        assert html.escape(claim["claim"][:40]) in section["body"]
    assert all(f"<th>{s}</th>" in section["body"] for s in seeds)
    held = sum(c["holds"] == "yes" for c in summary["claims"])
    assert f"{held} of {len(summary['claims'])} headline claims hold in every replicate" in section["sentence"]
    assert section_replicates(tmp_path / "none") is None
