"""Report section "Where the traces come from in the generator" (LRP into the generator, appendix M)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..results import read_json
from .tables import html_table


def section_generator(out: Path, figures, train: Sequence[str] = ()) -> dict | None:
    """Per generator: median p(fake) before and after masking its top / random / low units, the image change,
    and where the top units sit (with the share in or next to the upsampling layer when configured); ``train``:
    the detector's training family (marked †)."""
    folder = out / "generator"
    if not (folder / "generators.json").is_file():
        return None
    summaries = read_json(folder / "generators.json")
    rows, notes, lower = [], [], []
    for name, s in summaries.items():
        table = pd.read_csv(folder / name / "masking_summary.csv").set_index("kind")
        if {"top", "random"} <= set(table.index):
            lower.append(table.loc["top", "median_change_pp"] < table.loc["random", "median_change_pp"])
        row = {"generator": name, "fakes used": f"{s['fakes_used']} / {s['n_images']}",
               "units masked": f"{s['k']} of {s['n_units']} ({s['percent']:g}%)",
               "median p(fake), unmasked": round(float(table.loc["baseline", "median_prob"]), 2)}
        for kind in ("top", "random", "low"):
            if kind in table.index:
                r = table.loc[kind]
                std = f" ± {r['median_prob_std']:.2f}" if kind == "random" and r["replicas"] > 1 else ""
                row[f"{kind}: median p"] = f"{r['median_prob']:.2f}{std} ({r['median_change_pp']:+.1f} pp)"
                row[f"{kind}: mean |Δ pixel|"] = round(float(r["mean_abs_change"]), 3)
        if "top_units_near" in s:
            near = s["top_units_near"]
            row["top units in/next to upsampling"] = f"{near['count']} / {near['of']}"
        rows.append(row)
        lead = max(s["top_units_per_layer"].items(), key=lambda kv: kv[1])
        notes.append(f"{name}: most top units in {lead[0].removeprefix('generator.')} ({lead[1]} of {s['k']})")
    sentence = ("Relevance of the detector's logit was propagated through each generated image into its generator; "
                "the generator units (convolution channels) were ranked by ω and the top, random (outside the top "
                "set, mean ± std over replicas) and low units masked while regenerating the same inputs. A top "
                "mask that lowers p(fake) far more than a random one of the same size, with a comparable image "
                "change, locates the units that leave the traces the detector uses (the paper's finding for ProGAN). "
                f"Here the top mask lowered the median p(fake) more than the random masks for {sum(lower)} of "
                f"{len(lower)} generators; where it raised it, compare the image change: removing units the image "
                "depends on can make it look more generated, not less. " + "; ".join(notes) + ".")
    if any("top_units_near" in s for s in summaries.values()):
        sentence += (" The demo's generators differ only in their ×2 upsampling operator, so the share of top units "
                     "in or next to the upsampling layer is a check with a known answer; ω compares each unit with "
                     "the others of its layer, so a narrow layer (e.g. an 8-channel bottleneck) gives each of its "
                     "units a large share.")
    figs = [f for name in summaries for f in figures(folder / name, "*.png")]
    return {"id": "generator", "title": "Where the traces come from in the generator", "sentence": sentence,
            "body": html_table(pd.DataFrame(rows), {"median p(fake), unmasked": "2"}, train, ("generator",)),
            "figures": figs}
