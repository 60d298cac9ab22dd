"""A study's training-seed replicates (docs/algorithms.md §10): the colour-robust detector trained once per seed
(``steps.color_robust.replicates``), each replicate's colour statistics beside the study's universal detector with
95% intervals over groups, the paper's colour claims judged per seed and over seeds, and the colour-robust AP per
set — read from the steps' files (no model is run), written as ``color_robust/replicates.json`` for the report.

The demo, which retrains both detectors per seed and cross-fits folds of photographs, pools its folds with the
same functions (:func:`pooled_sets`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

#: the pooled colour statistics (``detector:statistic``) and their words
STATISTICS = {("universal", "change"): "universal Δ median p(fake), pp",
              ("colour_robust", "change"): "colour-robust Δ median p(fake), pp",
              ("", "change_difference"): "colour-robust minus universal Δ, pp",
              ("universal", "share"): "universal colour-conditional top-k T-FF, % (effect size)",
              ("colour_robust", "share"): "colour-robust colour-conditional top-k T-FF, %",
              ("", "share_difference"): "universal minus colour-robust share, pp"}


def color_fold(color: Path) -> dict:
    """One detector's colour-step files (``probabilities.csv``, ``activations_*.csv``) as
    :func:`~tffkit.analysis.replicates.pooled_color` takes them."""
    import pandas as pd

    acts = {v: pd.read_csv(color / f"activations_{v}.csv") for v in ("colour", "grayscale")}
    units = [c for c in acts["colour"].columns if c not in ("path", "set", "class", "group")]
    return {"probabilities": pd.read_csv(color / "probabilities.csv"), "colour": acts["colour"][units].to_numpy(float),
            "grayscale": acts["grayscale"][units].to_numpy(float), "sets": acts["colour"]["set"].astype(str),
            "groups": acts["colour"]["group"].astype(str)}


def pooled_sets(universal: Sequence[Path], robust: Sequence[Path], *, resamples: int | None = None,
                seed: int | None = None) -> dict:
    """set → ``detector:statistic`` → ``{estimate, low, high, groups}`` (rounded to 0.01) of the two detectors'
    colour folders, one per fold (:func:`~tffkit.analysis.replicates.pooled_color`)."""
    from ..analysis.replicates import pooled_color

    given = {k: v for k, v in (("resamples", resamples), ("seed", seed)) if v is not None}
    table = pooled_color({"universal": [color_fold(p) for p in universal],
                          "colour_robust": [color_fold(p) for p in robust]}, **given)
    sets: dict[str, dict] = {}
    for _, row in table.iterrows():
        key = f"{row['detector']}:{row['statistic']}".lstrip(":")
        sets.setdefault(row["set"], {})[key] = {k: round(float(row[k]), 2) for k in ("estimate", "low", "high")} | {
            "groups": int(row["groups"])}
    return sets


def _ci(d: dict | None, scale: float = 1.0, fmt: str = "{:+.1f}") -> str:
    if not d:
        return "—"
    return " ".join([fmt.format(scale * d["estimate"]),
                     f"[{fmt.format(scale * d['low'])}, {fmt.format(scale * d['high'])}]"])


def _ap(evaluate: Path) -> dict:
    """set → the AP's interval (``metrics_ci.csv`` of an evaluate run)."""
    import pandas as pd

    path = evaluate / "metrics_ci.csv"
    if not path.is_file():
        return {}
    ci = pd.read_csv(path)
    return {r["set"]: {k: float(r[k]) for k in ("estimate", "low", "high")}
            for _, r in ci[ci["metric"] == "ap"].iterrows()}


def seed_replicates(out: Path, folder: Path, seeds: Sequence[int], training_sets: Sequence[str], *,
                    resamples: int | None = None, seed: int | None = None) -> dict:
    """``replicates.json`` of a study whose colour-robust detector was trained with each of ``seeds`` (the first in
    ``folder``, the others in ``folder/seed<s>``): per seed the colour statistics against the study's universal
    detector (``out/color``), the colour claims and the colour-robust AP, each with its interval; over seeds the
    median (range) and the claims' verdicts (a claim holds only when every seed shows it)."""
    from ..analysis.replicates import color_claims, over_replicates, verdict

    runs = {s: folder if i == 0 else folder / f"seed{s}" for i, s in enumerate(seeds)}
    per = {s: pooled_sets([out / "color"], [run / "color"], resamples=resamples, seed=seed) for s, run in runs.items()}
    aps = {s: _ap(run / "evaluate") for s, run in runs.items()}
    claims = {s: color_claims(sets, training_sets) for s, sets in per.items()}
    labels = [f"seed {s}" for s in seeds]
    rows = []
    for name in per[seeds[0]]:
        for (det, stat), words in STATISTICS.items():
            key = f"{det}:{stat}".lstrip(":")
            values = [per[s].get(name, {}).get(key) for s in seeds]
            over = over_replicates([v["estimate"] if v else None for v in values])
            rows.append([name, words, *[_ci(v) for v in values], _over(over)])
        values = [aps[s].get(name) for s in seeds]
        over = over_replicates([100 * v["estimate"] if v else None for v in values])
        rows.append([name, "colour-robust AP, %", *[_ci(v, 100, "{:.1f}") for v in values], _over(over, "{:.1f}")])
    first = claims[seeds[0]]
    return {"replicates": labels, "unit": "training seed",
            "note": (f"The colour-robust detector was trained with {len(seeds)} seeds ({', '.join(map(str, seeds))}); "
                     f"the universal detector is the study's, the same in every replicate. Intervals are 95% over "
                     f"groups, per seed. The other sections show the first seed's colour-robust detector."),
            "claims": [{"claim": c["claim"], "holds": verdict([claims[s][i]["holds"] for s in seeds]),
                        "per_replicate": {f"seed {s}": claims[s][i]["holds"] for s in seeds}}
                       for i, c in enumerate(first)],
            "columns": ["set", "statistic", *labels, "over seeds: median (range)"], "rows": rows}


def _over(over: dict, fmt: str = "{:+.1f}") -> str:
    if over["median"] is None:
        return "—"
    return f"{fmt.format(over['median'])} ({fmt.format(over['min'])} … {fmt.format(over['max'])})"
