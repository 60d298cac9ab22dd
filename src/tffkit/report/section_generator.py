"""Report section "Where the traces come from in the generator" (LRP into the generator, appendix M): Δp(fake) of
each mask with its interval over the evaluation inputs (never the ranking's), the top mask against random masks of
the same size and against random masks of the same image change (PSNR), and whether the known answer is
recovered."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..results import read_json
from ..wording import direction
from .tables import html_table

LABEL = {"top": "top", "random": "random (same size)", "matched": "random, PSNR-matched", "low": "low"}


def _delta(d: dict | None) -> str | None:
    return None if d is None else f"{d['delta_pp']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]"


def _known(near: dict) -> str:
    verdict = "recovered" if near["recovered"] else "not recovered"
    return (f"{near['count']} / {near['of']} (chance {near['expected']:.1f}, p = {near['p_value']:.2g}): "
            f"{verdict}")


def _row(name: str, s: dict, table: pd.DataFrame) -> dict:
    halves, delta, match = s.get("halves", {}), s.get("delta_pp", {}), s.get("psnr_match", {})
    row = {"generator": name,
           "inputs ranked / evaluated": f"{halves.get('rank_inputs', '?')} / {halves.get('eval_inputs', '?')}",
           "fakes used (ranking)": f"{s['fakes_used']} / {halves.get('rank_inputs', s['n_images'])}",
           "units masked": f"{s['k']} of {s['n_units']} ({s['percent']:g}%)",
           "median p(fake), unmasked": round(float(table.loc["baseline", "median_prob"]), 2)}
    for kind in ("top", "random", "matched", "low"):
        if kind in table.index:
            row[f"{LABEL[kind]}: Δp (pp) [95%]"] = _delta(delta.get(kind))
            row[f"{LABEL[kind]}: median PSNR (dB)"] = round(float(table.loc[kind, "median_psnr_db"]), 1)
    if match:
        row["PSNR-matched: units"] = ", ".join(str(m) for m in match["sizes"])
        row["PSNR gap to top (dB)"] = ", ".join(f"{g:+.1f}" for g in match["gap_db"])
    for a, b in (("top", "random"), ("top", "matched")):
        d = delta.get(f"{a} − {b}")
        row[f"{a} − {LABEL[b]}"] = None if d is None else direction(d["delta_pp"], d["low"], d["high"])
    if "top_units_near" in s:
        row["top units in/next to upsampling"] = _known(s["top_units_near"])
    return row


def _contrast_words(summaries: dict, key: str) -> str:
    """'lower for 2 (tconv, nearest), not shown for 3 (…)' over the generators for one contrast."""
    groups: dict[str, list[str]] = {}
    for name, s in summaries.items():
        d = s.get("delta_pp", {}).get(key)
        if d is None:
            continue
        word = direction(d["delta_pp"], d["low"], d["high"]).split(" (")[0]
        groups.setdefault(word, []).append(name)
    return ", ".join(f"{w} for {len(n)} ({', '.join(n)})" for w, n in groups.items()) or "not computed"


def section_generator(out: Path, figures, train: Sequence[str] = ()) -> dict | None:
    """Per generator: Δp(fake) of the top / random / PSNR-matched / low masks with intervals over the evaluation
    inputs, the image change, the contrasts written as a direction only where shown, and the known answer;
    ``train``: the detector's training family (marked †)."""
    folder = out / "generator"
    if not (folder / "generators.json").is_file():
        return None
    summaries = read_json(folder / "generators.json")
    rows, notes = [], []
    for name, s in summaries.items():
        table = pd.read_csv(folder / name / "masking_summary.csv").set_index("kind")
        rows.append(_row(name, s, table))
        lead = max(s["top_units_per_layer"].items(), key=lambda kv: kv[1])
        notes.append(f"{name}: most top units in {lead[0].removeprefix('generator.')} ({lead[1]} of {s['k']})")
    matched = [s["psnr_match"] for s in summaries.values() if "psnr_match" in s]
    sentence = ("Relevance of the detector's logit was propagated through each generated image into its generator; "
                "the generator units were ranked by ω on one half of the inputs (even indices) and masked on the "
                "other half (odd indices, never an input the ranking saw): the top units, random units of the same "
                "number (outside the top set), random units matched to the top mask's image change (their median "
                "PSNR within the tolerance of the top mask's, larger sets where needed) and the low units. Δp(fake) "
                "is the mean change per input in percentage points with its 95% bootstrap interval over the "
                "evaluation inputs; a difference whose interval includes zero is not shown. Against random masks of "
                f"the same size, the top mask's Δp is {_contrast_words(summaries, 'top − random')}; against "
                f"PSNR-matched random masks (the fair comparison: an equal image change) it is "
                f"{_contrast_words(summaries, 'top − matched')}. ")
    if matched:
        ok = sum(m["matched"] for m in matched)
        sentence += (f"The PSNR match held within {matched[0]['tolerance_db']:g} dB for {ok} of {len(matched)} "
                     "generators (gaps in the table). ")
    known = {name: s["top_units_near"] for name, s in summaries.items() if "top_units_near" in s}
    if known:
        sentence += ("Known answer (the generators differ in their upsampling, so their top units should sit in or "
                     "next to the upsampling layer more often than chance; hypergeometric test): recovered for "
                     f"{sum(k['recovered'] for k in known.values())} of {len(known)} — "
                     + "; ".join(f"{n} {_known(k)}" for n, k in known.items()) + ". ")
    sentence += "; ".join(notes) + "."
    figs = [{**f, "caption": f"{name}: {f['caption']}"} for name in summaries for f in figures(folder / name, "*.png")]
    # three narrow tables (generators as rows) instead of one as wide as 15 columns: the ranking, Δp(fake), PSNR
    table = pd.DataFrame(rows)
    parts = (("The ranking and the masks", lambda c: "Δp" not in c and "PSNR" not in c and " − " not in c),
             ("Δp(fake) of the masked generators' images", lambda c: "Δp" in c or " − " in c),
             ("How much each mask changes the image", lambda c: "PSNR" in c))
    body = "".join(f"<h3>{title}</h3>" + html_table(table[["generator", *[c for c in table.columns[1:] if keep(c)]]],
                                                     {"median p(fake), unmasked": "2"}, train, ("generator",))
                   for title, keep in parts)
    return {"id": "generator", "title": "Where the traces come from in the generator", "sentence": sentence,
            "body": body, "figures": figs}
