"""The study's planted step: the planted-artefact check (:mod:`tffkit.analysis.planted`) of the top T-FF of a ranking
against the ground truth of the benchmark the test data belongs to (``ground_truth.csv`` beside ``benchmark.json``).

:func:`planted` checks one detector; :func:`planted_of_study` checks the study's detector (``OUT/universal``) and,
when the study has one, its colour-robust detector (``OUT/colour_robust``), each with its own ranking and Mood tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .options import DataSelection, DetectorOptions, IntervalOptions, PassOptions, option

if TYPE_CHECKING:
    from ..data import DataSpec


@dataclass(frozen=True, kw_only=True)
class PlantedOptions(DetectorOptions, PassOptions, IntervalOptions, DataSelection):
    """Options of the planted-artefact check."""

    k: int | None = option(None, "top-k T-FF of the ranking checked (default: the colour step's k in a study, "
                           "else tff rank's k)", type=int)
    max_per_class: int | None = option(200, "use only the first N images (by file name) of each (set, class, label) "
                                       "folder; default: all", type=int, metavar="N")
    min_effect: float = option(0.5, "standardised difference of means counted as a response (0.5: a medium effect)")
    activation_site: str = option("folded", "where max spatial activations are read: the BN-folded conv output, or "
                                  "the raw conv output before batch norm", choices=("folded", "pre-bn"), study=False)


def planted(data: DataSpec | str | os.PathLike, *, ranking: str | os.PathLike,
            mood_tests: str | os.PathLike | None = None, options: PlantedOptions = PlantedOptions(),
            out: str | os.PathLike | None = None) -> dict:
    """Score the top-``k`` T-FF of ``ranking`` against the planted artefacts of the benchmark ``data`` belongs to
    (the colour step's ``mood_tests`` joined when the file exists): writes ``planted_sets.csv`` (per T-FF and set),
    ``planted.csv`` (per T-FF) and ``planted.json`` to ``out`` (None: nothing written)."""
    import pandas as pd

    from ..analysis.planted import GROUND_TRUTH, find_ground_truth, truth_rows
    from ..data import DataSpec
    from ..results import read_json, write_csv, write_json
    from .runner import Job

    root = data.root if isinstance(data, DataSpec) else data
    bench = find_ground_truth(root)
    if bench is None:
        raise FileNotFoundError(f"no benchmark.json with {GROUND_TRUTH} at or above {root}")
    o = options
    truth = pd.read_csv(bench / GROUND_TRUTH, keep_default_na=False)
    meta = read_json(bench / "benchmark.json")
    record = {"data": str(root), "ranking": str(ranking), "mood_tests": None if mood_tests is None else str(mood_tests)}
    with Job("planted", o, out=out, record=record) as job:
        samples = job.find(data, o.sets, max_per_class=o.max_per_class).samples
        keep, rows = truth_rows(samples, bench, truth)
        if not keep:
            raise ValueError(f"none of the test images under {root} is listed in {bench / GROUND_TRUTH}")
        per_set, k, n, shares = _responses(job, data, [samples[i] for i in keep], rows, ranking)
        mood = pd.read_csv(mood_tests) if mood_tests is not None and Path(mood_tests).is_file() else None
        res = {**_result(per_set, mood, rows, bench, meta, k, n, o), "share_intervals": shares}
        if job.writes:
            write_csv(job.folder / "planted_sets.csv", res["per_set"])
            write_csv(job.folder / "planted.csv", res["summary"])
            js = {key: v for key, v in res.items() if key not in ("per_set", "summary")}
            write_json(job.folder / "planted.json", js)
            job.finish(**js)
    return res


def _responses(job, data, listed: list, rows, ranking) -> tuple:
    """Max activations of the top-k T-FF on the listed images in colour and grayscale, and their responses per
    (T-FF, set); with the number of T-FF, of images scored in both versions, and the shares' intervals over the
    images' groups."""
    import numpy as np

    from ..analysis.activations import load_tffs, tff_keys
    from ..analysis.color import VERSIONS, max_activations
    from ..analysis.planted import planted_responses, share_intervals
    from .options import default_of
    from .rank import RankOptions

    o = job.options
    model = job.detector()
    prep = job.preprocessing(model, data)
    explainer = job.explainer(model, prep, forward_only=True)
    tffs = load_tffs(ranking, o.k if o.k is not None else default_of(RankOptions, "k"), explainer)
    keys = tff_keys(explainer, tffs)
    pass_args = dict(preset=o.preset, batch_size=o.batch_size, num_workers=o.workers, progress=o.progress,
                     preprocessing=prep)
    acts = {v: max_activations(explainer, tffs, listed, job.ctx, p, o.activation_site, desc=f"planted check ({v})",
                               **pass_args) for v, p in VERSIONS.items()}
    (ic, ac), (ig, ag) = acts["colour"], acts["grayscale"]
    common, pc, pg = np.intersect1d(ic, ig, return_indices=True)
    truth = rows.iloc[common].reset_index(drop=True)
    per_set = planted_responses(ac[pc], ag[pg], truth, keys)
    shares = share_intervals(ac[pc], ag[pg], truth, [listed[i].unit for i in common], min_effect=o.min_effect,
                             resamples=o.resamples, seed=o.bootstrap_seed)
    return per_set, len(tffs), int(len(common)), shares


def _result(per_set, mood, rows, bench: Path, meta: dict, k: int, n: int, o: PlantedOptions) -> dict:
    """The per-T-FF summary and planted.json's record (the benchmark, its artefacts, the shares responding)."""
    from ..analysis.planted import summarise

    summary = summarise(per_set, mood, o.min_effect)
    formats = rows.groupby("label")["format"].agg(lambda f: sorted(set(f)))
    return {"per_set": per_set, "summary": summary, "benchmark": str(bench),
            "benchmark_version": meta.get("version"), "artefacts": meta.get("artefacts"), "k": k,
            "min_effect": o.min_effect, "n_images": n, "activation_site": o.activation_site,
            "format_confound": bool(formats.get(0, []) != formats.get(1, [])),
            "training_family": meta.get("training_family"),
            "share_colour": float((summary["colour_effect"].abs() >= o.min_effect).mean()),
            "share_upsampling": {c.removeprefix("upsampling_"): float((summary[c].abs() >= o.min_effect).mean())
                                 for c in summary.columns if c.startswith("upsampling_")}}


def planted_of_study(data: DataSpec | str | os.PathLike, *, study: str | os.PathLike,
                     options: PlantedOptions = PlantedOptions(), color_robust: PlantedOptions | None = None,
                     out: str | os.PathLike) -> dict:
    """The study's planted step: :func:`planted` of the study's detector (``options``; ranking and Mood tests from
    ``study``/rank and ``study``/color) into ``out/universal`` and, with ``color_robust`` (the colour-robust
    detector's options), of that detector (``study``/color_robust/rank and …/color) into ``out/colour_robust``."""
    study, out = Path(study), Path(out)
    runs = {"universal": (options, study)}
    if color_robust is not None:
        runs["colour_robust"] = (color_robust, study / "color_robust")
    return {name: planted(data, ranking=where / "rank" / "ffrs.csv", mood_tests=where / "color" / "mood_tests.csv",
                          options=o, out=out / name) for name, (o, where) in runs.items()}

