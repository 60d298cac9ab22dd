"""Report section "Does the ranking find what matters? (faithfulness)": AOPC of every ranking's deletion curve,
random as the reference, with the sanity checks beside the numbers (docs/algorithms.md §8)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..results import read_json
from .tables import html_table, mark


def _aopc(row: pd.Series, random: bool) -> str:
    text = f"{row['aopc']:.1f}"
    return text + (f" ± {row['aopc_std']:.1f}" if random and row["replicas"] > 1 else "")


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
    rows = []
    for name, label in info["rankings"].items():
        part = summary[summary["ranking"] == name].set_index(["set", "metric"])
        if part.empty:
            continue
        ap = part.loc[("all", "ap")]
        row = {"ranking": label,
               "AOPC of AP, mean over test sets (pp)": _aopc(ap, name == "random"),
               "× random": ap["ratio_to_random"] if name != "random" else None,
               "AOPC of fake accuracy (pp)": _aopc(part.loc[("all", "fake_acc")], name == "random")}
        for s in sets:
            row[f"{mark(s, train)}: AOPC of AP (pp)"] = _aopc(part.loc[(s, "ap")], name == "random")
        half = sanity["split_half"].get(name)
        row["split halves: Spearman ρ"] = half["spearman"] if half else None
        row[f"split halves: top-{k} overlap (%)"] = half["top_k_overlap"] if half else None
        rows.append(row)
    table = pd.DataFrame(rows)
    body = html_table(table, {"× random": "1", "split halves: Spearman ρ": "2",
                              f"split halves: top-{k} overlap (%)": "pct"})
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
    if full and full[0]["spearman"] is not None:
        checks += (f"; with every parametrised module re-drawn, ω's Spearman ρ with the trained ω is "
                   f"{full[0]['spearman']:.2f} (a ranking that explains the trained detector must change)")
    sentence = (f"Each ranking's top-k units (k = {', '.join(map(str, info['k_grid']))}) were dropped and AP and fake "
                "accuracy re-measured on every test set; AOPC is the mean drop over the k grid in percentage "
                "points, larger = the ranking found units that matter more. " + "; ".join(info["verdicts"].values())
                + "." + checks + ".")
    return {"id": "faithfulness", "title": "Does the ranking find what matters? (faithfulness)", "sentence": sentence,
            "body": body, "figures": figures(folder, "*.png")}
