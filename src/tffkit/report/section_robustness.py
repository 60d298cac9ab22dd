"""Report section "Robustness to perturbations", drawn from ``OUT/robustness/robustness.csv`` and ``robustness.json``
(the study's robustness step): per perturbation, the change of AP and of the real and fake accuracies over the mean of
the test sets with its paired interval, and the real/fake asymmetry verdict."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from ..results import read_json
from .tables import html_table

METRICS = {"ap": "AP", "real_acc": "real acc.", "fake_acc": "fake acc."}


def _cell(row: pd.Series) -> str:
    if not all(pd.notna(row[k]) for k in ("clean", "perturbed", "change", "low", "high")):
        return "undefined"
    return (f"{100 * row['clean']:.1f} → {100 * row['perturbed']:.1f} ({100 * row['change']:+.1f} "
            f"[{100 * row['low']:+.1f}, {100 * row['high']:+.1f}])")


def section_robustness(out: Path) -> dict | None:
    folder = out / "robustness"
    if not (folder / "robustness.csv").is_file():
        return None
    table = pd.read_csv(folder / "robustness.csv")
    info = read_json(folder / "robustness.json") if (folder / "robustness.json").is_file() else {}
    rows = []
    for name, part in table[table["set"] == "mean"].groupby("perturbation", sort=False):
        by = {r["metric"]: r for _, r in part.iterrows()}
        rows.append({"perturbation": name, **{label: _cell(by[m]) if m in by else "–" for m, label in METRICS.items()}})
    verdicts = "".join(f"<li><b>{html.escape(v['perturbation'])}</b>: {html.escape(v['verdict'])}</li>"
                       for v in info.get("asymmetry", []))
    shown = sum(bool(v.get("shown")) for v in info.get("asymmetry", []))
    first = table.iloc[0]
    sentence = (f"The test images scored clean and under each perturbation; over the mean of the test sets, in %: "
                f"clean → perturbed (change in pp with its paired 95% interval over groups, {int(first['resamples'])} "
                f"resamples). Fakes' accuracy falls while reals' rises (DEAR's asymmetry) under {shown} of "
                f"{len(info.get('asymmetry', []))} perturbations; per set in robustness/robustness.csv.")
    body = html_table(pd.DataFrame(rows), {label: "str" for label in METRICS.values()}) + f"<ul>{verdicts}</ul>"
    return {"id": "robustness", "title": "Robustness to perturbations", "sentence": html.escape(sentence),
            "body": body, "figures": []}
