"""Report section "Does the ranking find what matters? (faithfulness)": AOPC of every ranking's deletion curve with
its 95% interval over the groups of test images and its percentile in the null of random rankings, differences
written as a direction only where their interval excludes zero, with the sanity checks beside the numbers
(docs/algorithms.md §8)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..results import read_json
from ..wording import direction
from .tables import html_table, mark


def _aopc(row: pd.Series) -> str:
    return f"{row['aopc']:.1f} [{row['aopc_low']:.1f}, {row['aopc_high']:.1f}]"


def _diff(row: pd.Series, name: str) -> str | None:
    if f"diff_{name}" not in row or pd.isna(row[f"diff_{name}"]):
        return None
    return direction(row[f"diff_{name}"], row[f"diff_{name}_low"], row[f"diff_{name}_high"])


def _rows(info: dict, summary: pd.DataFrame, sets: Sequence[str], train: Sequence[str]) -> list[dict]:
    sanity, k = info["sanity"], info["sanity"]["top_k"]
    rows = []
    for name, label in info["rankings"].items():
        part = summary[summary["ranking"] == name].set_index(["set", "metric"])
        if part.empty:
            continue
        ap = part.loc[("all", "ap")]
        random = name == "random"
        row = {"ranking": label, "AOPC of AP, mean over test sets (pp) [95% interval]": _aopc(ap),
               "percentile among the random rankings": None if random else ap.get("null_percentile"),
               "against the random mean": None if random else _diff(ap, "vs_random"),
               "against FF-RS": _diff(ap, "vs_ffrs"),
               "AOPC of fake accuracy (pp)": _aopc(part.loc[("all", "fake_acc")])}
        for s in sets:
            row[f"{mark(s, train)}: AOPC of AP (pp)"] = _aopc(part.loc[(s, "ap")])
        flat = [s for s, ok in info.get("monotone", {}).get(name, {}).get("ap", {}).items() if not ok]
        row["AP curve not monotone on"] = ", ".join(flat) if flat else ("–" if random else "none")
        half = sanity["split_half"].get(name)
        row["split halves: Spearman ρ"] = half["spearman"] if half else None
        boot = sanity.get("bootstrap", {}).get(name)
        row[f"bootstrap: top-{k} kept (%)"] = boot["top_k_kept"][str(k)] if boot else None
        rows.append(row)
    return rows


def _rises_text(info: dict) -> str:
    """Which curves rise (units whose removal raises AP: ω counts positive relevance only)."""
    parts = []
    for name, by_metric in info.get("rises", {}).items():
        for s, rises in by_metric.get("ap", {}).items():
            ks = ", ".join(f"k = {r['k']} (+{r['rise_pp']:.1f} pp"
                           + (", above the undropped AP)" if r["above_baseline"] else ")") for r in rises)
            parts.append(f"{info['rankings'].get(name, name)} on {s}: {ks}")
    if not parts:
        return " Every non-random AP curve falls monotonically with k."
    return " AP rises as more units are dropped (not monotone) for " + "; ".join(parts) + "."


def _by_k_table(folder: Path, info: dict, train: Sequence[str]) -> str:
    """Every k: each ranking's drop of AP per test set with its interval, and (non-random) its percentile among the
    random rankings' drops at that k."""
    path = folder / "faithfulness_by_k.csv"
    if not path.is_file():
        return ""
    by_k = pd.read_csv(path, keep_default_na=False, na_values=[""])
    by_k = by_k[by_k["metric"] == "ap"]
    rows = []
    for (name, k), part in by_k.groupby(["ranking", "k"], sort=False):
        row = {"ranking": info["rankings"].get(name, name), "k": int(k)}
        for _, r in part.iterrows():
            cell = f"{r['drop_pp']:.1f} [{r['drop_low']:.1f}, {r['drop_high']:.1f}]"
            if "null_percentile" in r and pd.notna(r["null_percentile"]):
                cell += f" (p{r['null_percentile']:.0f})"
            row[f"{mark(r['set'], train)}: AP drop (pp)"] = cell
        rows.append(row)
    return ("<p>Every k: the drop of AP in percentage points with its 95% interval and, in brackets, its percentile "
            "among the random rankings' drops at that k (random: the mean over its rankings):</p>"
            + html_table(pd.DataFrame(rows), {"k": "int"}))


def section_faithfulness(out: Path, figures, train: Sequence[str] = ()) -> dict | None:
    """The faithfulness table (one row per ranking), the randomisation table, a verdict per ranking and the curves;
    ``train``: the detector's training family (marked †)."""
    folder = out / "faithfulness"
    if not (folder / "faithfulness.json").is_file():
        return None
    info = read_json(folder / "faithfulness.json")
    summary = pd.read_csv(folder / "faithfulness_summary.csv", keep_default_na=False, na_values=[""])
    sanity = info["sanity"]
    k = sanity["top_k"]
    sets = [s for s in dict.fromkeys(summary["set"]) if s != "all"]
    body = html_table(pd.DataFrame(_rows(info, summary, sets, train)),
                      {"percentile among the random rankings": "0", "split halves: Spearman ρ": "2",
                       f"bootstrap: top-{k} kept (%)": "pct"})
    body += _by_k_table(folder, info, train)
    stages = pd.DataFrame([{"parametrised modules re-drawn from the top": s["modules_redrawn"],
                            "share re-drawn (%)": s["fraction"],
                            "Spearman ρ of ω with the trained ω": s["spearman"],
                            f"top-{k} overlap with the trained ranking (%)": s["top_k_overlap"]}
                           for s in sanity["randomised"]])
    if not stages.empty:
        body += "<p>Cascading randomisation (weights re-drawn from the output down; ω on the same fakes):</p>"
        body += html_table(stages, {"share re-drawn (%)": "pct", "Spearman ρ of ω with the trained ω": "2",
                                    f"top-{k} overlap with the trained ranking (%)": "pct"})
    ffrs_half = sanity["split_half"]["ffrs"]
    full = [s for s in sanity["randomised"] if s["fraction"] == 1.0]
    checks = (f" Sanity checks: over two disjoint halves of the source fakes ({sanity['fakes_per_half'][0]} and "
              f"{sanity['fakes_per_half'][1]} confident fakes) the FF-RS top-{k} overlap is "
              f"{100 * ffrs_half['top_k_overlap']:.0f}%")
    boot = sanity.get("bootstrap", {}).get("ffrs")
    if boot:
        buckets = "buckets of groups" if sanity.get("buckets_hashed") else "groups"
        checks += (f"; over {boot['resamples']} bootstrap resamples of the source fakes' {boot['buckets']} {buckets}, "
                   f"{100 * boot['top_k_kept'][str(k)]:.0f}% of its top-{k} stays in the top-{k} on average")
    if full and full[0]["spearman"] is not None:
        checks += (f"; with every parametrised module re-drawn, ω's Spearman ρ with the trained ω is "
                   f"{full[0]['spearman']:.2f} (a ranking that explains the trained detector must change)")
    iv = info.get("intervals", {})
    sentence = (f"Each ranking's top-k units (k = {', '.join(map(str, info['k_grid']))}) were dropped and AP and fake "
                "accuracy re-measured on every test set; AOPC is the mean drop over the k grid in percentage "
                f"points, larger = the ranking found units that matter more, with 95% intervals from "
                f"{iv.get('resamples', '?')} cluster-bootstrap resamples of the {iv.get('test_groups', '?')} groups "
                f"of test images (within set and label) and each ranking's percentile among the "
                f"{info['random_repeats']} random rankings (the null); a difference whose interval includes zero is "
                "not shown. " + "; ".join(info["verdicts"].values()) + "." + _rises_text(info) + checks + ".")
    return {"id": "faithfulness", "title": "Does the ranking find what matters? (faithfulness)", "sentence": sentence,
            "body": body, "figures": figures(folder, "*.png")}
