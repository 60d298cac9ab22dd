"""The demo's summary: every headline number of a finished ``tff demo`` over its replicates (training seeds) with its
interval over photographs, read from the studies' result files (no model is run), written as ``summary.json`` and
``summary.md``, and as ``study/replicates.json`` for the report.

Each seed's colour claims are judged on the folds pooled (:func:`tffkit.analysis.replicates.pooled_color`: every
photograph tested once, by the fold's detectors that did not train on it); a claim holds when it holds in every seed.
The README's demo claims and docs/demo.md's demo figures are this file's Markdown (between the ``demo-summary``
markers): ``python -m tffkit.demo.summary demo_out`` copies a run's summary to ``docs/demo_summary.json`` and
rewrites both blocks, and a test checks that they agree with the committed summary — no demo figure is typed by
hand.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from ..analysis.replicates import color_claims, over_replicates, verdict
from ..jobs.study_replicates import STATISTICS, pooled_sets
from ..results import marked_text, read_json, replace_marked_text, write_json

START, END = "<!-- demo-summary:start -->", "<!-- demo-summary:end -->"
#: each detector's colour folder in a study
COLOR = {"universal": "color", "colour_robust": "color_robust/color"}
RANK = {"universal": "rank", "colour_robust": "color_robust/rank"}
def _csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _interval(row, prefix: str = "", scale: float = 1.0) -> dict:
    """``{estimate, low, high}`` of a CSV row (columns ``<prefix>estimate`` / ``low`` / ``high``)."""
    return {k: round(float(row[f"{prefix}{k}"]) * scale, 2) for k in ("estimate", "low", "high")}


def study_folder(demo: Path, seed: int, fold: int, first_seed: int) -> Path:
    """Where ``tff demo`` ran the study of (seed, fold): the whole study for the first seed's fold 0."""
    return demo / "study" if (seed, fold) == (first_seed, 0) else demo / "replicates" / f"seed{seed}" / f"fold{fold}"


def _ap(studies: list[Path], folder: str) -> dict:
    """Per set: AP on colour and on grayscale images, the mean over the folds' detectors."""
    tables = [_csv(s / folder / "table_color_gray.csv") for s in studies]
    out: dict[str, dict] = {}
    for table in (t.set_index("version") for t in tables if t is not None):
        for column in (c for c in table.columns if c.endswith(" AP")):
            for version in table.index:
                out.setdefault(column[: -len(" AP")], {}).setdefault(version, []).append(float(table.loc[version,
                                                                                                         column]))
    return {s: {v: round(sum(x) / len(x), 1) for v, x in versions.items()} for s, versions in out.items()}


def _ranking(ffrs: dict) -> dict:
    """How many confident fakes, from how many groups, a ranking rests on."""
    return {"fakes_used": ffrs.get("fakes_used"), "groups": ffrs.get("confident_fakes_groups"),
            "warning": ffrs.get("ranking_warning")}


def _replicate(studies: list[Path], training_family: str) -> dict:
    """One seed: its folds' colour statistics pooled, the claims judged on them, AP and the rankings per fold."""
    sets = pooled_sets(*[[s / folder for s in studies] for folder in COLOR.values()])
    rankings = {d: [_ranking(read_json(s / folder / "ffrs.json")) for s in studies] for d, folder in RANK.items()}
    return {"sets": sets, "claims": color_claims(sets, [training_family]), "rankings": rankings,
            "ap": {d: _ap(studies, folder) for d, folder in COLOR.items()}}


def _dropout(study: Path) -> list[dict]:
    effects = _csv(study / "dropout" / "dropout_effects.csv")
    if effects is None:
        return []
    rows = effects[(effects["set"] == "mean") & (effects["metric"] == "ap") & effects["kind"].isin(["top", "low"])]
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


def _timing(demo: Path, seeds: list[int], first: int, folds: int) -> dict:
    """What each part of the demo took (seconds, from the run records)."""
    def elapsed(path: Path) -> float:
        return float(read_json(path).get("elapsed_s") or 0) if path.is_file() else 0.0

    def study(folder: Path) -> float:  # every step's run record, the colour-robust and generator ones nested
        return round(sum(elapsed(p) for p in folder.rglob("run.json")), 1)

    training = {s: round(sum(elapsed(p) for p in (demo / "detectors" / f"seed{s}").glob("fold*/*/run.json")), 1)
                for s in seeds}
    return {"benchmark_s": read_json(demo / "benchmark" / "benchmark.json").get("build_seconds"),
            "training_s_per_seed": training,
            "whole_study_s": study(demo / "study"),
            "headline_steps_s": {f"seed{s}/fold{k}": study(study_folder(demo, s, k, first))
                                 for s in seeds for k in range(folds) if (s, k) != (first, 0)}}


def build_summary(demo: str | Path, *, elapsed_s: float | None = None) -> dict:
    """The summary of the demo folder ``demo`` (a finished ``tff demo``)."""
    demo = Path(demo)
    meta = read_json(demo / "demo.json")
    bench = read_json(demo / "benchmark" / "benchmark.json")
    seeds, folds, first = meta["seeds"], meta["folds"], meta["seed"]
    run = read_json(demo / "study" / "evaluate" / "run.json")
    replicates = {s: _replicate([study_folder(demo, s, k, first) for k in range(folds)], meta["training_family"])
                  for s in seeds}
    sets = list(replicates[first]["sets"])
    over = {s: {key: over_replicates([r["sets"].get(s, {}).get(key, {}).get("estimate") for r in replicates.values()])
                for key in (f"{d}:{st}".lstrip(":") for d, st in STATISTICS)} for s in sets}
    claims = [{"claim": c["claim"], "holds": verdict([replicates[s]["claims"][i]["holds"] for s in seeds]),
               "per_seed": {str(s): replicates[s]["claims"][i]["holds"] for s in seeds}}
              for i, c in enumerate(replicates[first]["claims"])]
    return {
        "seed": first, "seeds": seeds, "folds": folds, "scale": meta.get("scale"), "elapsed_s": elapsed_s,
        "colour_strength": (meta.get("artefacts") or {}).get("colour"),
        "training_family": meta.get("training_family"),
        "photographs": {f"fold{k}": sorted(p for names in split["test"].values() for p in names)
                        for k, split in enumerate(bench["folds"])},
        "machine": {k: (run.get("numerics") or {}).get(k) for k in ("cpu_model", "torch_threads",
                                                                     "torch_cpu_capability")},
        "claims": claims, "over_seeds": over,
        "replicates": {str(s): r for s, r in replicates.items()},
        "one_model": f"seed {first}, fold 0 (its {len(bench['folds'][0]['test']['all'])} test photographs)",
        "dropout": _dropout(demo / "study"),
        "faithfulness": _faithfulness(demo / "study"),
        "generators": _generators(demo / "study"),
        "timing": _timing(demo, seeds, first, folds),
    }


def _ci(d: dict | None, fmt: str = "{:+.1f}") -> str:
    if not d:
        return "—"
    return f"{fmt.format(d['estimate'])} [{fmt.format(d['low'])}, {fmt.format(d['high'])}]"


def _range(d: dict, fmt: str = "{:+.1f}") -> str:
    if not d or d["median"] is None:
        return "—"
    return f"{fmt.format(d['median'])} ({fmt.format(d['min'])} … {fmt.format(d['max'])})"


def claims_markdown(s: dict) -> str:
    """The setting and the claims with their verdict per seed (the README's demo block)."""
    photos = sum(len(v) for v in s["photographs"].values())
    seeds = [str(x) for x in s["seeds"]]
    t = s.get("timing") or {}
    head = (f"{len(seeds)} training seeds ({', '.join(seeds)}) × {s['folds']} folds of photographs, scale "
            f"{s['scale']}, colour strength {s['colour_strength']}: every test set holds all {photos} source images "
            f"(photographs and a colour chart), each tested once by the detectors of the fold that did not train on "
            f"it. Intervals are 95% over "
            f"photographs (cluster bootstrap within folds), per seed; \"over seeds\" is the median (range) of the "
            f"seeds' values. Machine: {s['machine']['cpu_model']}, {s['machine']['torch_threads']} threads"
            + (f"; {s['elapsed_s'] / 60:.1f} min in all" if s.get("elapsed_s") else "")
            + (f" (benchmark {t['benchmark_s']:.0f} s, training {sum(t['training_s_per_seed'].values()):.0f} s of "
               f"compute, whole study {t['whole_study_s']:.0f} s, headline steps of the other replicates "
               f"{sum(t['headline_steps_s'].values()):.0f} s)" if t else "") + ".")
    ranks = [r for rep in s["replicates"].values() for folds in rep["rankings"].values() for r in folds]
    warned = [r["warning"] for r in ranks if r.get("warning")]
    def span(key: str) -> str:
        low, high = min(r[key] for r in ranks), max(r[key] for r in ranks)
        return f"{low}" if low == high else f"{low}–{high}"

    head += (f" Each of the {len(ranks)} rankings rests on {span('fakes_used')} confident fakes from "
             f"{span('groups')} photographs" + (f"; {len(warned)} warned: " + "; ".join(warned) if warned else "")
             + ".") if ranks else ""
    lines = [head, "", "| claim (the paper's direction) | holds | " + " | ".join(f"seed {x}" for x in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    lines += [f"| {c['claim']} | {c['holds']} | " + " | ".join(c["per_seed"][x] for x in seeds) + " |"
              for c in s["claims"]]
    return "\n".join(lines) + "\n"


def summary_markdown(s: dict) -> str:
    """The summary as Markdown (docs/demo.md's block): the claims (:func:`claims_markdown`), the colour statistics
    per seed with intervals and over seeds, then the one model's dropout, deletion and generator tables."""
    seeds = [str(x) for x in s["seeds"]]
    lines = [claims_markdown(s).rstrip("\n")]
    lines += ["", "| set | statistic | " + " | ".join(f"seed {x}" for x in seeds) + " | over seeds |",
              "|---|---|" + "---|" * (len(seeds) + 1)]
    for name, over in s["over_seeds"].items():
        mark = " (training)" if name == s["training_family"] else ""
        for (det, stat), label in STATISTICS.items():
            key = f"{det}:{stat}".lstrip(":")
            fmt = "{:+.1f}" if "change" in stat or "difference" in stat else "{:.0f}"
            cells = [_ci(s["replicates"][x]["sets"].get(name, {}).get(key), fmt) for x in seeds]
            lines.append(f"| {name}{mark} | {label} | " + " | ".join(cells) + f" | {_range(over.get(key), fmt)} |")
    lines += ["", f"One model ({s['one_model']}):"]
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


def report_replicates(s: dict) -> dict:
    """The study report's replicate section (``replicates.json``, drawn by the report like any result file)."""
    seeds = [str(x) for x in s["seeds"]]
    rows = []
    for name, over in s["over_seeds"].items():
        for (det, stat), label in STATISTICS.items():
            key = f"{det}:{stat}".lstrip(":")
            rows.append([name, label, *[_ci(s["replicates"][x]["sets"].get(name, {}).get(key)) for x in seeds],
                         _range(over.get(key))])
    return {"replicates": [f"seed {x}" for x in seeds], "unit": "training seed",
            "note": f"{len(seeds)} training seeds × {s['folds']} folds of photographs; each seed's statistics pool "
                    f"its folds (every photograph tested once) with 95% intervals over photographs. The sections "
                    f"below this one come from one model: {s['one_model']}.",
            "claims": [{"claim": c["claim"], "holds": c["holds"], "per_replicate": {f"seed {x}": c["per_seed"][x]
                                                                                   for x in seeds}}
                       for c in s["claims"]],
            "columns": ["set", "statistic", *[f"seed {x}" for x in seeds], "over seeds: median (range)"],
            "rows": rows}


def write_summary(demo: str | Path, *, elapsed_s: float | None = None) -> dict:
    """Write ``summary.json`` and ``summary.md`` into the demo folder."""
    summary = build_summary(demo, elapsed_s=elapsed_s)
    write_json(Path(demo) / "summary.json", summary)
    (Path(demo) / "summary.md").write_text(summary_markdown(summary))
    write_json(Path(demo) / "study" / "replicates.json", report_replicates(summary))
    return summary


def marked_block(text: str) -> str:
    """The demo figures of a Markdown file: the text between the markers."""
    return marked_text(text, (START, END))


def main(argv: list[str] | None = None) -> int:
    """``python -m tffkit.demo.summary DEMO_OUT``: copy its summary to docs/demo_summary.json, its claims into
    README.md and all its figures into docs/demo.md."""
    demo = Path((argv or sys.argv[1:] or ["demo_out"])[0])
    summary = read_json(demo / "summary.json")
    root = Path(__file__).resolve().parents[3]
    write_json(root / "docs" / "demo_summary.json", summary)
    replace_marked_text(root / "README.md", claims_markdown(summary), (START, END))
    replace_marked_text(root / "docs" / "demo.md", summary_markdown(summary), (START, END))
    print(f"docs/demo_summary.json, README.md and docs/demo.md updated from {demo / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
