"""The report's replicate sections. Training seeds: drawn from ``OUT/replicates.json`` (``tff demo``) or
``OUT/color_robust/replicates.json`` (a study training its colour-robust detector with several seeds) — each
headline claim's verdict per replicate and over them, and each headline statistic per replicate with its interval
and over replicates (median and range); a claim holds only when every replicate shows it. Ranking replicates
(resampled source sets): :func:`section_ranking_replicates`.

``replicates.json``: ``{"replicates": [labels], "unit": str, "note": str, "claims": [{"claim", "holds",
"per_replicate": {label: verdict}}], "columns": [str], "rows": [[cell, …]]}`` (cells already formatted)."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from ..results import read_json
from .tables import html_table


def replicates_file(out: Path) -> Path | None:
    """The study's replicates: ``OUT/replicates.json`` (written by ``tff demo``) or, for a study that trains its
    colour-robust detector with several seeds, ``OUT/color_robust/replicates.json``."""
    return next((p for p in (out / "replicates.json", out / "color_robust" / "replicates.json") if p.is_file()), None)


def section_replicates(out: Path) -> dict | None:
    path = replicates_file(out)
    if path is None:
        return None
    rep = read_json(path)
    labels = rep["replicates"]
    claims = pd.DataFrame([{"claim": c["claim"], "holds (over replicates)": c["holds"],
                            **{label: c["per_replicate"].get(label, "–") for label in labels}}
                           for c in rep["claims"]])
    held = sum(c["holds"] == "yes" for c in rep["claims"])
    sentence = (f"{len(labels)} replicates ({rep['unit']}s). {held} of {len(rep['claims'])} headline claims hold in "
                f"every replicate; a claim shown in some replicates only is reported as such, never as a finding. "
                + rep.get("note", ""))
    body = (html_table(claims) + "<details open><summary>Headline statistics per replicate (95% interval) and over "
            "replicates</summary>" + html_table(pd.DataFrame(rep["rows"], columns=rep["columns"]),
                                         set_columns=rep["columns"][:2]) + "</details>")
    return {"id": "replicates", "title": "Replicates: the headline claims", "sentence": html.escape(sentence),
            "body": body, "figures": []}


def _range(over: dict, scale: float, signed: bool) -> str:
    f = "{:+.1f}" if signed else "{:.1f}"
    if not over.get("n"):
        return "–"
    return (f"{f.format(scale * over['median'])} ({f.format(scale * over['min'])} … {f.format(scale * over['max'])}), "
            f"{over['n']} replicates")


def section_ranking_replicates(out: Path) -> dict | None:
    """The headline numbers that depend on the ranking, for the ranking of all source images (with its 95% interval)
    and over the ranking replicates (``tff rank --replicates``: resampled source sets; median and range), with the
    verdict of each claim per replicate — from ``rank/ffrs.json``, ``dropout/dropout.json`` and
    ``color/color.json``."""
    rank = out / "rank" / "ffrs.json"
    if not rank.is_file() or "replicates" not in (summary := read_json(rank)):
        return None
    rep = summary["replicates"]
    rows = [{"headline number": f"top-{summary['k']} overlap with the ranking of all source images",
             "all source images (95% interval)": "100", "over replicates: median (range)":
             _range(rep["top_k_overlap"] | {"n": rep["replicates"]}, 100, False), "claim holds": "–"}]
    dropout = out / "dropout" / "dropout.json"
    for f in read_json(dropout).get("ranking_replicates", []) if dropout.is_file() else []:
        a = f["all_sources"]
        rows.append({"headline number": f"ΔAP (mean over sets, pp) dropping the top-{f['k']}",
                     "all source images (95% interval)": f"{100 * a['delta']:+.1f} [{100 * a['low']:+.1f}, "
                                                         f"{100 * a['high']:+.1f}]",
                     "over replicates: median (range)": _range(f["replicates"], 100, True),
                     "claim holds": f"lowers AP — all sources: {a['holds']}; replicates: {f['holds']}"})
    color = out / "color" / "color.json"
    for c in read_json(color).get("ranking_replicates", []) if color.is_file() else []:
        a = c["all_sources"]
        rows.append({"headline number": f"{c['set']}: colour-conditional top-{summary['k']} T-FF by effect size, %",
                     "all source images (95% interval)": f"{a['estimate']:.1f} [{a['low']:.1f}, {a['high']:.1f}]",
                     "over replicates: median (range)": _range(c["replicates"], 1, False), "claim holds": "–"})
    sentence = (f"The ranking was repeated on {rep['replicates']} resampled source sets ({rep['unit']}); each headline "
                "number that depends on it is shown for the ranking of all source images, with its 95% interval, and "
                "over the replicates (median and range). A claim is judged in each replicate on its own interval and "
                "holds only when every replicate shows it.")
    return {"id": "ranking-replicates", "title": "Replicates of the ranking: how much the headline numbers move",
            "sentence": html.escape(sentence), "body": html_table(pd.DataFrame(rows)), "figures": []}
