"""The demo's summary: every headline number of a finished ``tff demo`` with its interval over photographs, read
from the study's result files (no model is run), written as ``summary.json`` and ``summary.md``.

The README's demo figures are this file's Markdown (between the ``demo-summary`` markers): ``python -m
tffkit.demo.summary demo_out`` copies a run's summary to ``docs/demo_summary.json`` and rewrites that block, and a
test checks that the README and the committed summary agree — no demo figure is typed by hand.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from ..results import read_json, write_json

START, END = "<!-- demo-summary:start -->", "<!-- demo-summary:end -->"
DETECTORS = {"universal": "study", "colour_robust": "study/color_robust"}


def _csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _interval(row, prefix: str = "", scale: float = 1.0) -> dict:
    """``{estimate, low, high}`` of a CSV row (columns ``<prefix>estimate`` / ``low`` / ``high``)."""
    return {k: round(float(row[f"{prefix}{k}"]) * scale, 2) for k in ("estimate", "low", "high")}


def _detector(study: Path) -> dict:
    """Per test set: AP on colour and grayscale images, the change of the median p(fake) without colour and the share
    of colour-conditional top-k T-FF (paired effect size, with intervals; Mood's share beside)."""
    sets: dict[str, dict] = {}
    wide = _csv(study / "color" / "table_color_gray.csv")
    if wide is not None:
        table = wide.set_index("version")
        for column in table.columns:
            if column.endswith(" AP"):
                name = column[: -len(" AP")]
                sets.setdefault(name, {})["ap"] = {v: round(float(table.loc[v, column]), 1) for v in table.index}
    change = _csv(study / "color" / "median_probability_ci.csv")
    for _, row in (change if change is not None else pd.DataFrame()).iterrows():
        sets.setdefault(row["set"], {})["median_change_pp"] = _interval(row) | {"groups": int(row["groups"])}
    paired = _csv(study / "color" / "colour_conditional_paired.csv")
    for _, row in (paired if paired is not None else pd.DataFrame()).iterrows():
        sets.setdefault(row["set"], {}).update(
            conditional_effect_pct=_interval(row, "effect_") if "effect_estimate" in row else
            {"estimate": round(float(row["effect_percent"]), 1), "low": round(float(row["effect_low"]), 1),
             "high": round(float(row["effect_high"]), 1)},
            conditional_mood_pct=round(float(row["mood_percent"]), 1), k=int(row["k"]))
    ranking = study / "rank" / "ffrs.json"
    return {"sets": sets, "ranking": _ranking(read_json(ranking)) if ranking.is_file() else None}


def _ranking(ffrs: dict) -> dict:
    """How many confident fakes, from how many groups, the ranking rests on."""
    return {"fakes_used": ffrs.get("fakes_used"), "groups": ffrs.get("confident_fakes_groups"),
            "warning": ffrs.get("ranking_warning")}


def _side(low: float, high: float) -> bool | None:
    """True when an interval (or a difference of intervals) lies above 0, False below, None when it includes 0."""
    return True if low > 0 else (False if high < 0 else None)


def _claims(detectors: dict, training_family: str) -> list[dict]:
    """The paper's direction, judged on intervals per set: shown (every interval on the claimed side: "yes"),
    contradicted (one on the other side: "no") or "not shown" (an interval includes 0, or overlaps)."""
    uni, cr = detectors.get("universal", {}).get("sets", {}), detectors.get("colour_robust", {}).get("sets", {})
    unseen = [s for s in uni if s != training_family]
    out = []

    def judge(text: str, verdicts: dict[str, bool | None]) -> None:
        values = list(verdicts.values())
        holds = "yes" if values and all(v is True for v in values) else (
            "no" if any(v is False for v in values) else "not shown")
        out.append({"claim": text, "holds": holds, "per_set": verdicts})

    def get(d: dict, s: str, key: str) -> dict | None:
        return d.get(s, {}).get(key)

    def apart(a: dict | None, b: dict | None) -> bool | None:
        """a above b (True), below (False), overlapping or unknown (None)."""
        return None if not a or not b else _side(a["low"] - b["high"], a["high"] - b["low"])

    judge("Without colour, the universal detector's median p(fake) falls on every unseen family (interval below 0)",
          {s: None if not get(uni, s, "median_change_pp") else
           _side(-get(uni, s, "median_change_pp")["high"], -get(uni, s, "median_change_pp")["low"]) for s in unseen})
    judge("The colour-robust detector's median p(fake) falls less than the universal one's (intervals apart)",
          {s: apart(get(cr, s, "median_change_pp"), get(uni, s, "median_change_pp")) for s in unseen})
    judge("More of the universal detector's top-k T-FF are colour-conditional by the paired effect size (intervals "
          "apart)", {s: apart(get(uni, s, "conditional_effect_pct"), get(cr, s, "conditional_effect_pct"))
                     for s in uni})
    return out


def _dropout(study: Path) -> list[dict]:
    effects = _csv(study / "dropout" / "dropout_effects.csv")
    if effects is None:
        return []
    rows = effects[(effects["set"] == "mean") & (effects["metric"] == "ap")]
    return [{"kind": r["kind"], "k": int(r["k"]), "delta_ap_pp": _interval(r.rename({"delta": "estimate"}), "", 100),
             "null_percentile": round(float(r["null_percentile"]), 1)} for _, r in rows.iterrows()]


def _faithfulness(study: Path) -> list[dict]:
    summary = _csv(study / "faithfulness" / "faithfulness_summary.csv")
    if summary is None:
        return []
    rows = summary[(summary["set"] == "all") & (summary["metric"] == "ap")]
    return [{"ranking": r["ranking"], "aopc": _interval(r, "aopc_") if "aopc_estimate" in r else
             {"estimate": round(r["aopc"], 2), "low": round(r["aopc_low"], 2), "high": round(r["aopc_high"], 2)},
             "null_percentile": None if pd.isna(r.get("null_percentile", math.nan)) else round(r["null_percentile"], 1)}
            for _, r in rows.iterrows()]


def _generators(study: Path) -> list[dict]:
    out = []
    for folder in sorted((study / "generator").glob("*/")):
        table = _csv(folder / "masking_intervals.csv")
        if table is None:
            continue
        masks = {r["mask"]: _interval(r) for _, r in table.rename(columns={"delta_pp": "estimate"}).iterrows()}
        gen = read_json(folder / "generator.json") if (folder / "generator.json").is_file() else {}
        out.append({"generator": folder.name, "delta_pp": masks, "top_units_near": gen.get("top_units_near")})
    return out


def build_summary(demo: str | Path, *, elapsed_s: float | None = None) -> dict:
    """The summary of the demo folder ``demo`` (a finished ``tff demo``)."""
    demo = Path(demo)
    meta = read_json(demo / "demo.json")
    bench = read_json(demo / "benchmark" / "benchmark.json")
    run = read_json(demo / "study" / "evaluate" / "run.json") if (demo / "study" / "evaluate" / "run.json").is_file() \
        else {}
    detectors = {name: _detector(demo / folder) for name, folder in DETECTORS.items()}
    split = bench.get("photo_split", {})
    return {
        "seed": meta.get("seed"), "scale": meta.get("scale"), "elapsed_s": elapsed_s,
        "colour_strength": (meta.get("artefacts") or {}).get("colour"),
        "training_family": meta.get("training_family"),
        "photographs": {s: sorted({p for names in classes.values() for p in names}) for s, classes in split.items()},
        "machine": {k: (run.get("numerics") or {}).get(k) for k in ("cpu_model", "torch_threads",
                                                                     "torch_cpu_capability")},
        "detectors": detectors,
        "claims": _claims(detectors, meta.get("training_family")),
        "dropout": _dropout(demo / "study"),
        "faithfulness": _faithfulness(demo / "study"),
        "generators": _generators(demo / "study"),
    }


def _ci(d: dict | None, fmt: str = "{:+.1f}") -> str:
    if not d:
        return "—"
    return f"{fmt.format(d['estimate'])} [{fmt.format(d['low'])}, {fmt.format(d['high'])}]"


def summary_markdown(s: dict) -> str:
    """The summary as Markdown: the setting, the claims with their verdicts, then one table per analysis."""
    photos = ", ".join(f"{k}: {len(v)}" for k, v in s["photographs"].items())
    head = (f"Seed {s['seed']}, scale {s['scale']}, colour strength {s['colour_strength']}; photographs per split "
            f"({photos}); intervals are 95% over photographs (cluster bootstrap). Machine: {s['machine']['cpu_model']}"
            f", {s['machine']['torch_threads']} threads" + (f"; {s['elapsed_s'] / 60:.1f} min in all."
                                                           if s.get("elapsed_s") else "."))
    lines = [head, "", "| claim (the paper's direction) | holds |", "|---|---|"]
    lines += [f"| {c['claim']} | {c['holds']} |" for c in s["claims"]]
    lines += ["", "| set | universal AP colour → gray | CR AP colour → gray | universal Δ median p(fake), pp | "
              "CR Δ median p(fake), pp | universal colour-cond. % (effect) | CR colour-cond. % (effect) |",
              "|---|---|---|---|---|---|---|"]
    uni, cr = (s["detectors"][d]["sets"] for d in ("universal", "colour_robust"))
    for name, row in uni.items():
        other = cr.get(name, {})

        def ap(r: dict) -> str:
            a = r.get("ap", {})
            return f"{a.get('colour', '—')} → {a.get('grayscale', '—')}"
        mark = " (training)" if name == s["training_family"] else ""
        lines.append(f"| {name}{mark} | {ap(row)} | {ap(other)} | {_ci(row.get('median_change_pp'))} | "
                     f"{_ci(other.get('median_change_pp'))} | {_ci(row.get('conditional_effect_pct'), '{:.0f}')} | "
                     f"{_ci(other.get('conditional_effect_pct'), '{:.0f}')} |")
    if s["dropout"]:
        lines += ["", "| dropped | mean ΔAP over sets, pp | percentile among the random-k replicas (0: below all) |",
                  "|---|---|---|"]
        lines += [f"| {r['kind']}-{r['k']} | {_ci(r['delta_ap_pp'])} | {r['null_percentile']} |" for r in s["dropout"]]
    if s["faithfulness"]:
        lines += ["", "| ranking | AOPC of AP (mean over sets), pp | percentile among the random rankings (100: above "
                  "all) |", "|---|---|---|"]
        lines += [f"| {r['ranking']} | {_ci(r['aopc'], '{:.1f}')} | "
                  f"{'—' if r['null_percentile'] is None else r['null_percentile']} |" for r in s["faithfulness"]]
    if s["generators"]:
        lines += ["", "| generator | top mask Δp(fake), pp | random | PSNR-matched random |", "|---|---|---|---|"]
        lines += [f"| {g['generator']} | {_ci(g['delta_pp'].get('top'))} | {_ci(g['delta_pp'].get('random'))} | "
                  f"{_ci(g['delta_pp'].get('matched'))} |" for g in s["generators"]]
    return "\n".join(lines) + "\n"


def write_summary(demo: str | Path, *, elapsed_s: float | None = None) -> dict:
    """Write ``summary.json`` and ``summary.md`` into the demo folder."""
    summary = build_summary(demo, elapsed_s=elapsed_s)
    write_json(Path(demo) / "summary.json", summary)
    (Path(demo) / "summary.md").write_text(summary_markdown(summary))
    return summary


def readme_block(readme: str) -> str:
    """The README's demo figures: the text between the markers."""
    return readme[readme.index(START) + len(START): readme.index(END)].strip("\n") + "\n"


def update_readme(summary: dict, readme: Path) -> None:
    """Put ``summary``'s Markdown between the README's markers."""
    text = readme.read_text()
    head, tail = text[: text.index(START) + len(START)], text[text.index(END):]
    readme.write_text(head + "\n" + summary_markdown(summary) + tail)


def main(argv: list[str] | None = None) -> int:
    """``python -m tffkit.demo.summary DEMO_OUT``: copy its summary to docs/demo_summary.json and update README.md."""
    demo = Path((argv or sys.argv[1:] or ["demo_out"])[0])
    summary = read_json(demo / "summary.json")
    root = Path(__file__).resolve().parents[3]
    write_json(root / "docs" / "demo_summary.json", summary)
    update_readme(summary, root / "README.md")
    print(f"docs/demo_summary.json and README.md updated from {demo / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
