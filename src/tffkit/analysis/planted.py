"""Planted-artefact check: which of a benchmark's known, planted artefacts each top T-FF responds to.

Used when the test data comes with a ground truth (``ground_truth.csv`` next to ``benchmark.json``, as the
embedded demo benchmark writes it): every image is listed with the artefacts it carries. From the max spatial
activation of each top-k T-FF on every real and fake test image, in colour and in grayscale:

* **upsampling response** (per set, i.e. per generator family): standardised difference of the T-FF's mean
  activation on the set's fakes and on its reals, both in *grayscale* — a luma-preserving colour artefact is
  gone there, so what remains is the family's upsampling trace (and anything else its generator leaves in luma);
* **colour response** (per set): the same fake − real difference in colour minus the one in grayscale (a
  difference in differences, standardised): the part of the T-FF's response to fakes that only colour carries.

A standardised difference of magnitude ≥ ``min_effect`` (0.5: a "medium" effect) counts as a response (a
negative one: the unit is less active on the images carrying the artefact). The colour step's
Mood tests (colour vs grayscale fakes), when given, are joined per T-FF.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

MIN_EFFECT = 0.5

#: the per-image ground truth a benchmark ships beside its benchmark.json (the embedded demo writes one)
GROUND_TRUTH = "ground_truth.csv"


def find_ground_truth(data: str | os.PathLike, levels: int = 2) -> Path | None:
    """The benchmark folder (holding ``benchmark.json`` and ``ground_truth.csv``) at or up to ``levels`` above
    ``data``, or None."""
    folder = Path(data).expanduser().absolute()
    for candidate in [folder, *folder.parents][:levels + 1]:
        if (candidate / "benchmark.json").is_file() and (candidate / GROUND_TRUTH).is_file():
            return candidate
    return None


def _effect(a: np.ndarray, b: np.ndarray) -> float:
    """Standardised difference of means (a − b) / pooled std; 0 when both samples are constant."""
    s = float(np.sqrt((a.var() + b.var()) / 2))
    return float((a.mean() - b.mean()) / s) if s > 0 else 0.0


def planted_responses(color: np.ndarray, gray: np.ndarray, truth: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One row per (T-FF, set): upsampling and colour responses (see the module docstring).

    ``color``/``gray``: (N, K) max activations of the N images of ``truth`` (columns ``set``, ``label``,
    ``family``: the fakes' generator family) in colour and grayscale."""
    rows = []
    sets = truth["set"].to_numpy()
    label = truth["label"].to_numpy()
    for s in dict.fromkeys(sets.tolist()):
        fake, real = (sets == s) & (label == 1), (sets == s) & (label == 0)
        if not fake.any() or not real.any():
            continue
        family = str(truth.loc[fake, "family"].iloc[0])
        for j, key in enumerate(keys):
            fc, rc, fg, rg = color[fake, j], color[real, j], gray[fake, j], gray[real, j]
            s_color = float(np.sqrt((fc.var() + rc.var()) / 2))
            did = (fc.mean() - rc.mean()) - (fg.mean() - rg.mean())
            rows.append({"tff": j + 1, "key": key, "set": s, "family": family, "n_fake": int(fake.sum()),
                         "n_real": int(real.sum()), "mean_fake_colour": float(fc.mean()),
                         "mean_real_colour": float(rc.mean()), "mean_fake_gray": float(fg.mean()),
                         "mean_real_gray": float(rg.mean()), "upsampling_effect": _effect(fg, rg),
                         "colour_effect": float(did / s_color) if s_color > 0 else 0.0})
    return pd.DataFrame(rows)


def summarise(per_set: pd.DataFrame, mood: pd.DataFrame | None = None, min_effect: float = MIN_EFFECT) -> pd.DataFrame:
    """One row per T-FF: mean colour response over sets, upsampling response per family, the Mood tests' count of
    colour-conditional sets, and what it responds to (effects ≥ ``min_effect``)."""
    rows = []
    for (tff, key), part in per_set.groupby(["tff", "key"], sort=True):
        ups = dict(zip(part["family"], part["upsampling_effect"], strict=True))
        color = float(part["colour_effect"].mean())
        row = {"tff": int(tff), "key": key, "colour_effect": color,
               **{f"upsampling_{f}": float(v) for f, v in ups.items()}}
        if mood is not None and len(mood):
            m = mood[mood["tff"] == tff]
            row["mood_colour_conditional_sets"] = int(m["colour_conditional"].sum())
            row["mood_sets"] = len(m)
        parts = [name for name, v in (("colour", color), ("colour, lower on fakes", -color)) if v >= min_effect]
        for sign, words in ((1, "upsampling"), (-1, "upsampling, lower on fakes")):
            families = [f for f, v in ups.items() if sign * v >= min_effect]
            parts += [f"{words} ({', '.join(families)})"] if families else []
        row["responds_to"] = " + ".join(parts) if parts else "none of the planted artefacts"
        rows.append(row)
    return pd.DataFrame(rows)


def share_intervals(color: np.ndarray, gray: np.ndarray, truth: pd.DataFrame, groups: Sequence[str], *,
                    min_effect: float = MIN_EFFECT, resamples: int, seed: int = 0) -> dict:
    """The planted check's headline — the share of the top-k T-FF responding to the colour artefact (mean colour
    response over sets of magnitude ≥ ``min_effect``) and to each family's upsampling trace — with 95% intervals
    from a cluster bootstrap over ``groups`` (the images' source photographs) within (set, label): a share from a
    few photographs is as uncertain as the photographs are few (docs/algorithms.md §10). Every resample's responses
    come from weighted moments of the activations, all resamples at once."""
    from .uncertainty import ClusterResampler

    sets, label = truth["set"].to_numpy().astype(str), truth["label"].to_numpy()
    order = list(dict.fromkeys(sets.tolist()))
    family_of = {str(f): s for s, f in zip(sets[label == 1], truth.loc[label == 1, "family"], strict=True)}
    strata = [f"{s}/{y}" for s, y in zip(sets, label, strict=True)]
    sampler = ClusterResampler(groups, strata=strata, resamples=resamples, seed=seed)
    weights = np.vstack([np.ones(len(sets)), sampler.multiplicities()])  # row 0: every image once (the estimate)
    color_effect = np.full((len(weights), len(order), color.shape[1]), np.nan)
    upsampling = np.full_like(color_effect, np.nan)
    for i, s in enumerate(order):
        fake, real = (sets == s) & (label == 1), (sets == s) & (label == 0)
        if not fake.any() or not real.any():
            continue
        (fc, vfc), (rc, vrc) = _moments(weights, fake, color), _moments(weights, real, color)
        (fg, vfg), (rg, vrg) = _moments(weights, fake, gray), _moments(weights, real, gray)
        s_color, s_gray = np.sqrt((vfc + vrc) / 2), np.sqrt((vfg + vrg) / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            color_effect[:, i] = np.where(s_color > 0, ((fc - rc) - (fg - rg)) / s_color, 0.0)
            upsampling[:, i] = np.where(s_gray > 0, (fg - rg) / s_gray, 0.0)
    with np.errstate(all="ignore"):
        shares = [np.mean(np.abs(np.nanmean(color_effect, axis=1)) >= min_effect, axis=1)]
    shares += [np.mean(np.abs(upsampling[:, order.index(s)]) >= min_effect, axis=1) for s in family_of.values()]
    found = [sampler.interval_of(v[0], v[1:]) for v in shares]
    return {"colour": found[0].as_dict(""), "upsampling": {f: iv.as_dict("") for f, iv in zip(family_of, found[1:],
                                                                                                strict=True)},
            "groups": sampler.n_groups, "resamples": resamples, "seed": seed}


def _moments(weights: np.ndarray, rows: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and (population) variance of ``x[rows]`` per unit for every row of ``weights``: (W, K) each."""
    w, v = weights[:, rows], x[rows]
    n = w.sum(1, keepdims=True)
    mean = (w @ v) / n
    return mean, np.maximum((w @ (v - v.mean(0)) ** 2) / n - (mean - v.mean(0)) ** 2, 0.0)


def truth_rows(samples: Sequence, bench: Path, truth: pd.DataFrame) -> tuple[list[int], pd.DataFrame]:
    """Indices of the samples listed in the ground truth (``truth``, paths relative to the benchmark folder
    ``bench``), and their rows (in sample order) with the sample's set and label."""
    by_path = truth.set_index("path")
    keep, rows = [], []
    for i, s in enumerate(samples):
        try:
            rel = Path(s.path).absolute().relative_to(bench).as_posix()
        except ValueError:
            continue
        if rel in by_path.index:
            keep.append(i)
            rows.append({**by_path.loc[rel].to_dict(), "path": rel, "set": s.set, "label": int(s.label)})
    return keep, pd.DataFrame(rows)


__all__ = ["GROUND_TRUTH", "MIN_EFFECT", "find_ground_truth", "planted_responses", "summarise", "truth_rows"]
